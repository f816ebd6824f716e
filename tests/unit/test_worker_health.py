"""Worker checks need fresh evidence (issue #19), against the recording transport (recording.py):
every worker check of a plan takes `$since` on the host and the demo playbook's check wants a
heartbeat newer than it; `recover` restarts a wedged worker; a deploy that failed on a host whose
worker was unhealthy before the switch does not mark its release bad; a full state filesystem
refuses the deploy (exit 3) before anything changes."""

from __future__ import annotations

import pytest
from recording import FakeHttp, Fleet, unguarded
from test_lifecycle import ledger, recover
from test_orchestration import OLD, config, events, run_deploy

from deployer.errors import DeployFailed, NeedsHuman, Refused

FRESH = '-gt "$since_ms"'  # the demo check: a heartbeat written after the check's action began
NOW = "since_ms=$(( $(date +%s%3N) )); since=$(( since_ms / 1000 ))"  # taken as the action begins
PROBE = "since_ms=$(( $(date +%s%3N) - 2000 ))"  # a check alone accepts a heartbeat 2 s old


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYER_STATE_DIR", str(tmp_path / "state"))


def is_check(step: str) -> bool:
    """The demo playbook's worker_verify step (alone, or a step of a batch)."""
    return FRESH in step and "worker-$(hostname).json" in step


def test_every_worker_check_of_a_deploy_wants_a_heartbeat_newer_than_its_action(tmp_path):
    cfg = config("local", tmp_path)
    code, planned, _ = run_deploy(cfg, Fleet([h.name for h in cfg.hosts], OLD), dry_run=True)
    assert code == 0
    checks = [e for e in events(planned, "plan") if "does not report release" in e["command"]]
    # the probe before the switch, then the restart and its check, on each worker host
    assert {e["host"] for e in checks} == {"web1", "web2", "web3"}
    assert len(checks) == 6
    for e in checks:  # each after the fencing token check
        assert unguarded(e["command"]) != e["command"], e["command"]
        assert unguarded(e["command"]).startswith((NOW + "; ", PROBE + "; ")), e["command"]
        assert FRESH in e["command"]
        assert "grep -qsF -e " in e["command"]  # ...that reports the release
    probes = [e for e in checks if unguarded(e["command"]).startswith(PROBE)]
    assert {e["stage"] for e in probes} == {"snapshot"} and OLD in probes[0]["command"]
    # a restart verified takes `since` before the restart itself
    restart = next(e["command"] for e in checks if e["stage"].startswith("worker_restart"))
    assert restart.index(NOW) < restart.index("queue-restart") < restart.index(FRESH)


def test_the_demo_worker_restart_restarts_a_wedged_worker(tmp_path):
    """A worker alive but with a stale heartbeat (stuck on a dead database connection) never
    sees queue-restart: it is stopped and started, not just 'started' (a no-op on a running one)."""
    step = config("local", tmp_path).playbook.steps("worker_restart")[0].run
    assert "-lt 3 ]; then exit 0; fi;" in step
    assert step.index("stop worker") < step.index("start worker")


def test_recover_restarts_a_wedged_worker_and_checks_it_again(tmp_path):
    cfg = config("local", tmp_path)
    fleet = Fleet([h.name for h in cfg.hosts], OLD)
    rec, out, t = recover(cfg, fleet)
    seen = []

    def wedged_once(host, step):
        if host == "web2" and is_check(step):
            seen.append(step)
            if len(seen) == 1:
                return 1, f"worker on web2 does not report release {OLD} in a heartbeat newer than 1"
        return None

    t.fail = wedged_once
    assert rec.run() == 0
    assert len(seen) == 2  # checked, restarted, checked again
    restarts = [c for h, c in t.calls if "queue-restart" in c]
    assert [h for h, c in t.calls if "queue-restart" in c] == ["web2"]
    assert unguarded(restarts[0]) != restarts[0] and unguarded(restarts[0]).startswith(NOW + "; ")
    notices = [e["message"] for e in events(out, "notice")]
    assert any("fresh heartbeat on web2: restarting it" in m for m in notices)
    assert "restarted the wedged worker of web2" in events(out, "outcome")[-1]["message"]
    assert not fleet.lock and fleet.current == {h: OLD for h in fleet.current}


