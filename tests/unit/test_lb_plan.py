"""What the plans ask of the load balancer: never the last server drained, nothing done before
it sees the servers UP (in maintenance too), health probes through the SSH connection."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from test_engine_pure import REL, canned_facts

from deployer.config import load_config
from deployer.engine import ops
from deployer.engine.deploy_plan import DeployInputs, deploy_plan
from deployer.engine.maint_plan import mode_plan

ROOT = Path(__file__).resolve().parents[2]


def prod(**overrides):
    return load_config("prod", root=ROOT, overrides=overrides or None, environ={})


def one_web(cfg):
    """prod with web1 as its only web host (the other web hosts gone)."""
    hosts = [h for h in cfg.hosts if not h.has("web") or h.name == "web1"]
    return replace(cfg, hosts=hosts)


def switch_actions(plan, host):
    return [a.what for st in plan.stages if st.name == "switch" for lane in st.lanes
            if lane.subject == host for a in lane.actions]


def test_the_only_server_in_rotation_is_not_drained_but_still_waited_up_for():
    cfg = one_web(prod())
    plan = deploy_plan(cfg, canned_facts(cfg), DeployInputs(release=REL, commit="c" * 40, ref="v2", maintenance=False))
    assert switch_actions(plan, "web1") == ["switch", "health", "put back web1"]
    put_back = next(a for st in plan.stages for a in st.actions() if a.what == "put back web1")
    assert "state ready" in put_back.command.script and "not UP at the load balancer" in put_back.command.script


def test_a_switch_never_takes_every_server_out_of_rotation():
    assert ops.switch_limit(prod(max_unavailable="100%")) == 3  # 4 web hosts: one stays in
    assert ops.switch_limit(prod(max_unavailable=1)) == 1
    assert ops.switch_limit(one_web(prod())) == 1
    plan = deploy_plan(prod(max_unavailable="100%"), canned_facts(prod()),
                       DeployInputs(release=REL, commit="c" * 40, ref="v2", maintenance=False))
    assert {st.limit for st in plan.stages if st.name == "switch"} == {3}
    assert switch_actions(plan, "web2")[0] == "drain web2"


def test_a_maintenance_deploy_waits_for_the_load_balancer_at_each_put_back_and_at_the_end():
    cfg = prod()
    plan = deploy_plan(cfg, canned_facts(cfg), DeployInputs(release=REL, commit="c" * 40, ref="v2",
                                                         maintenance=True))
    put_backs = [a for st in plan.stages for a in st.actions() if a.what.startswith("put back")]
    assert len(put_backs) == 4 and all("not UP at the load balancer" in a.command.script for a in put_backs)
    names = [st.name for st in plan.stages]
    lb_wait = [st for st in plan.stages if st.detail == "the load balancer sees every server UP"]
    assert len(lb_wait) == 1 and lb_wait[0].name == "finalize"
    # after maintenance ends (the finalize stage's off steps)
    assert names.index("finalize") < plan.stages.index(lb_wait[0])
    script = lb_wait[0].actions()[0].command.script
    assert lb_wait[0].actions()[0].host == "lb1"
    assert all(f" {w}" in script for w in ("web1", "web2", "web3", "web4"))


def test_maintenance_on_and_off_end_when_the_load_balancer_sees_every_server_up():
    cfg = prod()
    for on in (True, False):
        plan = mode_plan(cfg, on, message="m", retry=60, ttl=600 if on else None, release=REL)
        assert [st.name for st in plan.stages] == ["maintenance", "maintenance"]
        assert plan.stages[-1].actions()[0].what == "load balancer: every server UP"


def test_health_checks_go_through_ssh_by_default_and_say_so_in_the_plan():
    cfg = prod()
    check = ops.check(cfg, cfg.host("web1"), REL)
    assert check.http.via == "ssh" and check.http.fail_after == 3
    assert check.display().startswith("GET http://") and " through SSH (expect 200" in check.display()
    direct = ops.check(prod(**{"health.via": "direct", "health.fail_after": 0}), cfg.host("web1"), REL)
    assert "through SSH" not in direct.display() and direct.http.fail_after == 0


def test_wait_all_up_reads_haproxys_states_and_names_the_servers_not_up(tmp_path):
    """The script as sh runs it, against a socat that answers as HAProxy's runtime API does."""
    import os
    import subprocess

    from deployer.commands import lb as LB

    states = tmp_path / "states"
    socat = tmp_path / "socat"
    socat.write_text(f"#!/bin/sh\ncat >/dev/null; cat {states}\n")
    socat.chmod(0o755)
    header = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state\n"
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    script = LB.wait_all_up("/srv/haproxy/admin.sock", "web", ["web1", "web2"], wait=0.3).script

    states.write_text(header + "3 web 1 web1 10.0.0.1 2 0\n3 web 2 web2 10.0.0.2 2 0\n")
    assert subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True).returncode == 0

    states.write_text(header + "3 web 1 web1 10.0.0.1 2 0\n3 web 2 web2 10.0.0.2 0 0\n")
    down = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    assert down.returncode == 1
    assert down.stderr.startswith("not UP at the load balancer after 0.3s: web2 (its own health check")


def test_lb_up_timeout_bounds_every_wait_for_up_servers_and_each_command_outlasts_it():
    cfg = prod(**{"lb.up_timeout": 45})
    plan = deploy_plan(cfg, canned_facts(cfg), DeployInputs(release=REL, commit="c" * 40, ref="v2", maintenance=True))
    waits = [a for st in plan.stages for a in st.actions()
             if a.what.startswith("put back") or a.what == "load balancer: every server UP"]
    assert len(waits) == 5
    for a in waits:
        assert "[ $i -lt 450 ]" in a.command.script or "[ $i -ge 450 ]" in a.command.script, a.command.script
        assert "after %ss" in a.command.script and " 45 " in a.command.script and "lb.up_timeout" in a.command.script
        assert a.timeout >= 45 + 20
    default = prod()
    plan = deploy_plan(default, canned_facts(default), DeployInputs(release=REL, commit="c" * 40, ref="v2",
                                                                 maintenance=True))
    assert {a.timeout for st in plan.stages for a in st.actions() if a.what.startswith("put back")} == {30}
