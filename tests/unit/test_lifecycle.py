"""The run lifecycle without the fleet: `recover` after a run died, `promote` / `abort` of a paused
rollout and the scheduled maintenance job, against the recording transport (recording.py)."""

from __future__ import annotations

import datetime as dt
import io
import json
import time

import pytest
from recording import FakeHttp, Fleet, RecordingTransport, fake_bake, unguarded
from test_orchestration import OLD, config, events, run_deploy

from deployer import maintenance as M
from deployer import session as SESSION
from deployer.engine.recover import Recover
from deployer.engine.rollback import Resume
from deployer.errors import NeedsHuman, Refused
from deployer.output import JsonReporter
from deployer.session import Session

WEB = ("web1", "web2", "web3")


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYER_STATE_DIR", str(tmp_path / "state"))


class Crash(BaseException):
    """Stands for the deployer process dying (kill -9, the machine): the run's failure path
    catches Exception and KeyboardInterrupt only, so it does not roll back; what its finally
    clauses still write is undone by `died`."""


def ledger(fleet: Fleet, run: str | None = None) -> list[dict]:
    """The ledger's records (of `run`), duplicates (shipped twice) and the journals' headers
    dropped as readers do."""
    seen, out = set(), []
    for r in (json.loads(line) for line in fleet.ledger.splitlines() if line.strip()):
        if r.get("type") == "journal":
            continue
        key = (r.get("run"), r.get("seq"), r.get("type"))
        if key not in seen and (run is None or r.get("run") == run):
            seen.add(key)
            out.append(r)
    return out


def kinds(recs: list[dict]) -> list[str]:
    return [r["type"] for r in recs]


def switches(t: RecordingTransport) -> dict[str, list[str]]:
    """host -> the releases it was switched to (the atomic `mv -T .current.<release>`)."""
    out: dict[str, list[str]] = {}
    for host, display in t.calls:
        if "mv -T" in display and ".current." in display:
            out.setdefault(host, []).append(display.split(".current.", 1)[1].split(".tmp", 1)[0])
    return out


def died(tmp_path, crash_when, **overrides):
    """A deploy killed (kill -9) where `crash_when(host, step)` says, before that step ran: its
    journal, the ledger and the lock are what it left at that instant (nothing written after
    it). Returns (config, fleet, its run id, its release)."""
    cfg = config("local", tmp_path, **overrides)
    fleet = Fleet([h.name for h in cfg.hosts], OLD)
    journals = tmp_path / "state" / cfg.env
    left: dict = {}

    def fail(host, step):
        if crash_when(host, step) and not left:
            left.update(journal={p: p.read_text() for p in journals.glob("*.jsonl")})
            raise Crash
        return None

    with pytest.raises(Crash):
        run_deploy(cfg, fleet, fail=fail)
    ((path, text),) = left["journal"].items()
    path.write_text(text)  # what the run's own failure path wrote after the kill never was
    written = {r.get("seq") for r in map(json.loads, text.splitlines())}
    fleet.ledger = "".join(line + "\n" for line in fleet.ledger.splitlines()
                           if json.loads(line).get("seq") in written)
    path.with_suffix(".shipped").unlink(missing_ok=True)  # shipped again: readers drop duplicates
    run_id = path.stem
    fleet.lock = True
    fleet.holder = {"holder": "ci", "host": "gone-runner", "pid": 4242, "reason": "deploy", "run": run_id,
                    "started": "2026-12-01T00:00:00Z"}
    starts = [r for r in ledger(fleet) + [json.loads(line) for line in text.splitlines()]
              if r["type"] == "deploy.start"]
    assert starts and "deploy.end" not in kinds([json.loads(line) for line in text.splitlines()])
    return cfg, fleet, run_id, starts[0]["release"]


def recover(cfg, fleet, **kw):
    out = io.StringIO()
    rep = JsonReporter(out)
    t = RecordingTransport(fleet)
    s = Session(cfg, rep, transport=t, http_check=FakeHttp(), bake=fake_bake)
    return Recover(cfg, rep, session=s, **kw), out, t


# -- recover ---------------------------------------------------------------------------------

