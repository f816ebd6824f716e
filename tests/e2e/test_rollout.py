"""Health gate, progressive waves, canary analysis, pauses and automatic rollback, on the fleet."""

from __future__ import annotations

import json
import re

import pytest

from deployer.fleet.load import Load

from .conftest import health, psql, serving


def variant(fleet, tmp_path, extra: str, name: str = "variant.yaml") -> str:
    """The fleet's inventory with extra top-level YAML keys."""
    path = tmp_path / name
    path.write_text(fleet.inventory_path.read_text() + extra)
    return str(path)


CANARY = """
rollout:
  - {size: 1, bake: 6}
  - {size: "100%", bake: 0}
gate:
  probe_interval: 0.05
"""


def _ledger(fleet) -> list[dict]:
    text = fleet.sh("db1", "cat /srv/app/.deployer/ledger.jsonl 2>/dev/null || true").stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _last_run(fleet) -> list[dict]:
    events = _ledger(fleet)
    run = [e for e in events if e["type"] == "deploy.start"][-1]["run"]
    return [e for e in events if e.get("run") == run]


def _on_v2(fleet, cli):
    """Start from v2 on every host (a good release with schema 2)."""
    served = set(serving(fleet).values())
    tag = fleet.state["tags"]["v2"][:7]
    if len(served) != 1 or not next(iter(served)) or not next(iter(served)).endswith(tag):
        cli("deploy", "--env", "local", "--ref", "v2", check=0)
    if psql(fleet, "select max(version) from schema_migrations") != "2":
        cli("deploy", "--env", "local", "--ref", "v2", check=0)
    return next(iter(serving(fleet).values()))


@pytest.mark.parametrize("ref,why", [
    ("bad-health", "health gate failed"),
    ("bad-slow", "timed out|bake|p95"),
    ("bad-boot", "health gate failed"),
    ("bad-migration", "migrate"),
    ("bad-worker", "does not report release|restart worker"),
])
def test_each_bad_release_is_caught_and_everything_returns(fleet, cli, tmp_path, ref, why, consistent):
    good = _on_v2(fleet, cli)
    rows_before = psql(fleet, "select count(*) from items") + "/" + psql(fleet, "select count(*) from notes")
    inv = variant(fleet, tmp_path, CANARY)
    proc = cli("deploy", "--env", "local", "--ref", ref, "--inventory", inv, check=1)
    assert "failed and was rolled back" in proc.stderr
    assert re.search(why, proc.stdout + proc.stderr)
    assert set(serving(fleet).values()) == {good}
    for h in fleet.spec.web_hosts:
        assert health(fleet, h)["release"] == good
    assert psql(fleet, "select max(version) from schema_migrations") == "2"
    assert psql(fleet, "select to_regclass('public.broken_leftover') is null") == "t"
    assert psql(fleet, "select count(*) from items") + "/" + psql(fleet, "select count(*) from notes") == rows_before
    run = _last_run(fleet)
    bad = [e["release"] for e in run if e["type"] == "release.bad"]
    assert bad and bad[0].endswith(fleet.state["tags"][ref][:7])
    assert run[-1]["type"] == "deploy.end" and run[-1]["outcome"] == "rolled_back"
    # workers run the good release again
    for h in fleet.spec.web_hosts:
        out = fleet.sh(h.name, f"cat /srv/app/shared/storage/worker-{h.name}.json").stdout
        assert json.loads(out)["release"] == good


def test_bad_release_is_caught_on_the_canary_before_any_other_host_switches(fleet, cli, tmp_path, consistent):
    _on_v2(fleet, cli)
    inv = variant(fleet, tmp_path, CANARY)
    cli("deploy", "--env", "local", "--ref", "bad-health", "--inventory", inv, check=1)
    switched = [e["host"] for e in _last_run(fleet) if e["type"] == "effect" and e["effect"] == "switched"]
    assert switched == ["web1"]


def test_canary_analysis_catches_a_release_worse_than_the_baseline(fleet, cli, tmp_path, consistent):
    _on_v2(fleet, cli)
    inv = variant(fleet, tmp_path, CANARY)
    proc = cli("deploy", "--env", "local", "--ref", "bad-canary", "--inventory", inv, check=1)
    out = proc.stdout + proc.stderr
    assert "canary slower than baseline" in out and "Mann-Whitney" in out
    verdict = [e for e in _last_run(fleet) if e["type"] == "gate.verdict"][-1]
    assert verdict["status"] == "fail"
    # the absolute thresholds alone passed: p95 of the canary is far under 2000 ms
    assert not any("p95" in r and "above" in r and "2000" in r for r in verdict["reasons"])


def test_flapping_health_endpoint_does_not_pass_the_gate(fleet, cli, tmp_path, consistent):
    good = _on_v2(fleet, cli)
    inv = variant(fleet, tmp_path, CANARY)
    cli("deploy", "--env", "local", "--ref", "bad-flap", "--inventory", inv, check=1)
    assert set(serving(fleet).values()) == {good}


PAUSED = """
rollout:
  - {size: 1, pause: true}
  - {size: "100%"}
"""


def test_paused_rollout_is_promoted_by_a_separate_process(fleet, cli, tmp_path, consistent):
    old = _on_v2(fleet, cli)
    inv = variant(fleet, tmp_path, PAUSED)
    proc = cli("deploy", "--env", "local", "--ref", "v2", "--inventory", inv, check=0)
    assert "paused after wave 1/2" in proc.stdout
    served = serving(fleet)
    new = served["web1"]
    assert new != old and served["web2"] == served["web3"] == old
    status = cli("status", "--env", "local", "--inventory", inv)
    assert "PAUSED" in status.stdout
    cli("deploy", "--env", "local", "--ref", "v1", "--inventory", inv, check=3)  # the lock is held

    promoted = cli("promote", "--env", "local", "--inventory", inv, check=0)
    assert "promoted" in promoted.stdout
    assert set(serving(fleet).values()) == {new}
    assert fleet.sh("db1", "test -d /srv/app/.deployer/lock", check=False).returncode == 1


def test_aborted_rollout_returns_every_host_to_the_snapshot(fleet, cli, tmp_path, consistent):
    old = _on_v2(fleet, cli)
    inv = variant(fleet, tmp_path, PAUSED)
    cli("deploy", "--env", "local", "--ref", "v2", "--inventory", inv, check=0)
    assert serving(fleet)["web1"] != old
    cli("abort", "--env", "local", "--inventory", inv, check=0)
    assert set(serving(fleet).values()) == {old}
    assert _last_run(fleet)[-1]["outcome"] == "aborted"
    cli("promote", "--env", "local", "--inventory", inv, check=3)  # nothing left to promote


WAVES3 = """
rollout:
  - {size: 1, bake: 2}
  - {size: "50%", bake: 0}
  - {size: "100%", bake: 0}
gate:
  probe_interval: 0.1
"""


def test_rolling_deploy_and_automatic_rollback_under_load_drop_no_request(fleet, cli, tmp_path, consistent):
    _on_v2(fleet, cli)
    inv = variant(fleet, tmp_path, WAVES3)
    lb = fleet.spec.host("lb1").public
    load = Load(f"http://{lb}/", rate=100, seconds=120).start()
    try:
        cli("deploy", "--env", "local", "--ref", "v2", "--inventory", inv, check=0)
        cli("deploy", "--env", "local", "--ref", "bad-health", "--inventory", inv, check=1)
    finally:
        result = load.stop()
    assert result.sent > 500
    assert result.failed == 0, result.failures[:10]
