"""The human view: a live table on a terminal (waves x hosts x stages, the failing host's stderr
tail), plain lines elsewhere, NO_COLOR honoured. Driven by whole runs on a recording transport."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from recording import FakeHttp, Fleet, RecordingTransport, fake_bake

from deployer.config import load_config
from deployer.engine.deploy import DeployRun
from deployer.errors import CommandFailed, DeployerError
from deployer.output import FAILURE_LINES, JsonReporter, LiveReporter, LiveView, TextReporter, reporter_for
from deployer.session import Session

ROOT = Path(__file__).resolve().parents[2]
OLD = "20261101T000000Z-aaaaaaa"
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*(?:3[0-9]|9[0-7]|38;[0-9;]+)m")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")


def deploy(rep, *, failing=frozenset()):
    """A deploy of v2 to prod (waves 1, 50%, 100%) on the recording transport; its exit code.
    A failing host fails its health checks on every release (prod's check has no release in its
    body to tell them apart): the rollback's own gate fails too, exit 4."""
    cfg = load_config("prod", root=ROOT)
    fleet = Fleet([h.name for h in cfg.hosts], OLD)
    http = FakeHttp(failing=set(failing), good=OLD)
    s = Session(cfg, rep, transport=RecordingTransport(fleet), http_check=http, bake=fake_bake)
    try:
        return DeployRun(cfg, rep, ref="v2", session=s).run()
    except DeployerError as exc:
        return exc.exit_code


def events(*, failing=frozenset()) -> list[dict]:
    stream = io.StringIO()
    deploy(JsonReporter(stream), failing=failing)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def fold(evs) -> LiveView:
    view = LiveView()
    for e in evs:
        view.fold(e["event"], {k: v for k, v in e.items() if k not in ("event", "schema", "at")})
    return view


def test_the_table_of_a_deploy():
    v = fold(events())
    assert v.hosts[:4] == ["web1", "web2", "web3", "web4"] and set(v.hosts) == {
        "web1", "web2", "web3", "web4", "worker1", "db1", "lb1"}
    assert v.waves == {"web1": 1, "web2": 2, "web3": 2, "web4": 3, "worker1": 3} and v.wave_total == 3
    assert v.stages == ["maintenance", "backup", "pull", "migrate", "cache_warm", "switch", "worker_restart",
                        "gate", "finalize"]
    assert set(v.cells.values()) == {"ok"}
    assert all(v.cells[(h, "switch")] == "ok" for h in ("web1", "web2", "web3", "web4", "worker1", "lb1"))
    assert v.cells[("db1", "backup")] == "ok" and v.cells[("web1", "migrate")] == "ok"
    assert ("web2", "migrate") in v.cells  # maintenance during the migration runs on every web host
    assert v.failure is None and v.tail() == ""


def test_a_failing_gate_its_host_and_the_rollback():
    v = fold(events(failing={"web2"}))
    assert v.cells[("web1", "gate")] == "ok" and v.cells[("web2", "gate")] == "fail"
    assert v.cells[("web2", "switch")] == "fail"
    assert ("web3", "switch") not in v.cells  # wave 2 stopped at web2
    assert v.stages[-1] == "rollback" and v.cells[("web1", "rollback")] in ("ok", "fail")
    assert v.failure[0] == "switch" and "web2" in v.tail() and "HTTP 500" in v.tail()
    assert "run" not in v.cells.values()


def test_a_failing_command_shows_both_streams_tails():
    v = LiveView()
    v.fold("stage", {"stage": "pull", "state": "start", "detail": "3f8cb52"})
    v.fold("command", {"stage": "pull", "host": "web1", "command": "git ..."})
    v.fold("command", {"stage": "pull", "host": "web2", "command": "git ..."})
    v.fold("host", {"stage": "pull", "host": "web1", "state": "done", "detail": "pull"})
    out = "\n".join(f"line {i}" for i in range(30))
    err = CommandFailed("web2", "composer install", 1, out, "Killed\n")
    v.fold("stage", {"stage": "pull", "state": "failed", "error": err.message})
    assert v.cells == {("web1", "pull"): "ok", ("web2", "pull"): "fail"}
    assert v.tail().splitlines() == (["web2: `composer install` exited 1", "stdout (last 20 of 30 lines):"]
                                     + [f"  line {i}" for i in range(10, 30)] + ["stderr:", "  Killed"])
    longer = "\n".join(f"line {i}" for i in range(60))
    v.fold("stage", {"stage": "pull", "state": "failed", "error": longer})
    assert v.tail().splitlines() == [f"line {i}" for i in range(60 - FAILURE_LINES, 60)]


def test_live_reporter_draws_the_table_on_a_terminal():
    out = Tty()
    rep = reporter_for("text", stream=out)
    assert isinstance(rep.inner, LiveReporter)
    assert deploy(rep, failing={"web2"}) == 4
    rep.close()
    rep.close()  # idempotent
    text = out.getvalue()
    last = text.rsplit("host ", 1)[-1]  # the final frame
    assert "wave" in last and "rollback" in last and "✗" in last
    assert "switch failed:" in text and "HTTP 500" in text
    assert "preflight" in text.split("host ", 1)[0]  # a plain line before the table starts


@pytest.mark.parametrize("env,output,tty,kind", [
    ({}, "text", True, LiveReporter),
    ({"NO_COLOR": "1"}, "text", True, TextReporter),
    ({"TERM": "dumb"}, "text", True, TextReporter),
    ({}, "text", False, TextReporter),
    ({}, "json", True, JsonReporter),
])
def test_which_view(env, output, tty, kind, monkeypatch):
    for k, val in env.items():
        monkeypatch.setenv(k, val)
    rep = reporter_for(output, stream=Tty() if tty else io.StringIO())
    assert type(rep.inner) is kind


def test_plain_lines_without_a_terminal():
    out = io.StringIO()
    assert deploy(reporter_for("text", stream=out)) == 0
    text = out.getvalue()
    assert "\x1b[" not in text
    assert re.search(r"^\s+\d+\.\ds  switch\s+wave 1/3: web1$", text, re.M)


def test_no_color_on_a_terminal(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    out = Tty()
    rep = reporter_for("text", stream=out)
    assert deploy(rep, failing={"web2"}) == 4
    assert not ANSI_COLOUR.search(out.getvalue())
    assert "FAILED" in out.getvalue()
    monkeypatch.delenv("NO_COLOR")
    out = Tty()
    TextReporter(out).event("stage", stage="gate", state="failed", error="x")
    assert ANSI_COLOUR.search(out.getvalue())  # the same line, coloured, without NO_COLOR
