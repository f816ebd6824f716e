"""Deploy windows and freezes: may an env be deployed to at a given instant? (pure)

A **window** opens when its cron expression fires, evaluated on the wall clock of the
window's time zone, and stays open for `duration` of absolute (elapsed) time: a window
started at local time T covers [T, T + duration). A **freeze** is an absolute range
[start, end) in which deploys are refused; it wins over windows. Without windows, deploys
are allowed whenever no freeze applies.

Daylight saving time (the wall clock jumps or repeats):

- A start time that does not exist locally (spring forward, e.g. 02:00 on 2026-03-29 in
  Europe/Paris) is shifted forward by the length of the gap: the window opens at 03:00 CEST
  (01:00 UTC), the instant the clock skips over 02:00, and still lasts `duration`.
- A start time that happens twice (fall back, e.g. 02:00 on 2026-10-25 in Europe/Paris)
  opens the window ONCE, at its first occurrence (02:00 CEST = 00:00 UTC); the repeated
  02:00 CET does not reopen or extend it.

Both rules are Python's ``fold=0`` reading of a wall-clock time. croniter is only asked for
wall-clock (naive) times and the conversion to absolute time is done here with zoneinfo,
so the result does not depend on croniter's own DST handling, which has changed between
releases (croniter 7 fires ``0 2 * * 0`` twice on a fall-back night in ``get_next`` but
not in ``get_prev``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from datetime import timezone as dt_timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from deployer.cron import validate_expression

_DURATION_RE = re.compile(
    r"(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?\Z"
)
_MAX_STEPS = 10_000


# ---------------------------------------------------------------- parsing


def parse_duration(text: object) -> timedelta:
    """ "90m", "3h", "1h30m", "2d", "45s" (units in the order d, h, m, s) -> timedelta > 0."""
    hint = 'expected a duration like "90m", "3h", "1h30m" or "2d"'
    if not isinstance(text, str):
        raise TypeError(f"{hint}, got {text!r}")
    match = _DURATION_RE.match(text.strip())
    if not text.strip() or not match:
        raise ValueError(f"invalid duration {text!r}: {hint}")
    parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
    value = timedelta(days=parts.get("d", 0), hours=parts.get("h", 0),
                      minutes=parts.get("m", 0), seconds=parts.get("s", 0))
    if value <= timedelta(0):
        raise ValueError(f"invalid duration {text!r}: must be longer than zero")
    return value


def zone(name: object) -> ZoneInfo:
    """The IANA time zone `name`, or ValueError("unknown time zone ...")."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}") from None


def _aware(now: datetime) -> datetime:
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("expected a timezone-aware datetime")
    return now


# ---------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """Deploys allowed for `duration` from each time `cron` fires in `timezone`."""

    name: str
    cron: str
    duration: timedelta
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        object.__setattr__(self, "cron", validate_expression(self.cron))
        if isinstance(self.duration, str):
            object.__setattr__(self, "duration", parse_duration(self.duration))
        if not isinstance(self.duration, timedelta) or self.duration <= timedelta(0):
            raise ValueError(f"window {self.name!r}: duration must be longer than zero")
        zone(self.timezone)

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.timezone)

    def local(self, instant: datetime) -> datetime:
        """`instant` on this window's wall clock, with a fixed UTC offset.

        (A fixed offset, not the ZoneInfo: Python's ``==`` between zones is always False for
        a time in a repeated hour of a ZoneInfo zone.)
        """
        return _fixed(instant.astimezone(self.tz))

    def _to_utc(self, wall: datetime) -> datetime:
        # fold=0: a skipped time moves forward by the gap, a repeated one is the first.
        return wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)

    def _slack(self, now: datetime) -> timedelta:
        """Bounds how far wall-clock order and absolute order can disagree around `now`."""
        offsets = [(now + timedelta(days=d)).astimezone(self.tz).utcoffset() or timedelta(0)
                   for d in (-2, 0, 2)]
        return timedelta(hours=3) + (max(offsets) - min(offsets))

    def last_start(self, now: datetime) -> datetime | None:
        """The latest start <= now (UTC), or None if the window never started before."""
        now = _aware(now).astimezone(UTC)
        slack = self._slack(now)
        wall_now = now.astimezone(self.tz).replace(tzinfo=None)
        from croniter import CroniterBadDateError, croniter  # (only when windows are used)

        it = croniter(self.cron, wall_now + slack)
        best: datetime | None = None
        best_wall: datetime | None = None
        for _ in range(_MAX_STEPS):
            try:
                wall = it.get_prev(datetime)
            except CroniterBadDateError:
                break
            if best_wall is not None and wall < best_wall - slack:
                break
            start = self._to_utc(wall)
            if start <= now and (best is None or start > best):
                best, best_wall = start, wall
        return best

    def next_start(self, now: datetime) -> datetime | None:
        """The earliest start strictly after now (UTC), or None if there is none."""
        now = _aware(now).astimezone(UTC)
        slack = self._slack(now)
        wall_now = now.astimezone(self.tz).replace(tzinfo=None)
        from croniter import CroniterBadDateError, croniter

        it = croniter(self.cron, wall_now - slack)
        best: datetime | None = None
        best_wall: datetime | None = None
        for _ in range(_MAX_STEPS):
            try:
                wall = it.get_next(datetime)
            except CroniterBadDateError:
                break
            if best_wall is not None and wall > best_wall + slack:
                break
            start = self._to_utc(wall)
            if start > now and (best is None or start < best):
                best, best_wall = start, wall
        return best

    def open_at(self, now: datetime) -> tuple[datetime, datetime] | None:
        """(start, end) in UTC of this window's opening that contains now, or None.

        The latest start <= now is enough even when `duration` is longer than the cron
        period: every opening lasts the same, so the latest one ends last.
        """
        start = self.last_start(now)
        if start is None:
            return None
        end = start + self.duration
        return (start, end) if _aware(now) < end else None


