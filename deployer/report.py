"""A self-contained HTML report of one deploy, rendered from its ledger events.

One document, no external resources: inline CSS and inline SVG, no scripts. Sections and
charts carry stable ids (`summary`, `timeline`, `latency-chart`, `error-chart`, `verdicts`,
`events`) and `data-*` attributes so that tests and browsers can check them:

- timeline bars: ``<rect class="bar" data-stage data-host data-state="done|failed|running"
  data-start data-end>`` (seconds since the run started); one row per host plus a
  ``fleet`` row for fleet-wide stages; rollback periods: ``<rect class="rollback">``;
  switches: ``<line class="switch" data-host data-release>``.
- latency chart: ``<circle class="point" data-role data-host data-t data-ms data-ok>``.
- error chart: ``<circle class="point" data-role data-t0 data-t1 data-n data-errors data-rate>``.

Gate sample events (written by the gate, one per probe):
``{"type": "gate.sample", "run", "host", "release", "t": seconds since run start,
"ms": latency or null for a timeout, "ok": bool, "role": "canary"|"baseline"}``;
verdicts: ``{"type": "gate.verdict", "run", "wave", "host"?, "status": "pass|warn|fail",
"reasons": [...], "metrics": {...}, "t"?}``.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import re

FLEET = "fleet"
_WAVE_RE = re.compile(r"wave \d+/\d+: (.+)")
OUTCOME_COLOURS = {"success": "#1a7f37", "rolled_back": "#b35900", "failed": "#cf222e",
                   "needs_human": "#cf222e", "interrupted": "#cf222e", "in-flight": "#57606a"}
ROLE_COLOURS = {"canary": "#d1242f", "baseline": "#0969da"}
STAGE_COLOURS = {"done": "#2da44e", "failed": "#cf222e", "running": "#bf8700"}

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


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _parse_at(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _fmt(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


def events_for(events: list[dict], release: str) -> list[dict]:
    """The events of the run that deployed `release`; all events when it is not found."""
    runs = {e.get("run") for e in events
            if e.get("type") == "deploy.start" and e.get("release") == release and e.get("run")}
    if len(runs) != 1:
        return list(events)
    run = runs.pop()
    return [e for e in events if e.get("run", run) == run]


class _Clock:
    """Seconds since the run started, from events' `at` (ISO UTC) or `t`."""

    def __init__(self, events: list[dict]):
        starts = [_parse_at(e.get("at")) for e in events if e.get("type") == "deploy.start"]
        stamps = [t for t in (_parse_at(e.get("at")) for e in events) if t is not None]
        self.t0 = next((t for t in starts if t), None) or (min(stamps) if stamps else None)

    def of(self, e: dict) -> float | None:
        t = _parse_at(e.get("at"))
        if t is not None and self.t0 is not None:
            return (t - self.t0).total_seconds()
        return _num(e.get("t"))


# ------------------------------------------------------------------ timeline model


