"""A Markdown summary of one command's JSON events, e.g. for a GitHub Actions step summary.

    deployer deploy --env prod --output json > events.jsonl; rc=$?
    python -m deployer.summary events.jsonl --env prod --command deploy --exit-code $rc

`markdown()` is pure: it renders only what the events carry (which never include secrets;
see docs/events.md). `write_step_summary()` appends to the file named by
``$GITHUB_STEP_SUMMARY``.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping

#: What an exit code means (DESIGN.md), for the title.
EXIT_MEANING = {
    0: "succeeded",
    1: "rolled back",
    2: "bad input or config, nothing touched",
    3: "refused, nothing touched",
    4: "needs a human",
    130: "interrupted",
}
OUTCOME_MEANING = {"success": "succeeded", "paused": "paused", "aborted": "aborted"}
ENVELOPE = ("schema", "event", "at")
MAX_ROWS = 200  # per table: a step summary is limited to 1 MiB
MAX_TEXT = 4000  # characters of one message

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|])")


def _text(value: object, limit: int = MAX_TEXT) -> str:
    text = "" if value is None else str(value)
    if len(text) > limit:
        text = text[:limit] + " ... (truncated)"
    return text


def _inline(value: object, limit: int = MAX_TEXT) -> str:
    """Text safe inside a table cell or a list item: escaped, newlines as <br>."""
    text = html.escape(_text(value, limit), quote=False)
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return "<br>".join(line.rstrip() for line in text.strip().splitlines())


def _block(value: object) -> list[str]:
    """A fenced block of plain text (the fence is longer than any backtick run inside)."""
    text = _text(value).rstrip()
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}text", text, fence]


def _seconds(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ""
    return f"{value:.1f}"


def status_text(events: list[Mapping], exit_code: int) -> str:
    """How the command ended, in a few words: the exit code first, then the outcome event."""
    outcomes = [e for e in events if e.get("event") == "outcome"]
    if exit_code == 0 and outcomes:
        outcome = outcomes[-1].get("outcome")
        return OUTCOME_MEANING.get(str(outcome), str(outcome))
    if exit_code == 0 and any(e.get("event") == "plan" for e in events):
        return "dry run"
    return EXIT_MEANING.get(exit_code, "failed")


def _stage_rows(events: list[Mapping]) -> list[list[str]]:
    """[stage, detail, state, seconds]: each start paired with the next done/failed."""
    rows: list[dict] = []
    for e in events:
        if e.get("event") != "stage":
            continue
        stage, state = str(e.get("stage", "?")), str(e.get("state", "?"))
        if state == "start":
            rows.append({"stage": stage, "detail": e.get("detail") or "", "state": "started",
                         "seconds": ""})
            continue
        row = next((r for r in reversed(rows) if r["stage"] == stage and r["state"] == "started"),
                   None)
        if row is None:
            row = {"stage": stage, "detail": "", "state": state, "seconds": ""}
            rows.append(row)
        row["state"] = state
        if state == "done":
            row["seconds"] = _seconds(e.get("seconds"))
    # a stage still "started" never ended: it was running when the command stopped
    return [[r["stage"], r["detail"], r["state"], r["seconds"]] for r in rows]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_inline(h) for h in header) + " |",
           "|" + "---|" * len(header)]
    for row in rows[:MAX_ROWS]:
        out.append("| " + " | ".join(_inline(c) for c in row) + " |")
    if len(rows) > MAX_ROWS:
        out.append(f"\n_{len(rows) - MAX_ROWS} more row(s) not shown._")
    return out


def markdown(events: list[dict], *, env: str, command: str, exit_code: int) -> str:
    """A Markdown summary of one command's events (decoded JSON lines, in order)."""
    events = [e for e in events if isinstance(e, Mapping)]
    out = [f"### deployer {_inline(command)} {_inline(env)}: {status_text(events, exit_code)} "
           f"(exit {exit_code})", ""]

    release = next((e.get("release") for e in reversed(events)
                    if e.get("event") == "outcome" and e.get("release")), None)
    runs = [e for e in events if e.get("event") == "run"]
    if release:
        out.append(f"**Release:** `{_text(release, 200).replace('`', '')}`  ")
    for e in runs:
        out.append(f"**Run:** {_inline(e.get('message'))}  ")
    if release or runs:
        out.append("")

    stages = _stage_rows(events)
    if stages:
        out += ["#### Stages", ""]
        out += _table(["stage", "detail", "state", "seconds"], stages)
        out.append("")

    gate_fail = [e for e in events if e.get("event") == "gate" and e.get("passed") is not True]
    if gate_fail:
        out += ["#### Gate failures", ""]
        for e in gate_fail:
            rel = f" ({_inline(e['release'], 200)})" if e.get("release") else ""
            out.append(f"- **{_inline(e.get('host', '?'), 200)}**{rel}: {_inline(e.get('detail'))}")
        out.append("")

    rollbacks = [e for e in events if e.get("event") == "rollback"]
    if rollbacks:
        out += ["#### Rollback", ""]
        out += [f"- {_inline(e.get('message'))}" for e in rollbacks]
        out.append("")

    notices = [e for e in events if e.get("event") == "notice"]
    if notices:
        out += ["#### Notes", ""]
        out += [f"- {_inline(e.get('message'))}" for e in notices]
        out.append("")

    tables: dict[str, list[Mapping]] = {}
    for e in events:
        if e.get("event") == "row":
            tables.setdefault(str(e.get("table", "")), []).append(e)
    for title, rows in tables.items():
        columns: list[str] = []
        for r in rows:
            columns += [k for k in r if k not in (*ENVELOPE, "table") and k not in columns]
        out += [f"#### {_inline(title)}", ""]
        out += _table(columns, [[_text(r.get(c, ""), 500) for c in columns] for r in rows])
        out.append("")

    plan = [e for e in events if e.get("event") == "plan"]
    if plan:
        out += [f"#### Plan ({len(plan)} commands)", ""]
        out += _table(["stage", "host", "command"],
                      [[_text(e.get("stage")), _text(e.get("host")), _text(e.get("command"), 500)]
                       for e in plan])
        out.append("")

    errors = [e for e in events if e.get("event") == "error"]
    outcomes = [e for e in events if e.get("event") == "outcome"]
    if errors:
        err = errors[-1]
        out += ["#### Error", ""]
        out += _block(err.get("message"))
        if err.get("hint"):
            out += ["", f"**Hint:** {_inline(err['hint'])}"]
        out.append("")
    elif outcomes:
        out += [f"**Result:** {_inline(outcomes[-1].get('message'))}", ""]
    elif exit_code != 0:
        out += [f"**Result:** exit code {exit_code} ({EXIT_MEANING.get(exit_code, 'failed')}); "
                "no error event was recorded: see the job log.", ""]
    return "\n".join(out).rstrip() + "\n"


def write_step_summary(text: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Append `text` to ``$GITHUB_STEP_SUMMARY``; False when that variable is not set."""
    path = environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return False
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text if text.endswith("\n") else text + "\n")
    return True


def read_events(lines: Iterable[str]) -> list[dict]:
    """Decode JSON-lines output; lines that are not JSON objects are skipped."""
    events = []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deployer.summary",
        description="Markdown summary of `--output json` events; appended to "
                    "$GITHUB_STEP_SUMMARY when set, else printed.")
    parser.add_argument("events", help="file of JSON events (one per line), or - for stdin")
    parser.add_argument("--env", required=True)
    parser.add_argument("--command", default="deploy")
    parser.add_argument("--exit-code", type=int, required=True)
    parser.add_argument("--out", help="also write the summary to this file")
    args = parser.parse_args(argv)
    if args.events == "-":
        events = read_events(sys.stdin)
    else:
        try:
            with open(args.events, encoding="utf-8") as fh:
                events = read_events(fh)
        except FileNotFoundError:
            events = []  # the command died before printing anything: summarise the exit code
    text = markdown(events, env=args.env, command=args.command, exit_code=args.exit_code)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)
    if not write_step_summary(text) and not args.out:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
