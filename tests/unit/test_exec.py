"""`deployer exec`: an ad-hoc command on the selected hosts, run through a recording transport."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from recording import Fleet, RecordingTransport

from deployer.config import load_config
from deployer.errors import ConfigError, ConnectError
from deployer.execute import ExecFailed, command_for, run_exec
from deployer.output import JsonReporter, TextReporter
from deployer.session import Session

ROOT = Path(__file__).resolve().parents[2]


class Hosts(RecordingTransport):
    """Each host answers with its name; `codes` gives a host's exit status (and a stderr line)."""

    def __init__(self, names, codes=None, down=None):
        self.codes = codes or {}
        super().__init__(Fleet(names, None), down=down or set(),
                         fail=lambda host, step: (self.codes[host], f"{host}: it broke")
                         if host in self.codes else None)

    def answer(self, host, step, stdin):
        return f"hello from {host}\nsecond line"


@pytest.fixture
def prod():
    return load_config("prod", root=ROOT)


def run(cfg, hosts, words, transport, output="text"):
    stream = io.StringIO()
    rep = JsonReporter(stream) if output == "json" else TextReporter(stream)
    code = run_exec(cfg, rep, hosts, words, session=Session(cfg, rep, transport=transport))
    return code, stream.getvalue()


def test_command_for_quotes_words_and_keeps_shell_text():
    assert command_for(["ls", "-la", "/srv/my app"]).script == "ls -la '/srv/my app'"
    assert command_for(["echo", "$(touch /tmp/pwned)"]).script == "echo '$(touch /tmp/pwned)'"
    assert command_for(["uptime"]).script == "uptime"
    # one word that needs a shell: the operator's own shell text
    assert command_for(["df -h / | tail -1"]).script == "df -h / | tail -1"
    with pytest.raises(ConfigError, match="exec: no command given"):
        command_for([])


def test_runs_on_the_selected_hosts_in_parallel_and_prefixes_each_line(prod, capsys):
    hosts = prod.select(roles=["web"])
    t = Hosts([h.name for h in prod.hosts])
    code, _ = run(prod, hosts, ["uptime", "-p"], t)
    assert code == 0
    assert sorted(t.calls) == [(h, "uptime -p") for h in ("web1", "web2", "web3", "web4")]
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert sorted(lines) == sorted(f"{h} | {text}" for h in ("web1", "web2", "web3", "web4")
                                   for text in ("hello from " + h, "second line"))
    # one host's lines stay together
    for i in range(0, 8, 2):
        assert lines[i].split(" | ")[0] == lines[i + 1].split(" | ")[0]
    assert err == ""


def test_failures_name_the_hosts_and_their_exit_codes(prod, capsys):
    hosts = prod.select(hosts=["web1", "web2", "worker1"])
    t = Hosts([h.name for h in prod.hosts], codes={"web2": 3, "worker1": 127})
    with pytest.raises(ExecFailed) as exc:
        run(prod, hosts, ["false"], t)
    assert exc.value.exit_code == 1
    assert exc.value.message == "exec: failed on 2 of 3 host(s): web2 (exit 3), worker1 (exit 127)"
    out, err = capsys.readouterr()
    assert "web1    | hello from web1" in out.splitlines()
    assert "web2    | web2: it broke" in err.splitlines() and "web2    | (exit 3)" in err.splitlines()
    assert "worker1 | (exit 127)" in err.splitlines()


def test_unreachable_hosts(prod, capsys):
    hosts = prod.select(hosts=["web1", "web2"])
    t = Hosts([h.name for h in prod.hosts], down={"web2"})
    with pytest.raises(ExecFailed, match=r"^exec: failed on 1 of 2 host\(s\): web2 \(unreachable\)$"):
        run(prod, hosts, ["true"], t)
    assert "web2 | (unreachable)" in capsys.readouterr().err.splitlines()
    t = Hosts([h.name for h in prod.hosts], down={"web1", "web2"})
    with pytest.raises(ConnectError) as exc:
        run(prod, hosts, ["true"], t)
    assert exc.value.exit_code == 3
    assert exc.value.message == "exec: no host reachable: web1 (unreachable), web2 (unreachable)"


def test_json_rows(prod, capsys):
    hosts = prod.select(hosts=["db1", "lb1"])
    t = Hosts([h.name for h in prod.hosts], codes={"lb1": 2})
    with pytest.raises(ExecFailed):
        run(prod, hosts, ["psql", "-c", "select 1"], t, output="json")
    out, err = capsys.readouterr()
    assert (out, err) == ("", "")  # all of it is in the events


def test_json_rows_content(prod):
    hosts = prod.select(hosts=["db1", "lb1"])
    t = Hosts([h.name for h in prod.hosts], codes={"lb1": 2})
    stream = io.StringIO()
    rep = JsonReporter(stream)
    with pytest.raises(ExecFailed):
        run_exec(prod, rep, hosts, ["psql", "-c", "select 1"], session=Session(prod, rep, transport=t))
    rows = sorted((json.loads(line) for line in stream.getvalue().splitlines()), key=lambda e: e["host"])
    assert [(r["event"], r["table"], r["host"], r["exit"]) for r in rows] == [
        ("row", "prod: exec", "db1", "0"), ("row", "prod: exec", "lb1", "2")]
    assert rows[0]["stdout"] == "hello from db1\nsecond line\n" and rows[1]["stderr"].strip() == "lb1: it broke"
    assert t.calls and all(cmd == "psql -c 'select 1'" for _, cmd in t.calls)
