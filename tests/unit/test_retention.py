"""deployer.retention: grandfather-father-son backup retention (the seed's spatie defaults).

The expected sets below are worked out by hand from the calendar (listed dates), not by
re-running the algorithm.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from deployer.retention import Policy, keep, parse_backup_name, plan


def nightly(day: date) -> tuple[str, datetime]:
    when = datetime(day.year, day.month, day.day, 2, 0, tzinfo=UTC)
    return f"local-nightly-{when:%Y%m%dT%H%M%SZ}.dump", when


def nightlies(first: date, last: date) -> list[tuple[str, datetime]]:
    days = (last - first).days + 1
    return [nightly(first + timedelta(days=i)) for i in range(days)]


def names(*days: str) -> list[str]:
    return [nightly(date.fromisoformat(d))[0] for d in days]


NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)  # a Saturday


# ------------------------------------------------------------------ names


def test_parse_backup_name():
    assert parse_backup_name("local-nightly-20261121T020000Z.dump") == \
        datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
    assert parse_backup_name("prod-eu-predeploy-20261121T120501Z-3f8cb52.dump") == \
        datetime(2026, 11, 21, 12, 5, 1, tzinfo=UTC)
    assert parse_backup_name("/srv/backups/local-predeploy-20261121T120501Z-3f8cb52.dump") == \
        datetime(2026, 11, 21, 12, 5, 1, tzinfo=UTC)
    for bad in ("local-nightly-20261121T020000Z.dump.partial", "local-nightly-latest.dump",
                "local-nightly-20261341T020000Z.dump", "notes.txt",
                "local-predeploy-20261121T120501Z-3F8CB52.dump"):
        assert parse_backup_name(bad) is None, bad


def test_policy_defaults_match_the_seed():
    assert Policy() == Policy(all_days=7, daily_days=16, weekly_weeks=8, monthly_months=4,
                              yearly_years=2)
    with pytest.raises(ValueError, match="daily_days"):
        Policy(daily_days=-1)


# ------------------------------------------------------------------ small case, by hand


def test_small_policy_by_hand():
    # all 2 days, then daily 3 days, weekly 2 weeks, monthly 2 months, yearly 1 year.
    # Boundaries (all at 12:00 UTC): all > 11-19, daily > 11-16, weekly > 11-02,
    # monthly > 09-02, yearly > 2025-09-02; older is removed.
    policy = Policy(all_days=2, daily_days=3, weekly_weeks=2, monthly_months=2, yearly_years=1)
    backups = nightlies(date(2025, 1, 1), date(2026, 11, 21))
    kept, removed = keep(backups, NOW, policy)
    assert kept == names(
        "2025-12-31", "2026-09-02",                 # yearly: newest of 2025, of 2026 in period
        "2026-09-30", "2026-10-31", "2026-11-02",   # monthly: Sep, Oct, Nov (in period)
        "2026-11-08", "2026-11-15", "2026-11-16",   # weekly: ISO weeks 45, 46, 47 (in period)
        "2026-11-17", "2026-11-18", "2026-11-19",   # daily
        "2026-11-20", "2026-11-21",                 # all
    )
    assert len(removed) == len(backups) - 13
    assert set(kept) | set(removed) == {n for n, _ in backups}


# ------------------------------------------------------------------ two years, defaults


TWO_YEARS = nightlies(date(2024, 11, 22), date(2026, 11, 21))

# Default policy at NOW (Saturday 2026-11-21 12:00 UTC); the period boundaries are
#   all     > 2026-11-14 12:00           (7 days)
#   daily   > 2026-10-29 12:00           (16 days before that)
#   weekly  > 2026-09-03 12:00           (8 weeks before that)
#   monthly > 2026-05-03 12:00           (4 months before that)
#   yearly  > 2024-05-03 12:00           (2 years before that: all our backups)
EXPECTED_ALL = [f"2026-11-{d}" for d in range(15, 22)]                        # 7
EXPECTED_DAILY = ["2026-10-30", "2026-10-31"] + [f"2026-11-{d:02d}" for d in range(1, 15)]  # 16
EXPECTED_WEEKLY = [                                                               # 9
    "2026-09-06",  # week of Mon 08-31 (only 09-04..09-06 are in the period)
    "2026-09-13", "2026-09-20", "2026-09-27", "2026-10-04", "2026-10-11", "2026-10-18",
    "2026-10-25",  # Sundays: the newest of each full ISO week
    "2026-10-29",  # week of Mon 10-26, cut by the daily period
]
EXPECTED_MONTHLY = ["2026-05-31", "2026-06-30", "2026-07-31", "2026-08-31",     # 5
                    "2026-09-03"]  # September, cut by the weekly period
EXPECTED_YEARLY = ["2024-12-31", "2025-12-31", "2026-05-03"]                   # 3


def test_two_years_of_nightly_backups():
    assert len(TWO_YEARS) == 730
    kept, removed = keep(TWO_YEARS, NOW, Policy())
    expected = sorted(EXPECTED_ALL + EXPECTED_DAILY + EXPECTED_WEEKLY + EXPECTED_MONTHLY
                      + EXPECTED_YEARLY)
    assert len(expected) == 7 + 16 + 9 + 5 + 3 == 40
    assert kept == names(*expected)  # input order, which is chronological here
    assert len(removed) == 730 - 40
    assert not set(kept) & set(removed)


def test_predeploy_backups_protected_and_input_order():
    recent = ("local-predeploy-20261118T120501Z-3f8cb52.dump",
              datetime(2026, 11, 18, 12, 5, 1, tzinfo=UTC))           # < 7 days: kept
    same_day = ("local-predeploy-20261105T150000Z-aaaaaaa.dump",
                datetime(2026, 11, 5, 15, 0, tzinfo=UTC))             # newest of 11-05: kept
    mid_week = ("local-predeploy-20261020T150000Z-bbbbbbb.dump",
                datetime(2026, 10, 20, 15, 0, tzinfo=UTC))            # 10-25 is newer: removed
    old = ("local-predeploy-20250310T090000Z-ccccccc.dump",
           datetime(2025, 3, 10, 9, 0, tzinfo=UTC))                   # old, but protected
    backups = list(reversed(TWO_YEARS)) + [recent, same_day, mid_week, old]
    protected = {old[0], nightly(date(2025, 3, 1))[0]}
    kept, removed = keep(backups, NOW, Policy(), protected)

    expected = set(names(*EXPECTED_ALL, *EXPECTED_DAILY, *EXPECTED_WEEKLY, *EXPECTED_MONTHLY,
                         *EXPECTED_YEARLY))
    expected -= set(names("2026-11-05"))           # replaced by the later predeploy backup
    expected |= {recent[0], same_day[0]} | protected
    assert set(kept) == expected
    assert len(kept) == 40 - 1 + 2 + 2
    assert set(removed) == {n for n, _ in backups} - expected
    assert mid_week[0] in removed and nightly(date(2026, 11, 5))[0] in removed
    # both lists keep the input order (newest first here)
    order = [n for n, _ in backups]
    assert kept == sorted(kept, key=order.index)
    assert removed == sorted(removed, key=order.index)


def test_protected_names_need_not_be_listed_and_unknown_times_rejected():
    kept, removed = keep([], NOW, Policy(), {"ghost.dump"})
    assert (kept, removed) == ([], [])
    with pytest.raises(ValueError, match="timezone-aware"):
        keep([("x.dump", datetime(2026, 1, 1))], NOW, Policy())


def test_the_newest_backup_is_never_removed():
    ancient = nightlies(date(2015, 1, 1), date(2015, 1, 10))
    kept, removed = keep(ancient, NOW, Policy())
    assert kept == names("2015-01-10")
    assert len(removed) == 9


def test_future_backups_are_kept():
    future = nightly(date(2026, 12, 1))
    kept, _ = keep([future], NOW, Policy())
    assert kept == [future[0]]


def test_all_zero_policy_keeps_only_the_newest_and_protected():
    backups = nightlies(date(2026, 11, 1), date(2026, 11, 21))
    zero = Policy(0, 0, 0, 0, 0)
    kept, removed = keep(backups, NOW, zero, {names("2026-11-03")[0]})
    assert kept == names("2026-11-03", "2026-11-21")
    assert len(removed) == 19


def test_plan_never_removes_unknown_names():
    files = [nightly(date(2024, 1, d))[0] for d in (1, 2)] + [
        "local-nightly-20261121T020000Z.dump", "local-nightly-x.dump.partial", "README"]
    kept, removed, unknown = plan(files, NOW)
    assert kept == ["local-nightly-20261121T020000Z.dump"]
    assert removed == names("2024-01-01", "2024-01-02")
    assert unknown == ["local-nightly-x.dump.partial", "README"]
