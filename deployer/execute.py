"""`deployer exec`: an ad-hoc command on the selected hosts, in parallel, output per host.

The command is built in deployer/shell.py like every other: several words are an argv, each
word quoted (`exec -- ls -la /srv/app`); a single word that needs a shell (spaces, pipes,
redirections, `$`...) is the operator's own shell text, run as written
(`exec -- 'df -h / | tail -1'`). It runs through the session's transport (one connection per
host, host keys checked, the command timeout enforced on the host).

Each host's output is printed when that host is done, every line prefixed ``host | `` (stdout
lines on stdout, stderr lines on stderr), or, with --output json, one `row` event per host
(table ``<env>: exec``; columns host, exit, stdout, stderr). Exit 0 when it succeeded on every
host; 1 when it failed somewhere (the last line names the hosts and their exit codes); 3 when
no host could be reached.
"""

from __future__ import annotations

import re
import sys
import threading

from .config import Config, Host
from .errors import CommandFailed, ConfigError, ConnectError, DeployerError, message_of
from .output import JsonReporter, Reporter
from .shell import Command, argv, raw

#: characters that make a single word shell text rather than a program name
_SHELL_RE = re.compile(r"""[\s|&;<>()$`\\"'*?\[\]#~{}=]""")


class ExecFailed(DeployerError):
    """The command failed (or could not run) on some hosts."""

    exit_code = 1


def command_for(words: list[str]) -> Command:
    if not words or not any(w.strip() for w in words):
        raise ConfigError("exec: no command given (deployer exec --env ENV -- COMMAND...)")
    if len(words) == 1 and _SHELL_RE.search(words[0]):
        return raw(words[0])  # the operator's shell text, as they would type it over ssh
    return argv(*words)


def _outcome(value: object) -> str:
    if isinstance(value, BaseException):
        if isinstance(value, CommandFailed) and value.timed_out:
            return "timed out"
        if isinstance(value, ConnectError):
            return "unreachable"
        return "failed"
    return f"exit {value.exited}" if value.exited else "ok"


def run_exec(cfg: Config, rep: Reporter, targets: list[Host], words: list[str], *, session=None) -> int:
    from .session import Session

    cmd = command_for(words)
    json_out = isinstance(getattr(rep, "inner", rep), JsonReporter)
    width = max(len(h.name) for h in targets)
    lock = threading.Lock()
    table = f"{cfg.env}: exec"

    def show(host: str, result=None, error: BaseException | None = None) -> None:
        out = result.stdout if result is not None else ""
        err = result.stderr if result is not None else (_error_text(error) if error else "")
        code = str(result.exited) if result is not None else ""
        with lock:
            if json_out:
                rep.event("row", table=table, host=host, exit=code or _outcome(error), stdout=out, stderr=err)
                return
            prefix = f"{host:<{width}} | "
            for line in _lines(out):
                sys.stdout.write(prefix + line + "\n")
            sys.stdout.flush()
            for line in _lines(err):
                sys.stderr.write(prefix + line + "\n")
            if result is not None and result.exited:
                sys.stderr.write(f"{prefix}(exit {result.exited})\n")
            elif error is not None:
                sys.stderr.write(f"{prefix}({_outcome(error)})\n")
            sys.stderr.flush()

    def one(h: Host):
        try:
            res = s.run(h, cmd, check=False)
        except Exception as exc:
            show(h.name, error=exc)
            raise
        show(h.name, res)
        return res

    s = session or Session(cfg, rep)
    try:
        group = s.each(targets, one)
    finally:
        s.close()
    failed = {h.name: _outcome(group.failures[h.name]) for h in targets if h.name in group.failures}
    failed.update({h.name: _outcome(group.results[h.name]) for h in targets
                   if h.name in group.results and group.results[h.name].exited})
    if not failed:
        return 0
    listing = ", ".join(f"{name} ({why})" for name, why in failed.items())
    if all(why == "unreachable" for why in failed.values()) and len(failed) == len(targets):
        raise ConnectError(f"exec: no host reachable: {listing}")
    raise ExecFailed(f"exec: failed on {len(failed)} of {len(targets)} host(s): {listing}")


def _lines(text: str) -> list[str]:
    return text.splitlines() if text.strip() else []


def _error_text(error: BaseException) -> str:
    if isinstance(error, CommandFailed):
        return error.stderr or ""
    return message_of(error)
