"""The S3 state backend: the env lock, the ledger and backup copies in a bucket (`state:` with
`backend: s3` in the inventory). It has what every backend offers (`base.StateBackend`), and:

- `check_fence(run_id)`: before each switch; LockLost unless the stored lock is still exactly
  this run's write (token, run, nonce, ETag) with at least a quarter of its lease left.
- `upload_backup(host, path, state=)`: the verified dump copied from the database host (SFTP on
  the run's connection), checked against the sha256 the dump step recorded, uploaded with that
  sha256 in the object's metadata (multipart for large dumps, server-side SHA256 checksum).
- `ensure_backup(host, path, sha256, state=)`: before a restore; when the host's copy is gone
  (or its sha256 differs) the object is downloaded, verified, and put back on the host (0600,
  owned like the backup directory).

The lease: `state.lease` seconds (60 by default), renewed every lease/3 s by a thread of this
backend while the run holds the lock (and at each heartbeat of the session). A holder killed
with SIGKILL stops renewing: its lock is taken over by the next run once the lease has run out.
A paused rollout keeps the lock with a 30-day lease and `paused` in its details; `promote` /
`abort` take it over with a conditional write and the next fencing token.

Nothing here reads credentials: boto3's standard chain does (environment, profile, role).
"""

from __future__ import annotations

import json
import posixpath
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..commands.lock import LockInfo
from ..shell import argv, q, raw
from . import artifacts as ART
from . import backups as B
from .ledger import S3Ledger
from .lock import LockHeld, LockLost, S3Lock
from .s3 import S3Location, StateError, client

if TYPE_CHECKING:
    from ..config import Config
    from ..config.inventory import State
    from ..output import Reporter
    from .base import FileRunner

PAUSED_LEASE = 30 * 24 * 3600.0
#: the part of the lease that must be left at a switch (else the run stops: the renewals fail)
FENCE_MARGIN = 0.25


def lock_info(held: LockHeld, now: float | None = None) -> LockInfo:
    """The backend-neutral view of an S3 lock (what `status`, `unlock` and `recover` show):
    the heartbeat's age is the time since the lease was last renewed."""
    now = time.time() if now is None else now
    renewed = held.expires_at - held.lease if held.lease else None
    age = int(max(0.0, now - renewed)) if renewed else None
    pid = held.pid
    try:
        pid = int(pid) if pid is not None else None
    except (TypeError, ValueError):
        pid = None
    reason = held.reason
    if held.expired:
        reason = (reason + "; " if reason else "") + "lease EXPIRED"
    return LockInfo(holder=held.holder, host=held.host, pid=pid, reason=reason, started=held.started,
                    run=held.run, heartbeat_age=age, paused=bool(held.info.get("paused")))


