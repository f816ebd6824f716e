"""No decision rests on the orchestrator's clock: the maintenance flag's expiry is computed on the
host that enforces it, release order is the ledger's, and `status` warns when a host's clock is
off the orchestrator's."""

from __future__ import annotations

import io
import json
import re
import subprocess

import pytest
from recording import Fleet, RecordingTransport
from test_engine_pure import REL, ROOT, canned_facts
from test_ledger_fold import A, B, C, start
from test_orchestration import config

from deployer import inspect
from deployer.commands import releases as R
from deployer.config import load_config
from deployer.engine import ops
from deployer.engine.deploy_plan import DeployInputs, cleanup_targets
from deployer.engine.rollback import pick
from deployer.ledger import History
from deployer.output import JsonReporter
from deployer.session import Session
from deployer.shell import HostDeadline, fill, render

# ids whose timestamps disagree with the order they were deployed in: NEW was made by an
# orchestrator whose clock was an hour behind, after LATE and BEFORE were deployed
BEFORE = "20261201T100000Z-1111111"
LATE = "20261201T110000Z-2222222"
NEW = "20261201T103000Z-3333333"


def ok(run: str, release: str, ref: str) -> list[dict]:
    return [start(run, release, ref), {"type": "deploy.end", "run": run, "outcome": "success"}]


# -- the maintenance flag's expiry: shell arithmetic on the host ------------------------------

def test_the_flag_expiry_is_computed_by_the_host_that_writes_it(tmp_path):
    cfg = config("local", tmp_path)  # the demo playbook: a JSON flag with expires_at
    web = next(h for h in cfg.app_hosts if h.has("web"))
    on = " ;; ".join(c.script for c in ops.maintenance_cmds(cfg, web, True, ttl=600, message="m"))
    assert '"$(( $(date +%s) + 600 ))"' in on
    assert "sleep 600" in on  # the dead-man switch counts on the host too
    off = " ;; ".join(c.script for c in ops.maintenance_cmds(cfg, web, True, ttl=None, message="m"))
    assert "date +%s" not in off and " '' >" in off  # no expiry: an empty value, the flag says null


def test_the_deploy_plan_holds_no_expiry_computed_by_the_orchestrator(tmp_path):
    cfg = config("local", tmp_path)
    from deployer.engine.deploy_plan import deploy_plan

    plan = deploy_plan(cfg, canned_facts(cfg), DeployInputs(release=REL, commit="c" * 40, ref="v2",
                                                            maintenance=True))
    texts = [a.command.script for st in plan.stages for a in st.actions() if a.command is not None]
    flags = [t for t in texts if "maintenance.json" in t and "json.dump" in t]
    assert any(f'"$(( $(date +%s) + {cfg.maintenance_ttl} ))"' in t for t in flags)
    assert not [t for t in flags if re.search(r"\b1\d{9}\b", t)]  # no epoch from this machine


def test_a_host_deadline_is_one_shell_word_evaluated_by_the_shell():
    cmd = render("printf '%s|%s\\n' {expires_at} {message}", {"expires_at": HostDeadline(90), "message": "a b"})
    out = subprocess.run(["sh", "-c", f"date +%s; {cmd.script}"], capture_output=True, text=True,
                         check=True).stdout.split()
    now, (expiry, message) = int(out[0]), out[1].split("|", 1)
    assert now + 90 <= int(expiry) <= now + 92 and message == "a"
    with pytest.raises(TypeError):
        fill("{expires_at}", {"expires_at": HostDeadline(90)})
    with pytest.raises(TypeError):
        HostDeadline("$(reboot)")  # type: ignore[arg-type]


def test_the_flag_written_by_the_demo_playbook_keeps_its_json_format(tmp_path):
    cfg = config("local", tmp_path)
    web = next(h for h in cfg.app_hosts if h.has("web"))
    step = cfg.playbook.steps("maintenance", "on")[0]
    vals = ops.values(cfg, web, REL, message="Deploying", retry=30, expires_at=HostDeadline(600))
    vals.update(shared_path=str(tmp_path), python="python3")
    before = int(subprocess.run(["date", "+%s"], capture_output=True, text=True, check=True).stdout)
    subprocess.run(["sh", "-c", step.command(vals).script], check=True)
    flag = json.loads((tmp_path / "storage" / "maintenance.json").read_text())
    assert flag["message"] == "Deploying" and flag["retry"] == 30
    assert isinstance(flag["expires_at"], float) and before + 600 <= flag["expires_at"] <= before + 610


def test_the_expiry_is_judged_and_shown_by_the_host_clock():
    out = ("@@deployer-state\ncurrent=\nhostname=web1\ndisk_kb=1\nmaintenance=on\n"
           'maintenance_json={"message": "m", "retry": 5, "expires_at": 1000.0}\nnow=%d\n')
    live, expired = R.parse_state(out % 900), R.parse_state(out % 1000)
    assert live.maintenance and live.now == 900
    assert not expired.maintenance and expired.maintenance_expired
    # the column counts from the host's own `now`, whatever this machine's clock says
    assert inspect._maintenance_cell(live, False) == "ON (expires in 100s): m"


def test_the_state_read_asks_the_host_its_time_with_or_without_a_flag():
    script = R.read_state("/srv/app").script
    assert script.index("fi; echo now=$(date +%s)") > script.index("maintenance=off")
    assert R.parse_state("@@deployer-state\nmaintenance=off\nnow=1234\n").now == 1234


# -- release order: the ledger's, not the ids' ------------------------------------------------

