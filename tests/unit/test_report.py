import datetime as dt
import random
from html.parser import HTMLParser

import pytest

from deployer.report import events_for, render

T0 = dt.datetime(2026, 11, 21, 12, 5, 1, tzinfo=dt.UTC)
RUN = "r-1"
REL = "20261121T120501Z-3f8cb52"
OLD = "20261114T020000Z-1a2b3c4"


def at(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ev(sec: float, /, **fields) -> dict:
    return {"v": 1, "at": at(sec), "run": RUN, **fields}


def stage(t: float, name: str, state: str, **fields) -> dict:
    return ev(t, type="stage", stage=name, state=state, **fields)


def synthetic_run() -> list[dict]:
    """web1 is the canary (wave 1, passes), wave 2 (web2, web3) fails its gate: rollback."""
    events = [
        ev(0, type="deploy.start", env="prod", release=REL, ref="v1.4.0", commit="3f8cb52" + "0" * 33,
           who="alice@laptop", reason="deploy v1.4.0 <script>alert(1)</script>"),
        stage(0.1, "snapshot", "start", detail=""),
        ev(0.3, type="snapshot", hosts={"web1": OLD, "web2": OLD, "web3": OLD}, schema=7,
           maintenance=False, backup=None),
        stage(0.4, "snapshot", "done", seconds=0.3),
        stage(0.5, "backup", "start", detail=""),
        ev(2.0, type="backup", path="/srv/backups/x.dump", sha256="ab" * 32, size=1234, host="db1"),
        stage(2.1, "backup", "done", seconds=1.6),
        stage(2.2, "pull", "start", detail=""),
        stage(6.0, "pull", "done", seconds=3.8),
        stage(6.1, "switch", "start", detail="wave 1/2: web1"),
        ev(6.5, type="switch", host="web1", release=REL),
        stage(6.9, "switch", "done", seconds=0.8),
        stage(7.0, "worker_restart", "start", detail=""),
        stage(7.5, "worker_restart", "done", seconds=0.5),
        stage(7.6, "gate", "start", detail="wave 1/2"),
        stage(17.6, "gate", "done", seconds=10),
        ev(17.6, type="gate.verdict", wave=1, status="pass", reasons=[], metrics={}),
        stage(17.7, "switch", "start", detail="wave 2/2: web2, web3"),
        ev(18.0, type="switch", host="web2", release=REL),
        ev(18.1, type="switch", host="web3", release=REL),
        stage(18.5, "switch", "done", seconds=0.8),
        stage(18.6, "gate", "start", detail="wave 2/2"),
        stage(28.6, "gate", "failed", error="canary p95 412 ms vs baseline 131 ms"),
        ev(28.6, type="gate.verdict", wave=2, status="fail",
           reasons=["canary p95 412 ms vs baseline 131 ms (Mann-Whitney p=2.1e-09)"], metrics={}),
        ev(28.7, type="rollback.start", auto=True, **{"from": REL}, to={"web1": OLD}, cause="gate"),
        ev(29.0, type="switch", host="web1", release=OLD, rollback=True),
        ev(29.0, type="switch", host="web2", release=OLD, rollback=True),
        ev(29.1, type="switch", host="web3", release=OLD, rollback=True),
        ev(31.0, type="release.bad", release=REL, reason="gate failed"),
        ev(31.2, type="rollback.end", outcome="success", seconds=2.5),
        ev(31.3, type="deploy.end", outcome="rolled_back", error="health gate failed"),
    ]
    rng = random.Random(5)
    for i in range(60):
        t = 7.6 + i * 0.33
        events.append(ev(t, type="gate.sample", host="web1", release=REL, t=t,
                         ms=rng.gauss(130, 10), ok=True, role="baseline"))
        events.append(ev(t, type="gate.sample", host="web2", release=REL, t=t,
                         ms=rng.gauss(400, 30), ok=i % 7 != 0, role="canary"))
    events.append(ev(20, type="gate.sample", host="web3", release=REL, t=20.0, ms=None, ok=False,
                     role="canary"))
    return events


class Tree(HTMLParser):
    def __init__(self):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag=None, **attrs):
        def match(a: dict, key: str, value: str) -> bool:
            if key == "class_":
                return value in (a.get("class") or "").split()
            return a.get(key.replace("_", "-")) == value

        return [a for t, a in self.elements
                if (tag is None or t == tag) and all(match(a, k, v) for k, v in attrs.items())]


@pytest.fixture(scope="module")
def doc():
    html = render(synthetic_run(), env="prod", release=REL)
    tree = Tree()
    tree.feed(html)
    tree.close()
    return html, tree


def test_header(doc):
    _, tree = doc
    (summary,) = tree.find("header", id="summary")
    assert summary["data-outcome"] == "rolled_back" and summary["data-env"] == "prod"
    text = " ".join(tree.text)
    for s in ("v1.4.0", "alice@laptop", REL, "rolled_back", "3f8cb52"):
        assert s in text


