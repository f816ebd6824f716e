"""`History.fold`: the ledger's JSON objects folded into typed runs, releases and backups.

Readers use attributes (`run.kind`, `run.end.outcome`, `release.backup.path`); History holds no
dict (the JSON as written is read for renderers by `Session.ledger_events`).
"""

from __future__ import annotations

from deployer import records as REC
from deployer.engine.rollback import paused_run
from deployer.engine.state import RunState
from deployer.ledger import History, RunKind

A = "20261101T000000Z-aaaaaaa"
B = "20261102T000000Z-bbbbbbb"
C = "20261103T000000Z-ccccccc"
SHA = "c" * 64


def start(run: str, release: str, ref: str) -> dict:
    return {"v": 1, "at": f"2026-11-0{run[-1]}T00:00:00.000000Z", "type": "deploy.start", "run": run,
            "seq": 1, "release": release, "ref": ref, "commit": release[-7:] * 5 + "00000", "who": "ci"}


def ledger() -> list[dict]:
    return [
        start("r1", A, "v1"),
        {"type": "snapshot", "run": "r1", "hosts": {"web1": None}, "schema": None},
        {"type": "deploy.end", "run": "r1", "outcome": "success"},
        start("r2", B, "v2"),
        {"type": "snapshot", "run": "r2", "hosts": {"web1": A, "web2": A}, "schema": 1},
        {"type": "backup", "run": "r2", "path": "/srv/backups/b.dump", "sha256": SHA, "size": 9,
         "host": "db1", "kind": "predeploy", "added_later": "ignored"},
        {"type": "backup", "run": "r2", "path": "/srv/backups/late.dump", "sha256": SHA, "size": 1,
         "host": "db1", "kind": "predeploy"},
        {"type": "migrate", "run": "r2", "before": 1, "after": 2},
        {"type": "deploy.end", "run": "r2", "outcome": "success"},
        {"type": "rollback.start", "run": "h1", "auto": False, "to": A},
        {"type": "rollback.end", "run": "h1", "outcome": "needs_human", "error": "restore failed"},
        {"type": "maintenance.start", "run": "m1"},
        {"type": "some.future.kind", "run": "m1", "x": 1},
        start("r3", C, "v3"),
        {"type": "snapshot", "run": "r3", "hosts": {"web1": B, "web2": B}, "schema": 2},
        {"type": "stage", "run": "r3", "stage": "switch", "state": "start", "wave": 1},
        {"type": "deploy.paused", "run": "r3", "release": C, "waves_done": 1, "waves": 2},
    ]


def test_runs_are_typed_records_of_their_start_and_end():
    h = History.fold(ledger())
    assert list(h.runs) == ["r1", "r2", "h1", "m1", "r3"]
    r1 = h.runs["r1"]
    assert r1.kind is RunKind.DEPLOY and r1.release == A and r1.run == "r1"
    assert isinstance(r1.start, REC.RunStarted) and r1.start.ref == "v1"
    assert isinstance(r1.end, REC.RunEnded) and r1.outcome == "success"
    h1 = h.runs["h1"]
    assert h1.kind is RunKind.ROLLBACK and h1.release == A
    assert isinstance(h1.end, REC.RollbackEnded) and h1.end.error == "restore failed"
    m1 = h.runs["m1"]
    assert m1.kind is RunKind.MAINTENANCE and m1.release is None and m1.end is None and m1.outcome is None
    assert f"{m1.kind}" == "maintenance"  # as printed by `status` and `recover`


def test_in_flight_and_unfinished_runs():
    h = History.fold(ledger())
    assert [r.run for r in h.in_flight] == ["m1", "r3"]
    assert [r.run for r in h.unfinished] == ["h1"]  # ended needing a human, nothing succeeded since
    assert h.releases[C].outcome == "paused after wave 1/2"
    assert h.snapshot_releases() == {B}  # the paused rollout can still return to B
    later = ledger() + [start("r4", "20261104T000000Z-ddddddd", "v4"),
                        {"type": "deploy.end", "run": "r4", "outcome": "success"}]
    assert History.fold(later).unfinished == []  # a later success supersedes it


def test_a_release_keeps_its_snapshot_and_first_predeploy_backup():
    h = History.fold(ledger())
    rec = h.releases[B]
    assert isinstance(rec.snapshot, REC.Snapshot) and rec.snapshot_hosts == {"web1": A, "web2": A}
    assert rec.backup == REC.BackupRef(path="/srv/backups/b.dump", sha256=SHA, size=9, host="db1")
    assert (rec.schema_before, rec.schema_after) == (1, 2)
    assert h.releases[A].backup is None and h.releases[A].snapshot_hosts == {"web1": None}
    assert h.backup_before_leaving(A) is rec.backup
    assert h.backup_before_leaving(B) is None


def test_an_automatic_rollback_belongs_to_its_deploys_run():
    events = [start("r1", A, "v1"),
              {"type": "snapshot", "run": "r1", "hosts": {"web1": None}, "schema": None},
              {"type": "rollback.start", "run": "r1", "auto": True, "to": {"web1": None}},
              {"type": "rollback.end", "run": "r1", "outcome": "failed"},
              {"type": "deploy.end", "run": "r1", "outcome": "needs_human"}]
    h = History.fold(events)
    [run] = h.runs.values()
    assert run.kind is RunKind.DEPLOY and isinstance(run.start, REC.RunStarted)
    assert type(run.end) is REC.RunEnded and run.outcome == "needs_human"
    assert h.releases[A].outcome == "needs_human" and h.unfinished == [run]


def test_old_records_fold_with_their_defaults():
    events = [{"type": "deploy.start", "run": "r1", "release": A},
              {"type": "deploy.end", "run": "r1"}]
    h = History.fold(events)
    assert h.releases[A].outcome == "?" and h.runs["r1"].outcome == "" and h.in_flight == []


def test_records_are_typed_unknown_kinds_kept_whole():
    events = ledger()
    h = History.fold(events)
    assert [type(e) for e in h.records_of("m1")] == [REC.MaintenanceStarted, REC.Unknown]
    assert h.records_of("m1")[1].data == {"type": "some.future.kind", "run": "m1", "x": 1}
    assert len(h.records) == len(events)


def test_a_paused_run_is_found_with_its_typed_records():
    run_id, records = paused_run(History.fold(ledger()))
    assert run_id == "r3" and isinstance(records[-1], REC.Paused)
    st = RunState.from_events(records)
    assert st.release == C and st.waves_done == 1 and st.snapshot == {"web1": B, "web2": B}
    assert paused_run(History.fold(ledger()[:-1])) is None


def test_the_run_state_keeps_the_backup_as_a_typed_ref():
    st = RunState.from_events(REC.parse_all(ledger()[3:7]))
    assert st.backup == REC.BackupRef(path="/srv/backups/late.dump", sha256=SHA, size=1, host="db1")