def _timeline(events: list[dict], clock: _Clock):
    """(rows, bars, rollbacks, switches, end) from stage/rollback/switch events."""
    rows: list[str] = [FLEET]
    bars: list[dict] = []
    open_bars: list[dict] = []
    rollbacks: list[list[float | None]] = []
    switches: list[dict] = []
    wave_hosts: list[str] = []
    end = 0.0

    def add_row(h: str) -> None:
        if h and h not in rows:
            rows.append(h)

    for e in events:
        t = clock.of(e)
        if t is not None:
            end = max(end, t)
        kind = e.get("type")
        if kind == "snapshot" and isinstance(e.get("hosts"), dict):
            for h in e["hosts"]:
                add_row(str(h))
        elif kind == "switch" and e.get("host"):
            add_row(str(e["host"]))
            if t is not None:
                switches.append({"host": str(e["host"]), "release": e.get("release"), "t": t})
        elif kind == "rollback.start" and t is not None:
            rollbacks.append([t, None])
        elif kind == "rollback.end" and t is not None and rollbacks and rollbacks[-1][1] is None:
            rollbacks[-1][1] = t
        elif kind == "stage" and t is not None:
            stage, state = str(e.get("stage", "?")), e.get("state")
            if e.get("host"):
                hosts = [str(e["host"])]
            elif isinstance(e.get("hosts"), list) and e["hosts"]:
                hosts = [str(h) for h in e["hosts"]]
            else:
                hosts = []
            if state == "start":
                m = _WAVE_RE.match(str(e.get("detail") or ""))
                if not hosts and m:
                    hosts = [h.strip() for h in m.group(1).split(",") if h.strip()]
                if stage == "switch" and hosts:
                    wave_hosts = hosts
                if not hosts and stage in ("worker_restart", "gate") and wave_hosts:
                    hosts = list(wave_hosts)
                for h in hosts:
                    add_row(h)
                bar = {"stage": stage, "hosts": hosts or [FLEET], "start": t, "end": None,
                       "state": "running", "detail": e.get("detail") or ""}
                bars.append(bar)
                open_bars.append(bar)
            elif state in ("done", "failed"):
                for bar in reversed(open_bars):
                    if bar["stage"] == stage and (not hosts or set(hosts) <= set(bar["hosts"])):
                        if hosts and set(hosts) != set(bar["hosts"]):  # one host of a group ends
                            bar["hosts"] = [h for h in bar["hosts"] if h not in hosts]
                            bar = {**bar, "hosts": hosts}
                            bars.append(bar)
                        else:
                            open_bars.remove(bar)
                        bar["end"], bar["state"] = t, state
                        bar["detail"] = e.get("error") or bar["detail"]
                        break
                else:  # an end without a start: a zero-length bar
                    for h in hosts:
                        add_row(h)
                    bars.append({"stage": stage, "hosts": hosts or [FLEET], "start": t, "end": t,
                                 "state": state, "detail": e.get("error") or ""})
    for rb in rollbacks:
        if rb[1] is None:
            rb[1] = end
    return rows, bars, rollbacks, switches, end


# ------------------------------------------------------------------ SVG helpers


def _ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    out, x = [], first
    while x <= hi + 1e-9:
        out.append(round(x, 10))
        x += step
    return out


def _svg_open(id_: str, width: int, height: int, label: str, **data: object) -> str:
    attrs = "".join(f' data-{esc(k.replace("_", "-"))}="{esc(v)}"' for k, v in data.items())
    return (f'<svg id="{esc(id_)}" role="img" aria-label="{esc(label)}" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}"{attrs}>')


def _render_timeline(events: list[dict], clock: _Clock) -> str:
    rows, bars, rollbacks, switches, end = _timeline(events, clock)
    end = max([end] + [b["end"] or 0 for b in bars]) or 1.0
    for b in bars:
        if b["end"] is None:
            b["end"] = end
    label_w, width, row_h, top, bottom = 130, 980, 26, 24, 28
    plot_w = width - label_w - 16
    height = top + row_h * len(rows) + bottom

    def x(t: float) -> float:
        return label_w + plot_w * max(0.0, t) / end

    out = [_svg_open("timeline", width, height, "timeline of stages per host",
                     hosts=len(rows) - 1, seconds=_fmt(round(end, 3)))]
    for tick in _ticks(0, end):
        out.append(f'<line class="grid" x1="{x(tick):.1f}" y1="{top}" x2="{x(tick):.1f}" '
                   f'y2="{height - bottom}"/>')
        out.append(f'<text x="{x(tick):.1f}" y="{height - 10}" text-anchor="middle">'
                   f'{esc(_fmt(tick))}s</text>')
    for i, row in enumerate(rows):
        y = top + i * row_h
        out.append(f'<text class="row-label" data-host="{esc(row)}" x="{label_w - 8}" '
                   f'y="{y + row_h / 2 + 4:.1f}" text-anchor="end">{esc(row)}</text>')
        out.append(f'<line class="axis" x1="{label_w}" y1="{y + row_h}" x2="{width - 16}" '
                   f'y2="{y + row_h}"/>')
    for start, stop in rollbacks:
        out.append(f'<rect class="rollback" data-start="{_fmt(round(start, 3))}" '
                   f'data-end="{_fmt(round(stop, 3))}" x="{x(start):.1f}" y="{top}" '
                   f'width="{max(2.0, x(stop) - x(start)):.1f}" height="{row_h * len(rows)}">'
                   f'<title>rollback {_fmt(round(start, 1))}s to {_fmt(round(stop, 1))}s'
                   f'</title></rect>')
    for b in bars:
        for h in b["hosts"]:
            y = top + rows.index(h) * row_h + 4
            w = max(2.0, x(b["end"]) - x(b["start"]))
            title = f'{b["stage"]} on {h}: {b["state"]}, {b["end"] - b["start"]:.2f}s'
            if b["detail"]:
                title += f' ({b["detail"]})'
            out.append(
                f'<rect class="bar" data-stage="{esc(b["stage"])}" data-host="{esc(h)}" '
                f'data-state="{esc(b["state"])}" data-start="{_fmt(round(b["start"], 3))}" '
                f'data-end="{_fmt(round(b["end"], 3))}" x="{x(b["start"]):.1f}" y="{y}" '
                f'width="{w:.1f}" height="{row_h - 8}" rx="2" '
                f'fill="{STAGE_COLOURS.get(b["state"], "#8c959f")}" fill-opacity="0.85">'
                f'<title>{esc(title)}</title></rect>')
    for s in switches:
        y = top + rows.index(s["host"]) * row_h
        out.append(f'<line class="switch" data-host="{esc(s["host"])}" '
                   f'data-release="{esc(s["release"])}" data-t="{_fmt(round(s["t"], 3))}" '
                   f'x1="{x(s["t"]):.1f}" y1="{y + 2}" x2="{x(s["t"]):.1f}" y2="{y + row_h - 2}">'
                   f'<title>switch {esc(s["host"])} to {esc(s["release"])}</title></line>')
    out.append("</svg>")
    legend = ('<p class="legend">' + "".join(
        f'<span><i class="swatch" style="background:{c}"></i>{esc(k)}</span>'
        for k, c in STAGE_COLOURS.items())
        + '<span><i class="swatch" style="background:#f9d8d8"></i>rollback</span>'
        + '<span><i class="swatch" style="background:#6639ba"></i>switch</span></p>')
    return "\n".join(out) + legend


