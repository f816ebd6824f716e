"""Inventory models of time: maintenance windows, freezes, scheduled jobs (cron) and backup
retention."""

from __future__ import annotations

import difflib
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, Field, PlainValidator, Strict, model_validator

from deployer import cron as _cron
from deployer import retention as _retention
from deployer import windows as _windows

from .types import (
    Int,
    _fail,
    _Model,
    _slug,
)


def _cron_expr(value: Any) -> str:
    try:
        return _cron.validate_expression(value)
    except (TypeError, ValueError) as exc:
        raise _fail(str(exc)) from None


def _duration(value: Any) -> Any:
    try:
        return _windows.parse_duration(value)
    except (TypeError, ValueError) as exc:
        raise _fail(str(exc)) from None


def _time_zone(value: Any) -> str:
    try:
        _windows.zone(value)
    except (TypeError, ValueError) as exc:
        raise _fail(str(exc)) from None
    return value


def _date_or_time(value: Any) -> date | datetime:
    if isinstance(value, (date, datetime)):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        except ValueError:
            pass
    raise _fail(f"expected a date (2026-12-20) or an ISO datetime, got {value!r}")


#: the commands a schedule can run: every command of the CLI that takes --env and needs nothing
#: else (tests/unit/test_input_errors.py holds this list against the CLI's)
SCHEDULABLE = ("abort", "config.check", "config.show", "cron.install", "cron.remove", "cron.show",
               "deploy", "maintenance.off", "maintenance.on", "maintenance.run", "preflight",
               "promote", "recover", "releases", "report", "rollback", "status", "unlock")


def _task(value: str) -> str:
    try:
        name = _cron.validate_task(value)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if name not in SCHEDULABLE:
        close = difflib.get_close_matches(name, SCHEDULABLE, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(SCHEDULABLE)
        raise _fail(f"unknown command {name!r} ({hint})")
    return name


CronExpr = Annotated[str, PlainValidator(_cron_expr)]
TimeZone = Annotated[str, Strict(), AfterValidator(_time_zone)]


class WindowModel(_Model):
    """A deploy window: opens when `cron` fires in `timezone`, lasts `duration`."""

    name: Annotated[str, Strict(), AfterValidator(_slug("window name"))]
    cron: CronExpr
    duration: Annotated[Any, PlainValidator(_duration)]
    timezone: TimeZone = "UTC"

    def to_window(self) -> _windows.Window:
        return _windows.Window(self.name, self.cron, self.duration, self.timezone)


class FreezeModel(_Model):
    """No deploys from `start` to `end` (dates are whole days, both inclusive)."""

    start: Annotated[Any, PlainValidator(_date_or_time)]
    end: Annotated[Any, PlainValidator(_date_or_time)]
    reason: Annotated[str, Strict()] = ""
    timezone: TimeZone = "UTC"

    @model_validator(mode="after")
    def _check(self) -> FreezeModel:
        try:
            self.to_freeze()
        except ValueError as exc:
            raise _fail(str(exc)) from None
        return self

    def to_freeze(self) -> _windows.Freeze:
        return _windows.make_freeze(self.start, self.end, self.reason, self.timezone)


class ScheduleModel(_Model):
    """A job for cron: the deployer verb `command` (its Invoke task name), run with --env when
    `cron` fires."""

    name: Annotated[str, Strict(), AfterValidator(_slug("schedule name"))]
    cron: CronExpr
    command: Annotated[str, Strict(), AfterValidator(_task)]

    def to_schedule(self) -> _cron.Schedule:
        return _cron.Schedule(self.name, self.cron, self.command)


class RetentionModel(_Model):
    """Backup retention (see deployer.retention)."""

    all_days: Annotated[Int, Field(ge=0)] = 7
    daily_days: Annotated[Int, Field(ge=0)] = 16
    weekly_weeks: Annotated[Int, Field(ge=0)] = 8
    monthly_months: Annotated[Int, Field(ge=0)] = 4
    yearly_years: Annotated[Int, Field(ge=0)] = 2

    def to_policy(self) -> _retention.Policy:
        return _retention.Policy(**self.model_dump())
