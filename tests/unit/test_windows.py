"""deployer.windows: deploy windows across time zones and DST changes, freezes, messages."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from deployer.windows import (
    Freeze,
    Window,
    decide,
    forced_note,
    freeze_at,
    make_freeze,
    next_window_start,
    parse_duration,
    refusal_message,
    window_at,
)

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def H(hours: float) -> timedelta:
    return timedelta(hours=hours)


# The seed's maintenance windows: Sunday 02:00-05:00 and Wednesday 02:00-04:00 (UTC).
SUNDAY = Window("sunday-night", "0 2 * * 0", H(3), "UTC")
WEDNESDAY = Window("wednesday", "0 2 * * 3", H(2), "UTC")


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize("text,expected", [
    ("90m", timedelta(minutes=90)), ("3h", H(3)), ("1h30m", timedelta(minutes=90)),
    ("2d", timedelta(days=2)), ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
    ("45s", timedelta(seconds=45)), (" 2h ", H(2)),
])
def test_parse_duration(text: str, expected: timedelta):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "3", "h", "3x", "30m2h", "-1h", "1.5h", "0m", "0h0m"])
def test_parse_duration_rejects(text: str):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_parse_duration_rejects_non_strings():
    with pytest.raises(TypeError, match='expected a duration like "90m"'):
        parse_duration(90)


def test_window_validation():
    with pytest.raises(ValueError, match="invalid cron expression '61 \\* \\* \\* \\*'"):
        Window("w", "61 * * * *", H(1))
    with pytest.raises(ValueError, match="never fires"):
        Window("w", "0 0 30 2 *", H(1))
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        Window("w", "0 2 * * 0", H(1), "Mars/Olympus")
    with pytest.raises(ValueError, match="duration must be longer than zero"):
        Window("w", "0 2 * * 0", timedelta(0))
    assert Window("w", "0 2 * * 0", "3h").duration == H(3)  # type: ignore[arg-type]


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        window_at([SUNDAY], datetime(2026, 11, 22, 3))


# ------------------------------------------------------------------ windows in UTC


def test_window_bounds_are_start_inclusive_end_exclusive():
    # 2026-11-22 is a Sunday
    assert window_at([SUNDAY], utc("2026-11-22T01:59:59")) is None
    assert window_at([SUNDAY], utc("2026-11-22T02:00:00")) == SUNDAY
    assert window_at([SUNDAY], utc("2026-11-22T04:59:59")) == SUNDAY
    assert window_at([SUNDAY], utc("2026-11-22T05:00:00")) is None
    assert window_at([SUNDAY, WEDNESDAY], utc("2026-11-25T03:30")) == WEDNESDAY
    assert window_at([SUNDAY, WEDNESDAY], utc("2026-11-25T04:00")) is None
    assert window_at([], utc("2026-11-25T03:30")) is None


def test_now_in_another_time_zone_is_the_same_instant():
    inside = utc("2026-11-22T04:30").astimezone(KOLKATA)  # 10:00 +05:30
    assert window_at([SUNDAY], inside) == SUNDAY


def test_next_window_start_is_strictly_after_now():
    assert next_window_start([SUNDAY, WEDNESDAY], utc("2026-11-21T12:55")) == \
        (SUNDAY, utc("2026-11-22T02:00"))
    assert next_window_start([SUNDAY, WEDNESDAY], utc("2026-11-22T02:00")) == \
        (WEDNESDAY, utc("2026-11-25T02:00"))
    assert next_window_start([], utc("2026-11-22T02:00")) is None


def test_window_spanning_midnight():
    late = Window("late", "0 23 * * 5", H(4), "UTC")  # Friday 23:00 to Saturday 03:00
    assert window_at([late], utc("2026-11-20T22:59")) is None
    assert window_at([late], utc("2026-11-20T23:00")) == late
    assert window_at([late], utc("2026-11-21T00:00")) == late  # Saturday already
    assert window_at([late], utc("2026-11-21T02:59")) == late
    assert window_at([late], utc("2026-11-21T03:00")) is None
    assert window_at([late], utc("2026-11-21T23:30")) is None  # no window on Saturday night


def test_windows_longer_than_their_period():
    hourly = Window("hourly", "0 * * * *", timedelta(minutes=90), "UTC")
    daily = Window("daily", "0 2 * * *", timedelta(days=2), "UTC")
    for minute in range(0, 48 * 60, 7):
        now = utc("2026-11-21T00:00") + timedelta(minutes=minute)
        assert window_at([hourly], now) == hourly
        assert window_at([daily], now) == daily
    weekly = Window("weekly", "0 2 * * 0", timedelta(days=8), "UTC")
    assert window_at([weekly], utc("2026-11-29T01:00")) == weekly  # started the 22nd


def test_overlapping_windows_give_the_one_closing_last():
    short = Window("short", "0 2 * * *", H(1), "UTC")
    long = Window("long", "30 1 * * *", H(3), "UTC")
    assert window_at([short, long], utc("2026-11-21T02:15")) == long


# ------------------------------------------------------------------ time zones


def test_europe_paris_follows_the_local_clock():
    wed = Window("wednesday", "0 2 * * 3", H(2), "Europe/Paris")
    # winter (CET, +01:00): 02:00 local is 01:00 UTC
    assert window_at([wed], utc("2026-11-25T00:59")) is None
    assert window_at([wed], utc("2026-11-25T01:00")) == wed
    assert window_at([wed], utc("2026-11-25T02:59")) == wed
    assert window_at([wed], utc("2026-11-25T03:00")) is None
    # summer (CEST, +02:00): 02:00 local is 00:00 UTC
    assert window_at([wed], utc("2026-07-01T00:00")) == wed
    assert window_at([wed], utc("2026-07-01T02:00")) is None
    # the next start is given on the window's own clock
    _, start = next_window_start([wed], utc("2026-11-21T12:00"))
    assert start.isoformat() == "2026-11-25T02:00:00+01:00"
    assert start == utc("2026-11-25T01:00")


def test_america_new_york_window_spans_midnight_utc():
    fri = Window("friday-evening", "0 22 * * 5", H(2), "America/New_York")
    # Friday 22:00 EST is Saturday 03:00 UTC
    assert window_at([fri], utc("2026-11-21T02:59")) is None
    assert window_at([fri], utc("2026-11-21T03:00")) == fri
    assert window_at([fri], utc("2026-11-21T04:59")) == fri
    assert window_at([fri], utc("2026-11-21T05:00")) is None
    # in summer (EDT) it is 02:00 UTC
    assert window_at([fri], utc("2026-07-04T02:00")) == fri
    assert window_at([fri], utc("2026-07-04T04:00")) is None


def test_asia_kolkata_half_hour_offset():
    night = Window("night", "30 1 * * *", H(1), "Asia/Kolkata")
    # 01:30 IST (+05:30) is 20:00 UTC the day before
    assert window_at([night], utc("2026-11-21T19:59")) is None
    assert window_at([night], utc("2026-11-21T20:00")) == night
    assert window_at([night], utc("2026-11-21T20:59")) == night
    assert window_at([night], utc("2026-11-21T21:00")) is None
    _, start = next_window_start([night], utc("2026-11-21T12:00"))
    assert start.isoformat() == "2026-11-22T01:30:00+05:30"


# ------------------------------------------------------------------ DST


PARIS_SUNDAY = Window("sunday-night", "0 2 * * 0", H(3), "Europe/Paris")


def test_spring_forward_missing_start_opens_when_the_clock_jumps():
    # 2026-03-29, Europe/Paris: 02:00 CET jumps to 03:00 CEST (01:00 UTC); 02:00 never
    # happens. Chosen behaviour: the window opens at 03:00 CEST (01:00 UTC), i.e. the start
    # moves forward by the gap, and lasts 3 hours of real time, to 06:00 CEST (04:00 UTC).
    before = utc("2026-03-28T12:00")
    _, start = next_window_start([PARIS_SUNDAY], before)
    assert start == utc("2026-03-29T01:00")
    assert start.isoformat() == "2026-03-29T03:00:00+02:00"
    assert window_at([PARIS_SUNDAY], utc("2026-03-29T00:59")) is None
    assert window_at([PARIS_SUNDAY], utc("2026-03-29T01:00")) == PARIS_SUNDAY
    assert window_at([PARIS_SUNDAY], utc("2026-03-29T03:59")) == PARIS_SUNDAY
    assert window_at([PARIS_SUNDAY], utc("2026-03-29T04:00")) is None
    # the Sundays around it are normal: 02:00 CET = 01:00 UTC, then 02:00 CEST = 00:00 UTC
    assert next_window_start([PARIS_SUNDAY], utc("2026-03-21T12:00"))[1] == utc("2026-03-22T01:00")
    assert next_window_start([PARIS_SUNDAY], utc("2026-03-29T12:00"))[1] == utc("2026-04-05T00:00")


def test_spring_forward_start_inside_the_gap_moves_by_the_gap():
    half = Window("half", "30 2 * * 0", H(1), "Europe/Paris")
    assert next_window_start([half], utc("2026-03-28T12:00"))[1].isoformat() == \
        "2026-03-29T03:30:00+02:00"
    ny = Window("ny", "30 2 * * 0", H(1), "America/New_York")  # 2026-03-08: 02:00 -> 03:00
    _, start = next_window_start([ny], utc("2026-03-07T12:00"))
    assert start == utc("2026-03-08T07:30")
    assert start.isoformat() == "2026-03-08T03:30:00-04:00"


def test_fall_back_repeated_start_opens_once_at_the_first_occurrence():
    # 2026-10-25, Europe/Paris: 03:00 CEST falls back to 02:00 CET, so 02:00 happens at
    # 00:00 UTC (CEST) and again at 01:00 UTC (CET). Chosen behaviour: the window opens
    # once, at the first 02:00 (00:00 UTC), for 3 hours of real time (to 03:00 UTC); the
    # second 02:00 neither reopens nor extends it.
    _, start = next_window_start([PARIS_SUNDAY], utc("2026-10-24T12:00"))
    assert start == utc("2026-10-25T00:00")
    assert start.isoformat() == "2026-10-25T02:00:00+02:00"
    assert window_at([PARIS_SUNDAY], utc("2026-10-24T23:59")) is None
    assert window_at([PARIS_SUNDAY], utc("2026-10-25T00:00")) == PARIS_SUNDAY
    assert window_at([PARIS_SUNDAY], utc("2026-10-25T02:59")) == PARIS_SUNDAY
    assert window_at([PARIS_SUNDAY], utc("2026-10-25T03:00")) is None
    # after the first 02:00, the next start is a week later (not the repeated 02:00 CET)
    assert next_window_start([PARIS_SUNDAY], utc("2026-10-25T00:00"))[1] == \
        utc("2026-11-01T01:00")
    assert next_window_start([PARIS_SUNDAY], utc("2026-10-25T00:30"))[1].isoformat() == \
        "2026-11-01T02:00:00+01:00"


def test_fall_back_new_york_short_window_is_not_reopened():
    ny = Window("ny", "30 1 * * 0", timedelta(minutes=30), "America/New_York")
    # 2026-11-01: 01:30 EDT (05:30 UTC), then 01:30 EST (06:30 UTC)
    assert window_at([ny], utc("2026-11-01T05:30")) == ny
    assert window_at([ny], utc("2026-11-01T06:00")) is None
    assert window_at([ny], utc("2026-11-01T06:40")) is None  # second 01:30: not reopened


def test_window_across_the_dst_change_lasts_real_hours():
    # Saturday 23:00 CET (22:00 UTC) for 5 hours, on the spring-forward night: it ends 5 real
    # hours later, at 03:00 UTC, which the wall clock shows as 05:00 CEST
    late = Window("late", "0 23 * * 6", H(5), "Europe/Paris")
    assert window_at([late], utc("2026-03-28T21:59")) is None
    assert window_at([late], utc("2026-03-28T22:00")) == late
    assert window_at([late], utc("2026-03-29T02:59")) == late
    assert window_at([late], utc("2026-03-29T03:00")) is None
    assert decide([late], [], utc("2026-03-28T23:00")).reason == (
        "inside window 'late' until 2026-03-29T05:00:00+02:00")


# ------------------------------------------------------------------ freezes


FREEZE = make_freeze(date(2026, 12, 20), date(2027, 1, 3), "code freeze before launch")


def test_freeze_dates_are_inclusive_whole_days():
    assert FREEZE.start == utc("2026-12-20T00:00")
    assert FREEZE.end == utc("2027-01-04T00:00")
    assert FREEZE.span == "2026-12-20..2027-01-03"
    assert freeze_at([FREEZE], utc("2026-12-19T23:59:59")) is None
    assert freeze_at([FREEZE], utc("2026-12-20T00:00")) == FREEZE
    assert freeze_at([FREEZE], utc("2027-01-03T23:59:59")) == FREEZE
    assert freeze_at([FREEZE], utc("2027-01-04T00:00")) is None


def test_freeze_in_a_time_zone_and_with_datetimes():
    paris = make_freeze("2026-12-20", "2026-12-20", "one day", "Europe/Paris")
    assert (paris.start, paris.end) == (utc("2026-12-19T23:00"), utc("2026-12-20T23:00"))
    exact = make_freeze("2026-12-20T18:00:00+00:00", "2026-12-21T06:00", "night",
                        "America/New_York")
    assert exact.start == utc("2026-12-20T18:00")
    assert exact.end == utc("2026-12-21T11:00")  # naive: read in the freeze's zone (EST)
    assert exact.span == "2026-12-20T18:00:00+00:00..2026-12-21T06:00:00-05:00"


def test_freeze_validation():
    with pytest.raises(ValueError, match="end is before start"):
        make_freeze("2027-01-03", "2026-12-20")
    with pytest.raises(ValueError, match="end must be after start"):
        Freeze(utc("2027-01-03T00:00"), utc("2027-01-03T00:00"))
    with pytest.raises(ValueError, match="expected a date"):
        make_freeze("next tuesday", "2026-12-20")
    with pytest.raises(ValueError, match="unknown time zone"):
        make_freeze("2026-12-20", "2026-12-21", timezone="Mars/Olympus")


def test_overlapping_freezes_report_the_one_ending_last():
    other = make_freeze("2026-12-24", "2027-01-10", "holidays")
    assert freeze_at([FREEZE, other], utc("2026-12-25T12:00")) == other


# ------------------------------------------------------------------ decisions and messages


def test_outside_every_window_message():
    decision = decide([SUNDAY, WEDNESDAY], [], utc("2026-11-21T12:55"))
    assert not decision.allowed
    assert (decision.window, decision.next_start) == (SUNDAY, utc("2026-11-22T02:00"))
    assert refusal_message("local", decision) == (
        "local: outside every deploy window; next window 'sunday-night' starts "
        "2026-11-22T02:00:00+00:00 (in 13h05m)"
    )


def test_countdown_format():
    def msg(now: str) -> str:
        return refusal_message("local", decide([SUNDAY], [], utc(now)))
    assert msg("2026-11-22T01:55").endswith("(in 0h05m)")
    assert msg("2026-11-22T01:59:30").endswith("(in 0h01m)")  # rounded up, never 0h00m
    assert msg("2026-11-19T23:00").endswith("(in 2d03h00m)")


def test_message_uses_the_window_time_zone():
    wed = Window("wednesday", "0 2 * * 3", H(2), "Europe/Paris")
    assert refusal_message("staging", decide([wed], [], utc("2026-11-24T12:00"))) == (
        "staging: outside every deploy window; next window 'wednesday' starts "
        "2026-11-25T02:00:00+01:00 (in 13h00m)"
    )


def test_inside_window_is_allowed():
    decision = decide([SUNDAY], [], utc("2026-11-22T03:00"))
    assert decision.allowed and decision.window == SUNDAY and decision.freeze is None
    assert decision.reason == "inside window 'sunday-night' until 2026-11-22T05:00:00+00:00"


def test_no_windows_means_always_allowed():
    decision = decide([], [], utc("2026-11-21T12:55"))
    assert decision.allowed
    assert decision.reason == "no deploy windows configured"


def test_freeze_wins_over_an_open_window():
    # Sunday 2026-12-27 at 02:30: inside the Sunday window, but frozen. The freeze runs
    # through 2027-01-03 (inclusive), so Sunday 2027-01-03 02:00 is frozen too and the next
    # usable window is 2027-01-10.
    decision = decide([SUNDAY], [FREEZE], utc("2026-12-27T02:30"))
    assert not decision.allowed and decision.freeze == FREEZE
    assert decision.next_start == utc("2027-01-10T02:00")
    assert refusal_message("prod", decision) == (
        "prod: inside freeze 2026-12-20..2027-01-03 (code freeze before launch); "
        "next window after the freeze starts 2027-01-10T02:00:00+00:00"
    )


def test_freeze_ending_at_an_instant():
    freeze = make_freeze("2026-12-20", "2027-01-03T00:00:00+00:00", "code freeze before launch")
    decision = decide([SUNDAY, WEDNESDAY], [freeze], utc("2026-12-27T02:30"))
    assert refusal_message("prod", decision) == (
        "prod: inside freeze 2026-12-20..2027-01-03T00:00:00+00:00 (code freeze before launch); "
        "next window after the freeze starts 2027-01-03T02:00:00+00:00"
    )


def test_freeze_covering_the_next_window_is_skipped_when_outside_windows():
    # Saturday: the next window (Sunday 2026-12-20 02:00) is frozen, as are all the others
    # up to 2027-01-03, so the next usable one is Wednesday 2027-01-06.
    decision = decide([SUNDAY, WEDNESDAY], [FREEZE], utc("2026-12-19T12:00"))
    assert not decision.allowed and decision.freeze is None
    assert (decision.window, decision.next_start) == (WEDNESDAY, utc("2027-01-06T02:00"))
    assert refusal_message("prod", decision) == (
        "prod: outside every deploy window; next window 'wednesday' starts "
        "2027-01-06T02:00:00+00:00 (in 17d14h00m)"
    )


def test_freeze_ending_inside_an_open_window():
    freeze = make_freeze("2026-11-20T00:00:00+00:00", "2026-11-22T03:30:00+00:00", "incident")
    decision = decide([SUNDAY], [freeze], utc("2026-11-21T12:00"))
    assert decision.next_start == utc("2026-11-22T03:30")
    assert decision.reason.endswith("next window after the freeze starts "
                                    "2026-11-22T03:30:00+00:00")
    assert decide([SUNDAY], [freeze], utc("2026-11-22T03:30")).allowed


def test_freeze_without_windows_and_chained_freezes():
    second = make_freeze("2027-01-04", "2027-01-05", "migration")
    decision = decide([], [FREEZE, second], utc("2026-12-25T00:00"))
    assert refusal_message("prod", decision) == (
        "prod: inside freeze 2026-12-20..2027-01-03 (code freeze before launch); "
        "deploys resume 2027-01-06T00:00:00+00:00"
    )
    no_reason = make_freeze("2026-12-20", "2026-12-21")
    assert decide([], [no_reason], utc("2026-12-20T10:00")).reason == (
        "inside freeze 2026-12-20..2026-12-21; deploys resume 2026-12-22T00:00:00+00:00"
    )


def test_window_closing_early_because_of_a_freeze():
    freeze = make_freeze("2026-11-22T04:00:00+00:00", "2026-11-23", "audit")
    decision = decide([SUNDAY], [freeze], utc("2026-11-22T02:30"))
    assert decision.allowed
    assert decision.reason == "inside window 'sunday-night' until 2026-11-22T04:00:00+00:00"


def test_forced_note_is_one_line():
    decision = decide([SUNDAY], [], utc("2026-11-21T12:55"))
    note = forced_note(decision, "hotfix for\nINC-42")
    assert note == (
        "forced past the deploy window check (outside every deploy window; next window "
        "'sunday-night' starts 2026-11-22T02:00:00+00:00 (in 13h05m)); reason: hotfix for INC-42"
    )
    assert "\n" not in note
    assert forced_note(decide([], [], utc("2026-11-21T12:55")), "x").startswith(
        "--force given but not needed (no deploy windows configured)")
    with pytest.raises(ValueError, match="--reason"):
        forced_note(decision, "  ")
