"""What users get, on the fleet: the gate probes each host from the host itself (through its SSH
connection), a release that answers wrongly is judged at once, the load balancer serves the
app's maintenance page, a load balancer that rejects it fails the deploy, and the only server in
rotation is switched without a failed request."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml

from deployer.fleet.load import Load

from .conftest import psql, serving
from .test_lb import all_up, haproxy, wait_for
from .test_rollout import _last_run, _on_v2

LOOPBACK_HEALTH = "health.url=http://127.0.0.1:8000/health"


def _at(e: dict) -> dt.datetime:
    return dt.datetime.strptime(e["at"], "%Y-%m-%dT%H:%M:%S.%fZ")


def test_the_gate_probes_each_host_from_the_host_itself(fleet, cli, consistent):
    """127.0.0.1 is this machine's own loopback (nothing answers on :8000 here) but each host's
    from its SSH connection: the deploy (gate and canary bake) passes only through SSH."""
    _on_v2(fleet, cli)
    with pytest.raises(ConnectionRefusedError):  # nothing answers it from here
        socket.create_connection(("127.0.0.1", 8000), timeout=2).close()
    cli("deploy", "--env", "local", "--ref", "v2", "--set", LOOPBACK_HEALTH, check=0)
    probes = [e for e in _last_run(fleet) if e["type"] == "gate.probe"]
    assert {p["host"] for p in probes if p["ok"]} == {h.name for h in fleet.spec.web_hosts}
    assert all("GET http://127.0.0.1:8000/health" in p["detail"] for p in probes)


@pytest.mark.parametrize("maintenance", ["--no-maintenance", "--maintenance"])
def test_a_release_answering_500_is_rolled_back_within_3s_of_its_first_failed_probe(
        fleet, cli, consistent, maintenance):
    before = _on_v2(fleet, cli)
    proc = cli("deploy", "--env", "local", "--ref", "bad-health", maintenance, check=1)
    assert "3 times in a row" in proc.stderr, proc.stderr[-2000:]
    assert set(serving(fleet).values()) == {before}
    run = _last_run(fleet)
    failed = [e for e in run if e["type"] == "gate.probe" and not e["ok"]]
    assert failed and failed[0]["status"] == 500
    back = [e for e in run if e["type"] == "effect" and e["effect"] == "unswitched"]
    assert back, "no host was switched back"
    took = (max(_at(e) for e in back) - _at(failed[0])).total_seconds()
    assert took < 3, f"rolled back {took:.2f}s after the first failed probe"
    # the host failed on its answers, not on the time budget (7.5 s)
    assert len([e for e in failed if e["host"] == failed[0]["host"]]) == 3


def _sample_lb(fleet, stop: threading.Event, seen: list, seconds: float = 120) -> None:
    """GET / through the load balancer every 50 ms until `stop` (at most `seconds`): status,
    Retry-After, the body's status field, and whether HAProxy itself answered."""
    url = f"http://{fleet.spec.host('lb1').public}/"
    deadline = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                seen.append((r.status, None, None))
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                what = json.loads(body).get("status")
            except ValueError:
                what = body[:60].decode("latin-1")
            seen.append((exc.code, exc.headers.get("Retry-After"), what))
        except OSError as exc:
            seen.append((None, None, str(exc)))
        stop.wait(0.05)


def test_through_haproxy_a_maintenance_deploy_serves_the_apps_maintenance_page(fleet, cli, consistent):
    _on_v2(fleet, cli)
    stop, seen = threading.Event(), []
    t = threading.Thread(target=_sample_lb, args=(fleet, stop, seen), daemon=True)
    t.start()
    try:
        cli("deploy", "--env", "local", "--ref", "v3", check=0)  # a breaking migration: maintenance
    finally:
        stop.set()
        t.join(10)
    pages = [s for s in seen if s[0] != 200]
    assert pages, "no request met maintenance mode"
    # every one of them the app's own page, with its Retry-After: no "No server is available"
    assert all(s[0] == 503 and s[1] and s[2] == "maintenance" for s in pages), sorted(set(pages))[:5]
    assert all_up(fleet)
    cli("rollback", "--env", "local", "--to", "v2", "--restore-db", check=0)


def _haproxy_reload(fleet, config: str) -> None:
    fleet.sh("lb1", "cat > /srv/haproxy/haproxy.cfg && haproxy -D -f /srv/haproxy/haproxy.cfg "
                    "-sf $(cat /srv/haproxy/haproxy.pid)", input=config)
    time.sleep(0.5)
    wait_for(lambda: all_up(fleet), 15, "servers UP after the HAProxy reload")


def test_a_load_balancer_that_rejects_the_maintenance_page_fails_the_deploy(fleet, cli, consistent):
    """HAProxy's check without the gate header marks every server DOWN once maintenance is on:
    users would get "No server is available". The deploy must not end with exit 0: it fails,
    rolls back, and once maintenance is off the load balancer sees every server UP again."""
    before = _on_v2(fleet, cli)
    good = fleet.sh("lb1", "cat /srv/haproxy/haproxy.cfg").stdout
    bad = good.replace("option httpchk\n", "option httpchk GET /health\n").replace(
        "http-check send meth GET uri /health hdr X-Deployer-Gate 1\n", "")
    assert bad != good
    _haproxy_reload(fleet, bad)
    try:
        proc = cli("deploy", "--env", "local", "--ref", "v3", check=1)
        assert "not UP at the load balancer" in proc.stderr, proc.stderr[-2000:]
        assert set(serving(fleet).values()) == {before}
        assert psql(fleet, "select max(version) from schema_migrations") == "2"
        wait_for(lambda: all_up(fleet), 15, "servers UP after the rollback")
    finally:
        _haproxy_reload(fleet, good)


def test_the_only_web_host_behind_haproxy_is_deployed_without_a_failed_request(fleet, cli, tmp_path, consistent):
    """web2 and web3 out of HAProxy's rotation (maintenance at the load balancer), an inventory
    of web1 alone: web1 is never drained (it is the last server), the graceful reload alone
    keeps it serving; 0 failed requests under load."""
    _on_v2(fleet, cli)
    data = yaml.safe_load(fleet.inventory_path.read_text())
    data["hosts"] = [h for h in data["hosts"] if h["name"] not in ("web2", "web3")]
    path = tmp_path / "one-web.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    for name in ("web2", "web3"):
        haproxy(fleet, f"set server web/{name} state maint")
    try:
        load = Load(f"http://{fleet.spec.host('lb1').public}/", rate=60, seconds=90).start()
        try:
            proc = cli("deploy", "--env", "local", "--ref", "v2", "--inventory", str(path),
                       "--output", "json", check=0)
        finally:
            result = load.stop()
        commands = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
        assert not any(e.get("event") == "command" and "state drain" in e.get("command", "") for e in commands)
        assert result.sent > 100 and result.failed == 0, result.failures[:5]
        assert set(result.versions) == {"web1"}
    finally:
        for name in ("web2", "web3"):
            haproxy(fleet, f"set server web/{name} state ready")
        cli("deploy", "--env", "local", "--ref", "v2", check=0)  # every host on the same release again
