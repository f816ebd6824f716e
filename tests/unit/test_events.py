"""The JSON event schema: examples, precise problems, and every emitted kind documented."""

from __future__ import annotations

import ast
import io
import json
import re
from pathlib import Path

import pytest

from deployer import events as E
from deployer.output import JsonReporter

ROOT = Path(__file__).resolve().parents[2]
AT = "2026-11-21T12:05:01.123456Z"
REL = "20261121T120501Z-3f8cb52"


def ev(kind: str, **fields) -> dict:
    return {"schema": 1, "event": kind, "at": AT, **fields}


VALID = [
    ev("run", message="deploying v2 (3f8cb52) to prod: 5 app hosts"),
    ev("stage", stage="preflight", state="start", detail="7 hosts, ref v2"),
    ev("stage", stage="switch", state="done", seconds=0.301),
    ev("stage", stage="switch", state="done", seconds=2),
    ev("stage", stage="gate", state="failed", error="health gate failed"),
    ev("host", stage="cache_warm", host="web1", state="done", detail="{php} artisan config:cache"),
    ev("gate", host="web1", passed=False, detail="HTTP 500", release=REL),
    ev("gate", host="wave 1", passed=True, detail="bake 30s: pass"),
    ev("rollback", message="deploy failed: x\nrolling back to the snapshot"),
    ev("outcome", outcome="success", release=REL, message="deployed"),
    ev("outcome", outcome="paused", release=REL, message="paused after wave 1/3"),
    ev("outcome", outcome="aborted", release=REL, message="aborted"),
    ev("notice", message="cleanup: removed 2 old release(s)"),
    ev("plan", stage="pull", host="web1", command="git clone ..."),
    ev("row", table="prod: releases", release=REL, ref="v2", **{"served by": "web1"}),
    ev("error", exit_code=3, message="lock held", hint=None),
    ev("error", exit_code=4, message="rollback failed", hint="run `inv status --env prod`"),
    ev("notice", message="extra fields are allowed", future_field=[1, 2]),
]


@pytest.mark.parametrize("event", VALID, ids=lambda e: e["event"])
def test_valid_examples_have_no_problems(event):
    assert E.validate(event) == []


@pytest.mark.parametrize("event, problems", [
    (ev("stage", stage="backup"), ["stage.state: missing required field"]),
    (ev("stage", stage="backup", state="started"),
     ["stage.state: expected one of start, done, failed; got 'started'"]),
    (ev("stage", stage="backup", state="done", seconds="1.5"),
     ["stage.seconds: expected integer | number, got string '1.5'"]),
    (ev("gate", host="web1", passed="false", detail="x"),
     ["gate.passed: expected boolean, got string 'false'"]),
    (ev("gate", host="web1", passed=1, detail="x"),
     ["gate.passed: expected boolean, got integer 1"]),
    (ev("error", exit_code=True, message="x", hint=None),
     ["error.exit_code: expected integer, got boolean True"]),
    (ev("error", exit_code=5, message="x", hint=None),
     ["error.exit_code: expected one of 1, 2, 3, 4, 130; got 5"]),
    (ev("error", exit_code=2, message="x"), ["error.hint: missing required field"]),
    (ev("outcome", outcome="rolled_back", release=REL, message="m"),
     ["outcome.outcome: expected one of success, paused, aborted; got 'rolled_back'"]),
    (ev("host", stage="pull", host="web1", state="done"), ["host.detail: missing required field"]),
    (ev("plan", stage="pull", host=None, command="x"),
     ["plan.host: expected string, got null None"]),
    (ev("row", table="t", host="web1", pid=12), ["row.pid: expected string, got integer 12"]),
    (ev("teleport", message="x"),
     ["event: unknown kind 'teleport' (known: " + ", ".join(E.EVENT_KINDS) + ")"]),
    ({"event": "notice", "message": "x"},
     ["schema: missing required field", "at: missing required field"]),
    ({**ev("notice", message="x"), "schema": 2}, ["schema: expected one of 1; got 2"]),
    ({**ev("notice", message="x"), "at": "2026-11-21 12:05:01"},
     ["at: expected an ISO-8601 UTC time like 2026-11-21T12:05:01.123456Z, "
      "got '2026-11-21 12:05:01'"]),
    ({**ev("notice", message="x"), "event": 7}, ["event: expected string, got integer 7"]),
    (["not", "an", "object"], ["event: expected a JSON object, got array"]),
])
def test_broken_events_report_precise_problems(event, problems):
    assert E.validate(event) == problems