def test_recover_with_nothing_to_recover_changes_nothing(tmp_path):
    cfg = config("local", tmp_path)
    fleet = Fleet([h.name for h in cfg.hosts], OLD)
    rec, out, t = recover(cfg, fleet)
    assert rec.run() == 0
    outcome = events(out, "outcome")[-1]
    assert outcome["outcome"] == "success" and "nothing to recover" in outcome["message"]
    # the ledger host (lock, ledger) and the load balancer's state were asked; app hosts only
    # had their state read and their worker checked (a heartbeat newer than the check's start),
    # the check after the recover's fencing token check
    for host, cmd in t.calls:
        assert host in {"db1", "lb1"} or "@@deployer-state" in cmd or (
            cmd != unguarded(cmd) and unguarded(cmd).startswith("since_ms=$(( $(date +%s%3N) - 2000 )); ")), cmd
    assert all("show servers state" in c for h, c in t.calls if h == "lb1")
    assert not switches(t) and fleet.current == {h: OLD for h in fleet.current}
    assert not fleet.lock  # the lock it took is released


def test_recover_puts_the_hosts_a_dead_deploy_switched_back_on_the_snapshot(tmp_path):
    """The deploy died as its second wave began: web1 (the canary) serves the new release."""
    cfg, fleet, run_id, new = died(tmp_path, lambda h, step: h == "lb1" and "state drain" in step
                                   and "web1" not in step)
    assert fleet.current["web1"] == new and [fleet.current[h] for h in ("web2", "web3")] == [OLD, OLD]
    rec, out, t = recover(cfg, fleet)
    assert rec.run() == 0
    assert any("lock held by a dead run" in e["message"] and run_id in e["message"]
               for e in events(out, "notice"))
    assert switches(t) == {"web1": [OLD]}  # web1 only, back to its snapshot
    # web2, drained at the load balancer as the run died, is put back into rotation
    assert [c for h, c in t.calls if h == "lb1" and "web/web2 state ready" in c]
    assert fleet.current == {h: OLD for h in fleet.current}
    story = kinds(ledger(fleet, run_id))  # written into the dead run's own story
    assert story[-3:] == ["release.bad", "rollback.end", "deploy.end"]
    end = ledger(fleet, run_id)[-1]
    assert end["outcome"] == "rolled_back" and end["hosts"]["web1"] == OLD
    assert ledger(fleet, run_id)[-2]["outcome"] == "success"
    assert any(r["type"] == "release.bad" and r["release"] == new for r in ledger(fleet, run_id))
    assert "recovered 1 run(s)" in events(out, "outcome")[-1]["message"]
    assert not fleet.lock
    # once recovered, there is nothing left to recover
    rec, out, t = recover(cfg, fleet)
    assert rec.run() == 0 and "nothing to recover" in events(out, "outcome")[-1]["message"]
    assert not switches(t)


def test_recover_refuses_a_run_that_died_mid_migration_without_force(tmp_path):
    cfg, fleet, run_id, new = died(tmp_path, lambda h, step: "PGAPPNAME" in step)
    rec, out, t = recover(cfg, fleet)
    with pytest.raises(NeedsHuman) as exc:
        rec.run()
    assert exc.value.exit_code == 4
    assert "--force --reason" in (exc.value.hint or "")
    said = " ".join(e["message"] for e in events(out, "notice"))
    assert "DURING THE MIGRATION" in said and "--force --reason" in said and "Check that no migration" in said
    # nothing rolled back, no migration undone; the run is still in flight for a forced recover
    assert not switches(t) and not [c for _, c in t.calls if "migrate --to" in c]
    assert "deploy.end" not in kinds(ledger(fleet, run_id))
    assert not fleet.lock
    # --force: the code goes back to the snapshot and the run is ended
    rec, out, t = recover(cfg, fleet, force=True, reason="checked: no migration runs")
    assert rec.run() == 0
    assert ledger(fleet, run_id)[-1]["type"] == "deploy.end"
    assert ledger(fleet, run_id)[-1]["outcome"] == "rolled_back"
    assert fleet.current == {h: OLD for h in fleet.current}
    assert _unfenced(t)  # the write fence the dead run set goes with its rollback