def parse_lines(text: str) -> list[dict]:
    """A journal batch (JSON lines) as events; a line that is not a JSON object is an error
    (the journal writes whole lines only)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        event = json.loads(line)
        if not isinstance(event, dict):
            raise ValueError(f"journal line {n}: not a JSON object")
        out.append(event)
    return out


class S3State:
    """The state of `cfg.env` in the bucket of `spec` (the inventory's `state:`). `transport`
    (with SFTP get/put) reaches the database host for backup copies; `run_id` names this
    writer's ledger batches; `reporter` is told about the copies made."""

    name = "s3"

    def __init__(self, transport: FileRunner, cfg: Config, spec: State, *, run_id: str, reporter: Reporter):
        self.transport = transport
        self.cfg = cfg
        self.spec = spec
        self.run_id = run_id
        self.reporter = reporter
        self.env = cfg.env
        self.location = S3Location(spec.bucket or "", spec.prefix, spec.endpoint_url, spec.region)
        self.lease = float(spec.lease)
        self._s3 = None
        self._lock: S3Lock | None = None
        self._ledger: S3Ledger | None = None
        self._mu = threading.Lock()
        self._renew_stop: threading.Event | None = None
        self.lost: str | None = None  # why the renewer found the lock gone

    # -- lazily: boto3 is loaded only when the state is used -------------------------------------
    @property
    def s3(self):
        with self._mu:
            if self._s3 is None:
                self._s3 = client(self.location)
            return self._s3

    @property
    def lock(self) -> S3Lock:
        if self._lock is None:
            self._lock = S3Lock(self.location, self.env, s3=self.s3)
        return self._lock

    @property
    def ledger(self) -> S3Ledger:
        if self._ledger is None:
            self._ledger = S3Ledger(self.location, self.env, run=self.run_id, s3=self.s3,
                                    epoch=self.lock.epoch)
        return self._ledger

    @property
    def ident(self) -> str:
        """Where the state lives: a journal is shipped only to the ledger it was written for."""
        where = self.location.endpoint_url or "aws"
        return f"s3://{self.location.bucket}/{self.location.env_prefix(self.env)}@{where}"

    def where(self) -> str:
        return f"s3://{self.location.bucket}/{self.location.env_prefix(self.env)}"

    # -- the lock ---------------------------------------------------------------------------------
    def _mine(self, run_id: str) -> LockHeld | None:
        held = self._lock.held if self._lock is not None else None
        return held if held is not None and held.run == run_id else None

    def acquire(self, info: dict) -> LockInfo | None:
        """None when this run now holds the lock, else who holds it."""
        held = self.lock.acquire(dict(info), self.lease)
        if held is None:
            seen = self.lock.seen
            return lock_info(seen) if seen else LockInfo(reason="held (unreadable)")
        self._start_renewer()
        return None

    def token(self, run_id: str) -> int | None:
        """The fencing token of the lock `run_id` holds (None: it holds none)."""
        mine = self._mine(run_id)
        return mine.token if mine is not None else None

    def acquire_and_read(self, info: dict) -> tuple[LockInfo | None, None]:
        """`acquire`; the ledger is not read with it (no single request does both): None."""
        return self.acquire(info), None

    def _start_renewer(self) -> None:
        self._stop_renewer()
        self.lost = None
        stop = threading.Event()
        self._renew_stop = stop
        every = max(0.5, self.lease / 3)

        def loop() -> None:
            while not stop.wait(every):
                try:
                    self.lock.renew()
                except LockLost as exc:
                    self.lost = exc.message
                    return
                except Exception:  # noqa: BLE001 - unreachable for now: the fence sees the lease shrink
                    continue

        threading.Thread(target=loop, name="s3-lease", daemon=True).start()

    def _stop_renewer(self) -> None:
        if self._renew_stop is not None:
            self._renew_stop.set()
            self._renew_stop = None

    def heartbeat(self, run_id: str) -> bool:
        """True: lease renewed; False: the lock is no longer this run's. Raises if unreachable."""
        if self._mine(run_id) is None:
            return False
        try:
            self.lock.renew()
        except LockLost as exc:
            self.lost = exc.message
            self._stop_renewer()
            return False
        return True

    def check_fence(self, run_id: str) -> None:
        """LockLost unless this run still holds the lock for sure (before each switch)."""
        if self.lost:
            raise LockLost(f"{self.env}: {self.lost}")
        if self._mine(run_id) is None:
            raise LockLost(f"{self.env}: run {run_id} does not hold the lock")
        self.lock.check_fence(min_remaining=self.lease * FENCE_MARGIN)

    def release(self, run_id: str) -> None:
        if self._mine(run_id) is not None:
            self._stop_renewer()
            self.lock.release()
            return
        # a run that ended while the state could not be reached: freed only if still its own
        self.lock.release_run(run_id, when=lambda held: not held.info.get("paused"))

    def read_lock(self) -> LockInfo | None:
        held = self.lock.read()
        return lock_info(held) if held else None

    def force_release(self) -> None:
        self._stop_renewer()
        self.lock.break_lock(by="unlock --force")

    def mark_paused(self, run_id: str) -> None:
        """The paused rollout keeps the lock: a 30-day lease, `paused` in its details."""
        mine = self._mine(run_id)
        if mine is None:
            raise LockLost(f"{self.env}: run {run_id} does not hold the lock; cannot pause with it")
        self._stop_renewer()
        self.lock.renew(lease=PAUSED_LEASE, info=dict(mine.info, paused=True))

    def adopt(self, run_id: str, info: dict) -> bool:
        """Take over the lock of the paused run `run_id` (promote/abort from any machine)."""
        held = self.lock.take_over(run_id, dict(info), self.lease,
                                   when=lambda h: bool(h.info.get("paused")))
        if held is None:
            return False
        self._start_renewer()
        return True

    # -- the ledger -------------------------------------------------------------------------------
    def append(self, lines: str) -> None:
        """Append JSON lines (a journal batch) as one object."""
        self.ledger.append_batch(parse_lines(lines))

    def append_and_release(self, lines: str, run_id: str) -> bool:
        """The run's last journal lines, then its lock released (two requests: S3 has no script).
        Raises when the lines were not appended; True when the lock was released too."""
        try:
            self.append(lines)
        finally:
            try:
                self.release(run_id)
                released = True
            except Exception:  # noqa: BLE001 - the caller releases again and reports it
                released = False
        return released

    def read(self) -> list[dict]:
        return self.ledger.read()

    # -- backups ----------------------------------------------------------------------------------
    def backup_key(self, path: str, kind: B.Kind = B.Kind.DATABASE) -> str:
        return B.backup_key(self.location, self.env, posixpath.basename(path), kind)

    def upload_backup(self, host: str, path: str, *, state: Any = None, kind: B.Kind = B.Kind.DATABASE) -> None:
        """Copy the verified backup `path` from `host` to the bucket (after the step that made it)."""
        sha = state.sha256_of(path) if state is not None else None  # the run's RunState recorded it
        if not sha:
            raise StateError(f"backup off-site: no verified backup of {path} recorded by this run")
        sha = sha.lower()
        key = self.backup_key(path, kind)
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="deployer-backup-") as d:
            local = Path(d) / posixpath.basename(path)
            self.transport.get(self.cfg.host(host).target(), path, str(local))
            got = B.sha256_file(local)
            if got != sha:
                raise B.BackupCorrupt(f"backup off-site: {path} copied from {host} has sha256 {got}, "
                                      f"not the recorded {sha}; not uploaded")
            obj = B.upload(self.location, local, key, sha, s3=self.s3, verify_local=False)
        self.reporter.event("notice", message=(
            f"backup {posixpath.basename(path)} copied to s3://{self.location.bucket}/{key} "
            f"({obj.size} bytes, sha256 {sha[:12]}..., {time.monotonic() - t0:.1f}s)"))

    def ensure_backup(self, host: str, path: str, sha256: str, *, state: Any = None,
                      kind: B.Kind = B.Kind.DATABASE) -> None:
        """Before a restore: the host's copy of the backup if it has `sha256`, else the bucket's
        (verified) put back in its place."""
        ep = self.cfg.host(host).target()
        sha = sha256.lower()
        res = self.transport.run(ep, raw(f"sha256sum -- {q(path)} 2>/dev/null | cut -d' ' -f1"),
                                 check=False, timeout=self.cfg.ssh.command_timeout)
        there = res.stdout.strip()
        if there == sha:
            return None
        key = self.backup_key(path, kind)
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="deployer-backup-") as d:
            local = Path(d) / posixpath.basename(path)
            B.download(self.location, key, local, sha, s3=self.s3)
            self.transport.run(ep, argv("mkdir", "-p", "-m", "700", "--", posixpath.dirname(path)),
                               timeout=self.cfg.ssh.command_timeout)
            self.transport.put(ep, str(local), path, mode=0o600)
        why = "missing" if not there else f"sha256 {there[:12]}... differs"
        self.reporter.event("notice", message=(
            f"backup {posixpath.basename(path)} on {host} was {why}: fetched from "
            f"s3://{self.location.bucket}/{key} (sha256 verified) in {time.monotonic() - t0:.1f}s"))
        return None

    def list_backups(self, kind: B.Kind = B.Kind.DATABASE) -> list[B.BackupObject]:
        return B.list_backups(self.location, self.env, s3=self.s3, kind=kind)

    def apply_retention(self, keep: set[str], kind: B.Kind = B.Kind.DATABASE) -> list[str]:
        return B.apply_retention(self.location, self.env, keep, s3=self.s3, kind=kind)

    # -- release artifacts ------------------------------------------------------------------------
    def artifact_urls(self, release: str, *, put: bool, ttl: int) -> str:
        return ART.presigned(self.location, self.env, release, put=put, ttl=ttl, s3=self.s3)

    def artifact_sha256(self, release: str) -> str:
        return ART.sha256_of(self.location, self.env, release, s3=self.s3)

    def artifact_releases(self) -> set[str]:
        return set(ART.releases(self.location, self.env, s3=self.s3))

    def prune_artifacts(self, keep: set[str]) -> list[str]:
        gone = ART.prune(self.location, self.env, keep, s3=self.s3)
        if gone:
            self.reporter.event("notice", message=f"artifacts of {', '.join(gone)} deleted from "
                                                   f"s3://{self.location.bucket}/{self.location.env_prefix(self.env, ART.FOLDER)}")
        return gone