def test_previous_good_follows_the_ledger_not_the_release_ids():
    h = History.fold(ok("r1", BEFORE, "v1") + ok("r2", LATE, "v2") + ok("r3", NEW, "v3"))
    assert h.order == [BEFORE, LATE, NEW]
    assert h.previous_good(NEW).release == LATE  # by id, LATE is newer than NEW
    assert h.previous_good(LATE).release == BEFORE
    assert h.previous_good(BEFORE) is None
    assert h.previous_good(None).release == NEW
    assert h.previous_good("20991231T000000Z-9999999").release == NEW  # unknown: the newest good
    assert h.newest([LATE, NEW]) == NEW and h.newest([]) is None
    assert h.newest(["20991231T000000Z-9999999", BEFORE]) == BEFORE  # the ledger's outrank unknown ones


def test_a_ref_resolves_to_its_newest_deploy_in_ledger_order():
    h = History.fold(ok("r1", LATE, "v2") + ok("r2", NEW, "v2"))
    assert h.deployed_from("v2") == [NEW, LATE]
    assert h.resolve("v2").release == NEW


def test_a_plain_rollback_picks_the_previous_good_release_of_the_ledger():
    class Facts:
        hosts = {h: R.HostState(current=NEW, releases=[BEFORE, LATE, NEW]) for h in ("web1", "web2")}

    h = History.fold(ok("r1", BEFORE, "v1") + ok("r2", LATE, "v2") + ok("r3", NEW, "v3"))
    current = h.newest([st.current for st in Facts.hosts.values()])
    assert current == NEW
    assert pick(h, None, current, Facts) == LATE


def test_release_order_for_cleanup_is_the_ledgers_then_unknown_ones_by_id():
    assert R.in_order([NEW, LATE, "x-unknown", BEFORE, "a-unknown"], [BEFORE, LATE, NEW]) == \
        ["a-unknown", "x-unknown", BEFORE, LATE, NEW]
    assert R.in_order([C, A, B], []) == [A, B, C]  # no ledger: by id, as before
    assert R.to_remove([BEFORE, LATE, NEW], 2, set()) == [BEFORE]
    assert R.to_remove([BEFORE, LATE, NEW], 0, {NEW}) == [BEFORE, LATE]


def test_cleanup_keeps_the_newest_releases_of_the_ledger():
    cfg = load_config("prod", root=ROOT)
    facts = canned_facts(cfg)
    # FIRST was deployed first, by a machine whose clock was ahead: its id sorts after all others
    first = "20261130T000000Z-fffffff"
    later = [f"202611{d:02d}T000000Z-aaaaaaa" for d in range(1, 1 + cfg.keep_releases)]
    for st in facts.hosts.values():
        st.releases, st.current = [first, *later], later[-1]
    inp = DeployInputs(release=REL, commit="c" * 40, ref="v2", maintenance=False, order=(first, *later))
    doomed = cleanup_targets(cfg, facts, inp, {h: later[-1] for h in facts.hosts})
    assert doomed and all(d == sorted([first, later[0]]) for d in doomed.values())
    # without the ledger's order (a release no ledger knows), ids decide, as before
    by_id = cleanup_targets(cfg, facts, DeployInputs(release=REL, commit="c" * 40, ref="v2", maintenance=False),
                            {h: later[-1] for h in facts.hosts})
    assert all(d == later[:2] for d in by_id.values())


# -- status: a host whose clock is off --------------------------------------------------------

def test_clock_skew_counts_only_beyond_the_time_the_read_took():
    assert inspect.clock_skew(1000, 1000.5, 1003.0) == 0.0
    assert inspect.clock_skew(1010, 1000.0, 1002.0) == 8.0
    assert inspect.clock_skew(990, 1000.0, 1002.0) == -9.0
    states = {"web1": R.HostState(now=1004), "web2": R.HostState(now=1010), "web3": R.HostState(now=3000 - 3600),
              "web4": R.HostState()}
    lines = inspect.clock_lines(states, 1000.0, 1001.0)
    assert len(lines) == 2
    assert lines[0].startswith("WARNING: web2's clock is 9s ahead of this machine's")
    assert lines[1].startswith("WARNING: web3's clock is 1599s behind this machine's")


def run_status(cfg, fleet: Fleet, monkeypatch) -> tuple[int, list[str]]:
    out = io.StringIO()
    rep = JsonReporter(out)
    t = RecordingTransport(fleet)
    monkeypatch.setattr(inspect, "Session", lambda cfg, reporter: Session(cfg, reporter, transport=t))
    code = inspect.status(cfg, rep)
    notices = [e["message"] for e in map(json.loads, out.getvalue().splitlines()) if e["event"] == "notice"]
    return code, notices


def test_status_warns_of_a_host_whose_clock_is_off(tmp_path, monkeypatch):
    cfg = config("local", tmp_path)
    fleet = Fleet([h.name for h in cfg.hosts], A)
    code, notices = run_status(cfg, fleet, monkeypatch)
    assert code == 0 and not [n for n in notices if "clock" in n]
    web = [h.name for h in cfg.app_hosts]
    fleet.clock_offset = {web[0]: -3600, web[-1]: 7}
    code, notices = run_status(cfg, fleet, monkeypatch)
    warned = [n for n in notices if "clock" in n]
    assert code == 0 and len(warned) == 2, notices
    assert any(n.startswith(f"WARNING: {web[0]}'s clock is 3600s behind") or
               n.startswith(f"WARNING: {web[0]}'s clock is 3599s behind") for n in warned)
    assert any(f"WARNING: {web[-1]}'s clock is" in n and "ahead" in n for n in warned)
    fleet.clock_offset = 4  # within the limit
    assert not [n for n in run_status(cfg, fleet, monkeypatch)[1] if "clock" in n]