def _unfenced(t: RecordingTransport) -> bool:
    return any(h == "db1" and "DROP TABLE IF EXISTS public.deployer_fence" in c and "pg_dump" not in c
               for h, c in t.calls)


def test_recover_removes_a_write_fence_no_run_needs(tmp_path):
    """A run's rollback could not reach the database host (cut off): its fence stayed. Once
    every run is over, recover finds it and removes it; with none left, it changes nothing."""
    cfg = config("local", tmp_path)
    fleet = Fleet([h.name for h in cfg.hosts], OLD)
    fleet.fence_left = True
    rec, out, t = recover(cfg, fleet)
    assert rec.run() == 0
    assert _unfenced(t) and not fleet.fence_left
    assert any("write fence was left" in e["message"] for e in events(out, "notice"))
    rec, out, t = recover(cfg, fleet)
    assert rec.run() == 0 and not _unfenced(t)
    assert "nothing to recover" in events(out, "outcome")[-1]["message"]


def test_abort_removes_the_write_fence_of_the_paused_rollout(tmp_path):
    cfg, fleet, new = paused(tmp_path)
    code, out, t = resume(cfg, fleet, "abort")
    assert code == 0 and fleet.current == {h: OLD for h in fleet.current}
    assert _unfenced(t)


# -- promote / abort -------------------------------------------------------------------------

def paused(tmp_path):
    cfg = config("local", tmp_path, rollout=[{"size": 1, "pause": True}, {"size": "100%"}])
    fleet = Fleet([h.name for h in cfg.hosts], OLD)
    code, out, t = run_deploy(cfg, fleet)
    assert code == 0 and events(out, "outcome")[-1]["outcome"] == "paused"
    assert switches(t) == {"web1": [fleet.current["web1"]]} and fleet.current["web1"] != OLD
    assert fleet.lock  # the paused rollout keeps the lock
    return cfg, fleet, events(out, "outcome")[-1]["release"]


def resume(cfg, fleet, action):
    out = io.StringIO()
    rep = JsonReporter(out)
    t = RecordingTransport(fleet)
    s = Session(cfg, rep, transport=t, http_check=FakeHttp(), bake=fake_bake)
    return Resume(cfg, rep, action, session=s).run(), out, t


def test_promote_switches_the_remaining_waves(tmp_path):
    cfg, fleet, new = paused(tmp_path)
    code, out, t = resume(cfg, fleet, "promote")
    assert code == 0 and events(out, "outcome")[-1]["outcome"] == "success"
    assert switches(t) == {"web2": [new], "web3": [new]}  # web1 was switched before the pause
    assert fleet.current == {h: (new if h in WEB else OLD) for h in fleet.current}
    recs = ledger(fleet)
    assert kinds(recs).count("deploy.start") == 1 and "deploy.promote" in kinds(recs)
    assert recs[-1]["type"] == "deploy.end" and recs[-1]["outcome"] == "success"
    assert not fleet.lock
    with pytest.raises(Refused, match="no paused rollout"):
        resume(cfg, fleet, "promote")


def test_abort_returns_the_switched_hosts_to_their_snapshot(tmp_path):
    cfg, fleet, new = paused(tmp_path)
    code, out, t = resume(cfg, fleet, "abort")
    assert code == 0
    assert switches(t) == {"web1": [OLD]}
    assert fleet.current == {h: OLD for h in fleet.current}
    recs = ledger(fleet)
    assert "deploy.abort" in kinds(recs) and recs[-1]["type"] == "deploy.end"
    assert recs[-1]["outcome"] == "aborted"
    assert any(r["type"] == "release.bad" and r["release"] == new for r in recs)
    assert not fleet.lock


# -- the scheduled maintenance job -----------------------------------------------------------

SUNDAY_3AM = dt.datetime(2026, 11, 29, 3, 10, tzinfo=dt.UTC)  # a Sunday
WINDOW = [{"name": "sunday", "cron": "0 3 * * 0", "duration": "1h"}]


