"""The report's data, read from a run's ledger events: which events belong to the run, its
clock, the timeline (stage bars per host, rollbacks, switches) and the gate samples."""

from __future__ import annotations

import datetime as dt
import math
import re

FLEET = "fleet"
_WAVE_RE = re.compile(r"wave \d+/\d+: (.+)")


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
