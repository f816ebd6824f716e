"""The env lock's shell commands, raced for real: several sessions take the lock at the same
moment, their commands run by `sh -c` on this machine against one state directory (what the
ledger host does over SSH). Exactly one wins; every loser names the winner, never a STALE lock
(a loser reading between the winner's mkdir and its holder's details once did, and told the
operator to `unlock --force` a live run)."""

from __future__ import annotations

import io
import threading
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
