"""The go-live checklist as checks (`inv preflight --env E`): pure definitions, no I/O.

Each `Check` has a name, the remote `Command` it runs (built like deployer/commands: every
value quoted), the roles it is meant for, the hosts it runs on (resolved from the config),
and a pure ``parse(stdout, exit_status) -> (ok, detail)``. A runner (not here) runs
``check.command`` on each of ``check.hosts`` through the transport and turns the answer into a
`Result` with ``check.result(host, stdout, exit_status)``; a connection or timeout failure
becomes ``check.error(host, message)``. A check whose ``command`` is None is local (the deploy
window): ``check.run_local()`` gives its results.

A failed check is FAIL, or WARN when the check is not ``blocking`` (informational ones).
``exit_code(results)`` is 0 when nothing FAILed, 3 (refused) otherwise.

Checks: ``ssh`` (``true``; the caller verifies the host key when it connects), ``disk``
(free MiB from ``df -Pk``), ``binaries`` (per role), ``app_env`` (the shared ``.env``:
APP_DEBUG, APP_ENV, mode, not in git; never prints its content), ``pending_migrations``
(informational), ``lock`` (free or held) and ``window`` (deploy windows and freezes).
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from . import windows as W
from .commands import lock as LK
from .commands import releases as R
from .config import Config, Host
from .errors import ConfigError
from .shell import Command, q, raw

PASS, FAIL, WARN = "PASS", "FAIL", "WARN"
LOCAL = "(local)"
#: `Check.roles` of the checks that run on every host
ALL = ("*",)
#: Same threshold as the deploy's own preflight (deployer.pipeline.MIN_FREE_KB).
DEFAULT_MIN_FREE_MIB = 100
APP_BINARIES = ("git", "tar", "timeout", "flock", "sha256sum")
DB_TOOLS = ("pg_dump", "pg_restore", "psql")
#: the backup stage also needs these on the db host (deployer.commands.backup)
DB_BINARIES = ("sha256sum", "runuser")
LB_BINARIES = ("socat",)
LEDGER_BINARIES = ("flock",)
NO_RELEASE = "@@no-release"

Parse = Callable[[str, "int | None"], tuple[bool, str]]



@dataclass(frozen=True)
class Result:
    host: str
    check: str
    status: str  # PASS, FAIL or WARN
    detail: str


@dataclass(frozen=True)
class Check:
    name: str
    command: Command | None
    roles: tuple[str, ...]
    parse: Parse
    hosts: tuple[str, ...] = ()
    blocking: bool = True
    #: what the check is about, for --help style listings
    about: str = ""

    @property
    def local(self) -> bool:
        return self.command is None

    def result(self, host: str, stdout: str, exit_status: int | None) -> Result:
        ok, detail = self.parse(stdout, exit_status)
        return Result(host, self.name, PASS if ok else (FAIL if self.blocking else WARN), detail)

    def error(self, host: str, message: str) -> Result:
        """The check could not run on `host` (unreachable, timeout, ...)."""
        first = message.strip().splitlines()[0] if message.strip() else "error"
        return Result(host, self.name, FAIL if self.blocking else WARN, f"could not run: {first}")

    def run_local(self) -> list[Result]:
        if not self.local:
            raise ValueError(f"check {self.name!r} runs on hosts; use result()")
        return [self.result(LOCAL, "", 0)]


# ---------------------------------------------------------------- ssh


def ssh_command() -> Command:
    return raw("true")


def parse_ssh(stdout: str, exit_status: int | None) -> tuple[bool, str]:
    if exit_status == 0:
        return True, "reachable, host key verified"
    return False, f"`true` exited {exit_status}"


# ---------------------------------------------------------------- disk

_DF_RE = re.compile(r"\s(\d+)\s+(\d+)\s+(\d+)\s+(\d+)%\s+(/.*)$")


def disk_command(path: str) -> Command:
    """df -Pk of `path`, or of its nearest existing parent (a first deploy creates it)."""
    return raw(
        f"d={q(path)}; while [ ! -e \"$d\" ]; do d=$(dirname \"$d\"); done; "
        f"echo \"path=$d\"; df -Pk \"$d\""
    )


def parse_disk(path: str, min_free_mib: int) -> Parse:
    def parse(stdout: str, exit_status: int | None) -> tuple[bool, str]:
        measured = path
        avail_kb = None
        for line in stdout.splitlines():
            if line.startswith("path="):
                measured = line[5:].strip() or path
                continue
            m = _DF_RE.search(line)
            if m:
                avail_kb = int(m.group(3))
        if exit_status != 0 or avail_kb is None:
            return False, f"cannot read free space under {path} (df exited {exit_status})"
        free = avail_kb // 1024
        where = path if measured == path else f"{path} (not created yet; measured {measured})"
        if free < min_free_mib:
            return False, f"{free} MiB free under {where}, needs >= {min_free_mib} MiB"
        return True, f"{free} MiB free under {where}"

    return parse


# ---------------------------------------------------------------- binaries


def binaries_command(names: Sequence[str]) -> Command:
    """`found X` / `missing X` per binary: names are looked up in PATH, paths must be executable."""
    parts = []
    plain = [n for n in names if "/" not in n]
    paths = [n for n in names if "/" in n]
    if plain:
        parts.append(f"for b in {' '.join(q(n) for n in plain)}; do "
                     "if command -v \"$b\" >/dev/null 2>&1; then echo \"found $b\"; "
                     "else echo \"missing $b\"; fi; done")
    if paths:
        parts.append(f"for b in {' '.join(q(n) for n in paths)}; do "
                     "if [ -x \"$b\" ]; then echo \"found $b\"; "
                     "else echo \"missing $b\"; fi; done")
    return raw("; ".join(parts))


def parse_binaries(names: Sequence[str]) -> Parse:
    def parse(stdout: str, exit_status: int | None) -> tuple[bool, str]:
        found = {line[6:].strip() for line in stdout.splitlines() if line.startswith("found ")}
        missing = [n for n in names if n not in found]
        if missing:
            return False, "missing: " + ", ".join(missing)
        return True, "present: " + ", ".join(posixpath.basename(n) for n in names)

    return parse


# ---------------------------------------------------------------- .env

# The value of the last KEY= line of the file, without spaces, quotes or a trailing comment.
_ENV_VALUE = ("val() { grep -E \"^[[:space:]]*(export[[:space:]]+)?$1[[:space:]]*=\" \"$f\" "
              "| tail -n 1 | cut -d= -f2- | sed 's/[[:space:]]#.*//' | tr -d \"[:space:]\\\"'\"; }")


def app_env_command(shared_path: str, mirror: str) -> Command:
    """Findings about <shared_path>/.env, one `key=value` per line; never the file's content.

    env_file=present|missing|unreadable; mode=<octal>; app_debug=true|false|unset|other;
    app_env=<identifier>|unset|other; env_tracked=yes|no|unknown (a .env in the HEAD tree
    of the host's repo mirror; unknown before the first deploy made the mirror).
    """
    env_file = posixpath.join(shared_path, ".env")
    return raw(
        f"f={q(env_file)}; r={q(mirror)}; {_ENV_VALUE}; "
        "if [ -f \"$f\" ] && [ ! -r \"$f\" ]; then echo env_file=unreadable; "
        "elif [ -f \"$f\" ]; then echo env_file=present; "
        "echo \"mode=$(stat -L -c %a \"$f\")\"; "
        "d=$(val APP_DEBUG | tr '[:upper:]' '[:lower:]'); "
        "case \"$d\" in '') echo app_debug=unset;; "
        "true|'(true)'|1|on|yes) echo app_debug=true;; "
        "false|'(false)'|0|off|no|null|'(null)'|empty|'(empty)') echo app_debug=false;; "
        "*) echo app_debug=other;; esac; "
        "e=$(val APP_ENV); "
        "case \"$e\" in '') echo app_env=unset;; *[!A-Za-z0-9_.-]*) echo app_env=other;; "
        "*) if [ ${#e} -le 32 ]; then echo \"app_env=$e\"; else echo app_env=other; fi;; esac; "
        "else echo env_file=missing; fi; "
        "if [ -d \"$r\" ]; then "
        "if [ -n \"$(git -C \"$r\" ls-tree --name-only HEAD .env 2>/dev/null)\" ]; "
        "then echo env_tracked=yes; else echo env_tracked=no; fi; "
        "else echo env_tracked=unknown; fi"
    )


def parse_app_env(env_file: str, expect_app_env: str | None = "production") -> Parse:
    """APP_DEBUG not true, APP_ENV == expect_app_env when set (None: only not local/dev),
    mode without group/other bits (0600), .env not tracked by git."""

    def parse(stdout: str, exit_status: int | None) -> tuple[bool, str]:
        facts: dict[str, str] = {}
        for line in stdout.splitlines():
            key, sep, value = line.strip().partition("=")
            if sep:
                facts[key] = value
        if exit_status != 0 or "env_tracked" not in facts:
            return False, f"cannot inspect {env_file} (exit {exit_status})"
        problems: list[str] = []
        notes: list[str] = []
        if facts.get("env_file") == "missing":
            problems.append(f"{env_file} is missing (the playbook links it into every release)")
        elif facts.get("env_file") == "unreadable":
            problems.append(f"{env_file} is not readable by the SSH user: cannot verify it")
        else:
            debug = facts.get("app_debug", "unset")
            if debug == "true":
                problems.append("APP_DEBUG is true (must be false in production)")
            elif debug == "other":
                problems.append("APP_DEBUG has a value that is not false (frameworks read it as "
                                "true)")
            else:
                notes.append(f"APP_DEBUG {'unset' if debug == 'unset' else 'false'}")
            app_env = facts.get("app_env", "unset")
            if app_env == "other":
                problems.append("APP_ENV has an unexpected value")
            elif app_env != "unset" and expect_app_env and app_env != expect_app_env:
                problems.append(f"APP_ENV is {app_env!r} (must be {expect_app_env!r})")
            elif app_env in ("local", "dev", "development", "testing"):
                problems.append(f"APP_ENV is {app_env!r}")
            else:
                notes.append(f"APP_ENV {app_env}")
            mode = facts.get("mode", "")
            if not re.fullmatch(r"[0-7]{3,4}", mode):
                problems.append(f"cannot read the mode of {env_file}")
            elif int(mode, 8) & 0o077:
                problems.append(f"mode {mode} (must be 600: readable by its owner only)")
            else:
                notes.append(f"mode {mode}")
        tracked = facts["env_tracked"]
        if tracked == "yes":
            problems.append(".env is tracked by git (in the repo's HEAD tree): remove it from "
                            "the repository and rotate its secrets")
        elif tracked == "unknown":
            notes.append("git not checked (no repo mirror yet)")
        else:
            notes.append("not in git")
        if problems:
            return False, "; ".join(problems)
        return True, ", ".join(notes)

    return parse


# ---------------------------------------------------------------- pending migrations


def pending_command(step_command: Command, release_path: str) -> Command:
    """The playbook's migrate.pending step, when `release_path` exists."""
    test = f"if [ -d {q(release_path)} ]; then "
    tail = f"\nelse echo {NO_RELEASE}; fi"
    return Command(test + step_command.script + tail, test + step_command.display + tail,
                   step_command.timeout)


def parse_pending(stdout: str, exit_status: int | None) -> tuple[bool, str]:
    """Informational: ok with the list; not ok (a WARN) only when it cannot be read."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if lines and lines[-1] == NO_RELEASE:
        return True, "no release deployed yet: every migration will run on the first deploy"
    if exit_status != 0:
        return False, f"could not list pending migrations (exit {exit_status})"
    try:
        pending = json.loads(lines[-1]) if lines else []
    except ValueError:
        return False, "migrate.pending did not print a JSON list"
    if not isinstance(pending, list) or not all(isinstance(m, dict) for m in pending):
        return False, "migrate.pending did not print a JSON list of objects"
    if not pending:
        return True, "none pending"
    names = []
    for m in pending:
        name = str(m.get("name", m.get("version", "?")))
        if not m.get("online_safe"):
            name += " (not online-safe: maintenance mode)"
        names.append(name)
    return True, f"{len(pending)} pending: " + ", ".join(names)


# ---------------------------------------------------------------- lock


def parse_lock(stdout: str, exit_status: int | None) -> tuple[bool, str]:
    if exit_status != 0:
        return False, f"cannot read the lock (exit {exit_status})"
    held = LK.parse_held(stdout)
    if held is None:
        return True, "free"
    return False, f"held by {held.describe()}"


# ---------------------------------------------------------------- window


def window_parse(windows: Sequence[W.Window], freezes: Sequence[W.Freeze],
                 now: Callable[[], datetime]) -> Parse:
    def parse(stdout: str, exit_status: int | None) -> tuple[bool, str]:
        decision = W.decide(windows, freezes, now())
        return decision.allowed, decision.reason

    return parse


def _utc_now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- the checklist


def _names(hosts: Iterable[Host]) -> tuple[str, ...]:
    return tuple(h.name for h in hosts)


def checks_for(cfg: Config, *, min_free_mib: int = DEFAULT_MIN_FREE_MIB,
               expect_app_env: str | None = "production", release_path: str | None = None,
               now: Callable[[], datetime] | datetime | None = None) -> list[Check]:
    """The checks of `cfg`'s environment, in the order of a report.

    `release_path`: where pending migrations are listed (default: the live release,
    ``<deploy_to>/current``). `now`: the clock of the window check (default: UTC now).
    """
    if isinstance(now, datetime):
        fixed = now
        clock: Callable[[], datetime] = lambda: fixed  # noqa: E731
    else:
        clock = now or _utc_now
    app_roles = ("web", "worker")
    app = cfg.app_hosts
    p = R.paths(cfg.deploy_to)
    mirror = posixpath.join(cfg.deploy_to, "repo")
    out: list[Check] = [
        Check("ssh", ssh_command(), ALL, parse_ssh, _names(cfg.hosts),
              about="reachable over SSH with a verified host key"),
        Check("disk", disk_command(cfg.deploy_to), ALL, parse_disk(cfg.deploy_to, min_free_mib),
              _names(cfg.hosts), about=f"free space under {cfg.deploy_to}"),
    ]
    if cfg.database is not None and cfg.db_host is not None:
        backups = cfg.database.backup_dir
        out.append(Check("disk", disk_command(backups), ("db",),
                         parse_disk(backups, min_free_mib), (cfg.db_host.name,),
                         about=f"free space for backups under {backups}"))
    out.append(Check("binaries", binaries_command(APP_BINARIES), app_roles,
                     parse_binaries(APP_BINARIES), _names(app), about="tools of the pull stage"))
    if cfg.database is not None and cfg.db_host is not None:
        bin_dir = cfg.database.bin_dir
        tools = tuple(posixpath.join(bin_dir, t) if bin_dir else t for t in DB_TOOLS) + DB_BINARIES
        out.append(Check("binaries", binaries_command(tools), ("db",), parse_binaries(tools),
                         (cfg.db_host.name,), about="PostgreSQL client tools for backups"))
    if cfg.lb is not None and cfg.lb_host is not None:
        out.append(Check("binaries", binaries_command(LB_BINARIES), ("lb",),
                         parse_binaries(LB_BINARIES), (cfg.lb_host.name,),
                         about="socat, to drive the HAProxy admin socket"))
    ledger = cfg.ledger_host
    if ledger not in app:
        out.append(Check("binaries", binaries_command(LEDGER_BINARIES), ("ledger",),
                         parse_binaries(LEDGER_BINARIES), (ledger.name,),
                         about="flock, to append to the ledger"))
    if ".env" in cfg.playbook.shared_files:
        env_file = posixpath.join(cfg.shared_path, ".env")
        out.append(Check("app_env", app_env_command(cfg.shared_path, mirror), app_roles,
                         parse_app_env(env_file, expect_app_env), _names(app),
                         about="the shared .env: APP_DEBUG, APP_ENV, mode 0600, not in git"))
    pending = cfg.playbook.steps("migrate", "pending")
    host = cfg.migrate_host
    if pending and host is not None:
        path = release_path or cfg.current_path
        try:
            step = pending[0].command(cfg.template_values(host, release_path=path))
        except ConfigError as exc:
            msg = exc.message
            out.append(Check("pending_migrations", None, ("migrate",),
                             lambda s, e, msg=msg: (False, f"cannot render migrate.pending: {msg}"),
                             blocking=False))
        else:
            out.append(Check("pending_migrations", pending_command(step, path), ("migrate",),
                             parse_pending, (host.name,), blocking=False,
                             about=f"pending migrations of {path}"))
    out.append(Check("lock", LK.read(p["state_path"]), ("ledger",), parse_lock, (ledger.name,),
                     about="the env lock is free"))
    out.append(Check("window", None, (), window_parse(cfg.windows, cfg.freezes, clock),
                     about="inside a deploy window, outside every freeze"))
    return out


def table(results: Iterable[Result]) -> list[list[str]]:
    """Rows [host, check, PASS/FAIL/WARN, detail], in the order given."""
    return [[r.host, r.check, r.status, r.detail] for r in results]


def exit_code(results: Iterable[Result]) -> int:
    """0 when no check FAILed (WARN is fine), 3 (refused) otherwise."""
    return 3 if any(r.status == FAIL for r in results) else 0


__all__ = ["Check", "DEFAULT_MIN_FREE_MIB", "FAIL", "LOCAL", "PASS", "Result", "WARN",
           "checks_for", "exit_code", "table"]
