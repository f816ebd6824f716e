"""The load balancer's own view, on the fleet's real HAProxy: a drain HAProxy refused is not a
drain, and a host put back is back only once HAProxy itself sees it UP."""

from __future__ import annotations

import json
import threading
import time

from deployer.commands import lb as LB
from deployer.engine import ops

from .conftest import serving
from .test_rollout import _last_run, _on_v2

SOCK = "/srv/haproxy/admin.sock"
SUPERVISORCTL = "/srv/bin/supervisorctl -c /srv/supervisor/supervisord.conf"


def haproxy(fleet, command: str) -> str:
    return fleet.sh("lb1", f"echo '{command}' | socat stdio UNIX-CONNECT:{SOCK}").stdout


def servers(fleet) -> dict[str, tuple[int, int]]:
    """server -> (operational state: 2 is UP, admin state: 0 is ready) in backend web."""
    out = {}
    for line in haproxy(fleet, "show servers state web").splitlines():
        parts = line.split()
        if len(parts) > 6 and parts[0].isdigit() and parts[1] == "web":
            out[parts[3]] = (int(parts[5]), int(parts[6]))
    return out


def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s")


def all_up(fleet) -> bool:
    return all(v == (2, 0) for v in servers(fleet).values())


def test_drain_of_a_server_haproxy_does_not_have_fails_naming_server_and_backend(fleet, cli, cfg, consistent):
    good = _on_v2(fleet, cli)
    # HAProxy answers "No such server." with exit status 0: that is no drain
    res = fleet.sh("lb1", LB.drain_and_wait(cfg.lb.socket, cfg.lb.backend, "web9").script, check=False)
    assert res.returncode == 3, (res.returncode, res.stdout, res.stderr)
    assert res.stderr.strip() == "haproxy: no server web9 in backend web (it answered: No such server.)"
    # a deploy whose inventory names servers HAProxy does not have stops at the first drain
    proc = cli("deploy", "--env", "local", "--ref", "v2", "--set", "lb.server_name={host}-gone")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "no server web1-gone in backend web" in out
    run = _last_run(fleet)
    assert not [e for e in run if e["type"] == "effect" and e["effect"] == "switched"]
    assert set(serving(fleet).values()) == {good}
    assert all_up(fleet), servers(fleet)


def test_undrain_waits_until_haproxy_itself_sees_the_server_up(fleet, cli, cfg, consistent):
    _on_v2(fleet, cli)
    put_back = ops.undrain(cfg, cfg.host("web3"))  # what deploy, rollback and recover run
    assert put_back.host == "lb1"
    haproxy(fleet, "set server web/web3 state drain")
    fleet.sh("web3", f"{SUPERVISORCTL} stop web")
    try:
        wait_for(lambda: servers(fleet)["web3"][0] != 2, 10, "HAProxy marks web3 DOWN")
        # its app is down: put back, it is not back; the command says so after its wait
        t0 = time.monotonic()
        res = fleet.sh("lb1", put_back.command.script, check=False)
        took = time.monotonic() - t0
        assert res.returncode != 0, f"put back a server HAProxy sees DOWN: exit 0 after {took:.1f}s"
        # the inventory's lb.up_timeout (5 s on the fleet; 10 s by default)
        assert f"web3 is not UP at the load balancer after {cfg.lb.up_timeout:g}s" in res.stderr
        assert cfg.lb.up_timeout != 10 and took >= cfg.lb.up_timeout - 0.5
        # the app comes back 2 s into the wait: put back returns when HAProxy sees it UP, not before
        threading.Timer(2.0, lambda: fleet.sh("web3", f"{SUPERVISORCTL} start web")).start()
        haproxy(fleet, "set server web/web3 state drain")
        t0 = time.monotonic()
        res = fleet.sh("lb1", put_back.command.script, check=False)
        took = time.monotonic() - t0
        assert res.returncode == 0, res.stderr
        assert took >= 2.0
        assert servers(fleet)["web3"] == (2, 0)
    finally:
        fleet.sh("web3", f"{SUPERVISORCTL} start web", check=False)
        haproxy(fleet, "set server web/web3 state ready")
        wait_for(lambda: all_up(fleet), 20, "every server UP again")


def test_a_host_haproxy_sees_down_after_its_switch_is_not_counted_back(fleet, cli, consistent):
    """Its direct health check passes but HAProxy's own check fails (as when HAProxy's check got
    400 from the app): the deploy does not count the host back, fails and rolls back."""
    good = _on_v2(fleet, cli)
    haproxy(fleet, "disable health web/web3")
    haproxy(fleet, "set server web/web3 health down")
    try:
        assert servers(fleet)["web3"][0] == 0
        proc = cli.popen("deploy", "--env", "local", "--ref", "v2", "--output", "json")
        err: list[str] = []
        reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
        reader.start()
        events = []
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            e = json.loads(line)
            events.append(e)
            if e["event"] == "stage" and e["stage"] == "switch" and e["state"] == "failed":
                # HAProxy's checks work again: the rollback can put web3 back
                haproxy(fleet, "enable health web/web3")
        code = proc.wait(timeout=300)
        reader.join(timeout=10)
        out = "\n".join(json.dumps(e) for e in events) + "\n" + "".join(err)
        assert code == 1, out
        assert "web3 is not UP at the load balancer" in out
        run = _last_run(fleet)
        forward = run[:next(i for i, e in enumerate(run) if e["type"] == "rollback.start")]
        back = {e["host"] for e in forward if e["type"] == "effect" and e["effect"] == "undrained"}
        assert "web3" not in back and "web1" in back, back
        assert run[-1]["type"] == "deploy.end" and run[-1]["outcome"] == "rolled_back"
        assert set(serving(fleet).values()) == {good}
        wait_for(lambda: all_up(fleet), 10, "every server UP at HAProxy after the rollback")
    finally:
        haproxy(fleet, "enable health web/web3")
        haproxy(fleet, "set server web/web3 state ready")