@pytest.fixture
def recorded(monkeypatch):
    """run_window makes its own Session: it gets the recording transport."""
    made: list[RecordingTransport] = []

    def install(fleet: Fleet, http: FakeHttp):
        def make(cfg, rep, **kw):
            t = RecordingTransport(fleet)
            made.append(t)
            return Session(cfg, rep, reason=kw.get("reason", ""), transport=t, http_check=http, bake=fake_bake)

        monkeypatch.setattr(SESSION, "Session", make)
        return made

    return install


def test_maintenance_job_inside_its_window(tmp_path, recorded):
    cfg = config("local", tmp_path, windows=WINDOW)
    fleet = Fleet([h.name for h in cfg.hosts], OLD)
    http = FakeHttp()
    made = recorded(fleet, http)
    out = io.StringIO()
    assert M.run_window(cfg, JsonReporter(out), now=SUNDAY_3AM) == 0
    (t,) = made
    db1 = [c for h, c in t.calls if h == "db1"]
    assert any("echo acquired" in c for c in db1)  # the lock
    assert any("pg_dump" in c and "nightly" in c for c in db1)  # the backup
    for h in WEB:  # the playbook's tasks on every app host, then their health
        cmds = [c for host, c in t.calls if host == h]
        assert any("manage.py check" in c for c in cmds) and any("-mtime +14" in c for c in cmds), h
    assert sorted(h for h, _ in http.calls) == sorted(WEB)
    assert not switches(t) and fleet.current == {h: OLD for h in fleet.current}
    assert not fleet.lock  # released
    recs = ledger(fleet)
    assert kinds(recs)[0] == "maintenance.start" and recs[0]["forced"] is None
    assert recs[-1]["type"] == "maintenance.end" and recs[-1]["outcome"] == "success"
    assert "gate passed" in recs[-1]["done"]
    assert "scheduled maintenance done" in events(out, "outcome")[-1]["message"]


def test_maintenance_job_outside_its_window_refuses_and_contacts_nothing(tmp_path, recorded):
    cfg = config("local", tmp_path, windows=WINDOW)
    fleet = Fleet([h.name for h in cfg.hosts], OLD)
    made = recorded(fleet, FakeHttp())
    monday = SUNDAY_3AM + dt.timedelta(days=1)
    with pytest.raises(Refused) as exc:
        M.run_window(cfg, JsonReporter(io.StringIO()), now=monday)
    assert exc.value.exit_code == 3
    assert "--force --reason" in exc.value.message
    assert all(not t.calls for t in made) and fleet.ledger == "" and not fleet.lock
    # forced with a reason, it runs, and the ledger says it was forced and why
    assert M.run_window(cfg, JsonReporter(io.StringIO()), now=monday, force=True, reason="urgent vacuum") == 0
    start = ledger(fleet)[0]
    assert start["type"] == "maintenance.start" and "urgent vacuum" in start["forced"]


def test_a_recovery_that_outlasts_a_heartbeat_keeps_its_lock(tmp_path, monkeypatch):
    """recover writes into the dead run's story, but holds the lock as itself: its heartbeats
    must name the run the lock was taken as, or the lock is judged lost at the next switch."""
    cfg, fleet, run_id, new = died(tmp_path, lambda h, step: h == "lb1" and "state drain" in step
                                   and "web1" not in step)
    monkeypatch.setattr(SESSION, "HEARTBEAT_SECONDS", 0.02)
    rec, out, t = recover(cfg, fleet)
    slow = t.run

    def run(ep, cmd, **kw):  # each command of the recovery takes a few heartbeats
        if "/lock/" not in cmd.script:
            time.sleep(0.05)
        return slow(ep, cmd, **kw)

    t.run = run
    assert rec.run() == 0
    beats = [c for h, c in t.calls if c.rstrip("'").endswith("/lock/heartbeat")]
    assert beats and t.refused_heartbeats == 0  # every beat kept the lock alive
    assert fleet.current == {h: OLD for h in fleet.current}
    assert ledger(fleet, run_id)[-1]["outcome"] == "rolled_back"
    assert not fleet.lock
