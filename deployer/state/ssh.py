"""The default state backend: the lock (an atomic directory) and the ledger (append-only JSON
lines) on the ledger host, over the run's own SSH connection.

What every backend offers is `base.StateBackend` (see `deployer.state.s3_backend` for the one
that keeps them in an S3 bucket).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..commands import fence as FN
from ..commands import ledger as L
from ..commands import lock as LK
from ..errors import CommandFailed, DeployerError, Refused

if TYPE_CHECKING:
    from ..records import Record
    from ..sshconfig import Endpoint
    from .backups import BackupObject
    from .base import Runner


class SshState:
    """The state in directory `path` of the ledger host (`host`, its endpoint), reached with
    `transport`."""

    name = "ssh"

    def __init__(self, transport: Runner, host: Endpoint, path: str):
        self.transport = transport
        self.host = host
        self.path = path
        self._tokens: dict[str, int] = {}  # run -> the fencing token its acquire or take-over got

    @property
    def ident(self) -> str:
        """Where the state lives: a journal is shipped only to the ledger it was written for."""
        return f"{self.host.address}:{self.host.port}:{self.path}"

    def where(self) -> str:
        return self.host.name

    def _run(self, cmd, **kw):
        return self.transport.run(self.host, cmd, **kw)

    # -- the lock ---------------------------------------------------------------------------
    def acquire(self, info: dict) -> LK.LockInfo | None:
        """None when this run now holds the lock, else who holds it."""
        return self.acquire_and_read(info, read=False)[0]

    def acquire_and_read(self, info: dict, read: bool = True) -> tuple[LK.LockInfo | None, list[dict] | None]:
        """`acquire`, and with `read` the ledger's events read in the same round trip (None
        when not read)."""
        run_id = info.get("run", "")
        cmd = LK.acquire_then_read(self.path, run_id, L.read(self.path)) if read else LK.acquire(self.path, run_id)
        try:
            res = self._run(cmd, stdin=json.dumps(info) + "\n", timeout=60)
        except CommandFailed as exc:
            if exc.exit_status == LK.UNWRITABLE:
                raise Refused(LK.unwritable(self.host.name, self.path, exc.stderr)) from None
            raise
        out, ledger = LK.split_ledger(res.stdout)
        held = LK.parse_held(out)
        token = FN.parse_token(out)
        if held is None and ("acquired" not in out.split() or token is None):
            raise Refused(f"lock: unexpected answer from {self.host.name}: {out.strip()[:200]!r}")
        if held is None:
            self._tokens[run_id] = token
        return held, (L.decode(ledger) if ledger is not None else None)

    def token(self, run_id: str) -> int | None:
        """The fencing token `run_id` got with the lock (None: it took none here)."""
        return self._tokens.get(run_id)

    def heartbeat(self, run_id: str) -> bool:
        """True: beat recorded; False: the lock is no longer this run's. Raises if unreachable."""
        return self._run(LK.heartbeat(self.path, run_id), timeout=15, check=False).ok

    def release(self, run_id: str) -> None:
        self._run(LK.release(self.path, run_id), timeout=30)

    def read_lock(self) -> LK.LockInfo | None:
        return LK.parse_held(self._run(LK.read(self.path), timeout=30).stdout)

    def force_release(self) -> None:
        self._run(LK.force_release(self.path), timeout=30)

    def check_fence(self, run_id: str) -> None:
        """Nothing to check: this lock has no fencing token (the heartbeat tells a lost lock)."""

    def mark_paused(self, run_id: str) -> None:
        self._run(LK.mark_paused(self.path, run_id), timeout=30)

    def adopt(self, run_id: str, info: dict) -> bool:
        """Take over the paused run's lock, with a new fencing token."""
        res = self._run(LK.adopt(self.path, run_id), stdin=json.dumps(info) + "\n", check=False, timeout=30)
        token = FN.parse_token(res.stdout)
        if res.ok and token is not None:
            self._tokens[run_id] = token
        return res.ok and token is not None

    # -- the ledger -------------------------------------------------------------------------
    def append(self, lines: str) -> None:
        """Append JSON lines (a journal batch)."""
        self._run(L.append(self.path), stdin=lines, timeout=15)

    def append_and_release(self, lines: str, run_id: str) -> bool:
        """The run's last journal lines, then its lock released: one round trip. Raises when the
        lines were not appended; True when the lock was released too."""
        cmd = LK.append_then_release(L.append(self.path), self.path, run_id)
        return LK.RELEASED_MARK in self._run(cmd, stdin=lines, timeout=15).stdout.split()

    def read(self) -> list[dict]:
        return L.decode(self._run(L.read(self.path), timeout=60).stdout)

    # -- backups: not kept off-site by this backend (plans ask for them only with `state: s3`) ---
    def _no_backups(self) -> DeployerError:
        return DeployerError(f"the state on {self.host.name} keeps no backup copies (they are kept "
                             "off-site with `state: {backend: s3}`)")

    def upload_backup(self, host: str, path: str, *, state: Any = None, kind: Any = None) -> Record | None:
        raise self._no_backups()

    def ensure_backup(self, host: str, path: str, sha256: str, *, state: Any = None,
                      kind: Any = None) -> Record | None:
        raise self._no_backups()

    def list_backups(self, kind: Any = None) -> list[BackupObject]:
        raise self._no_backups()

    def apply_retention(self, keep: set[str], kind: Any = None) -> list[str]:
        raise self._no_backups()

    def artifact_urls(self, release: str, *, put: bool, ttl: int) -> str:
        raise self._no_backups()

    def artifact_sha256(self, release: str) -> str:
        raise self._no_backups()

    def prune_artifacts(self, keep: set[str]) -> list[str]:
        raise self._no_backups()

    def artifact_releases(self) -> set[str]:
        raise self._no_backups()
