"""The ledger file itself: appended and read by its real shell commands (run by `sh -c` on this
machine, as the ledger host runs them), folded by the real reader. A writer killed mid-line
leaves a torn last line without a newline: the next append must not be glued onto it."""

from __future__ import annotations

import io
import json
from pathlib import Path

from localshell import LocalShell, local_config

from deployer.commands import ledger as L
from deployer.output import JsonReporter
from deployer.session import Session

R1, R2, R3 = "20261101T000000Z-aaaaaaa", "20261102T000000Z-bbbbbbb", "20261103T000000Z-ccccccc"


def start(run: str, release: str, ref: str) -> dict:
    return {"type": "deploy.start", "run": run, "release": release, "ref": ref, "commit": release[-7:] * 5,
            "who": "ci@runner", "v": 1, "at": "2026-11-01T00:00:00.000000Z"}


def end(run: str) -> dict:
    return {"type": "deploy.end", "run": run, "outcome": "success", "v": 1, "at": "2026-11-01T00:01:00.000000Z"}


def test_an_append_after_a_torn_line_is_read_back_whole_and_the_torn_line_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYER_STATE_DIR", str(tmp_path / "state"))
    cfg = local_config(tmp_path)
    s = Session(cfg, JsonReporter(io.StringIO()), transport=LocalShell())
    ledger = Path(L.ledger_file(s.state_path))

    s.ship(L.encode([start("r1", R1, "v1"), end("r1")]))
    # a writer killed mid-write: half of its line, no newline
    whole = L.encode([start("r2", R2, "v2")])
    with ledger.open("a") as f:
        f.write(whole[: len(whole) // 2])
    assert not ledger.read_text().endswith("\n")
    s.ship(L.encode([start("r3", R3, "v3"), end("r3")]))

    # the real reader: every whole event, the torn one skipped (never fatal)
    events = s.state.read()
    assert [(e["type"], e["run"]) for e in events] == [
        ("deploy.start", "r1"), ("deploy.end", "r1"), ("deploy.start", "r3"), ("deploy.end", "r3")]
    h = s.history(ship_first=False)
    assert h.releases[R3].outcome == "success" and h.resolve("v3").release == R3
    assert R2 not in h.releases

    # the file: the torn line closed on its own line, the next events each whole on theirs
    lines = ledger.read_text().splitlines()
    assert len(lines) == 5, lines
    assert lines[2] == whole[: len(whole) // 2]
    assert [json.loads(x)["run"] for x in lines[3:]] == ["r3", "r3"]

    # a third append after a clean end adds no blank line
    s.ship(L.encode([start("r4", "20261104T000000Z-ddddddd", "v4")]))
    assert len(ledger.read_text().splitlines()) == 6 and "" not in ledger.read_text().splitlines()
    s.close()