def test_several_problems_are_all_reported():
    assert E.validate(ev("outcome", outcome="won")) == [
        "outcome.outcome: expected one of success, paused, aborted; got 'won'",
        "outcome.release: missing required field",
        "outcome.message: missing required field",
    ]


def test_validate_line():
    assert E.validate_line(json.dumps(VALID[0])) == []
    assert E.validate_line("error: lock held")[0].startswith("not JSON: ")


def test_json_reporter_output_validates():
    buf = io.StringIO()
    rep = JsonReporter(buf)
    rep.event("stage", stage="backup", state="done", seconds=1.25)
    rep.event("gate", host="web1", passed=True, detail="200 in 12 ms", release=REL)
    rep.event("error", exit_code=2, message="hosts/prod.yaml: hosts[2].roles: expected a list",
              hint=None)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3
    for line in lines:
        assert E.validate_line(line) == []


# ------------------------------------------------------------ the engine's call sites


def _call_sites() -> list[tuple[str, int, str, set[str], bool]]:
    """(file, line, kind, keyword names, has **kwargs) of every `.event("<kind>", ...)` call."""
    sites = []
    for path in sorted((ROOT / "deployer").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "event" and node.args):
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            names = {k.arg for k in node.keywords if k.arg is not None}
            splat = any(k.arg is None for k in node.keywords)
            sites.append((str(path.relative_to(ROOT)), node.lineno, first.value, names, splat))
    return sites


def test_call_sites_are_found_by_both_ast_and_text_scans():
    sites = _call_sites()
    text_kinds = set()
    for path in (ROOT / "deployer").rglob("*.py"):
        text_kinds |= set(re.findall(r"""\.event\(\s*["'](\w+)["']""", path.read_text("utf-8")))
    assert {s[2] for s in sites} == text_kinds
    assert {"stage", "outcome", "error"} <= text_kinds


def test_every_emitted_kind_has_a_schema_entry():
    undocumented = [f"{f}:{line}: {kind}" for f, line, kind, _, _ in _call_sites()
                    if kind not in E.SCHEMA]
    assert undocumented == [], "add these kinds to deployer/events.py and docs/events.md"


def test_every_emitted_field_is_in_the_schema():
    problems = []
    for f, line, kind, names, _ in _call_sites():
        if kind not in E.SCHEMA or kind == "row":
            continue
        extra = names - set(E.SCHEMA[kind])
        if extra:
            problems.append(f"{f}:{line}: {kind} has undocumented field(s) {sorted(extra)}")
    assert problems == [], "add these fields to deployer/events.py and docs/events.md"


def test_every_call_site_passes_the_required_fields():
    problems = []
    for f, line, kind, names, splat in _call_sites():
        if kind not in E.SCHEMA or splat:
            continue  # **fields: checked by the examples above
        required = {n for n, spec in E.SCHEMA[kind].items() if spec.required}
        if required - names:
            problems.append(f"{f}:{line}: {kind} lacks {sorted(required - names)}")
    assert problems == []


def test_docs_describe_every_kind_and_field():
    doc = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    for kind, fields in E.SCHEMA.items():
        assert f"### `{kind}`" in doc, kind
        section = doc.split(f"### `{kind}`", 1)[1].split("\n### ", 1)[0]
        for name in fields:
            assert f"| `{name}` |" in section, f"{kind}.{name}"
        examples = [json.loads(line) for line in section.splitlines() if line.startswith("{")]
        assert examples, f"no example line for {kind}"
        for example in examples:
            assert example["event"] == kind
            assert E.validate(example) == [], (kind, example)
    for name in E.ENVELOPE:
        assert f"| `{name}` |" in doc
    assert "schema: 1" in doc and "bumps" in doc


def test_event_kinds_match_the_schema():
    assert E.EVENT_KINDS == tuple(E.SCHEMA)
    assert set(E.EVENT_KINDS) == {"run", "stage", "host", "gate", "rollback", "outcome",
                                  "notice", "plan", "command", "row", "error"}
    assert E.SCHEMA_VERSION == 1
