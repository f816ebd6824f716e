"""The ledger as S3 objects: one object per batch of events, never rewritten.

`append_batch(events)` writes `<prefix>/<env>/ledger/t<token>-<UTC time>-<run>-<seq>.json`, a
JSON list of the events, with `If-None-Match: *` (a batch is never overwritten, not even by a
retry of its own write). A listing in key order is the history:

- `<token>` (12 digits) is the lock's fencing token: the holder's own, or for a writer without
  the lock the last one handed out. It only grows from one holder to the next, so runs are in
  the order they held the lock whatever their clocks say (an orchestrator an hour behind writes
  after the one before it, not an hour earlier);
- within one token, `<UTC time>` (`YYYYmmddTHHMMSS.ffffffZ`) and `<seq>`: within one writer,
  times never go back and `seq` counts up, so its batches keep their order even if its clock
  steps back. A writer without the lock (`unlock --force`, maintenance by hand) first lists the
  token's keys and writes after the last one, whatever its clock.

Keys written before tokens were part of them (`<UTC time>-<run>-<seq>.json`) begin with a
digit, so they sort before every `t` key: an old history is read first, in its time order.

`read()` lists the keys (paginated), fetches the objects (a few at a time, in parallel) and
concatenates them in key order. An object that cannot be read or is not a JSON list of objects
is skipped and reported (`read_report()` returns the warnings; `read()` logs them), and the
batches after it are kept.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .s3 import S3Location, StateError, client, is_precondition_failed

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class LedgerRead:
    events: list[dict] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # every batch object listed, in order
    warnings: list[str] = field(default_factory=list)  # one per object skipped (or event dropped)


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%dT%H%M%S.%fZ")


class S3Ledger:
    """The ledger of one env. `run` names this writer in its keys (the run id)."""

    def __init__(self, location: S3Location, env: str, *, run: str = "", s3: Any = None,
                 clock: Any = time.time, workers: int = 8,
                 epoch: Callable[[], tuple[int, bool]] = lambda: (0, True)):
        """`epoch`: the fencing token a batch is written under, and whether this writer holds
        the lock (see the module's docstring)."""
        self.location, self.env = location, env
        self.prefix = location.env_prefix(env, "ledger")
        self.run = _UNSAFE.sub("_", run or secrets.token_hex(4))[:64]
        self.s3 = s3 or client(location)
        self.clock, self.workers, self.epoch = clock, workers, epoch
        self._seq, self._last, self._epoch = 0, 0.0, 0
        self._mu = threading.Lock()

    def _next_key(self) -> str:
        with self._mu:
            token, held = self.epoch()
            self._epoch = max(self._epoch, int(token))
            self._last = max(self._last, self.clock())
            if not held:  # after what the holder of this token wrote, whatever the clocks
                self._last = max(self._last, self._last_of(self._epoch) + 1e-6)
            self._seq += 1
            return f"{self.prefix}t{self._epoch:012d}-{_stamp(self._last)}-{self.run}-{self._seq:06d}.json"

    def _last_of(self, token: int) -> float:
        """The time in the last key written under `token` (0 when none)."""
        head = f"{self.prefix}t{token:012d}-"
        keys = [k for k in self.keys(start_after=head) if k.startswith(head)]
        if not keys:
            return 0.0
        stamp = keys[-1][len(head):len(head) + 23]
        try:
            return datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC).timestamp()
        except ValueError:
            return 0.0

    def append_batch(self, events: list[dict]) -> str | None:
        """Write one batch; its key (None for an empty batch)."""
        if not events:
            return None
        if not all(isinstance(e, dict) for e in events):
            raise TypeError("ledger batch: every event must be a dict")
        body = json.dumps(events, separators=(",", ":"), default=str).encode()
        for _ in range(3):
            key = self._next_key()
            try:
                self.s3.put_object(Bucket=self.location.bucket, Key=key, Body=body,
                                   ContentType="application/json", IfNoneMatch="*")
                return key
            except Exception as e:
                if not is_precondition_failed(e):
                    raise
                if self._same(key, body):  # a retried write whose first attempt landed
                    return key
        raise StateError(f"ledger: three keys in a row already taken under {self.prefix}")

    def _same(self, key: str, body: bytes) -> bool:
        try:
            return self.s3.get_object(Bucket=self.location.bucket, Key=key)["Body"].read() == body
        except Exception:  # noqa: BLE001 - then it is someone else's key: take the next
            return False

    def keys(self, start_after: str = "", page_size: int = 1000) -> list[str]:
        """The batch keys in order (all of them, or those after `start_after`)."""
        out: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.location.bucket, "Prefix": self.prefix,
                                  "PaginationConfig": {"PageSize": page_size}}
        if start_after:
            kwargs["StartAfter"] = start_after
        for page in self.s3.get_paginator("list_objects_v2").paginate(**kwargs):
            out += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".json")]
        return sorted(out)

    def _fetch(self, key: str) -> tuple[list[dict], list[str]]:
        try:
            raw = self.s3.get_object(Bucket=self.location.bucket, Key=key)["Body"].read()
        except Exception as e:  # noqa: BLE001 - one unreadable batch must not hide the others
            return [], [f"{key}: unreadable ({e}); skipped"]
        try:
            batch = json.loads(raw)
        except ValueError as e:
            return [], [f"{key}: not JSON ({e}); skipped"]
        if not isinstance(batch, list):
            return [], [f"{key}: not a JSON list ({type(batch).__name__}); skipped"]
        events = [e for e in batch if isinstance(e, dict)]
        bad = len(batch) - len(events)
        return events, ([f"{key}: {bad} entries that are not objects dropped"] if bad else [])

    def read_report(self, start_after: str = "", page_size: int = 1000) -> LedgerRead:
        """Every event in order, with the keys read and a warning per object skipped."""
        keys = self.keys(start_after, page_size)
        result = LedgerRead(keys=keys)
        if not keys:
            return result
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(keys)))) as pool:
            for events, warnings in pool.map(self._fetch, keys):  # map keeps the key order
                result.events += events
                result.warnings += warnings
        return result

    def read(self, start_after: str = "") -> list[dict]:
        """Every event in order; objects that cannot be read are skipped and logged."""
        result = self.read_report(start_after)
        for w in result.warnings:
            log.warning("ledger %s: %s", self.env, w)
        return result.events