def window_at(windows: Iterable[Window], now: datetime) -> Window | None:
    """The window open at `now` (the one closing last when several are), or None."""
    best: tuple[datetime, Window] | None = None
    for window in windows:
        span = window.open_at(now)
        if span is not None and (best is None or span[1] > best[0]):
            best = (span[1], window)
    return best[1] if best else None


def next_window_start(windows: Iterable[Window], now: datetime) -> tuple[Window, datetime] | None:
    """The soonest window start strictly after `now` (in the window's time zone), or None."""
    best: tuple[Window, datetime] | None = None
    for window in windows:
        start = window.next_start(now)
        if start is not None and (best is None or start < best[1]):
            best = (window, start)
    return (best[0], best[0].local(best[1])) if best else None


# ---------------------------------------------------------------- freezes


@dataclass(frozen=True)
class Freeze:
    """No deploys in [start, end). `label` is how the range was written (for messages)."""

    start: datetime
    end: datetime
    reason: str = ""
    label: str = ""

    def __post_init__(self) -> None:
        _aware(self.start)
        _aware(self.end)
        if self.end < self.start:
            raise ValueError("end is before start")
        if self.end == self.start:
            raise ValueError("end must be after start")

    @property
    def span(self) -> str:
        return self.label or f"{self.start.isoformat()}..{self.end.isoformat()}"

    def covers(self, now: datetime) -> bool:
        return self.start <= _aware(now) < self.end


def _fixed(instant: datetime) -> datetime:
    """The same instant with a fixed UTC offset (see Window.local)."""
    return instant.replace(tzinfo=dt_timezone(instant.utcoffset() or timedelta(0)), fold=0)


