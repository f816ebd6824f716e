"""The env lock as one S3 object, `<prefix>/<env>/lock.json`, changed only by conditional writes.

- acquire: the object is created with `If-None-Match: *`; when it exists but is free (released
  or broken) or its lease has expired, it is overwritten with `If-Match: <the ETag just read>`.
  Of two runs racing, exactly one write succeeds; the other gets 412 and sees the winner.
- heartbeat: `renew()` rewrites the object (new `expires_at`) with `If-Match` on our last ETag;
  a 412 means someone broke or took the lock: LockLost, and the run stops changing anything.
- fencing: each acquisition stores token = previous token + 1 (the object is never deleted,
  release and break leave a "free" record that keeps the token), plus the run id. Before each
  switch the run calls `check_fence()`, which re-reads the object and raises LockLost unless
  it is still exactly our write (same ETag, token, run and nonce) and our lease has not run out.
- release / break_lock: a conditional overwrite to a free record (If-Match on the ETag read),
  so a release never frees a lock that someone else has taken meanwhile.

Every body carries a random nonce, so two writes never share an ETag (S3 and SeaweedFS ETags
are the body's MD5), and a retried write that gets 412 re-reads to see whether its own first
attempt landed. After each successful write the object is read back and the nonce compared
(`verify=True`): on a server that silently ignored the conditions, a run that was overwritten
finds out at once rather than at its next renew. That check narrows but cannot close the race
on such a server; AWS S3 and SeaweedFS 4.48 (tests/unit/test_s3_state.py checks it: the gateway
re-checks the condition under a per-object lock before it creates the entry) enforce both.

Unlike the SSH lock directory, release does not delete the object: a deleted object would lose
the last token, and the next holder would start again at 1. A lock object whose body does not
parse counts as free with token 0 (it is overwritten with If-Match like any free record).

Expiry compares the holder's `expires_at` (unix time) with the reader's clock: runners' clocks
are assumed NTP-synchronised; `grace` adds a margin against skew before a lease counts as expired.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..errors import LockLost as _LockLost
from .s3 import S3Location, StateError, client, is_not_found, lost_race

SCHEMA = 1


class LockLost(_LockLost):
    """Our lock was broken, taken over or expired: stop before changing anything more (a
    `deployer.errors.LockLost`, so the engine stops the run the same way for every backend)."""

    exit_code = 4


@dataclass
class LockHeld:
    env: str
    token: int
    run: str
    expires_at: float
    etag: str = ""
    nonce: str = ""
    lease: float = 0.0
    acquired_at: float = 0.0
    info: dict = field(default_factory=dict)
    age: float = 0.0  # seconds since `started` (since the acquisition when unknown)
    expired: bool = False

    holder = property(lambda self: str(self.info.get("holder", "?")))
    host = property(lambda self: str(self.info.get("host", "?")))
    pid = property(lambda self: self.info.get("pid"))
    reason = property(lambda self: str(self.info.get("reason", "")))
    started = property(lambda self: str(self.info.get("started", "")))

    @property
    def fence(self) -> str:
        """The fencing token as one string: `<token>:<run>`."""
        return f"{self.token}:{self.run}"

    def describe(self) -> str:
        state = "EXPIRED lease" if self.expired else f"lease {self.expires_at - time.time():.0f}s left"
        return (f"{self.holder}@{self.host} pid {self.pid} since {self.started or '?'} "
                f"({self.reason or 'no reason given'}; run {self.run}, token {self.token}, {state})")


def _num(body: dict, key: str, default: float = 0.0) -> float:
    try:
        return float(body.get(key) or default)
    except (TypeError, ValueError):
        return default


def _token(body: dict) -> int:
    return int(_num(body, "token"))


def _started_ts(started: str, fallback: float) -> float:
    try:
        return datetime.strptime(started, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        return fallback


class S3Lock:
    """The lock of one env. One instance per run; its methods are thread-safe."""

    def __init__(self, location: S3Location, env: str, *, s3: Any = None,
                 clock: Callable[[], float] = time.time, grace: float = 0.0, poll: float = 0.25,
                 verify: bool = True):
        self.location, self.env = location, env
        self.key = location.env_prefix(env).rstrip("/") + "/lock.json"
        self.s3 = s3 or client(location)
        self.clock, self.grace, self.poll, self.verify = clock, grace, poll, verify
        self.held: LockHeld | None = None  # ours, while we hold it
        self.seen: LockHeld | None = None  # the other holder that made the last acquire() fail
        self._mu = threading.RLock()
        self._unsure: set[str] = set()  # nonces of our writes that failed without an answer

    # -- reading ---------------------------------------------------------------------------
    def _get(self) -> tuple[dict, str] | None:
        """(body, etag) of the lock object, None when it does not exist. A body that does
        not parse counts as a free record with token 0 (it can be overwritten with If-Match)."""
        try:
            r = self.s3.get_object(Bucket=self.location.bucket, Key=self.key)
        except Exception as e:
            if is_not_found(e):
                return None
            raise
        raw = r["Body"].read()
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            body = {"state": "free", "token": 0, "corrupt": raw[:200].decode(errors="replace")}
        return body, r["ETag"]

    def _held_from(self, body: dict, etag: str) -> LockHeld | None:
        if body.get("state") != "held":
            return None
        now = self.clock()
        expires_at, token = _num(body, "expires_at"), _token(body)
        info = dict(body["info"]) if isinstance(body.get("info"), dict) else {}
        acquired = _num(body, "acquired_at", now)
        return LockHeld(env=self.env, token=token, run=str(body.get("run", "")), expires_at=expires_at,
                        etag=etag, nonce=str(body.get("nonce", "")), lease=_num(body, "lease"),
                        acquired_at=acquired, info=info, age=max(0.0, now - _started_ts(info.get("started", ""), acquired)),
                        expired=now > expires_at + self.grace)

    def read(self) -> LockHeld | None:
        """Who holds the lock (also when the lease has expired: see `.expired`), None when free."""
        cur = self._get()
        return self._held_from(*cur) if cur else None

    def epoch(self) -> tuple[int, bool]:
        """(the fencing token of the lock we hold, True), else (the last one handed out: the lock
        object's, held or free, 0 when there is none; False)."""
        if self.held is not None:
            return self.held.token, True
        cur = self._get()
        return (_token(cur[0]) if cur else 0), False

    # -- writing ---------------------------------------------------------------------------
    def _put(self, body: dict, *, if_match: str | None = None) -> str:
        cond = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
        r = self.s3.put_object(Bucket=self.location.bucket, Key=self.key, Body=json.dumps(body).encode(),
                               ContentType="application/json", **cond)
        return r["ETag"]

    def _landed(self, nonce: str) -> str | None:
        """The ETag of the lock object if it is now our write (by nonce), else None."""
        cur = self._get()
        return cur[1] if cur and cur[0].get("nonce") == nonce else None

    def _write(self, body: dict, if_match: str | None) -> str | None:
        """Conditional write of `body`; its ETag when it (verifiably) landed, None when we lost."""
        try:
            etag = self._put(body, if_match=if_match)
        except Exception as e:
            if lost_race(e):
                return self._landed(body["nonce"])  # our own earlier (retried) attempt may have won
            self._unsure.add(body["nonce"])  # it may have landed; a later 412 checks for it
            raise
        if self.verify:
            return self._landed(body["nonce"])
        return etag

    def _held_body(self, token: int, run: str, info: dict, lease: float, acquired: float) -> dict:
        now = self.clock()
        return {"v": SCHEMA, "state": "held", "env": self.env, "token": token, "run": run,
                "nonce": secrets.token_hex(8), "info": info, "lease": lease, "acquired_at": acquired,
                "renewed_at": now, "expires_at": now + lease}

    def acquire(self, info: dict, lease_seconds: float, wait: float = 0.0) -> LockHeld | None:
        """Take the lock for `lease_seconds`, waiting up to `wait` s for its holder to release it
        or for its lease to expire. None when still held by someone else (see `self.seen`)."""
        run = str(info.get("run") or secrets.token_hex(4))
        deadline, lost = time.monotonic() + wait, 0
        while True:
            cur = self._get()
            held = self._held_from(*cur) if cur else None
            if held and held.run == run and held.nonce in self._unsure:  # an unanswered try won
                with self._mu:
                    self.held, self._unsure, self.seen = held, set(), None
                    return held
            if held is None or held.expired:
                token = (_token(cur[0]) if cur else 0) + 1
                body = self._held_body(token, run, dict(info), lease_seconds, self.clock())
                etag = self._write(body, cur[1] if cur else None)
                if etag:
                    with self._mu:
                        self.held = self._held_from(body, etag)
                        self.seen = None
                        return self.held
                lost += 1  # someone else wrote first: read again and see who
                if lost >= 50:
                    raise StateError(f"{self.env}: lock write lost 50 times in a row ({self.key})")
                continue
            self.seen = held
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(self.poll, left))

    def renew(self, lease: float | None = None, info: dict | None = None) -> LockHeld:
        """Extend our lease (the heartbeat), optionally to another length or with other holder
        details (a paused rollout: a long lease, `paused` in its info). LockLost when the lock
        is no longer ours."""
        with self._mu:
            mine = self._require()
            lease = mine.lease if lease is None else lease
            info = mine.info if info is None else dict(info)
            body = self._held_body(mine.token, mine.run, info, lease, mine.acquired_at)
            etag = self._write(body, mine.etag)
            if not etag and self._adopt(self._get()):
                return self.renew(lease, info)
            if not etag:
                self.held = None
                cur = self.read()
                raise LockLost(f"{self.env}: lock lost (token {mine.token}); now "
                               + (cur.describe() if cur else "free (it was broken)"))
            self.held, self._unsure = self._held_from(body, etag), set()
            return self.held

    def check_fence(self, min_remaining: float = 0.0) -> LockHeld:
        """Raise LockLost unless the stored lock is still our write and our lease has at least
        `min_remaining` s left. The run calls this before each switch."""
        with self._mu:
            mine = self._require()
            cur = self._get()
            if self._adopt(cur):
                mine = self._require()
            if cur is None or cur[1] != mine.etag or cur[0].get("nonce") != mine.nonce \
                    or cur[0].get("token") != mine.token or cur[0].get("run") != mine.run:
                other = self._held_from(*cur) if cur else None
                raise LockLost(f"{self.env}: fence {mine.fence} is stale; the lock is now "
                               + (other.describe() if other else "free (it was broken)"))
            left = mine.expires_at - self.clock()
            if left < min_remaining:
                raise LockLost(f"{self.env}: lease of fence {mine.fence} expired "
                               f"({left:.1f}s left, {min_remaining:.1f}s needed)")
            return self._held_from(*cur) or mine

    def _adopt(self, cur: tuple[dict, str] | None) -> bool:
        """An earlier write of ours that failed without an answer did land: it is our lock."""
        mine = self.held
        if not (cur and mine and self._unsure and cur[0].get("nonce") in self._unsure
                and cur[0].get("run") == mine.run and cur[0].get("token") == mine.token):
            return False
        self.held, self._unsure = self._held_from(*cur), set()
        return True

    def _require(self) -> LockHeld:
        if self.held is None:
            raise LockLost(f"{self.env}: this run does not hold the lock")
        return self.held

    def _free_body(self, token: int, by: str, broken: LockHeld | None = None) -> dict:
        body = {"v": SCHEMA, "state": "free", "env": self.env, "token": token, "nonce": secrets.token_hex(8),
                "freed_at": self.clock(), "freed_by": by}
        if broken:
            body["broken"] = {"run": broken.run, "token": broken.token, "info": broken.info}
        return body

    def release(self) -> bool:
        """Free the lock if it is still ours (If-Match on our ETag). False when it was not."""
        with self._mu:
            mine, self.held = self.held, None
            if mine is None:
                return False
            return self._write(self._free_body(mine.token, mine.run), mine.etag) is not None

    def take_over(self, run: str, info: dict, lease_seconds: float,
                  when: Callable[[LockHeld], bool] = lambda held: True) -> LockHeld | None:
        """Take the lock from its current holder `run` (a paused rollout resumed from another
        machine) when `when(held)` says so: a conditional write (If-Match on the ETag read) with
        the next token, so the old holder is fenced off and of two takers exactly one wins.
        None when the lock is not `run`'s (or `when` refused, or another taker won)."""
        with self._mu:
            cur = self._get()
            held = self._held_from(*cur) if cur else None
            if held is None or held.run != run or not when(held):
                return None
            body = self._held_body(held.token + 1, run, dict(info), lease_seconds, self.clock())
            etag = self._write(body, cur[1])
            if not etag:
                return None
            self.held, self.seen, self._unsure = self._held_from(body, etag), None, set()
            return self.held

    def release_run(self, run: str, when: Callable[[LockHeld], bool] = lambda held: True) -> bool:
        """Free the lock if the stored holder is `run` and `when(held)` (a run that ended while
        the state could not be reached, found later by its journal). If-Match on the ETag read."""
        with self._mu:
            cur = self._get()
            held = self._held_from(*cur) if cur else None
            if held is None or held.run != run or not when(held):
                return False
            if self.held is not None and self.held.run == run:
                self.held = None
            return self._write(self._free_body(held.token, run), cur[1]) is not None

    def break_lock(self, by: str = "unlock --force", attempts: int = 5) -> LockHeld | None:
        """Free the lock whoever holds it (`unlock --force`); who held it, None if it was free.
        The token is kept, so the next holder's is still higher than the broken one's."""
        for _ in range(attempts):
            cur = self._get()
            held = self._held_from(*cur) if cur else None
            if held is None:
                return None
            if self._write(self._free_body(held.token, by, held), cur[1]):
                return held
        raise LockLost(f"{self.env}: the lock kept changing while breaking it ({attempts} tries)")
