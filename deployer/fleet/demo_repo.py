"""Build the git repository of the demo app that the orchestrator deploys in tests.

Sources live in ``examples/demo-app/``:

* ``app/`` is the full v1 tree;
* ``versions/<tag>/`` holds files copied over the parent tag's tree (new migrations);
* code changes of each tag are the small, exact text edits in :data:`VERSIONS` below
  (each edit must match exactly once, so a drifting base fails loudly);
* every tag's ``VERSION`` file is written with the tag name.

``build_demo_repo(dest)`` (re)creates a git repository at ``dest`` with one commit and
one annotated tag per version.  Dates and identities are fixed, so commit shas are stable
for a given source tree.  ``python -m deployer.fleet.demo_repo DEST`` prints ``tag sha``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEMO_APP_DIR = Path(__file__).resolve().parents[2] / "examples" / "demo-app"
BASE_TREE = DEMO_APP_DIR / "app"
OVERLAYS = DEMO_APP_DIR / "versions"

EXECUTABLES = {"manage.py", "worker.py"}
IGNORED_NAMES = {"__pycache__", ".env", "REVISION", "storage", ".pytest_cache"}
BASE_EPOCH = 1_780_000_000  # 2026-05-28T20:26:40Z; tag i is committed i hours later


@dataclass(frozen=True)
class Version:
    tag: str
    parent: str | None
    description: str
    # (path, exact old text, new text); old text must occur exactly once in the parent tree.
    edits: tuple[tuple[str, str, str], ...] = field(default=())


_INDEX_V1 = """    items = scalar("SELECT count(*) FROM items")
    return 200, {"release": REVISION, "version": VERSION, "host": HOST, "items": items}
"""
_INDEX_V2 = """    items = scalar("SELECT count(*) FROM items")
    notes = scalar("SELECT count(*) FROM notes")
    return 200, {
        "release": REVISION,
        "version": VERSION,
        "host": HOST,
        "items": items,
        "notes": notes,
    }
"""
_HEALTH_RETURN = """    return (200 if ok else 503), body
"""
_REQUEST_START = """    started = time.monotonic()
"""
_AFTER_IMPORTS = """HOST = socket.gethostname()
"""
_WORKER_MAIN = """    args = parser.parse_args(argv)
"""

VERSIONS: tuple[Version, ...] = (
    Version("v1", None, "demo app v1: items, jobs, worker, migration 0001_init"),
    Version(
        "v2",
        "v1",
        "v2: online-safe migration 0002_add_notes (notes table, items.category); / counts notes",
        edits=(("app.py", _INDEX_V1, _INDEX_V2),),
    ),
    Version(
        "v3",
        "v2",
        "v3: migration 0003_rename_category is NOT online-safe (needs maintenance mode)",
    ),
    Version(
        "bad-health",
        "v2",
        "bad-health: /health answers 500 with status fail",
        edits=(
            (
                "app.py",
                _HEALTH_RETURN,
                (
                    "    # bad-health: a regression makes the health check report failure.\n"
                    '    body["status"] = "fail"\n'
                    "    return 500, body\n"
                ),
            ),
        ),
    ),
    Version(
        "bad-slow",
        "v2",
        "bad-slow: every request takes 2.5 s more",
        edits=(("app.py", _REQUEST_START, _REQUEST_START + "    time.sleep(2.5)  # bad-slow\n"),),
    ),
    Version(
        "bad-canary",
        "v2",
        "bad-canary: every request takes 0.15 s more (within absolute limits, worse than v2)",
        edits=(
            ("app.py", _REQUEST_START, _REQUEST_START + "    time.sleep(0.15)  # bad-canary\n"),
        ),
    ),
    Version(
        "bad-flap",
        "v2",
        "bad-flap: every 3rd /health request on a host answers 500",
        edits=(
            (
                "app.py",
                _HEALTH_RETURN,
                "    if _flap_count() % 3 == 0:  # bad-flap\n"
                '        body["status"] = "fail"\n'
                "        return 500, body\n" + _HEALTH_RETURN + "\n\n"
                "_flap_local = 0\n\n\n"
                "def _flap_count():\n"
                '    """Host-wide /health counter (file + flock), per-process if that fails."""\n'
                "    global _flap_local\n"
                "    _flap_local += 1\n"
                "    try:\n"
                "        import fcntl\n\n"
                "        os.makedirs(STORAGE, exist_ok=True)\n"
                '        path = os.path.join(STORAGE, "flap-counter-" + HOST)\n'
                "        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)\n"
                "        try:\n"
                "            fcntl.flock(fd, fcntl.LOCK_EX)\n"
                '            raw = os.read(fd, 64).decode() or "0"\n'
                "            count = int(raw) + 1\n"
                "            os.lseek(fd, 0, 0)\n"
                "            os.ftruncate(fd, 0)\n"
                "            os.write(fd, str(count).encode())\n"
                "            return count\n"
                "        finally:\n"
                "            os.close(fd)\n"
                "    except (OSError, ValueError):\n"
                "        return _flap_local\n",
            ),
        ),
    ),
    Version(
        "bad-boot",
        "v2",
        "bad-boot: app.py raises RuntimeError at import, gunicorn workers cannot boot",
        edits=(
            (
                "app.py",
                _AFTER_IMPORTS,
                _AFTER_IMPORTS
                + '\nraise RuntimeError("bad-boot: required setting missing at import time")\n',
            ),
        ),
    ),
    Version(
        "bad-migration",
        "v2",
        "bad-migration: migration 0003_broken creates a table then fails (rolls back, schema 2)",
    ),
    Version(
        "bad-worker",
        "v2",
        "bad-worker: worker.py prints an error and exits 1 right after start",
        edits=(
            (
                "worker.py",
                _WORKER_MAIN,
                _WORKER_MAIN
                + '    print("worker: fatal: queue backend misconfigured (bad-worker)", '
                "file=sys.stderr)\n"
                "    return 1\n",
            ),
        ),
    ),
)


def _read_tree(root: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_NAMES)
        for name in sorted(filenames):
            if name in IGNORED_NAMES or name.endswith((".pyc", ".pyo")):
                continue
            path = Path(dirpath) / name
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def version_trees_of(versions, base: Path, overlays: Path, label: str) -> dict[str, dict[str, bytes]]:
    """tag -> {relative path: content} for every version of `versions`, in order: `base` for a
    version without parent, else the parent's tree; then `overlays/<tag>/`, then the edits."""
    trees: dict[str, dict[str, bytes]] = {}
    for v in versions:
        if v.parent is None:
            tree = _read_tree(base)
        else:
            tree = dict(trees[v.parent])
        overlay = overlays / v.tag
        if overlay.is_dir():
            tree.update(_read_tree(overlay))
        for path, old, new in v.edits:
            text = tree[path].decode("utf-8")
            count = text.count(old)
            if count != 1:
                raise RuntimeError(
                    f"{label}: edit for {v.tag}:{path} matches {count} times (expected 1): "
                    f"{old.strip()[:60]!r}"
                )
            tree[path] = text.replace(old, new).encode("utf-8")
        tree["VERSION"] = (v.tag + "\n").encode()
        trees[v.tag] = tree
    return trees