def _samples(events: list[dict], clock: _Clock) -> list[dict]:
    out = []
    for e in events:
        if e.get("type") != "gate.sample":
            continue
        t = _num(e.get("t"))
        if t is None:
            t = clock.of(e)
        if t is None:
            continue
        out.append({"t": t, "ms": _num(e.get("ms")), "ok": bool(e.get("ok")),
                    "role": str(e.get("role") or "canary"), "host": str(e.get("host") or "")})
    return sorted(out, key=lambda s: s["t"])


def _chart_frame(id_: str, label: str, xs: tuple[float, float], ys: tuple[float, float],
                 y_unit: str, **data: object):
    width, height, left, right, top, bottom = 980, 260, 60, 16, 12, 30
    (x0, x1), (y0, y1) = xs, ys
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + 1

    def sx(v: float) -> float:
        return left + (width - left - right) * (v - x0) / (x1 - x0)

    def sy(v: float) -> float:
        return height - bottom - (height - top - bottom) * (min(v, y1) - y0) / (y1 - y0)

    out = [_svg_open(id_, width, height, label, **data)]
    for tick in _ticks(y0, y1, 5):
        out.append(f'<line class="grid" x1="{left}" y1="{sy(tick):.1f}" x2="{width - right}" '
                   f'y2="{sy(tick):.1f}"/><text x="{left - 6}" y="{sy(tick) + 4:.1f}" '
                   f'text-anchor="end">{esc(_fmt(round(tick, 4)))}{esc(y_unit)}</text>')
    for tick in _ticks(x0, x1):
        out.append(f'<text x="{sx(tick):.1f}" y="{height - 10}" text-anchor="middle">'
                   f'{esc(_fmt(tick))}s</text>')
    out.append(f'<line class="axis" x1="{left}" y1="{height - bottom}" x2="{width - right}" '
               f'y2="{height - bottom}"/><line class="axis" x1="{left}" y1="{top}" x2="{left}" '
               f'y2="{height - bottom}"/>')
    return out, sx, sy


def _legend(roles: list[str]) -> str:
    return ('<p class="legend">' + "".join(
        f'<span><i class="swatch" style="background:{ROLE_COLOURS.get(r, "#57606a")}"></i>'
        f'{esc(r)}</span>' for r in roles) + "</p>")


