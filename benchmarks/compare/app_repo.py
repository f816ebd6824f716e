"""The app of the comparison: a git repository holding 300 files, 2 MiB in all, of deterministic
pseudo-random text (lines of identifiers and numbers, like source code), one commit, one tag.

    .venv/bin/python benchmarks/compare/app_repo.py DEST     # prints "<tag> <commit>"

Same seed, same bytes, same dates and identity: the commit sha is the same on every machine.
The hosts of the local fleet share this machine's root filesystem, so DEST (outside /srv, /tmp
and /root, which each host mounts privately) is the `repo:` both tools clone from.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

FILES = 300
TOTAL_BYTES = 2 * 1024 * 1024
SEED = 20260528
TAG = "bench"
DATE = "@1780000000 +0000"
WORDS = ("app", "user", "order", "cache", "queue", "item", "price", "total", "config", "value",
         "result", "request", "response", "session", "token", "handler", "render", "load", "save",
         "check", "index", "count", "name", "data", "list", "map", "key", "field", "model", "view")


def file_sizes(rng: random.Random) -> list[int]:
    """FILES sizes summing to exactly TOTAL_BYTES (a spread of small and large files)."""
    raw = [rng.lognormvariate(0, 0.8) for _ in range(FILES)]
    scale = TOTAL_BYTES / sum(raw)
    sizes = [max(64, int(r * scale)) for r in raw]
    sizes[-1] += TOTAL_BYTES - sum(sizes)
    return sizes


def text(rng: random.Random, size: int) -> bytes:
    out: list[str] = []
    n = 0
    while n < size:
        line = "    " * rng.randrange(3) + " = ".join(
            "_".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 4))) for _ in range(2)
        ) + f"  # {rng.getrandbits(64):016x}\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def tree() -> dict[str, bytes]:
    rng = random.Random(SEED)
    files = {}
    for i, size in enumerate(file_sizes(rng)):
        files[f"app/mod{i % 15:02d}/file{i:03d}.py"] = text(rng, size)
    return files


def _git(dest: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | {
        "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C",
        "GIT_AUTHOR_DATE": DATE, "GIT_COMMITTER_DATE": DATE,
    }
    cmd = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", *args]
    proc = subprocess.run(cmd, cwd=dest, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {dest}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def build(dest: Path) -> tuple[str, str]:
    """(Re)create the repository at `dest`; return (tag, commit sha)."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    _git(dest, "init", "-q")
    _git(dest, "symbolic-ref", "HEAD", "refs/heads/main")
    for rel, content in tree().items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(0o644)
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "bench app: 300 files, 2 MiB")
    _git(dest, "tag", "-a", TAG, "-m", "bench")
    return TAG, _git(dest, "rev-parse", f"{TAG}^{{commit}}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: app_repo.py DEST")
    print(*build(Path(sys.argv[1])))
