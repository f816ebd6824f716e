"""Which database backups to keep: grandfather-father-son retention (pure).

The rules are those of the seed's Laravel backup configuration (spatie/laravel-backup's
default strategy, whose keys Policy mirrors). The periods follow one another back in time:

1. every backup younger than ``all_days`` days is kept;
2. for the ``daily_days`` days before that, the newest backup of each calendar day (UTC);
3. for the ``weekly_weeks`` weeks before that, the newest of each ISO week;
4. for the ``monthly_months`` months before that, the newest of each calendar month;
5. for the ``yearly_years`` years before that, the newest of each calendar year;
6. anything older is removed.

With the defaults (7, 16, 8, 4, 2) backups are kept for about two and a half years. A day,
week, month or year that straddles two periods is grouped separately in each, as spatie
does. On top of the rules: names in ``protected`` (backups a snapshot refers to) are
always kept, and so is the newest backup of all, so that retention alone never leaves an
env without a backup.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_NAME_RE = re.compile(r"-(\d{8}T\d{6}Z)(?:-[0-9a-f]{7})?(?:\.dump|\.tar\.gz)\Z")


@dataclass(frozen=True)
class Policy:
    all_days: int = 7
    daily_days: int = 16
    weekly_weeks: int = 8
    monthly_months: int = 4
    yearly_years: int = 2

    def __post_init__(self) -> None:
        for key in ("all_days", "daily_days", "weekly_weeks", "monthly_months", "yearly_years"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{key}: expected an integer >= 0, got {value!r}")


def parse_backup_name(name: str) -> datetime | None:
    """The UTC time in a backup file name, or None if it is not a finished backup's name.

    ``local-nightly-20261121T020000Z.dump`` and ``local-predeploy-20261121T120501Z-3f8cb52.dump``
    (a release id) both give 2026-11-21 at 02:00:00 / 12:05:01 UTC; ``*.dump.partial`` and
    unrelated names give None.
    """
    match = _NAME_RE.search(name) if isinstance(name, str) else None
    if not match:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _sub_months(when: datetime, months: int) -> datetime:
    index = when.year * 12 + (when.month - 1) - months
    year, month = divmod(index, 12)
    day = min(when.day, calendar.monthrange(year, month + 1)[1])
    return when.replace(year=year, month=month + 1, day=day)


def _utc(when: datetime, what: str) -> datetime:
    if not isinstance(when, datetime) or when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{what}: expected a timezone-aware datetime, got {when!r}")
    return when.astimezone(UTC)


def keep(backups: list[tuple[str, datetime]], now: datetime, policy: Policy = Policy(),
         protected: Iterable[str] = frozenset()) -> tuple[list[str], list[str]]:
    """Split backups (name, time) into (kept names, removed names), both in input order."""
    now = _utc(now, "now")
    items = [(name, _utc(when, name)) for name, when in backups]
    all_until = now - timedelta(days=policy.all_days)
    daily_until = all_until - timedelta(days=policy.daily_days)
    weekly_until = daily_until - timedelta(weeks=policy.weekly_weeks)
    monthly_until = _sub_months(weekly_until, policy.monthly_months)
    yearly_until = _sub_months(monthly_until, 12 * policy.yearly_years)

    periods: list[tuple[datetime, datetime, Callable[[datetime], Hashable]]] = [
        (daily_until, all_until, lambda t: t.date()),
        (weekly_until, daily_until, lambda t: t.isocalendar()[:2]),
        (monthly_until, weekly_until, lambda t: (t.year, t.month)),
        (yearly_until, monthly_until, lambda t: t.year),
    ]
    kept: set[str] = {name for name in protected}
    kept.update(name for name, when in items if when > all_until)
    for oldest, newest, bucket in periods:
        best: dict[Hashable, tuple[datetime, str]] = {}
        for name, when in items:
            if oldest < when <= newest:
                key = bucket(when)
                if key not in best or (when, name) > best[key]:
                    best[key] = (when, name)
        kept.update(name for _, name in best.values())
    if items:
        kept.add(max(items, key=lambda item: (item[1], item[0]))[0])
    return ([name for name, _ in items if name in kept],
            [name for name, _ in items if name not in kept])


def plan(names: Iterable[str], now: datetime, policy: Policy = Policy(),
         protected: Iterable[str] = frozenset()) -> tuple[list[str], list[str], list[str]]:
    """(kept, removed, unknown) for backup file names; names that do not parse are never
    removed (they are reported as unknown)."""
    parsed: list[tuple[str, datetime]] = []
    unknown: list[str] = []
    for name in names:
        when = parse_backup_name(name)
        if when is None:
            unknown.append(name)
        else:
            parsed.append((name, when))
    kept, removed = keep(parsed, now, policy, frozenset(protected))
    return kept, removed, unknown
