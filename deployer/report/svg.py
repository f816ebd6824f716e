"""The report's inline SVG: the timeline of stages per host and the two gate charts
(latency of the probes, error rate per window), with the `data-*` attributes described in
deployer.report."""

from __future__ import annotations

import html
import math

from .model import _Clock, _timeline

ROLE_COLOURS = {"canary": "#d1242f", "baseline": "#0969da"}
STAGE_COLOURS = {"done": "#2da44e", "failed": "#cf222e", "running": "#bf8700"}


# ------------------------------------------------------------------ SVG helpers


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _fmt(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))

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
