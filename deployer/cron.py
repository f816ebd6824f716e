"""Crontab lines for an env's scheduled jobs, and idempotent install/removal of its block.

An env's jobs live in one marked block of the crontab::

    # BEGIN deployer prod
    PATH=/usr/local/bin:/usr/bin:/bin
    SHELL=/bin/sh
    0 3 * * 0 cd /srv/shop && /usr/bin/flock -n /run/lock/deployer-prod-maintenance.lock \
/home/ops/.venv/bin/deployer maintenance run --env prod >> /var/log/deployer/deployer-prod-maintenance.log 2>&1
    # END deployer prod

(one line per job in the real crontab): the project root (the directory holding hosts/), the
absolute path of the installed `deployer` program and the schedule's verb (the Invoke task name
``maintenance.run`` is ``deployer maintenance run``), so the line works for any install (a
virtualenv, pipx, a system package) without the user's PATH. ``flock -n`` makes an overrunning
job skip its next run instead of piling up. Everything here is pure text processing: reading
and writing the real crontab (``crontab -l`` / ``crontab -``) and trying a job's command
(`check_argv`) are the caller's job.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

from deployer.shell import quote

HEADER = ("PATH=/usr/local/bin:/usr/bin:/bin", "SHELL=/bin/sh")
FLOCK = "/usr/bin/flock"
#: the PATH `cron install` tries a job's command with: cron's own default, nothing of the user's
CHECK_PATH = "/usr/bin:/bin"
NICKNAMES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")

_ENV_RE = re.compile(r"[a-z][a-z0-9_-]*\Z")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]*\Z")
_TASK_RE = re.compile(r"[a-z][a-z0-9_-]*(?:\.[a-z][a-z0-9_-]*)*\Z")
# What Vixie cron/cronie accept in a field: numbers, *, ranges, lists, steps, and month and
# day names in their fields. (croniter also knows L, W, # and H, which crontab rejects.)
_FIELD_RE = re.compile(r"[0-9A-Za-z*,/-]+\Z")
_NAMES = {
    3: {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"},
    4: {"sun", "mon", "tue", "wed", "thu", "fri", "sat"},
}


def _field_ok(index: int, text: str) -> bool:
    if not _FIELD_RE.match(text):
        return False
    words = re.findall(r"[A-Za-z]+", text)
    return all(w.lower() in _NAMES.get(index, ()) for w in words)


def validate_expression(expr: object) -> str:
    """Return a 5-field cron expression (or @daily-style nickname) stripped, else ValueError.

    The expression must parse with croniter, use only what a real crontab accepts, and fire
    at least once (``0 0 30 2 *`` never does).
    """
    if not isinstance(expr, str):
        raise TypeError(f"expected a cron expression string, got {expr!r}")
    from croniter import CroniterBadDateError, CroniterError, croniter  # (only when schedules are used)

    text = " ".join(expr.split())
    bad = ValueError(f"invalid cron expression {expr!r}")
    if text.startswith("@"):
        if text.lower() not in NICKNAMES:
            raise bad
    else:
        fields = text.split(" ")
        if len(fields) != 5 or not all(_field_ok(i, f) for i, f in enumerate(fields)):
            raise bad
        if not croniter.is_valid(text):
            raise bad
    try:
        croniter(text, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"cron expression {expr!r} never fires") from None
    except (CroniterError, ValueError, KeyError, IndexError, TypeError):
        raise bad from None
    return text


def validate_task(name: object) -> str:
    """Return an Invoke task name such as ``backup.run``, else ValueError."""
    if not isinstance(name, str) or not _TASK_RE.match(name):
        raise ValueError(f"invalid task name {name!r} (expected a deployer verb named as its "
                         "Invoke task, such as maintenance.run)")
    return name


@dataclass(frozen=True)
class Schedule:
    """One scheduled job: a deployer verb, named as its Invoke task (``maintenance.run``), run by
    cron with ``--env <env>``."""

    name: str
    cron: str
    command: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(f"invalid schedule name {self.name!r} (use lowercase letters, "
                             "digits and -)")
        object.__setattr__(self, "cron", validate_expression(self.cron))
        validate_task(self.command)


def _abs(value: str | os.PathLike[str], what: str) -> PurePosixPath:
    text = os.fspath(value)
    if not isinstance(text, str):
        raise TypeError(f"{what}: bytes paths are not supported")
    if "\n" in text or "\r" in text or "\0" in text:
        raise ValueError(f"{what}: a path cannot contain a newline or NUL: {text!r}")
    path = PurePosixPath(text)
    if not path.is_absolute():
        raise ValueError(f"{what}: expected an absolute path, got {text!r}")
    return path


def _q(value: str | os.PathLike[str]) -> str:
    # cron turns an unescaped % in the command into a newline; \% is a literal %.
    return quote(value)[0].replace("%", "\\%")


def _sh(value: str | os.PathLike[str]) -> str:
    return quote(value)[0]


def verb_words(command: str) -> list[str]:
    """The `deployer` words of an Invoke task name: ``maintenance.run`` -> maintenance run."""
    return validate_task(command).split(".")


def job_command(env: str, schedule: Schedule, *, project_dir: PurePosixPath, deployer_path: PurePosixPath,
                lock: PurePosixPath, for_cron: bool = True) -> str:
    """``cd <project_dir> && flock -n <lock> <deployer_path> <verb words> --env <env>``, each word
    quoted; for a crontab line (`for_cron`) a % is escaped as cron needs it, else as sh reads it."""
    q = _q if for_cron else _sh
    words = " ".join(q(w) for w in (deployer_path, *verb_words(schedule.command), "--env", env))
    return f"cd {q(project_dir)} && {FLOCK} -n {q(lock)} {words}"


def check_argv(command: str, home: str | os.PathLike[str]) -> list[str]:
    """How `cron install` tries a job's command before installing it: with --help appended, in
    the environment cron gives it (no variables but HOME and a minimal PATH, /bin/sh)."""
    return ["env", "-i", f"HOME={os.fspath(home)}", f"PATH={CHECK_PATH}", "/bin/sh", "-c",
            f"{command} --help"]


def cron_lines(env: str, schedules: Iterable[Schedule], *, project_dir: str | os.PathLike[str],
               deployer_path: str | os.PathLike[str], log_dir: str | os.PathLike[str],
               lock_dir: str | os.PathLike[str]) -> list[str]:
    """The crontab lines (without markers) of `env`'s schedules; [] when there are none.

    The first lines set PATH and SHELL; each job line runs
    ``cd <project_dir> && flock -n <lock> <deployer_path> <verb words> --env <env> >> <log> 2>&1``
    with every path absolute and shell-quoted (`job_command`).
    """
    if not isinstance(env, str) or not _ENV_RE.match(env):
        raise ValueError(f"invalid env name {env!r}")
    schedules = list(schedules)
    if not schedules:
        return []
    paths = {"project_dir": _abs(project_dir, "project_dir"),
             "deployer_path": _abs(deployer_path, "deployer_path")}
    logs, locks = _abs(log_dir, "log_dir"), _abs(lock_dir, "lock_dir")
    names: set[str] = set()
    lines = list(HEADER)
    for schedule in schedules:
        if schedule.name in names:
            raise ValueError(f"duplicate schedule name {schedule.name!r}")
        names.add(schedule.name)
        stem = f"deployer-{env}-{schedule.name}"
        command = job_command(env, schedule, lock=locks / f"{stem}.lock", **paths)
        lines.append(f"{schedule.cron} {command} >> {_q(logs / (stem + '.log'))} 2>&1")
    return lines


def begin_marker(env: str) -> str:
    return f"# BEGIN deployer {env}"


def end_marker(env: str) -> str:
    return f"# END deployer {env}"


def render_block(env: str, lines: Iterable[str]) -> str:
    """The marked block of `env` (newline-terminated); '' when there are no lines."""
    lines = list(lines)
    for line in lines:
        if "\n" in line or "\r" in line:
            raise ValueError(f"a crontab line cannot contain a newline: {line!r}")
    if not lines:
        return ""
    return "".join(f"{line}\n" for line in (begin_marker(env), *lines, end_marker(env)))


def _split(existing: str, env: str) -> tuple[list[str], int | None]:
    """Lines of `existing` without `env`'s block(s), and where the first block was."""
    if not isinstance(env, str) or not _ENV_RE.match(env):
        raise ValueError(f"invalid env name {env!r}")
    begin, end = begin_marker(env), end_marker(env)
    kept: list[str] = []
    position: int | None = None
    inside = False
    for number, line in enumerate(existing.splitlines(keepends=True), 1):
        bare = line.rstrip("\r\n")
        if not inside and bare == begin:
            inside = True
            if position is None:
                position = len(kept)
        elif inside and bare == end:
            inside = False
        elif inside and bare == begin:
            raise ValueError(f"crontab line {number}: {begin!r} inside an open block")
        elif not inside and bare == end:
            raise ValueError(f"crontab line {number}: {end!r} without {begin!r}")
        elif not inside:
            kept.append(line)
    if inside:
        raise ValueError(f"crontab: {begin!r} without {end!r}; fix the crontab by hand")
    return kept, position


def install_block(existing_crontab: str, env: str, lines: list[str]) -> str:
    """`existing_crontab` with `env`'s block replaced by `lines` (idempotent).

    Everything outside the block is kept byte for byte. The block stays where it was, or is
    appended at the end (after a newline is added to an unterminated last line). With no
    lines, the block is removed. A damaged block (BEGIN without END) raises ValueError
    rather than guessing what to delete.
    """
    kept, position = _split(existing_crontab, env)
    block = render_block(env, lines)
    if not block:
        return "".join(kept)
    if position is None:
        position = len(kept)
        if kept and not kept[-1].endswith("\n"):
            kept[-1] += "\n"
    kept.insert(position, block)
    return "".join(kept)


def remove_block(existing_crontab: str, env: str) -> str:
    """`existing_crontab` without `env`'s block; unchanged when there is none."""
    return install_block(existing_crontab, env, [])

