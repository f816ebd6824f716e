"""The typed exception tree. Every error carries the exit code of DESIGN.md."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: what a failed command's error keeps of each stream: its last lines, at most this many bytes
TAIL_LINES = 20
TAIL_BYTES = 4096
ELLIPSIS = "…"


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


def message_of(exc: BaseException) -> str:
    """What to tell a user of `exc`: a DeployerError's message (which may have been added to
    since it was raised), else its text, else the name of its type (a bare KeyboardInterrupt)."""
    if isinstance(exc, DeployerError) and exc.message:
        return exc.message
    return str(exc) or type(exc).__name__


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


class ConnectionLost(ConnectError):
    """An open connection closed under a command: what the command did on the host is unknown
    (it may have run whole, its answer lost)."""


def _last_lines(text: str, lines: int) -> tuple[list[str], int]:
    """The last `lines` lines of `text` (blank lines at either end dropped), and how many it has."""
    all_lines = text.strip("\n").splitlines()
    while all_lines and not all_lines[0].strip():
        all_lines.pop(0)
    return all_lines[-lines:] if lines else [], len(all_lines)


def _last_bytes(text: str, limit: int) -> str:
    """`text` cut to its last `limit` UTF-8 bytes, at a line start when one is in reach (else
    mid-line, marked with an ellipsis)."""
    data = text.encode()
    if len(data) <= limit:
        return text
    cut = data[-limit:].decode("utf-8", "ignore")
    newline = cut.find("\n")
    if 0 <= newline < len(cut) - 1:
        return cut[newline + 1:]
    return ELLIPSIS + cut[len(ELLIPSIS.encode()):]


@dataclass(frozen=True)
class OutputTail:
    """The end of what a failed command printed on each stream, bounded (`TAIL_LINES` lines,
    `TAIL_BYTES` bytes each) and masked: what its error shows, and the journal keeps."""

    stdout: str = ""
    stderr: str = ""
    #: how many lines each stream had (more than its tail shows when it was cut)
    stdout_lines: int = 0
    stderr_lines: int = 0

    @classmethod
    def of(cls, stdout: str, stderr: str, redact: Callable[[str], str] | None = None, *,
           lines: int = TAIL_LINES, max_bytes: int = TAIL_BYTES) -> OutputTail:
        """The tails of `stdout` and `stderr`: whole lines are cut first, then `redact` masks
        them (a line is never split before masking, so no secret escapes it half-cut), then
        the masked text is bounded to `max_bytes`. `redact` defaults to deployer.redact's
        generic patterns (KEY=value, URL credentials)."""
        if redact is None:
            from .redact import redact as generic

            redact = generic

        def one(text: str) -> tuple[str, int]:
            kept, total = _last_lines(text, lines)
            return _last_bytes(redact("\n".join(kept)), max_bytes), total

        out, n_out = one(stdout)
        err, n_err = one(stderr)
        return cls(out, err, n_out, n_err)

    def render(self) -> str:
        """Each non-empty stream, labelled (with how much was cut), its lines indented."""
        parts = []
        for name, text, total in (("stdout", self.stdout, self.stdout_lines),
                                  ("stderr", self.stderr, self.stderr_lines)):
            if not text.strip():
                continue
            shown = text.splitlines()
            cut = f" (last {len(shown)} of {total} lines)" if total > len(shown) else ""
            parts.append(f"{name}{cut}:")
            parts += [f"  {line}" for line in shown]
        return "\n".join(parts)


class CommandFailed(DeployerError):
    """A remote command exited non-zero or timed out. Its message is the host, the command and
    how it ended, then the tails of both streams, labelled (`OutputTail`, masked by `redact`:
    deployer.redact's generic patterns unless the run gives its own redactor)."""

    exit_code = 1

    def __init__(self, host: str, command: str, exit_status: int | None, stdout: str = "",
                 stderr: str = "", *, timed_out: bool = False,
                 redact: Callable[[str], str] | None = None):
        what = "timed out" if timed_out else f"exited {exit_status}"
        self.output = OutputTail.of(stdout, stderr, redact)
        self.headline = f"{host}: `{command}` {what}"
        shown = self.output.render()
        super().__init__(self.headline + (f"\n{shown}" if shown else ""))
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


class Fenced(LockLost):
    """A host refused a script of this run: it has seen a larger fencing token than the run's,
    so a newer run took the lock (deployer.commands.fence). The run ends as one that lost its lock."""

    def __init__(self, host: str, seen: int, token: int, hint: str = ""):
        super().__init__(f"fenced: {host} has seen fencing token {seen} > this run's {token}: a newer run "
                         "took the lock; this run stops before changing anything more"
                         + (f" ({hint})" if hint else ""))
        self.host, self.seen, self.token = host, seen, token
