"""Failure paths: an unreachable host, Ctrl-C mid-deploy, a changed host key, bad config."""

from __future__ import annotations

import json
import signal

from .conftest import serving
from .test_rollout import _last_run, _ledger, _on_v2


def test_unreachable_host_refuses_the_deploy_before_any_change(fleet, cli, consistent):
    _on_v2(fleet, cli)
    before, n = serving(fleet), len(_ledger(fleet))
    fleet.cut("web3")
    try:
        proc = cli("deploy", "--env", "local", "--ref", "v1", check=3)
    finally:
        fleet.reconnect("web3")
    assert "preflight: hosts not reachable or not trusted" in proc.stderr and "web3" in proc.stderr
    assert serving(fleet) == before and len(_ledger(fleet)) == n


def test_changed_host_key_refuses_the_deploy(fleet, cli, consistent):
    _on_v2(fleet, cli)
    before = serving(fleet)
    fleet.rekey("web2")
    try:
        proc = cli("deploy", "--env", "local", "--ref", "v1", check=3)
        assert f"web2 ({fleet.spec.host('web2').address}): host key CHANGED" in proc.stderr
        assert serving(fleet) == before
    finally:
        fleet.trust()


def test_ctrl_c_mid_deploy_rolls_back_releases_the_lock_and_exits_130(fleet, cli, consistent):
    old = _on_v2(fleet, cli)
    proc = cli.popen("deploy", "--env", "local", "--ref", "v1", "--output", "json")
    started = []
    for line in proc.stdout:  # interrupted as its first host switches (the deploy's own events)
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "stage" and event.get("stage") == "switch":
            started.append(event)
            break
    assert started and proc.poll() is None, "the deploy ended before its switch"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert set(serving(fleet).values()) == {old}
    assert fleet.sh("db1", "test -d /srv/app/.deployer/lock", check=False).returncode == 1
    last = json.loads(fleet.sh("db1", "tail -n 1 /srv/app/.deployer/ledger.jsonl").stdout)
    assert last["type"] == "deploy.end" and last["outcome"] == "interrupted"


def test_bad_inventory_is_refused_with_file_key_and_problem_and_touches_nothing(fleet, cli, tmp_path, consistent):
    before = serving(fleet)
    bad = tmp_path / "bad.yaml"
    bad.write_text(fleet.inventory_path.read_text().replace("roles: [web, worker]", "roles: web", 1))
    proc = cli("deploy", "--env", "local", "--ref", "v2", "--inventory", str(bad), check=2)
    assert "hosts[3].roles: expected a list" in proc.stderr
    assert serving(fleet) == before


def test_rollback_killed_halfway_converges_when_run_again(fleet, cli, consistent):
    cli("deploy", "--env", "local", "--ref", "v1", check=0)
    v1 = serving(fleet)["web1"]
    cli("deploy", "--env", "local", "--ref", "v2", check=0)
    proc = cli.popen("rollback", "--env", "local", "--to", v1, "--keep-db", "--output", "json")
    for line in proc.stdout:  # killed as its first host switches back
        if line.startswith("{") and ".current." in json.loads(line).get("command", ""):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    status = cli("status", "--env", "local")
    assert f"pid {proc.pid}" in status.stdout  # the dead rollback's lock is reported
    cli("unlock", "--env", "local", "--force", check=0)
    cli("rollback", "--env", "local", "--to", v1, "--keep-db", check=0)
    assert set(serving(fleet).values()) == {v1}
    cli("rollback", "--env", "local", "--to", v1, "--keep-db", check=0)  # and again: a no-op
    assert set(serving(fleet).values()) == {v1}


def test_a_failing_migration_shows_what_it_printed_on_stdout_and_the_ledger_keeps_it(fleet, cli, tmp_path,
                                                                                   consistent):
    """As `php artisan migrate --force` does, the migration prints its error on stdout and exits
    1: the deploy rolls back, and the output and the ledger both show that line, labelled."""
    before = _on_v2(fleet, cli)
    (tmp_path / "stdout-migrate.yaml").write_text(
        "extends: demo\nname: stdout-migrate\nstages:\n  migrate:\n"
        "    run: \"echo 'SQLSTATE[42P01]: relation missing'; exit 1\"\n")
    inv = tmp_path / "inv.yaml"
    inv.write_text(fleet.inventory_path.read_text().replace("playbook: demo", "playbook: stdout-migrate.yaml"))
    # v3: a migration is pending (with none pending, the migrate stage runs nothing)
    proc = cli("deploy", "--env", "local", "--ref", "v3", "--inventory", str(inv), check=1)
    assert "stdout:\n  SQLSTATE[42P01]: relation missing" in proc.stderr, proc.stderr[-3000:]
    assert "migrate" in proc.stderr and "exited 1" in proc.stderr
    assert set(serving(fleet).values()) == {before}
    run = _last_run(fleet)
    failed = [e for e in run if e["type"] == "step.failed"]
    assert [(e["stage"], e["what"], e["exit_status"], e["stdout"]) for e in failed] == [
        ("migrate", "migrate", 1, "SQLSTATE[42P01]: relation missing")], failed
    end = [e for e in run if e["type"] == "deploy.end"]
    assert len(end) == 1 and end[0]["outcome"] == "rolled_back"
    assert "SQLSTATE[42P01]: relation missing" in end[0]["error"]

