"""Fencing tokens: the lock hands out numbers that only grow, every host script of a run's plans
checks the run's token first (a host that has seen a larger one refuses), and a refusal ends the
run like a lost lock (exit 4, not rolled back). `unlock --force` does not break a live holder of
this machine's without a reason."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from localshell import LocalShell, local_config
from recording import GUARD_HEAD, FakeHttp, Fleet, RecordingTransport, fake_bake, split_guard
from test_engine_pure import REL, ROOT, canned_facts

from deployer import inspect
from deployer.commands import fence as FN
from deployer.commands import lock as LK
from deployer.config import load_config
from deployer.engine import back_plan, deploy_plan, maint_plan
from deployer.engine.deploy import DeployRun
from deployer.engine.deploy_plan import DeployInputs
from deployer.engine.executor import Executor
from deployer.engine.plan import Plan
from deployer.engine.state import RunState
from deployer.errors import DeployerError, NeedsHuman, Refused
from deployer.output import JsonReporter
from deployer.records import BackupRef
from deployer.session import Session
from deployer.shell import raw

OLD = "20261101T000000Z-aaaaaaa"
SH = shutil.which("sh") or "/bin/sh"
TOKEN = 7


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYER_STATE_DIR", str(tmp_path / "state"))


def plans(cfg) -> dict[str, Plan]:
    """A plan of each kind a run executes, built with TOKEN."""
    facts = canned_facts(cfg)
    app = [h.name for h in cfg.app_hosts]
    backup = BackupRef(path="/srv/backups/x.dump", sha256="ab" * 32, size=0, host="db1")
    st = RunState(run="r1", release=REL, snapshot={h: OLD for h in app}, schema_before=1, schema_after=2,
                  backup=backup, maintenance_on=True, migrated=True, pulled=list(app), switched=list(app),
                  drained=app[:1], workers_restarted=list(app))
    out = {f"deploy maintenance={m}": deploy_plan.deploy_plan(cfg, facts, DeployInputs(
        release=REL, commit=facts.commit, ref="v2", maintenance=m, token=TOKEN)) for m in (True, False)}
    out["promote"] = deploy_plan.deploy_plan(cfg, facts, DeployInputs(
        release=REL, commit=facts.commit, ref="v2", maintenance=False, start_wave=1, token=TOKEN))
    out["rollback"] = back_plan.rollback_plan(cfg, st, TOKEN)
    out["rollback --to"] = back_plan.manual_rollback_plan(cfg, OLD, cfg.app_hosts, backup=backup,
                                                          safety_path="/srv/backups/s.dump", token=TOKEN)
    out["maintenance on"] = maint_plan.mode_plan(cfg, True, message="m", retry=60, ttl=600,
                                                 release=OLD, token=TOKEN)
    out["maintenance off (recover)"] = maint_plan.mode_plan(cfg, False, message="", retry=0, ttl=None,
                                                            release=OLD, token=TOKEN)
    out["maintenance job"] = maint_plan.window_plan(cfg, backup_path="/srv/backups/n.dump", remove=["old.dump"],
                                                    release=OLD, gate_release=OLD, token=TOKEN)
    return out


@pytest.mark.parametrize("env", ["prod", "staging", "local"])
def test_every_host_script_of_every_plan_starts_with_the_token_check(env, tmp_path):
    overrides = {}
    if env == "local":
        (tmp_path / "id").write_text("x\n")
        (tmp_path / "known_hosts").write_text("")
        overrides = {"ssh.key": str(tmp_path / "id"), "ssh.known_hosts": str(tmp_path / "known_hosts")}
    cfg = load_config(env, root=ROOT, overrides=overrides)
    check = FN.guard(cfg.fence_record, TOKEN)
    assert cfg.deploy_to not in check.script  # the load balancer and db host may have none
    for name, plan in plans(cfg).items():
        assert plan.token == TOKEN, name
        remote = [a for st in plan.stages for a in st.actions() if a.command is not None]
        assert remote or name == "promote", name  # (a one-wave rollout: nothing left to promote)
        for a in remote:
            assert a.script.script.startswith(check.script + " || exit $?\n"), (name, a.what)
            assert a.display().startswith(check.display), (name, a.what)
            assert split_guard(a.script.script) == (TOKEN, a.command.script)
        for host, cmd in plan.keepalive.items():  # the dead-man re-arming too
            assert split_guard(cmd.script)[0] == TOKEN, (name, host)


def test_a_dry_run_plan_shows_a_placeholder_and_is_never_run(tmp_path):
    cfg = load_config("prod", root=ROOT)
    plan = deploy_plan.deploy_plan(cfg, canned_facts(cfg), DeployInputs(
        release=REL, commit="3f8cb52" + "0" * 33, ref="v2", maintenance=False, token=FN.DRY_RUN))
    rows = plan.rows()
    assert all(f"-gt {FN.DRY_RUN_SHOWN} ]" in cmd for _, _, cmd in rows if not cmd.startswith(("GET ", "upload")))
    s = Session(cfg, JsonReporter(io.StringIO()), transport=RecordingTransport(Fleet([], OLD)))
    ex = Executor(s, None, JsonReporter(io.StringIO()), RunState(run="r", release=REL))
    with pytest.raises(DeployerError, match="plan built for fencing token 0"):
        ex.fenced(plan)


def sh(cmd, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([SH, "-c", cmd.script], input=stdin, capture_output=True, text=True, timeout=30,
                          env=env)


def test_the_fence_record_is_named_by_env_deploy_tree_and_lock():
    name = FN.record("prod", "/srv/app")
    assert name.startswith("fence-prod-") and len(name) == len("fence-prod-") + 8
    assert FN.record("prod", "/srv/app") == name != FN.record("prod", "/srv/shop")
    assert FN.record("staging", "/srv/app") != name
    prod = load_config("prod", root=ROOT)
    assert prod.fence_record == FN.record("prod", prod.deploy_to, prod.lock_place)
    # each lock counts its own tokens: an env moved to S3 (or to another ledger host) gets a
    # record of its own, not refused by the larger tokens the SSH lock handed out
    assert prod.lock_place.startswith(f"ssh:{prod.ledger_host.address}:")
    s3 = load_config("prod", root=ROOT, overrides={"state.backend": "s3", "state.bucket": "acme-deploy"})
    assert s3.lock_place.startswith("s3:") and s3.fence_record != prod.fence_record
    for bad in ("a/b", "x y", "$(touch p)"):
        with pytest.raises(ValueError, match="not a plain file name"):
            FN.record(bad, "/srv/app")
    assert FN.record_path(name) == f"$HOME/.deployer/{name}"


def test_the_host_check_refuses_a_smaller_token_and_keeps_the_largest(tmp_path):
    """The record is the SSH user's, under its home directory (made when missing): nothing under
    deploy_to, which a host without the app may not have."""
    home = tmp_path / "home" / "deploy"
    env = {**os.environ, "HOME": str(home)}
    name = FN.record("prod", "/srv/app")
    marker = tmp_path / "ran"

    def run(token: int) -> subprocess.CompletedProcess:
        return sh(FN.fenced(raw(f"echo {token} >> {marker}"), FN.guard(name, token)), env=env)

    assert run(3).returncode == 0
    assert run(5).returncode == 0
    stale = run(4)
    assert stale.returncode == FN.FENCED_EXIT
    assert "fenced: host has seen token 5 > 4" in stale.stderr
    assert FN.refusal(stale.returncode, stale.stderr) == (5, 4)
    assert run(5).returncode == 0  # the same run again: allowed
    assert marker.read_text().split() == ["3", "5", "5"]  # the stale script never ran
    assert (home / ".deployer" / name).read_text().strip() == "5"
    assert sorted(p.name for p in (home / ".deployer").iterdir()) == [name, name + ".lock"]
    assert FN.refusal(1, stale.stderr) is None and FN.refusal(FN.FENCED_EXIT, "other") is None
    assert sh(FN.seen(name), env=env).stdout.strip() == "5"
    other = FN.record("prod", "/srv/shop")  # another project's env of the same name: its own record
    assert sh(FN.fenced(raw("true"), FN.guard(other, 1)), env=env).returncode == 0
    # a record that is not a number (a hand edit): refused, named, nothing run, left as it is
    (home / ".deployer" / name).write_text("5x\n")
    bad = run(6)
    assert bad.returncode == 1 and "holds '5x'" in bad.stderr
    assert marker.read_text().split() == ["3", "5", "5"]
    assert (home / ".deployer" / name).read_text() == "5x\n"
    # a record without its newline (written by hand): read all the same
    (home / ".deployer" / name).write_text("7")
    assert run(6).returncode == FN.FENCED_EXIT and run(7).returncode == 0


def test_the_host_check_says_what_is_missing(tmp_path):
    """Without flock (or without HOME) the check fails, saying why, and the script never runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("cat", "mkdir", "mv"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    marker = tmp_path / "ran"
    script = FN.fenced(raw(f"echo ran > {marker}"), FN.guard(FN.record("prod", "/srv/app"), 3))
    no_flock = sh(script, env={"HOME": str(tmp_path / "home"), "PATH": str(bin_dir)})
    assert no_flock.returncode == 1 and "fence: flock is not installed on this host" in no_flock.stderr
    no_home = sh(script, env={"PATH": os.environ["PATH"]})
    assert no_home.returncode != 0 and "HOME is not set" in no_home.stderr
    assert not marker.exists() and not (tmp_path / "home").exists()


def test_the_lock_hands_out_growing_tokens_and_a_take_over_gets_a_new_one(tmp_path):
    cfg = local_config(tmp_path)
    tokens = []
    for reason in ("a", "b"):
        s = Session(cfg, JsonReporter(io.StringIO()), reason=reason, transport=LocalShell())
        s.acquire_lock(0)
        tokens.append(s.fence_token)
        if reason == "a":
            s.release_lock()
        s.close()
    assert tokens == [1, 2]
    paused_run = s.run_id
    s.state.mark_paused(paused_run)
    other = Session(cfg, JsonReporter(io.StringIO()), reason="promote", transport=LocalShell())
    assert other.adopt_lock(paused_run) is not None
    assert other.fence_token == 3
    other.release_lock()
    assert Path(LK.lock_dir(cfg.layout.state)).exists() is False


def test_a_token_that_cannot_be_written_is_a_full_state_filesystem_and_leaves_no_lock(tmp_path):
    """The lock taken, its token could not be written (a full state filesystem, here a directory
    in the way of the counter's new value): the lock is removed again and the script exits as
    `acquire` does when it cannot write the lock (the run is refused, exit 3)."""
    cfg = local_config(tmp_path)
    blocker = Path(cfg.layout.state) / (FN.COUNTER + ".new")
    blocker.mkdir(parents=True)
    s = Session(cfg, JsonReporter(io.StringIO()), reason="a", transport=LocalShell())
    with pytest.raises(Refused) as err:
        s.state.acquire({"run": s.run_id, "holder": "t"})
    s.close()
    assert err.value.exit_code == 3
    assert err.value.message == f"db1: cannot write {cfg.layout.state} (Is a directory): the lock cannot be taken"
    assert not Path(LK.lock_dir(cfg.layout.state)).exists()
    blocker.rmdir()
    s = Session(cfg, JsonReporter(io.StringIO()), reason="b", transport=LocalShell())
    s.acquire_lock(0)
    assert s.fence_token == 1  # the counter was left as it was
    s.release_lock()
    s.close()


def run_deploy(cfg, fleet, transport=None):
    out = io.StringIO()
    rep = JsonReporter(out)
    t = transport or RecordingTransport(fleet)
    d = DeployRun(cfg, rep, ref="v2", session=Session(cfg, rep, transport=t, http_check=FakeHttp(), bake=fake_bake))
    return d, t, out


def local(tmp_path, **overrides):
    (tmp_path / "id").write_text("x\n")
    (tmp_path / "known_hosts").write_text("")
    return load_config("local", root=ROOT, overrides={"ssh.key": str(tmp_path / "id"),
                                                      "ssh.known_hosts": str(tmp_path / "known_hosts"), **overrides})


def test_a_deploy_writes_its_token_to_every_host_it_touches(tmp_path):
    cfg = local(tmp_path)
    fleet = Fleet([h.name for h in cfg.hosts], OLD)
    d, t, _ = run_deploy(cfg, fleet)
    assert d.run() == 0
    guarded = {h for h, c in t.calls if c.startswith(GUARD_HEAD)}
    assert guarded >= {h.name for h in cfg.app_hosts}
    assert set(fleet.seen) == guarded and set(fleet.seen.values()) == {1}
    assert not fleet.refused


def test_a_run_whose_token_a_host_has_outgrown_stops_with_exit_4_and_no_rollback(tmp_path):
    """A newer run (token 9) touched web2 while this one (token 1) was frozen: web2 refuses it; the
    run ends as a lost lock, not rolled back (the newer run may be at work)."""
    cfg = local(tmp_path, rollout=[{"size": 1}, {"size": "100%"}])
    fleet = Fleet([h.name for h in cfg.hosts], OLD)
    fleet.seen["web2"] = 9
    d, t, out = run_deploy(cfg, fleet)
    with pytest.raises(NeedsHuman) as err:
        d.run()
    assert err.value.exit_code == 4
    msg = err.value.message
    assert "fenced: web2 has seen fencing token 9 > this run's 1" in msg and "not rolled back" in msg
    assert fleet.refused and all(h == "web2" for h, _, _ in fleet.refused)
    # the refused script changed nothing on web2, and nothing was rolled back anywhere
    assert fleet.current["web2"] == OLD
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert not any(e["event"] == "rollback" for e in events)
    assert fleet.seen["web2"] == 9


def test_a_refusal_in_a_best_effort_stage_still_ends_the_run(tmp_path):
    """The cleanup of a failed rollback's leftovers is best effort; a fenced refusal there is not
    harmless: the run ends as a lost lock."""
    cfg = local(tmp_path)
    fleet = Fleet([h.name for h in cfg.hosts], OLD)
    t = RecordingTransport(fleet)
    s = Session(cfg, JsonReporter(io.StringIO()), transport=t, http_check=FakeHttp(), bake=fake_bake)
    s.acquire_lock(0)
    app = [h.name for h in cfg.app_hosts]
    st = RunState(run=s.run_id, release=REL, snapshot={h: OLD for h in app}, pulled=["web1"])
    plan = back_plan.rollback_plan(cfg, st, s.fence_token)
    fleet.seen["web1"] = s.fence_token + 1
    from deployer.engine.runs import journaled

    with pytest.raises(NeedsHuman, match="fenced: web1"), journaled(s, JsonReporter(io.StringIO()), st) as run:
        run.ex.run(plan)
    s.close()


def test_a_plan_made_on_the_spot_gets_the_sessions_token(tmp_path):
    cfg = local(tmp_path)
    fleet = Fleet([h.name for h in cfg.hosts], OLD)
    s = Session(cfg, JsonReporter(io.StringIO()), transport=RecordingTransport(fleet))
    s.acquire_lock(0)
    ex = Executor(s, None, JsonReporter(io.StringIO()), RunState(run=s.run_id, release=REL))
    plain = back_plan.rollback_plan(cfg, RunState(run="r", release=REL, pulled=["web1"]))
    assert plain.token is None
    fenced = ex.fenced(plain)
    assert fenced.token == s.fence_token
    assert all(split_guard(a.script.script)[0] == s.fence_token
               for st in fenced.stages for a in st.actions() if a.command is not None)
    s.close()


# -- unlock --force ---------------------------------------------------------------------------------
def unlock(cfg, fleet, monkeypatch, **kw):
    t = RecordingTransport(fleet)
    monkeypatch.setattr(inspect, "Session", lambda c, rep: Session(c, rep, transport=t))
    out = io.StringIO()
    return inspect.unlock(cfg, JsonReporter(out), True, **kw), out


def held_by(pid: int, host: str) -> dict:
    return {"holder": "ana", "host": host, "pid": pid, "reason": "deploy v2", "started": "2026-11-21T12:00:00Z",
            "run": "20261121T120000Z-abcdef"}


def test_unlock_refuses_a_holder_alive_on_this_machine_without_a_reason(tmp_path, monkeypatch):
    cfg = local(tmp_path)
    fleet = Fleet([h.name for h in cfg.hosts], OLD)
    fleet.lock, fleet.holder = True, held_by(os.getpid(), socket.gethostname())
    with pytest.raises(Refused) as err:
        unlock(cfg, fleet, monkeypatch)
    assert err.value.exit_code == 3 and "alive on this machine" in err.value.message
    assert f"inv recover --env {cfg.env}" in err.value.message and fleet.lock
    code, out = unlock(cfg, fleet, monkeypatch, reason="its terminal is gone")
    assert code == 0 and not fleet.lock
    notice = [json.loads(line)["message"] for line in out.getvalue().splitlines() if '"notice"' in line][-1]
    assert "20261121T120000Z-abcdef" in notice and f"pid {os.getpid()}" in notice and "ana@" in notice
    assert '"reason": "its terminal is gone"' in fleet.ledger


def test_unlock_breaks_a_dead_or_remote_holder_and_says_what_it_broke(tmp_path, monkeypatch):
    cfg = local(tmp_path)
    fleet = Fleet([h.name for h in cfg.hosts], OLD)
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout.strip()
    for holder in (held_by(int(dead), socket.gethostname()), held_by(os.getpid(), "elsewhere")):
        fleet.lock, fleet.holder = True, holder
        code, out = unlock(cfg, fleet, monkeypatch)
        assert code == 0 and not fleet.lock
        assert "broke the lock held by " in out.getvalue() and "run 20261121T120000Z-abcdef" in out.getvalue()


def test_the_lock_held_refusal_suggests_recover_first(tmp_path):
    cfg = local(tmp_path)
    fleet = Fleet([h.name for h in cfg.hosts], OLD)
    t = RecordingTransport(fleet)
    fleet.lock, fleet.holder = True, held_by(1, "elsewhere")

    class Held(RecordingTransport):
        def answer(self, host, step, stdin):
            if "echo acquired" in step:
                return f"{LK.HELD_MARK}\n{json.dumps(fleet.holder)}\nheartbeat_age=3600"
            return super().answer(host, step, stdin)

    t = Held(fleet)
    s = Session(cfg, JsonReporter(io.StringIO()), transport=t)
    with pytest.raises(Refused) as err:
        s.acquire_lock(0)
    assert "STALE" in err.value.message and f"inv recover --env {cfg.env}" in err.value.message
    assert "unlock" not in err.value.message
