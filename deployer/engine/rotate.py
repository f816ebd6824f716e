"""`secrets set`: one secret file rotated as a release. The new content goes into a new release of
the commit every app host serves (its own copy of the file, mode 0600 from creation), rolled out
in waves through the gate like any deploy; a failing gate switches back to the previous release,
whose file (or link to shared/) still holds the previous content. Once the gate passed everywhere,
finalize copies the new content to shared/ on each host, so later releases link it.

The content is read from stdin or an environment variable, never from the command line; it goes
to each host on the SSH channel's stdin and is masked in every output (the run's redactor)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO

from ..config import Config
from ..errors import ConfigError, Refused
from ..output import Reporter
from ..session import Session
from ..shell import Secret
from .deploy import DeployRun, served

MAX_BYTES = 1024 * 1024


def names(cfg: Config) -> list[str]:
    """What `secrets set` may rotate: the shared files each release links (the playbook's
    `shared_files`, where the inventory's `secret_files` go too), so that a release can hold its
    own copy and a rollback gives the previous one back."""
    return sorted(n for n in cfg.playbook.shared_files if cfg.playbook.per_release(n))


def check_name(cfg: Config, name: str) -> None:
    pb = cfg.playbook
    if (d := pb.in_shared_dir(name)) is not None:
        raise ConfigError(f"secrets set {name}: it lies in the shared dir {d!r} of playbook {pb.name!r}, which "
                          "every release shares: a rotation there could not be rolled back")
    if name not in names(cfg):
        known = ", ".join(names(cfg)) or "none"
        raise ConfigError(f"secrets set {name}: not a secret file of env {cfg.env!r}: the releases do not link "
                          f"it from shared/, so a rotation could not be rolled back (playbook {pb.name!r}'s "
                          f"shared_files: {known})")


def read_value(name: str, from_env: str | None, environ: Mapping[str, str], stdin: IO[str]) -> Secret:
    """The new content: the variable `from_env`, else stdin (all of it; a terminal is refused:
    what is typed there ends up in scrollback)."""
    if from_env is not None:
        if from_env not in environ:
            raise ConfigError(f"secrets set {name}: --from-env {from_env}: the variable is not set")
        value = environ[from_env]
    else:
        if stdin.isatty():
            raise ConfigError(f"secrets set {name}: give the new content on stdin (e.g. `< file`) or with "
                              "--from-env VAR, not typed at a terminal")
        value = stdin.read(MAX_BYTES + 1)
    if not value.strip():
        raise ConfigError(f"secrets set {name}: the new content is empty; nothing changed")
    if len(value.encode()) > MAX_BYTES:
        raise ConfigError(f"secrets set {name}: the new content is over {MAX_BYTES // 1024} KiB")
    return Secret(value)


def served_commit(cfg: Config, s: Session) -> str:
    """The commit every app host serves (refused when they differ or serve nothing), read in the
    rotation's own session (its connections then serve the deploy)."""
    facts = s.facts(cfg.app_hosts)
    facts.require_reachable("secrets set")
    history = s.history()
    now = served(cfg, facts, history)
    commits = {commit for _, commit in now.values()}
    if len(commits) != 1 or None in commits:
        seen = ", ".join(f"{h}: {rel or 'none'}" for h, (rel, _) in sorted(now.items()))
        raise Refused(f"secrets set: the app hosts do not all serve one release known to the ledger ({seen}); "
                      "nothing changed")
    return commits.pop()


def reason(name: str) -> str:
    return f"rotate secret {name}"


def run(cfg: Config, rep: Reporter, *, name: str, value: Secret, commit: str, lock_wait: float,
        session: Session) -> DeployRun:
    return DeployRun(cfg, rep, ref=commit, lock_wait=lock_wait, reason=reason(name), rotate=(name, value),
                     session=session)
