"""The env lock's shell commands, raced for real: several sessions take the lock at the same
moment, their commands run by `sh -c` on this machine against one state directory (what the
ledger host does over SSH). Exactly one wins; every loser names the winner, never a STALE lock
(a loser reading between the winner's mkdir and its holder's details once did, and told the
operator to `unlock --force` a live run)."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

from localshell import LocalShell, local_config

from deployer.commands import lock as LK
from deployer.errors import Refused
from deployer.output import JsonReporter
from deployer.session import Session

RACERS = 8
TRIALS = 150


def test_racing_for_the_lock_one_wins_and_no_loser_ever_sees_a_stale_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYER_STATE_DIR", str(tmp_path / "state"))
    cfg = local_config(tmp_path)
    lock_dir = Path(LK.lock_dir(str(tmp_path / "app" / ".deployer")))
    bad: list[str] = []
    for trial in range(TRIALS):
        sessions = [Session(cfg, JsonReporter(io.StringIO()), reason=f"racer {i}", transport=LocalShell())
                    for i in range(RACERS)]
        start = threading.Barrier(RACERS)
        outcome: dict[int, str | None] = {}

        def take(i: int) -> None:
            start.wait()
            try:
                sessions[i].acquire_lock(0)
                outcome[i] = None
            except Refused as exc:
                outcome[i] = exc.message

        threads = [threading.Thread(target=take, args=(i,)) for i in range(RACERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [i for i, msg in outcome.items() if msg is None]
        assert len(winners) == 1, (trial, outcome)
        winner = sessions[winners[0]]
        for i, msg in outcome.items():
            if msg is None:
                continue
            if "STALE" in msg or "unlock" in msg or winner.run_id not in msg:
                bad.append(f"trial {trial}, racer {i}: {msg}")
        # the lock on disk is whole: the winner's details and a heartbeat
        assert winner.run_id in (lock_dir / "info.json").read_text()
        assert (lock_dir / "heartbeat").exists()
        winner.release_lock()
        assert not lock_dir.exists()
        assert not list(lock_dir.parent.glob("lock.new.*")), "a loser left its private directory behind"
        for s in sessions:
            s.close()
    assert not bad, f"{len(bad)} of {TRIALS * (RACERS - 1)} losers misreported the lock:\n" + "\n".join(bad[:5])


def _info(run: str) -> str:
    import json

    return json.dumps({"holder": "ci", "host": "orchestrator", "pid": 4242, "reason": "deploy",
                       "started": "2026-11-22T06:00:00Z", "run": run}) + "\n"


def test_holder_details_cut_short_install_no_lock(tmp_path):
    """The connection dies while the holder's details are sent: `cat` sees an early end of input
    and the remote shell goes on. Installing that lock would leave one nobody can heartbeat or
    release, and that `recover` took for a live run (the fault suite's ledger host cut at `lock`)."""
    import subprocess

    state = tmp_path / "state"
    run = "20261122T060000-abcd"
    whole = _info(run)
    for cut in ("", whole[:20], whole[:-3], whole[:-1]):
        cmd = LK.acquire(str(state), run)
        proc = subprocess.run(["sh", "-c", cmd.script], input=cut, capture_output=True, text=True, timeout=10)
        assert proc.returncode != 0 and "acquired" not in proc.stdout, (cut, proc.stdout)
        assert not Path(LK.lock_dir(str(state))).exists(), f"a lock was installed from {cut!r}"
        assert not list(state.glob("lock.new.*")), "the private directory was left behind"
    proc = subprocess.run(["sh", "-c", LK.acquire(str(state), run).script], input=whole, capture_output=True,
                          text=True, timeout=10)
    assert proc.stdout.split() == ["acquired", "token=1"]
    assert LK.parse_held(subprocess.run(["sh", "-c", LK.read(str(state)).script], capture_output=True,
                                        text=True).stdout).run == run


def test_a_lock_without_its_holders_details_is_not_a_live_run():
    from deployer.engine.recover import _alive

    assert not _alive(LK.LockInfo(heartbeat_age=1), 60)
    assert _alive(LK.LockInfo(run="r1", host="elsewhere", heartbeat_age=1), 60)
    assert not _alive(LK.LockInfo(run="r1", host="elsewhere", heartbeat_age=3600), 60)
    # the staleness is the inventory's (`state.lease`)
    assert not _alive(LK.LockInfo(run="r1", host="elsewhere", heartbeat_age=7), 6)


def test_last_append_then_release_in_one_script(tmp_path):
    """A run's last ledger lines and its lock release go as one round trip: the lines land
    before the lock is gone; the release happens even when the append fails; another run's
    lock is never removed."""
    import subprocess

    from deployer.commands import ledger as L

    state = tmp_path / "state"
    run, other = "20261122T060000-aaaa", "20261122T060000-bbbb"

    def sh(cmd, stdin=""):
        return subprocess.run(["sh", "-c", cmd.script], input=stdin, capture_output=True, text=True, timeout=10)

    assert sh(LK.acquire(str(state), run), _info(run)).stdout.split()[0] == "acquired"
    lines = json.dumps({"type": "deploy.end", "run": run}) + "\n"
    proc = sh(LK.append_then_release(L.append(str(state)), str(state), run), lines)
    assert proc.returncode == 0 and LK.RELEASED_MARK in proc.stdout.split()
    assert Path(L.ledger_file(str(state))).read_text() == lines
    assert not Path(LK.lock_dir(str(state))).exists()

    # another run holds the lock: the lines are appended, its lock stays
    assert sh(LK.acquire(str(state), other), _info(other)).stdout.split()[0] == "acquired"
    sh(LK.append_then_release(L.append(str(state)), str(state), run), lines)
    assert LK.parse_held(sh(LK.read(str(state))).stdout).run == other
    sh(LK.release(str(state), other))

    # the append fails (the ledger is a directory): exit status non-zero, the lock released anyway
    assert sh(LK.acquire(str(state), run), _info(run)).stdout.split()[0] == "acquired"
    ledger = Path(L.ledger_file(str(state)))
    ledger.unlink()
    ledger.mkdir()
    proc = sh(LK.append_then_release(L.append(str(state)), str(state), run), lines)
    assert proc.returncode != 0 and LK.RELEASED_MARK in proc.stdout.split()
    assert not Path(LK.lock_dir(str(state))).exists()


def test_acquire_then_read_gives_the_ledger_only_after_the_lock_answer(tmp_path):
    """The lock taken and the ledger read in one round trip: the history a deploy plans from is
    the one under its lock."""
    import subprocess

    from deployer.commands import ledger as L

    state = tmp_path / "state"
    run, other = "20261122T060000-aaaa", "20261122T060000-bbbb"

    def sh(cmd, stdin=""):
        return subprocess.run(["sh", "-c", cmd.script], input=stdin, capture_output=True, text=True, timeout=10)

    # an empty state: taken, the ledger is empty
    out, ledger = LK.split_ledger(sh(LK.acquire_then_read(str(state), run, L.read(str(state))), _info(run)).stdout)
    assert out.split() == ["acquired", "token=1"] and L.decode(ledger) == []
    lines = json.dumps({"type": "deploy.start", "run": run, "note": "acquired"}) + "\n"
    sh(L.append(str(state)), lines)
    # held by `run`: `other` is told who holds it, and gets the ledger as it is
    out, ledger = LK.split_ledger(sh(LK.acquire_then_read(str(state), other, L.read(str(state))),
                                     _info(other)).stdout)
    assert LK.parse_held(out).run == run
    assert L.decode(ledger) == [json.loads(lines)]
    # the holder's details cut short: no lock, no ledger, an error
    sh(LK.release(str(state), run))
    proc = sh(LK.acquire_then_read(str(state), other, L.read(str(state))), _info(other)[:10])
    assert proc.returncode != 0 and LK.split_ledger(proc.stdout)[1] is None
    assert not Path(LK.lock_dir(str(state))).exists()


def test_the_lock_staleness_is_the_inventorys_lease(tmp_path):
    """`state.lease` sets when an SSH lock is stale: its holder beats six times within it, and
    gives its lock up for lost after that long without a beat getting through."""
    from recording import Fleet, RecordingTransport
    from test_orchestration import config, session

    cfg = config("local", tmp_path, **{"state.lease": 1})
    fleet = Fleet([h.name for h in cfg.hosts], "20261101T000000Z-aaaaaaa")
    s = session(cfg, RecordingTransport(fleet))
    assert (s.stale_after, round(s.beat_every, 3)) == (1.0, 0.167)
    s.acquire_lock(0)
    try:
        s.state.heartbeat = lambda run_id: (_ for _ in ()).throw(OSError("cut off"))
        deadline = time.monotonic() + 5
        while s._lock_lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert s._lock_lost and "for 1s" in s._lock_lost
    finally:
        s.state.heartbeat = lambda run_id: True
        s.release_lock()
    default = session(config("local", tmp_path), RecordingTransport(fleet))
    assert (default.stale_after, default.beat_every) == (60.0, 10)
