"""The checks that run on the hosts: for each, the remote `Command` (every value quoted) and
its pure parser ``(stdout, exit_status) -> (ok, detail)``."""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Sequence

from ..commands import lock as LK
from ..facts import pending_migrations
from ..shell import Command, q, raw
from .model import Parse
from .shared import Maker

NO_RELEASE = "@@no-release"


# ---------------------------------------------------------------- ssh


def ssh_command() -> Command:
    return raw("true")


def parse_ssh(stdout: str, exit_status: int | None) -> tuple[bool, str]:
    if exit_status == 0:
        return True, "reachable, host key verified"
    return False, f"`true` exited {exit_status}"


# ---------------------------------------------------------------- disk

_DF_RE = re.compile(r"\s(\d+)\s+(\d+)\s+(\d+)\s+(\d+)%\s+(/.*)$")


def nearest(path: str, var: str = "d") -> str:
    """Shell text setting `$var` to `path`, or to its nearest existing parent (a first deploy
    creates it)."""
    return f"{var}={q(path)}; while [ ! -e \"${var}\" ]; do {var}=$(dirname \"${var}\"); done"


def disk_command(path: str) -> Command:
    """df -Pk of `path`, or of its nearest existing parent (a first deploy creates it)."""
    return raw(f"{nearest(path)}; echo \"path=$d\"; df -Pk \"$d\"")


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


def parse_app_env(env_file: str, expect_app_env: str | None = "production", *,
                  app_keys: bool = True, made_by: Maker = Maker.NOBODY) -> Parse:
    """APP_DEBUG not true, APP_ENV == expect_app_env when set (None: only not local/dev) when
    `app_keys` (the playbook's preflight.app_env), mode without group/other bits (0600), .env
    not tracked by git. A missing .env fails unless `made_by` says the deploy writes it (the
    inventory's secret_files): then it will be created by the next deploy."""

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
        if facts.get("env_file") == "missing" and made_by is not Maker.NOBODY:
            notes.append(f"{env_file} will be created by the next deploy ({made_by.value})")
        elif facts.get("env_file") == "missing":
            problems.append(f"{env_file} is missing (the playbook links it into every release) and "
                            "nothing creates it: put it on the host, or give it in the inventory's "
                            "secret_files")
        elif facts.get("env_file") == "unreadable":
            problems.append(f"{env_file} is not readable by the SSH user: cannot verify it")
        else:
            if app_keys:
                _app_keys(facts, expect_app_env, problems, notes)
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


def _app_keys(facts: dict[str, str], expect_app_env: str | None, problems: list[str],
              notes: list[str]) -> None:
    """APP_DEBUG not true, APP_ENV == expect_app_env when set (None: only not local/dev)."""
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


# ---------------------------------------------------------------- the playbook's own checks


def parse_app_check(stdout: str, exit_status: int | None) -> tuple[bool, str]:
    """A playbook's preflight check: exit 0 passes; its last output line is the detail."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    last = lines[-1][:300] if lines else ""
    if exit_status == 0:
        return True, last or "ok"
    return False, last or f"exit {exit_status}"


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
        data = json.loads(lines[-1]) if lines else []
    except ValueError:
        return False, "migrate.pending did not print a JSON list"
    try:
        pending = pending_migrations(data)
    except ValueError:
        return False, "migrate.pending did not print a JSON list of objects"
    if not pending:
        return True, "none pending"
    names = []
    for m in pending:
        name = m.name if m.name is not None else "?"
        if not m.online_safe:
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