def test_recover_says_so_when_a_worker_stays_wedged(tmp_path):
    cfg = config("local", tmp_path)
    fleet = Fleet([h.name for h in cfg.hosts], OLD)
    rec, out, t = recover(cfg, fleet)
    t.fail = lambda host, step: ((1, "worker on web3 does not report release")
                                 if host == "web3" and is_check(step) else None)
    with pytest.raises(NeedsHuman) as err:
        rec.run()
    assert err.value.exit_code == 4
    notices = [e["message"] for e in events(out, "notice")]
    assert any("still wedged after a restart" in m and "web3" in m for m in notices)
    assert not fleet.lock


def failing_deploy(tmp_path, *, probe_fails: bool):
    """web1's worker check after the switch fails; its probe before the switch too (or not)."""
    cfg = config("local", tmp_path)
    fleet = Fleet([h.name for h in cfg.hosts], OLD)

    def fail(host, step):
        if host != "web1" or not is_check(step):
            return None
        if step.startswith(PROBE):
            return (1, "worker on web1 does not report release") if probe_fails else None
        if fleet.current["web1"] != OLD:  # the check of the new release, once switched
            return 1, "worker on web1 does not report release"
        return None

    with pytest.raises(DeployFailed) as err:
        run_deploy(cfg, fleet, fail=fail, http=FakeHttp())
    assert fleet.current == {h: OLD for h in fleet.current} and not fleet.lock
    return err.value, ledger(fleet)


def test_a_deploy_failed_by_an_unhealthy_environment_does_not_mark_its_release_bad(tmp_path):
    err, recs = failing_deploy(tmp_path, probe_fails=True)
    assert err.exit_code == 1
    assert "environment was at fault" in err.message and "web1" in err.message
    assert "NOT marked bad" in err.message
    assert not [r for r in recs if r["type"] == "release.bad"]
    end = recs[-1]
    assert end["type"] == "deploy.end" and end["outcome"] == "rolled_back"
    assert [r for r in recs if r["type"] == "rollback.end" and r["outcome"] == "success"]


def test_a_deploy_failed_on_a_host_healthy_before_marks_its_release_bad(tmp_path):
    err, recs = failing_deploy(tmp_path, probe_fails=False)
    assert "environment" not in err.message
    healthy = {r["host"] for r in recs if r["type"] == "effect" and r.get("effect") == "worker_healthy"}
    assert healthy == {"web1", "web2", "web3"}
    (bad,) = [r for r in recs if r["type"] == "release.bad"]
    assert bad["release"] != OLD


def test_a_full_state_filesystem_refuses_the_deploy_and_changes_nothing(tmp_path):
    cfg = config("local", tmp_path)
    fleet = Fleet([h.name for h in cfg.hosts], OLD)

    def full(host, step):
        if host == "db1" and "echo acquired" in step:
            return (73, "mkdir: cannot create directory '/srv/app/.deployer/lock.new.4242': "
                        "No space left on device\nlock: cannot write /srv/app/.deployer")
        return None

    with pytest.raises(Refused) as err:
        run_deploy(cfg, fleet, fail=full)
    assert err.value.exit_code == 3
    assert err.value.message == "db1: no space left on /srv/app/.deployer: the lock cannot be taken"
    assert not fleet.lock and fleet.ledger == "" and fleet.current == {h: OLD for h in fleet.current}


def test_the_lock_script_removes_what_it_began_when_a_write_fails(tmp_path):
    from deployer.commands import lock as LK

    script = LK.acquire("/srv/app/.deployer", "run-1").script
    for write in ("mkdir -p /srv/app/.deployer", "mkdir /srv/app/.deployer/lock.new.$$",
                  "cat > /srv/app/.deployer/lock.new.$$/info.json", "touch /srv/app/.deployer/lock.new.$$/heartbeat"):
        assert f"{write} || unwritable" in script
    assert f"rm -rf /srv/app/.deployer/lock.new.$$; echo 'lock: cannot write /srv/app/.deployer' >&2; " \
           f"exit {LK.UNWRITABLE}" in script
    assert LK.unwritable("db1", "/x", "cat: write error: Read-only file system\n") == \
        "db1: cannot write /x (Read-only file system): the lock cannot be taken"
