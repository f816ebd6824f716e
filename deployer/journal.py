"""The local write-ahead journal of a run, and its shipping to the ledger on the fleet.

Every transition is appended and flushed to `<state dir>/<env>/<run>.jsonl` BEFORE it is acted
on; a background shipper sends the new records to the ledger in batches (at each stage end and
at the run's end). An unreachable ledger host never blocks, slows or aborts a run: the records
stay local and the next command that reaches the ledger ships them (`ship_pending`). Shipping
is at-least-once; readers drop duplicates by (run, seq).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .records import Record, now_iso


def state_dir() -> Path:
    base = os.environ.get("DEPLOYER_STATE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(xdg) / "deployer"


def _encode(d: dict) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), default=str) + "\n"


class Journal:
    """Append-only local record of one run. `ship` is given a function that appends a batch
    of JSON lines to the ledger (raising when the ledger host cannot be reached)."""

    def __init__(self, env: str, run: str, ledger_id: str, directory: Path | None = None):
        self.dir = (directory or state_dir()) / env
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.dir / f"{run}.jsonl"
        self.run = run
        self.ledger_id = ledger_id
        self._seq = 0
        self._lock = threading.Lock()
        fresh = not self.path.exists()
        if not fresh and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            if torn:  # a writer killed mid-line: close its line so it cannot swallow ours
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write("\n")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._f = os.fdopen(fd, "a", encoding="utf-8")
        if fresh:  # the first line says which ledger the records belong to
            self._f.write(_encode({"v": 1, "type": "journal", "run": run, "ledger": ledger_id,
                                   "at": now_iso(), "pid": os.getpid()}))
            self._f.flush()
        self._ship_wanted = threading.Event()
        self._stop = threading.Event()
        self._shipper: threading.Thread | None = None
        self.ship_error: str | None = None

    def write(self, rec: Record) -> dict:
        """Append one record, flushed to the OS before returning (survives our own crash)."""
        with self._lock:
            self._seq += 1
            rec.run = rec.run or self.run
            rec.seq = self._seq
            rec.at = rec.at or now_iso()
            d = rec.to_dict()
            self._f.write(_encode(d))
            self._f.flush()
            return d

    def sync(self) -> None:
        with self._lock:
            self._f.flush()
            os.fsync(self._f.fileno())

    # -- shipping ------------------------------------------------------------------------
    def start_shipping(self, ship: Callable[[str], None]) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                self._ship_wanted.wait(timeout=5)
                self._ship_wanted.clear()
                if self._stop.is_set():  # closing: the last shipment is close()'s, with the release
                    return
                self.ship_once(ship)

        self._shipper = threading.Thread(target=loop, name="journal-shipper", daemon=True)
        self._shipper.start()

    def request_ship(self) -> None:
        self._ship_wanted.set()

    def ship_once(self, ship: Callable[[str], None]) -> bool:
        """Ship what the ledger has not received yet. True when nothing is left local."""
        try:
            ship_file(self.path, ship)
            self.ship_error = None
            return True
        except Exception as exc:  # noqa: BLE001 - an unreachable ledger is reported, never fatal
            self.ship_error = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            return False

    def close(self, ship: Callable[[str], None] | None, timeout: float = 10.0) -> bool:
        """Stop the shipper and try a last shipment (bounded), `ship` being the run's last act
        (the lock released in the same round trip). True when fully shipped."""
        self._stop.set()
        self._ship_wanted.set()  # wakes the shipper, which ends without shipping
        if self._shipper is not None:
            self._shipper.join(timeout=timeout)
        self.sync()
        self._f.close()
        if ship is None:
            return False
        done: list[bool] = []
        deadline = time.monotonic() + timeout

        def last() -> None:
            while True:
                ok = self.ship_once(ship)
                if ok or "shipping it" not in (self.ship_error or "") or time.monotonic() > deadline:
                    done.append(ok)
                    return
                time.sleep(0.1)

        t = threading.Thread(target=last, daemon=True)
        t.start()
        t.join(timeout=timeout)
        return bool(done and done[0])


class Busy(Exception):
    """Another process is shipping this journal right now."""


def _shipped_path(path: Path) -> Path:
    return path.with_suffix(".shipped")


def ship_file(path: Path, ship: Callable[[str], None]) -> int:
    """Send the lines of a journal file not yet shipped; returns how many were sent. A flock on
    the sidecar keeps two shippers (this run's thread, another command) from interleaving."""
    side = _shipped_path(path)
    fd = os.open(side, os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+") as f:
        # Never wait for another shipper (a frozen process may hold it): the records stay
        # local and are shipped later.
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"{path.name}: another process is shipping it") from None
        f.seek(0)
        text = f.read().strip()
        done = int(text) if text.isdigit() else 0
        with open(path, encoding="utf-8") as j:
            lines = j.readlines()
        complete = [ln for ln in lines if ln.endswith("\n")]  # a torn last line waits
        new = complete[done:]
        if not new:
            return 0
        ship("".join(new))
        f.seek(0)
        f.truncate()
        f.write(str(done + len(new)))
        f.flush()
        return len(new)


def local_only(env: str, ledger_id: str, directory: Path | None = None) -> list[Path]:
    """Journals of `env` (for this ledger) with records the ledger has not received."""
    d = (directory or state_dir()) / env
    if not d.is_dir():
        return []
    out = []
    for path in sorted(d.glob("*.jsonl")):
        try:
            with open(path, encoding="utf-8") as f:
                lines = [ln for ln in f if ln.endswith("\n")]
        except OSError:
            continue
        if not lines or _ledger_of(lines[0]) != ledger_id:
            continue
        side = _shipped_path(path)
        done = side.read_text().strip() if side.exists() else "0"
        if len(lines) > (int(done) if done.isdigit() else 0):
            out.append(path)
    return out


def _ledger_of(first_line: str) -> str:
    try:
        return json.loads(first_line).get("ledger", "")
    except ValueError:
        return ""


def read_records(path: Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def ended(path: Path) -> bool:
    """True when the journal records the end of its run (whatever the outcome)."""
    ends = ("deploy.end", "rollback.end", "maintenance.end", "deploy.paused")
    return any(r.get("type") in ends for r in read_records(path)[-8:])


def ship_pending(env: str, ledger_id: str, ship: Callable[[str], None],
                 directory: Path | None = None) -> tuple[list[Path], list[Path]]:
    """Ship every journal of `env` still local: (journals shipped now, journals still local)."""
    shipped, left = [], []
    for path in local_only(env, ledger_id, directory):
        try:
            ship_file(path, ship)
            shipped.append(path)
        except Exception:  # noqa: BLE001 - still unreachable: they stay local
            left.append(path)
    return shipped, left