def test_text_is_escaped(doc):
    html, _ = doc
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_sections_have_stable_ids(doc):
    _, tree = doc
    ids = {a.get("id") for _, a in tree.elements}
    assert {"summary", "timeline", "latency-chart", "error-chart", "verdicts", "events"} <= ids


def test_timeline_bars_per_stage_and_host(doc):
    _, tree = doc
    bars = tree.find("rect", class_="bar")
    got = {(b["data-stage"], b["data-host"], b["data-state"]) for b in bars}
    assert ("snapshot", "fleet", "done") in got
    assert ("backup", "fleet", "done") in got
    assert ("pull", "fleet", "done") in got
    assert ("switch", "web1", "done") in got
    assert ("worker_restart", "web1", "done") in got  # follows its wave's hosts
    assert ("gate", "web1", "done") in got
    assert ("switch", "web2", "done") in got and ("switch", "web3", "done") in got
    assert ("gate", "web2", "failed") in got and ("gate", "web3", "failed") in got
    failed = [b for b in bars if b["data-state"] == "failed"]
    assert {b["data-host"] for b in failed} == {"web2", "web3"}
    assert all(b["fill"] == "#cf222e" for b in failed)
    for b in bars:
        assert float(b["data-end"]) >= float(b["data-start"])
    gate_fail = next(b for b in failed if b["data-host"] == "web2")
    assert float(gate_fail["data-start"]) == pytest.approx(18.6)
    assert float(gate_fail["data-end"]) == pytest.approx(28.6)
    labels = [a["data-host"] for a in tree.find("text", class_="row-label")]
    assert labels == ["fleet", "web1", "web2", "web3"]


def test_timeline_rollback_and_switches(doc):
    _, tree = doc
    (rb,) = tree.find("rect", class_="rollback")
    assert float(rb["data-start"]) == pytest.approx(28.7)
    assert float(rb["data-end"]) == pytest.approx(31.2)
    switches = tree.find("line", class_="switch")
    assert len(switches) == 6
    assert {s["data-release"] for s in switches if s["data-host"] == "web1"} == {REL, OLD}


def test_latency_chart_points(doc):
    _, tree = doc
    (chart,) = tree.find("svg", id="latency-chart")
    points = tree.find("circle", class_="point", data_role="canary") + tree.find(
        "circle", class_="point", data_role="baseline")
    timed = [p for p in points if "data-ms" in p]
    assert len(timed) == 120 and chart["data-points"] == "120"
    assert {p["data-role"] for p in timed} == {"canary", "baseline"}
    assert any(p["data-ok"] == "false" for p in timed)
    canary = [float(p["data-ms"]) for p in timed if p["data-role"] == "canary"]
    assert min(canary) > 250
    assert len(tree.find("polyline", class_="series", data_role="canary")) == 2  # both charts


def test_error_chart_points(doc):
    _, tree = doc
    bins = [p for p in tree.find("circle", class_="point") if "data-rate" in p]
    assert bins
    assert sum(int(b["data-n"]) for b in bins) == 121
    assert sum(int(b["data-errors"]) for b in bins if b["data-role"] == "canary") == 9 + 1
    assert all(b["data-errors"] == "0" for b in bins if b["data-role"] == "baseline")


def test_verdicts_and_events_table(doc):
    _, tree = doc
    verdicts = tree.find("li", class_="verdict")
    assert [v["data-status"] for v in verdicts] == ["pass", "fail"]
    (table,) = tree.find("table", id="events")
    rows = tree.find("tr")
    types = [r.get("data-type") for r in rows if r.get("data-type")]
    assert "gate.sample" not in types  # samples go to the charts
    for kind in ("deploy.start", "snapshot", "backup", "switch", "rollback.start", "release.bad",
                 "rollback.end", "deploy.end", "gate.verdict"):
        assert kind in types
    assert int(table["data-count"]) == len(types)


def test_no_external_resources(doc):
    html, tree = doc
    for _, attrs in tree.elements:
        for key in ("src", "href", "xlink:href", "action"):
            assert key not in attrs or not attrs[key].lower().startswith(("http", "//"))
    assert "http" not in html.lower()
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert "@import" not in html


def test_events_for_picks_the_run():
    other = [{"type": "deploy.start", "run": "r-0", "release": OLD},
             {"type": "deploy.end", "run": "r-0", "outcome": "success"}]
    events = other + synthetic_run()
    mine = events_for(events, REL)
    assert all(e["run"] == RUN for e in mine)
    html = render(events, env="prod", release=REL)
    assert 'data-outcome="rolled_back"' in html


def test_in_flight_run_without_samples():
    events = synthetic_run()[:13]  # up to worker_restart start
    html = render(events, env="staging", release=REL)
    tree = Tree()
    tree.feed(html)
    assert tree.find("header", id="summary")[0]["data-outcome"] == "in-flight"
    states = {b["data-state"] for b in tree.find("rect", class_="bar")}
    assert "running" in states  # worker_restart started, never ended
    assert tree.find("svg", id="latency-chart")[0]["data-points"] == "0"
    assert render([], env="x", release="y").startswith("<!DOCTYPE html>")