def _bound(value: date | datetime | str, tz: ZoneInfo, *, end: bool) -> tuple[datetime, str]:
    """An instant and its label: a date is its midnight (or the next one for an end)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"expected a date (2026-12-20) or an ISO datetime, got {value!r}") \
                from None
    if isinstance(value, datetime):
        instant = _fixed(value if value.tzinfo is not None else value.replace(tzinfo=tz))
        return instant, instant.isoformat()
    if isinstance(value, date):
        day = value + timedelta(days=1) if end else value
        return _fixed(datetime.combine(day, time(0), tzinfo=tz)), value.isoformat()
    raise ValueError(f"expected a date (2026-12-20) or an ISO datetime, got {value!r}")


def make_freeze(start: date | datetime | str, end: date | datetime | str, reason: str = "",
                timezone: str = "UTC") -> Freeze:
    """A Freeze from config values: dates are whole days, both inclusive, in `timezone`;
    datetimes are exact instants (end exclusive; naive ones are read in `timezone`)."""
    tz = zone(timezone)
    first, first_label = _bound(start, tz, end=False)
    last, last_label = _bound(end, tz, end=True)
    return Freeze(first, last, reason or "", f"{first_label}..{last_label}")


def freeze_at(freezes: Iterable[Freeze], now: datetime) -> Freeze | None:
    """The freeze covering `now` (the one ending last when several do), or None."""
    found = [f for f in freezes if f.covers(now)]
    return max(found, key=lambda f: f.end) if found else None


# ---------------------------------------------------------------- decisions


@dataclass
class Decision:
    """Whether a deploy may start now, and why.

    `window`: the open window when allowed; otherwise the window of `next_start`.
    `next_start`: when refused, the next instant a deploy would be allowed (a window start
    that is not frozen, or the end of a freeze inside an open window), in that window's
    time zone (the freeze's when there are no windows); None if there is none.
    """

    allowed: bool
    reason: str
    window: Window | None = None
    next_start: datetime | None = None
    freeze: Freeze | None = None


def _allowed(windows: Sequence[Window], freezes: Sequence[Freeze], t: datetime) -> bool:
    return freeze_at(freezes, t) is None and (not windows or window_at(windows, t) is not None)


def next_opening(windows: Sequence[Window], freezes: Sequence[Freeze],
                 now: datetime) -> tuple[Window | None, datetime] | None:
    """The earliest instant >= now at which a deploy is allowed, and the window then open
    (None without windows); None if that never happens again."""
    t = _aware(now)
    for _ in range(2 * len(freezes) + 4):
        freeze = freeze_at(freezes, t)
        if freeze is not None:
            t = freeze.end
            continue
        if not windows:
            return None, t
        window = window_at(windows, t)
        if window is not None:
            return window, window.local(t)
        upcoming = next_window_start(windows, t)
        if upcoming is None:
            return None
        t = upcoming[1]
    raise AssertionError("next_opening did not converge")  # pragma: no cover


def _until(delta: timedelta) -> str:
    minutes = max(1, math.ceil(delta.total_seconds() / 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return f"{days}d{hours:02d}h{minutes:02d}m" if days else f"{hours}h{minutes:02d}m"


def decide(windows: Iterable[Window], freezes: Iterable[Freeze], now: datetime) -> Decision:
    """May a deploy start at `now`? Freezes win over windows; no windows = always open."""
    windows, freezes = list(windows), list(freezes)
    now = _aware(now)
    freeze = freeze_at(freezes, now)
    if freeze is not None:
        nxt = next_opening(windows, freezes, now)
        about = f"inside freeze {freeze.span}" + (f" ({freeze.reason})" if freeze.reason else "")
        if nxt is None:
            tail = "no deploy window after the freeze"
        elif windows:
            tail = f"next window after the freeze starts {nxt[1].isoformat()}"
        else:
            tail = f"deploys resume {nxt[1].isoformat()}"
        return Decision(False, f"{about}; {tail}", nxt[0] if nxt else None,
                        nxt[1] if nxt else None, freeze)
    if not windows:
        return Decision(True, "no deploy windows configured")
    window = window_at(windows, now)
    if window is not None:
        span = window.open_at(now)
        assert span is not None
        end = span[1]
        cut = [f.start for f in freezes if now < f.start < end]
        until = window.local(min([end, *cut]))
        return Decision(True, f"inside window {window.name!r} until {until.isoformat()}", window)
    nxt = next_opening(windows, freezes, now)
    if nxt is None or nxt[0] is None:
        return Decision(False, "outside every deploy window; no upcoming window")
    win, start = nxt
    return Decision(
        False,
        f"outside every deploy window; next window {win.name!r} starts {start.isoformat()} "
        f"(in {_until(start - now)})",
        win, start,
    )


def refusal_message(env: str, decision: Decision) -> str:
    """``<env>: <why>``, e.g. ``prod: outside every deploy window; next window ...``."""
    return f"{env}: {decision.reason}"


def forced_note(decision: Decision, reason: str) -> str:
    """One line for the ledger when a deploy is forced with ``--force --reason``."""
    why = " ".join(str(reason or "").split())
    if not why:
        raise ValueError("--force needs a --reason")
    if decision.allowed:
        return f"--force given but not needed ({decision.reason}); reason: {why}"
    return f"forced past the deploy window check ({decision.reason}); reason: {why}"


def window_decision(cfg, now: datetime | None = None) -> Decision:
    """The decision for an env's config (its `windows` and `freezes`) at `now`."""
    return decide(cfg.windows, cfg.freezes, now or datetime.now(UTC))


def check_window(cfg, *, force: bool, reason: str, now: datetime | None = None) -> str | None:
    """Refuse (exit 3) outside every window or inside a freeze, unless forced with a reason.
    Returns the note the ledger records for a forced run."""
    from .errors import ConfigError, Refused

    if not cfg.windows and not cfg.freezes:
        return None
    decision = window_decision(cfg, now)
    if decision.allowed:
        return None
    if not force:
        raise Refused(refusal_message(cfg.env, decision) + '; to deploy anyway: --force --reason "why"')
    if not reason.strip():
        raise ConfigError("--force: a --reason is required (it is recorded in the ledger)")
    return forced_note(decision, reason)
