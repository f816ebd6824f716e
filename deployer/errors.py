"""The typed exception tree. Every error carries the exit code of DESIGN.md."""

from __future__ import annotations


def interrupted(exc: BaseException) -> bool:
    """True for Ctrl-C (or SIGTERM, raised as KeyboardInterrupt) and for what Python raises
    instead of it when the signal struck inside a lock's `with` block: the KeyboardInterrupt is
    then the context of a RuntimeError ("release unlocked lock"), which must still end the run
    as an interruption (exit 130), not as a host failure or an internal error (exit 4)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


class DeployerError(Exception):
    """Base of every error deployer reports to a user."""

    exit_code = 4

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class DeployFailed(DeployerError):
    """The deploy failed and was rolled back: the fleet is consistent on the previous release."""

    exit_code = 1


class ConfigError(DeployerError):
    """Bad input or configuration; nothing was touched. Message starts with file: key path."""

    exit_code = 2


class Refused(DeployerError):
    """Refused before any change: lock held, outside a window, preflight failed."""

    exit_code = 3


class NeedsHuman(DeployerError):
    """A rollback failed or hosts disagree; `status` tells what to do."""

    exit_code = 4


class ConnectError(DeployerError):
    """A host could not be reached or its host key could not be verified."""

    exit_code = 3


class CommandFailed(DeployerError):
    """A remote command exited non-zero or timed out."""

    exit_code = 1

    def __init__(self, host: str, command: str, exit_status: int | None, stdout: str = "",
                 stderr: str = "", *, timed_out: bool = False):
        what = "timed out" if timed_out else f"exited {exit_status}"
        tail = "\n".join(stderr.strip().splitlines()[-10:])
        msg = f"{host}: `{command}` {what}"
        if tail:
            msg += f"\n{tail}"
        super().__init__(msg)
        self.host = host
        self.command = command
        self.exit_status = exit_status
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out


class Interrupted(DeployerError):
    exit_code = 130


class LockLost(NeedsHuman):
    """The run no longer holds its lock: it stops before changing anything more (no rollback:
    another run may be at work); `status` and `recover` tell what to do."""
