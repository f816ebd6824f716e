"""The report's HTML document: the summary header, the charts, the gate verdicts and the
table of events, styled inline (`render`)."""

from __future__ import annotations

import json

from .model import _Clock, _num, _samples, events_for
from .svg import _render_errors, _render_latency, _render_timeline, esc

OUTCOME_COLOURS = {"success": "#1a7f37", "rolled_back": "#b35900", "failed": "#cf222e",
                   "needs_human": "#cf222e", "interrupted": "#cf222e", "in-flight": "#57606a"}

CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2328}
h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:24px 0 8px}
.outcome{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:2px 12px;margin:8px 0}
dl.meta dt{color:#57606a}dl.meta dd{margin:0;font-family:ui-monospace,monospace}
svg{background:#fff;border:1px solid #d0d7de;border-radius:6px;max-width:100%;height:auto}
svg text{font:11px system-ui,sans-serif;fill:#1f2328}
svg .axis{stroke:#8c959f;stroke-width:1}svg .grid{stroke:#eaeef2;stroke-width:1}
svg .rollback{fill:#cf222e;fill-opacity:.08;stroke:#cf222e;stroke-dasharray:4 3}
svg .switch{stroke:#6639ba;stroke-width:2}
table{border-collapse:collapse;width:100%;font-size:12px}
th,td{border-bottom:1px solid #d0d7de;padding:3px 6px;text-align:left;vertical-align:top}
td.detail{font-family:ui-monospace,monospace;white-space:pre-wrap;word-break:break-all}
tr.failed td,tr.rollback td{background:#fff1f0}
.status-pass{color:#1a7f37}.status-warn{color:#9a6700}.status-fail{color:#cf222e}
.legend span{margin-right:12px}.swatch{display:inline-block;width:10px;height:10px;
border-radius:2px;margin-right:4px;vertical-align:middle}
.muted{color:#57606a}
"""


def _render_verdicts(events: list[dict]) -> str:
    verdicts = [e for e in events if e.get("type") == "gate.verdict"]
    if not verdicts:
        return '<ul id="verdicts" data-count="0"><li class="muted">no gate verdicts</li></ul>'
    items = []
    for v in verdicts:
        status = str(v.get("status", "?"))
        reasons = v.get("reasons") if isinstance(v.get("reasons"), list) else []
        where = " ".join(f"{k} {v[k]}" for k in ("wave", "host", "release") if v.get(k))
        items.append(
            f'<li class="verdict" data-status="{esc(status)}" data-wave="{esc(v.get("wave", ""))}">'
            f'<b class="status-{esc(status)}">{esc(status.upper())}</b> {esc(where)}'
            + ("<ul>" + "".join(f"<li>{esc(r)}</li>" for r in reasons) + "</ul>" if reasons else "")
            + "</li>")
    return f'<ul id="verdicts" data-count="{len(verdicts)}">' + "".join(items) + "</ul>"


_TABLE_SKIP = {"type", "at", "run", "v", "host", "stage", "state"}


def _render_events(events: list[dict], clock: _Clock) -> str:
    rows = []
    n_samples = 0
    for e in events:
        kind = str(e.get("type", "?"))
        if kind == "gate.sample":
            n_samples += 1
            continue
        t = clock.of(e)
        rest = {k: v for k, v in e.items() if k not in _TABLE_SKIP}
        detail = json.dumps(rest, sort_keys=True, default=str) if rest else ""
        cls = "failed" if e.get("state") == "failed" or e.get("outcome") in (
            "failed", "needs_human", "rolled_back") else ("rollback" if kind.startswith(
                "rollback") or kind == "release.bad" else "")
        rows.append(
            f'<tr class="{cls}" data-type="{esc(kind)}" data-host="{esc(e.get("host", ""))}">'
            f'<td>{"" if t is None else esc(f"{t:.2f}s")}</td><td>{esc(e.get("at", ""))}</td>'
            f'<td>{esc(kind)}</td><td>{esc(e.get("host", ""))}</td>'
            f'<td>{esc(e.get("stage", ""))}</td><td>{esc(e.get("state", ""))}</td>'
            f'<td class="detail">{esc(detail)}</td></tr>')
    note = (f'<p class="muted">{n_samples} gate samples are shown in the charts, not in this '
            f"table.</p>" if n_samples else "")
    return (note + f'<table id="events" data-count="{len(rows)}"><thead><tr><th>t</th><th>at</th>'
            "<th>type</th><th>host</th><th>stage</th><th>state</th><th>detail</th></tr></thead>"
            "<tbody>" + "".join(rows) + "</tbody></table>")


def render(events: list[dict], *, env: str, release: str) -> str:
    """One self-contained HTML document for the deploy of `release` to `env`."""
    events = [e for e in events_for(events, release) if isinstance(e, dict)]
    clock = _Clock(events)
    start = next((e for e in events if e.get("type") == "deploy.start"), {})
    end = next((e for e in reversed(events) if e.get("type") == "deploy.end"), None)
    outcome = str(end.get("outcome", "?")) if end else "in-flight"
    colour = OUTCOME_COLOURS.get(outcome, "#57606a")
    seconds = _num(end.get("seconds")) if end else None
    meta = [("env", env), ("release", release), ("ref", start.get("ref")),
            ("commit", start.get("commit")), ("who", start.get("who")),
            ("reason", start.get("reason")), ("started", start.get("at")),
            ("run", start.get("run"))]
    if seconds is not None:
        meta.append(("took", f"{seconds:.1f}s"))
    if end and end.get("error"):
        meta.append(("error", end["error"]))
    if end and end.get("rollback_error"):
        meta.append(("rollback error", end["rollback_error"]))
    bad = [e for e in events if e.get("type") == "release.bad"]
    if bad:
        meta.append(("marked bad", bad[-1].get("reason", "")))
    samples = _samples(events, clock)
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in meta if v not in (None, ""))
    title = f"deploy {release} to {env}: {outcome}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{CSS}</style>
</head>
<body>
<header id="summary" data-env="{esc(env)}" data-release="{esc(release)}" data-outcome="{esc(outcome)}">
<h1>deploy {esc(release)} to {esc(env)}
<span class="outcome" style="background:{colour}">{esc(outcome)}</span></h1>
<dl class="meta">{dl}</dl>
</header>
<section id="timeline-section"><h2>Timeline</h2>
{_render_timeline(events, clock)}
</section>
<section id="gate-section"><h2>Gate: latency</h2>
{_render_latency(samples)}
<h2>Gate: error rate</h2>
{_render_errors(samples)}
<h2>Gate verdicts</h2>
{_render_verdicts(events)}
</section>
<section id="events-section"><h2>Events</h2>
{_render_events(events, clock)}
</section>
</body>
</html>
"""
