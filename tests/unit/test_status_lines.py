"""What `status` says of the runs in flight and of each host's maintenance flag, and which
backups the maintenance job's retention keeps: from the typed history of the ledger."""

from __future__ import annotations

from test_ledger_fold import A, B, C, ledger, start

from deployer.commands.releases import HostState
from deployer.inspect import _in_flight_lines, _last_stages, _maintenance_cell
from deployer.ledger import History
from deployer.maintenance import protected_backups


def test_runs_in_flight_with_their_last_stage():
    in_flight = _last_stages(History.fold(ledger()))
    assert list(in_flight) == ["m1", "r3"]
    assert in_flight["m1"][1] is None and in_flight["r3"][1].stage == "switch"
    assert _in_flight_lines(in_flight, "r3") == [
        "ABANDONED maintenance m1 of None (no end recorded, lock not held): last stage starting; "
        "check hosts above",
        f"IN-FLIGHT deploy r3 of {C}: stage switch (start)"]
    assert all(line.startswith("ABANDONED") for line in _in_flight_lines(in_flight, None))


def test_the_maintenance_column():
    assert _maintenance_cell(HostState(), False) == "off"
    assert _maintenance_cell(HostState(maintenance_expired=True), True) == "off (expired flag)"
    on = HostState(maintenance=True, maintenance_info={"message": "back soon"})
    assert _maintenance_cell(on, False) == "ON (no expiry): back soon"
    assert _maintenance_cell(on, True).startswith("ON: DATABASE MID-MIGRATION")


def test_retention_keeps_the_backups_a_rollback_may_restore():
    ended = ledger() + [{"type": "deploy.end", "run": "r3", "outcome": "success"}]
    done = History.fold(ended)
    assert protected_backups(done, [A]) == set()
    assert protected_backups(done, [B]) == {"b.dump"}  # taken before B, which is served
    assert protected_backups(History.fold(ledger()), [A]) == {"b.dump"}  # the paused run may return to B
    newer = ended + [start("r4", "20261104T000000Z-ddddddd", "v4"),
                     {"type": "backup", "run": "r4", "path": "/x/d.dump", "sha256": "d", "size": 1, "host": "db1"}]
    assert protected_backups(History.fold(newer), [A]) == {"d.dump"}  # the newest deploy's
