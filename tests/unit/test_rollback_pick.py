"""`rollback --to <ref>`: which release a git ref names. Never one marked bad; of several good
ones, the newest still present on every host. Through the real ledger fold and a whole
rollback run driven by the recording transport."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from recording import FakeHttp, Fleet, RecordingTransport, fake_bake

from deployer.commands import releases as R
from deployer.config import load_config
from deployer.engine.back_plan import Rebuild, rebuild_of
from deployer.engine.rollback import Rollback, pick
from deployer.errors import Refused
from deployer.facts import Facts
from deployer.ledger import History
from deployer.output import JsonReporter
from deployer.session import Session

ROOT = Path(__file__).resolve().parents[2]
V2_OLD = "20261101T000000Z-bbbbbbb"  # v2, good, deployed first
V2 = "20261102T000000Z-bbbbbbb"  # v2 again (a redeploy), good
V2_BAD = "20261103T000000Z-bbbbbbb"  # v2 once more: its gate failed (a flaky dependency), marked bad
V3 = "20261104T000000Z-ccccccc"  # what the hosts serve now
WEB = ("web1", "web2", "web3")


def deploy(run: str, release: str, ref: str, outcome: str) -> list[dict]:
    events = [{"type": "deploy.start", "run": run, "release": release, "ref": ref,
               "commit": release[-7:] * 5 + "00000", "who": "ci@runner"},
              {"type": "snapshot", "run": run, "hosts": {}, "schema": 2},
              {"type": "migrate", "run": run, "before": 2, "after": 2}]
    if outcome == "rolled_back":
        events.append({"type": "release.bad", "run": run, "release": release, "reason": "health gate failed"})
    return events + [{"type": "deploy.end", "run": run, "outcome": outcome}]


LEDGER = (deploy("r1", V2_OLD, "v2", "success") + deploy("r2", V2, "v2", "success")
          + deploy("r3", V2_BAD, "v2", "rolled_back") + deploy("r4", V3, "v3", "success"))


def facts(on_hosts: list[str]) -> Facts:
    f = Facts(schema=2)
    for h in WEB:
        f.hosts[h] = R.HostState(current=V3, releases=sorted(on_hosts), hostname=h)
    return f


def history(events=LEDGER) -> History:
    return History.fold(events)


def test_to_a_ref_never_picks_the_release_of_it_marked_bad():
    every = [V2_OLD, V2, V2_BAD, V3]
    assert pick(history(), "v2", V3, facts(every)) == V2
    assert pick(history(), "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", V3, facts(every)) == V2  # by its commit


def test_to_a_ref_prefers_the_newest_good_release_still_on_the_hosts():
    # V2 was cleaned up on the hosts (keep_releases); the older v2 is still everywhere
    assert pick(history(), "v2", V3, facts([V2_OLD, V2_BAD, V3])) == V2_OLD
    assert rebuild_of(history(), V2_OLD, facts([V2_OLD, V2_BAD, V3])) is None
    # on none of them: the newest good one, built again from the commit the ledger recorded
    assert pick(history(), "v2", V3, facts([V2_BAD, V3])) == V2
    assert rebuild_of(history(), V2, facts([V2_BAD, V3])) == Rebuild(WEB, "bbbbbbb" * 5 + "00000", "v2")
    # a release the ledger does not know: refused before anything changes
    gone = "20261001T000000Z-ddddddd"
    with pytest.raises(Refused, match=f"rollback to {gone}: release missing on web1, web2, web3 and its commit "
                                      "is not in the ledger"):
        rebuild_of(history(), gone, facts([V3]))


def test_to_a_ref_whose_every_release_is_bad_is_refused_saying_so():
    events = deploy("r1", V2_BAD, "v2", "rolled_back") + deploy("r2", V3, "v3", "success")
    with pytest.raises(Refused, match=f"every release deployed from it is marked bad \\({V2_BAD}\\)"):
        pick(history(events), "v2", V3, facts([V2_BAD, V3]))
    # named by its id, it is the operator's choice
    assert pick(history(events), V2_BAD, V3, facts([V2_BAD, V3])) == V2_BAD


@pytest.mark.parametrize("present,expected", [([V2_OLD, V2, V2_BAD, V3], V2), ([V2_OLD, V2_BAD, V3], V2_OLD)])
def test_rollback_to_a_ref_switches_every_host_to_the_release_picked(tmp_path, monkeypatch, present, expected):
    monkeypatch.setenv("DEPLOYER_STATE_DIR", str(tmp_path / "state"))
    key, known = tmp_path / "id", tmp_path / "known_hosts"
    key.write_text("not used: the transport is a recording one\n")
    known.write_text("")
    cfg = load_config("local", root=ROOT, overrides={"ssh.key": str(key), "ssh.known_hosts": str(known)})
    fleet = Fleet([h.name for h in cfg.hosts], V3)
    fleet.releases = {h: list(present) for h in fleet.releases}
    fleet.schema = 2
    fleet.ledger = "".join(json.dumps(e) + "\n" for e in LEDGER)
    out = io.StringIO()
    rep = JsonReporter(out)
    s = Session(cfg, rep, transport=RecordingTransport(fleet), http_check=FakeHttp(), bake=fake_bake)
    assert Rollback(cfg, rep, to="v2", session=s).run() == 0
    assert {fleet.current[h] for h in WEB} == {expected}
