"""What a state backend offers: the env's lock, its ledger and (off-site) backup copies.

`Session` asks its backend for nothing else. Two backends have it: `ssh.SshState` (the lock and
the ledger on the ledger host, over the run's SSH connection; the default) and
`s3_backend.S3State` (a bucket; backups are copied there too). A backend is built over what it
needs (a transport, an endpoint, a path, the state spec), never over the session using it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..commands.lock import LockInfo
    from ..records import Record
    from ..shell import Command
    from ..sshconfig import Endpoint
    from .backups import BackupObject, Kind


class Runner(Protocol):
    """What a backend runs remote commands with: the run's transport (`deployer.transport`)."""

    def run(self, ep: Endpoint, cmd: Command, **kw: Any) -> Any: ...


class FileRunner(Runner, Protocol):
    """A transport that copies files too (SFTP), for backup copies."""

    def get(self, ep: Endpoint, remote: str, local: str) -> int: ...

    def put(self, ep: Endpoint, local: str, remote: str, *, mode: int = 0o600) -> int: ...


class StateBackend(Protocol):
    """The env's shared state. Lock methods take the info dict of `Session.lock_info()` and
    answer with the holder's `LockInfo` (None: this run holds it)."""

    name: str

    @property
    def ident(self) -> str:
        """Where the state lives: a journal is shipped only to the ledger it was written for."""
        ...

    def where(self) -> str:
        """The place, as told to a user (a host name, an s3:// url)."""
        ...

    # -- the lock ---------------------------------------------------------------------------
    def acquire(self, info: dict) -> LockInfo | None:
        """None when this run now holds the lock, else who holds it."""
        ...

    def acquire_and_read(self, info: dict) -> tuple[LockInfo | None, list[dict] | None]:
        """`acquire`, with the ledger's events read in the same round trip when the backend
        can (else None)."""
        ...

    def token(self, run_id: str) -> int | None:
        """The fencing token (a number that only grows) `run_id` got with the lock it took or
        took over; None when it holds none. Every host script of its plans checks it first."""
        ...

    def heartbeat(self, run_id: str) -> bool:
        """True: beat recorded; False: the lock is no longer this run's. Raises if unreachable."""
        ...

    def check_fence(self, run_id: str) -> None:
        """Before each switch: LockLost unless `run_id` still holds the lock for sure (a
        backend without fencing tokens checks nothing here: its heartbeat does)."""
        ...

    def release(self, run_id: str) -> None:
        """Free the lock if `run_id` holds it."""
        ...

    def read_lock(self) -> LockInfo | None:
        ...

    def force_release(self) -> None:
        ...

    def mark_paused(self, run_id: str) -> None:
        """The paused rollout `run_id` keeps the lock after its run ends."""
        ...

    def adopt(self, run_id: str, info: dict) -> bool:
        """Take over the lock of the paused run `run_id` (promote/abort); False if not paused."""
        ...

    # -- the ledger -------------------------------------------------------------------------
    def append(self, lines: str) -> None:
        """Append JSON lines (a journal batch)."""
        ...

    def append_and_release(self, lines: str, run_id: str) -> bool:
        """The run's last journal lines, then its lock released. Raises when the lines were not
        appended; True when the lock was released too."""
        ...

    def read(self) -> list[dict]:
        ...

    # -- backups (off-site: only a backend that keeps copies has them) ------------------------
    def upload_backup(self, host: str, path: str, *, state: Any = None, kind: Kind = ...) -> Record | None:
        """Copy the verified backup `path` from `host` (`state`: the run's state, which recorded
        its sha256; `kind`: a database dump by default, else an archive of the app's files)."""
        ...

    def ensure_backup(self, host: str, path: str, sha256: str, *, state: Any = None,
                      kind: Kind = ...) -> Record | None:
        """Before a restore: the backup `path` with `sha256` on `host`, put back from the copy
        if it is gone there."""
        ...

    def list_backups(self, kind: Kind = ...) -> list[BackupObject]:
        ...

    def apply_retention(self, keep: set[str], kind: Kind = ...) -> list[str]:
        """Delete the copies not in `keep`; the names deleted."""
        ...

    # -- release artifacts (`artifact.store: bucket`: only a backend with a bucket has them) ----
    def artifact_urls(self, release: str, *, put: bool, ttl: int) -> str:
        """The presigned URLs of `release`'s artifact files, one per line (a capability: stdin
        only)."""
        ...

    def artifact_sha256(self, release: str) -> str:
        """The sha256 of `release`'s whole artifact in the bucket ("" when it has none)."""
        ...

    def prune_artifacts(self, keep: set[str]) -> list[str]:
        """Delete the artifacts of the releases not in `keep`; the releases deleted."""
        ...

    def artifact_releases(self) -> set[str]:
        """The releases whose artifact the bucket holds."""
        ...