def _render_latency(samples: list[dict]) -> str:
    timed = [s for s in samples if s["ms"] is not None]
    if not timed:
        return (_svg_open("latency-chart", 980, 40, "no gate samples", points=0)
                + '<text x="12" y="24">no gate samples</text></svg>')
    ts = [s["t"] for s in timed]
    ymax = max(s["ms"] for s in timed) * 1.1
    out, sx, sy = _chart_frame("latency-chart", "latency of gate probes over time",
                               (min(ts), max(ts)), (0, ymax), " ms", points=len(timed))
    roles = sorted({s["role"] for s in timed})
    for role in roles:
        pts = [s for s in timed if s["role"] == role]
        colour = ROLE_COLOURS.get(role, "#57606a")
        path = " ".join(f'{sx(s["t"]):.1f},{sy(s["ms"]):.1f}' for s in pts)
        out.append(f'<polyline class="series" data-role="{esc(role)}" points="{path}" '
                   f'fill="none" stroke="{colour}" stroke-opacity="0.35"/>')
        for s in pts:
            out.append(
                f'<circle class="point{"" if s["ok"] else " error"}" data-role="{esc(role)}" '
                f'data-host="{esc(s["host"])}" data-t="{_fmt(round(s["t"], 3))}" '
                f'data-ms="{_fmt(round(s["ms"], 3))}" data-ok="{str(s["ok"]).lower()}" '
                f'cx="{sx(s["t"]):.1f}" cy="{sy(s["ms"]):.1f}" r="3" '
                f'fill="{colour if s["ok"] else "#fff"}" stroke="{colour}">'
                f'<title>{esc(role)} {esc(s["host"])} t={s["t"]:.1f}s {s["ms"]:.0f} ms'
                f'{"" if s["ok"] else " (error)"}</title></circle>')
    out.append("</svg>")
    return "\n".join(out) + _legend(roles)


def _render_errors(samples: list[dict]) -> str:
    if not samples:
        return (_svg_open("error-chart", 980, 40, "no gate samples", points=0)
                + '<text x="12" y="24">no gate samples</text></svg>')
    t0, t1 = samples[0]["t"], samples[-1]["t"]
    nbins = max(1, min(20, len(samples) // 5))
    width = (t1 - t0) / nbins or 1.0
    roles = sorted({s["role"] for s in samples})
    bins: list[dict] = []
    for role in roles:
        counts = [[0, 0] for _ in range(nbins)]
        for s in samples:
            if s["role"] == role:
                i = min(nbins - 1, int((s["t"] - t0) / width))
                counts[i][0] += 1
                counts[i][1] += 0 if s["ok"] else 1
        for i, (n, err) in enumerate(counts):
            if n:
                bins.append({"role": role, "t0": t0 + i * width, "t1": t0 + (i + 1) * width,
                             "n": n, "errors": err, "rate": err / n})
    ymax = max(0.1, max(b["rate"] for b in bins) * 1.1)
    out, sx, sy = _chart_frame("error-chart", "error rate per window", (t0, t0 + nbins * width),
                               (0, ymax), "", points=len(bins), window=_fmt(round(width, 3)))
    for role in roles:
        pts = [b for b in bins if b["role"] == role]
        colour = ROLE_COLOURS.get(role, "#57606a")
        mid = [((b["t0"] + b["t1"]) / 2, b["rate"]) for b in pts]
        out.append(f'<polyline class="series" data-role="{esc(role)}" points="'
                   + " ".join(f"{sx(t):.1f},{sy(r):.1f}" for t, r in mid)
                   + f'" fill="none" stroke="{colour}"/>')
        for b, (t, r) in zip(pts, mid, strict=False):
            out.append(
                f'<circle class="point" data-role="{esc(role)}" data-t0="{_fmt(round(b["t0"], 3))}"'
                f' data-t1="{_fmt(round(b["t1"], 3))}" data-n="{b["n"]}" '
                f'data-errors="{b["errors"]}" data-rate="{_fmt(round(r, 4))}" cx="{sx(t):.1f}" '
                f'cy="{sy(r):.1f}" r="3.5" fill="{colour}"><title>{esc(role)} '
                f'{b["t0"]:.1f}-{b["t1"]:.1f}s: {b["errors"]}/{b["n"]} errors ({r:.1%})'
                f'</title></circle>')
    out.append("</svg>")
    return "\n".join(out) + _legend(roles)


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


__all__ = ["events_for", "render"]
