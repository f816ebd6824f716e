"""`deployer init`: a commented inventory and playbook in the user's project.

Writes, from the templates in deployer/templates/:

- ``hosts/<env>.yaml``: every key explained, placeholder addresses (a documentation range),
  values that load as they are;
- ``hosts/known_hosts``: comments saying how to fill it (only when it does not exist: it holds
  real keys, it is never overwritten);
- ``playbooks/<app>.yaml``: ``extends: <kind>`` and commented override examples;
- ``tasks.py``: the Invoke collection of deployer's verbs in one import (`inv deploy --env E`),
  where the project adds its own tasks; only when there is no tasks.py (a project's own is never
  touched, ``--force`` or not: it says what line to add to it);
- ``deploy/sudoers``: the sudo rules of the SSH user, exactly the commands the playbook runs as
  root (`deployer.privileges`), with how to install them in ``/etc/sudoers.d/<app>``; made from
  the loaded config, so it is written last (kept when it exists, unless ``--force``).

A file that exists is left alone unless ``--force`` (else exit 3, nothing written). What would be
written is loaded with `load_config` first, from a scratch copy of the project: a name or a
template that does not load is refused (exit 2) before any file is written, never in the user's
first deploy, and never leaving files that block the next try.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from .config import Config, load_config, load_playbook, shipped_playbooks
from .config.types import _ENV_RE
from .errors import ConfigError, Refused
from .output import Reporter
from .privileges import sudoers

KINDS = ("laravel", "django", "node", "demo")
TEMPLATES = Path(__file__).resolve().parent / "templates"
#: an app's name: a playbook name YAML reads as a string, and (with _ for -) a database name
_APP_RE = re.compile(r"[a-z][a-z0-9-]*\Z")
#: names YAML reads as something else than a string
_YAML_WORDS = ("null", "true", "false")


def app_name(directory: Path) -> str:
    """A playbook name from a directory name: lowercase letters, digits and -, starting with a
    letter (``123`` gives ``app-123``)."""
    name = re.sub(r"[^a-z0-9]+", "-", directory.resolve().name.lower()).strip("-")
    if not name:
        return "app"
    return name if _APP_RE.match(name) and name not in _YAML_WORDS else f"app-{name}"


def health_url(kind: str) -> str:
    """The health URL the shipped playbook of `kind` checks (the inventory's comments show it)."""
    path = shipped_playbooks() / f"{kind}.yaml"
    return str(load_playbook(path, root=path.parent.parent).defaults["health"]["url"])


def render(template: str, values: dict[str, str]) -> str:
    text = (TEMPLATES / template).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace(f"<<{key}>>", value)
    leftover = re.findall(r"<<\w+>>", text)
    if leftover:  # a template and this code disagree
        raise ValueError(f"template {template}: no value for {', '.join(sorted(set(leftover)))}")
    return text


def files(root: Path, *, kind: str, env: str, app: str) -> dict[Path, str]:
    """The files `init` writes (path -> text), known_hosts aside."""
    values = {"app": app, "env": env, "kind": kind, "db": app.replace("-", "_"),
              "module": app.replace("-", "_"), "health_url": health_url(kind)}
    return {root / "hosts" / f"{env}.yaml": render("inventory.yaml", values),
            root / "playbooks" / f"{app}.yaml": render(f"playbook-{kind}.yaml", values)}


def write_project(root: Path, rep: Reporter, *, kind: str = "demo", env: str = "production",
                  app: str | None = None, force: bool = False) -> int:
    if kind not in KINDS:
        raise ConfigError(f"--kind {kind}: expected one of {', '.join(KINDS)}")
    if not _ENV_RE.match(env):
        raise ConfigError(f"--env {env}: expected lowercase letters, digits, _ and -, starting with a letter")
    if not root.is_dir():
        raise ConfigError(f"--root {root}: no such directory")
    app = app or app_name(root)
    if not _APP_RE.match(app) or app in _YAML_WORDS:
        raise ConfigError(f"--app {app}: expected lowercase letters, digits and -, starting with a "
                          f"letter (not {', '.join(_YAML_WORDS)})")
    out = files(root, kind=kind, env=env, app=app)
    existing = [p for p in out if p.exists()]
    if existing and not force:
        raise Refused(f"init: {', '.join(_rel(p, root) for p in existing)} already "
                      f"{'exists' if len(existing) == 1 else 'exist'}; nothing was written",
                      hint="--force overwrites them (hosts/known_hosts is never overwritten)")
    cfg = validated(root, env, out)
    for path, text in out.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        rep.event("notice", message=f"wrote {_rel(path, root)}")
    known = root / "hosts" / "known_hosts"
    if not known.exists():
        known.write_text((TEMPLATES / "known_hosts").read_text(encoding="utf-8"), encoding="utf-8")
        rep.event("notice", message=f"wrote {_rel(known, root)} (no keys yet: add your hosts')")
    rep.event("notice", message=f"{cfg.env}: loads: playbook {app} (extends {kind}), hosts "
                                f"{', '.join(h.name for h in cfg.hosts)} (placeholder addresses)")
    write_tasks(root, rep, app=app, env=env)
    write_sudoers(cfg, root, rep, kind=kind, force=force)
    rep.event("notice", message=f"next: `deployer deploy --env {env} --dry-run --offline` shows the "
                                f"plan now; then your hosts' addresses in hosts/{env}.yaml, their keys "
                                f"in hosts/known_hosts, `deployer preflight --env {env}` and "
                                f"`deployer deploy --env {env} --dry-run`")
    return 0


def validated(root: Path, env: str, out: dict[Path, str]) -> Config:
    """The config `out` (path -> text) gives once written into `root`, loaded from a scratch copy
    of the project's playbooks and hosts/ with those files in it; ConfigError when it does not
    load (nothing is written)."""
    with tempfile.TemporaryDirectory(prefix="deployer-init-") as scratch:
        copy = Path(scratch)
        for directory in ("playbooks", "hosts"):
            if (root / directory).is_dir():
                shutil.copytree(root / directory, copy / directory, symlinks=True)
        for path, text in out.items():
            target = copy / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        known = copy / "hosts" / "known_hosts"
        if not known.exists():
            known.write_text((TEMPLATES / "known_hosts").read_text(encoding="utf-8"), encoding="utf-8")
        try:
            return load_config(env, root=copy, environ={})
        except ConfigError as exc:
            raise ConfigError(f"init: the files it would write do not load, so none was written:\n"
                              f"{exc.message}", hint="--app NAME sets the app's name") from None
TASKS_IMPORT = "from deployer.tasks import ns"


def write_tasks(root: Path, rep: Reporter, *, app: str, env: str) -> None:
    """tasks.py: deployer's Invoke collection in one import; a tasks.py that exists is the
    project's own, never rewritten: a notice says what line to add when it lacks it."""
    path = root / "tasks.py"
    if not path.exists():
        path.write_text(render("tasks.py", {"app": app, "env": env}), encoding="utf-8")
        rep.event("notice", message="wrote tasks.py (every deployer verb as an Invoke task: `inv --list`)")
    elif TASKS_IMPORT in path.read_text(encoding="utf-8", errors="replace"):
        rep.event("notice", message="kept tasks.py (it imports deployer's tasks already)")
    else:
        rep.event("notice", message=f"kept tasks.py (yours): add `{TASKS_IMPORT}` to it for "
                                    "`inv deploy` and the other verbs, or use `deployer VERB`")


def write_sudoers(cfg: Config, root: Path, rep: Reporter, *, kind: str, force: bool = False) -> None:
    """deploy/sudoers: the sudo rules of the inventory's SSH user for what the playbook runs as
    root (`deploy` when the inventory logs in as root), with how to install them."""
    path = root / "deploy" / "sudoers"
    if path.exists() and not force:
        rep.event("notice", message=f"kept {_rel(path, root)} (it exists; --force rewrites it)")
        return
    user = next((h.user for h in cfg.hosts if h.user != "root"), "deploy")
    values = {"user": user, "app": cfg.playbook.name, "kind": kind, "env": cfg.env}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render("sudoers", values) + sudoers(cfg, user), encoding="utf-8")
    rep.event("notice", message=f"wrote {_rel(path, root)} (the sudo rules of {user}: install it "
                                f"as /etc/sudoers.d/{cfg.playbook.name}, see its first lines)")


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