def version_trees() -> dict[str, dict[str, bytes]]:
    """tag -> {relative path: content} for every version, in VERSIONS order."""
    return version_trees_of(VERSIONS, BASE_TREE, OVERLAYS, "demo repo")


def _git(dest: Path, *args: str, env: dict[str, str]) -> str:
    cmd = ["git", "-c", "user.name=demo", "-c", "user.email=demo@example.invalid", *args]
    proc = subprocess.run(cmd, cwd=dest, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {dest}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def build_demo_repo(dest: Path) -> dict[str, str]:
    """(Re)create the demo app git repository at ``dest``; return tag -> commit sha."""
    last_good = [v.tag for v in VERSIONS if not v.tag.startswith("bad-")][-1]
    return build_repo(Path(dest), VERSIONS, version_trees(), EXECUTABLES, main=last_good)


def build_repo(dest: Path, versions, trees: dict[str, dict[str, bytes]], executables: set[str],
               main: str) -> dict[str, str]:
    """(Re)create a git repository at ``dest`` with one commit and one annotated tag per version
    (fixed dates and identities), branch main at tag `main`; return tag -> commit sha."""
    if dest.exists() or dest.is_symlink():
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        else:
            dest.unlink()
    dest.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | {
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "LC_ALL": "C",
    }
    _git(dest, "init", "-q", env=env)
    _git(dest, "symbolic-ref", "HEAD", "refs/heads/main", env=env)
    _git(dest, "config", "core.autocrlf", "false", env=env)
    _git(dest, "config", "core.fileMode", "true", env=env)

    shas: dict[str, str] = {}
    for i, v in enumerate(versions):
        date = f"@{BASE_EPOCH + i * 3600} +0000"
        cenv = env | {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
        if v.parent is not None:
            _git(dest, "checkout", "-q", "--detach", v.parent, env=env)
        # Replace the whole work tree with this version's files.
        for entry in dest.iterdir():
            if entry.name == ".git":
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        for rel, content in trees[v.tag].items():
            path = dest / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            path.chmod(0o755 if rel in executables else 0o644)
        _git(dest, "add", "-A", env=env)
        _git(dest, "commit", "-q", "--allow-empty", "-m", v.description, env=cenv)
        _git(dest, "tag", "-a", v.tag, "-m", v.description, env=cenv)
        shas[v.tag] = _git(dest, "rev-parse", f"{v.tag}^{{commit}}", env=env)
    _git(dest, "checkout", "-q", "-B", "main", main, env=env)
    return shas


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m deployer.fleet.demo_repo DEST", file=sys.stderr)
        return 2
    for tag, sha in build_demo_repo(Path(argv[0])).items():
        print(f"{tag} {sha}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
