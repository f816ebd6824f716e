"""The JSON event schema of ``--output json``, as data, and a validator (pure).

Every line ``JsonReporter`` prints is one JSON object::

    {"schema": 1, "event": "<kind>", "at": "2026-11-21T12:05:01.123456Z", ...fields}

``SCHEMA`` maps each event kind to its fields: ``Field(types, required, choices, doc)``.
``validate(event)`` lists the problems of one decoded event (empty list = valid): unknown
kinds, a wrong envelope, missing or mistyped required fields, values outside a field's
choices. Fields that are not in the schema are allowed (readers must ignore them).

Versioning (docs/events.md): adding an event kind or a field keeps ``schema: 1``; removing
or renaming a field or a kind, changing a field's type, or making an optional field
required bumps it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .output import EVENT_SCHEMA

SCHEMA_VERSION = EVENT_SCHEMA

_NONE = type(None)
#: ``at``: UTC, ISO-8601, as written by deployer.ledger.now_iso().
AT_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z\Z")


@dataclass(frozen=True)
class Field:
    """One field of an event: the Python types its JSON value may decode to."""

    types: tuple[type, ...]
    required: bool = True
    choices: tuple[Any, ...] | None = None
    doc: str = ""

    @property
    def type_name(self) -> str:
        return " | ".join(_TYPE_NAMES[t] for t in self.types)


_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean",
               _NONE: "null", dict: "object", list: "array"}

STR = (str,)
NUM = (int, float)


def _f(types: tuple[type, ...], doc: str, *, required: bool = True,
       choices: tuple[Any, ...] | None = None) -> Field:
    return Field(types, required, choices, doc)


#: The envelope every event has.
ENVELOPE: dict[str, Field] = {
    "schema": _f((int,), f"schema version, {SCHEMA_VERSION}", choices=(SCHEMA_VERSION,)),
    "event": _f(STR, "the event kind (a key of SCHEMA)"),
    "at": _f(STR, "when it was emitted, UTC, e.g. 2026-11-21T12:05:01.123456Z"),
}

STAGE_STATES = ("start", "done", "failed")
HOST_STATES = ("start", "done", "failed")
OUTCOMES = ("success", "paused", "aborted")

SCHEMA: dict[str, dict[str, Field]] = {
    "run": {
        "message": _f(STR, "what this run does, e.g. `deploying v2 (3f8cb52) to prod: 5 app "
                           "hosts`; emitted by deploy after preflight, and by promote/abort"),
    },
    "stage": {
        "stage": _f(STR, "pipeline stage: preflight, snapshot, maintenance, backup, pull, "
                         "migrate, cache_warm, switch, worker_restart, gate, finalize"),
        "state": _f(STR, "start, then done or failed", choices=STAGE_STATES),
        "detail": _f(STR, "on start: what the stage works on (e.g. `wave 1/3: web1`)",
                     required=False),
        "seconds": _f(NUM, "on done: the stage's duration", required=False),
        "error": _f(STR, "on failed: the error (at most 2000 characters)", required=False),
    },
    "host": {
        "stage": _f(STR, "the stage, or the hook (`before_<stage>` / `after_<stage>`)"),
        "host": _f(STR, "host name from the inventory"),
        "state": _f(STR, "what happened on the host", choices=HOST_STATES),
        "detail": _f(STR, "the playbook step that ran (its template, never the values)"),
        "error": _f(STR, "on failed: the host, the failing command (secrets masked) and how it "
                         "ended", required=False),
        "exit_status": _f((int, _NONE), "on failed: the command's exit status (null: it timed "
                                        "out or did not end)", required=False),
        "stdout": _f(STR, "on failed: the end of what the command printed on stdout (at most "
                          "20 lines, 4 KiB; secrets masked)", required=False),
        "stderr": _f(STR, "on failed: the end of what it printed on stderr (same bounds)",
                     required=False),
    },
    "gate": {
        "host": _f(STR, "host name, or `wave N` for a wave's bake verdict"),
        "passed": _f((bool,), "the verdict"),
        "detail": _f(STR, "why (status, latency, error rate, ...)"),
        "release": _f((str, _NONE), "the release checked; absent on a wave (bake) verdict",
                      required=False),
    },
    "rollback": {
        "message": _f(STR, "a rollback step: why it started, the database decision, the "
                           "result (may span several lines)"),
    },
    "outcome": {
        "outcome": _f(STR, "how the command ended", choices=OUTCOMES),
        "release": _f(STR, "the release now served (success), paused or aborted"),
        "message": _f(STR, "one line for humans"),
    },
    "notice": {
        "message": _f(STR, "information: maintenance decisions, cleanup, lock state, ..."),
    },
    "plan": {
        "stage": _f(STR, "stage of the planned command (deploy --dry-run)"),
        "host": _f(STR, "host the command would run on"),
        "command": _f(STR, "the command, secrets masked as ***"),
    },
    "command": {
        "stage": _f(STR, "stage of the command being run, as `plan` names it"),
        "host": _f(STR, "host it runs on (or is checked over HTTP)"),
        "command": _f(STR, "the command, secrets masked as ***; the same text `plan` printed"),
    },
    "row": {
        "table": _f(STR, "title of the table (status, releases); the other fields are its "
                         "columns, with string values"),
    },
    "error": {
        "exit_code": _f((int,), "the process exit code", choices=(1, 2, 3, 4, 130)),
        "message": _f(STR, "what went wrong (may span several lines)"),
        "hint": _f((str, _NONE), "what to do next, or null"),
    },
}

EVENT_KINDS: tuple[str, ...] = tuple(SCHEMA)


def _type_ok(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types  # bool is an int in Python, never in the schema
    if isinstance(value, int) and not isinstance(value, bool) and float in types:
        return True
    return isinstance(value, types)


def _json_type(value: Any) -> str:
    for t in (bool, _NONE, str, int, float, dict, list):
        if isinstance(value, t):
            return _TYPE_NAMES[t]
    return type(value).__name__


def _check(where: str, spec: Field, value: Any) -> list[str]:
    if not _type_ok(value, spec.types):
        return [f"{where}: expected {spec.type_name}, got {_json_type(value)} {value!r}"]
    if spec.choices is not None and value not in spec.choices:
        return [f"{where}: expected one of {', '.join(map(str, spec.choices))}; got {value!r}"]
    return []


def validate(event: Any) -> list[str]:
    """Problems of one decoded event; an empty list means it is valid. Extra fields are fine."""
    if not isinstance(event, dict):
        return [f"event: expected a JSON object, got {_json_type(event)}"]
    problems: list[str] = []
    for name, spec in ENVELOPE.items():
        if name not in event:
            problems.append(f"{name}: missing required field")
            continue
        problems += _check(name, spec, event[name])
    at = event.get("at")
    if isinstance(at, str) and not AT_RE.match(at):
        problems.append(f"at: expected an ISO-8601 UTC time like 2026-11-21T12:05:01.123456Z, "
                        f"got {at!r}")
    kind = event.get("event")
    if not isinstance(kind, str):
        return problems
    fields = SCHEMA.get(kind)
    if fields is None:
        problems.append(f"event: unknown kind {kind!r} (known: {', '.join(EVENT_KINDS)})")
        return problems
    for name, spec in fields.items():
        where = f"{kind}.{name}"
        if name not in event:
            if spec.required:
                problems.append(f"{where}: missing required field")
            continue
        problems += _check(where, spec, event[name])
    if kind == "row":
        for name, value in event.items():
            if name not in ENVELOPE and name != "table" and not isinstance(value, str):
                problems.append(f"row.{name}: expected string, got {_json_type(value)} {value!r}")
    return problems


def validate_line(line: str) -> list[str]:
    """Problems of one line of ``--output json`` (must be one JSON object)."""
    try:
        event = json.loads(line)
    except ValueError as exc:
        return [f"not JSON: {exc}"]
    return validate(event)


__all__ = ["ENVELOPE", "EVENT_KINDS", "Field", "SCHEMA", "SCHEMA_VERSION", "validate",
           "validate_line"]
