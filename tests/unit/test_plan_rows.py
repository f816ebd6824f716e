"""The plans print exactly as recorded: `--dry-run` of a deploy (with and without maintenance,
with off-site backups), of the automatic rollback (with a database restore), of `rollback --to`
with a backup and of the scheduled maintenance job. The golden file was written from the code
before the engine's vocabulary became types; regenerate it only for a change users should see:
    DEPLOYER_WRITE_GOLDEN=1 pytest tests/unit/test_plan_rows.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_engine_pure import REL, ROOT, canned_facts

from deployer.config import load_config
from deployer.engine import back_plan, deploy_plan, maint_plan
from deployer.engine.deploy_plan import DeployInputs
from deployer.engine.state import RunState
from deployer.records import BackupRef

GOLDEN = Path(__file__).parent / "golden" / "plan_rows.json"
PREV = "20261101T000000Z-aaaaaaa"
BACKUP = BackupRef(path="/srv/backups/x.dump", sha256="ab" * 32, size=0, host="db1")
TOKEN = 7  # the lock's fencing token: every host script checks it first


@pytest.fixture
def offsite(monkeypatch):
    for mod in (deploy_plan, back_plan, maint_plan):
        monkeypatch.setattr(mod, "offsite", lambda cfg: True)


def plans() -> dict[str, list]:
    cfg = load_config("prod", root=ROOT)
    facts = canned_facts(cfg)
    out = {}
    for maint in (True, False):
        plan = deploy_plan.deploy_plan(cfg, facts, DeployInputs(release=REL, commit=facts.commit, ref="v2.3.0",
                                                                maintenance=maint, token=TOKEN))
        out[f"deploy maintenance={maint}"] = plan.rows()
    app = [h.name for h in cfg.app_hosts]
    st = RunState(run="r1", release=REL, snapshot={h: PREV for h in app}, schema_before=1, schema_after=2,
                  backup=BACKUP, maintenance_on=True,
                  migrated=True, pulled=list(app), switched=list(app), drained=app[:1],
                  workers_restarted=list(app))
    out["rollback restore"] = back_plan.rollback_plan(cfg, st, TOKEN).rows()
    st.maintenance_on = False
    out["rollback down"] = back_plan.rollback_plan(cfg, st, TOKEN).rows()
    out["rollback --to"] = back_plan.manual_rollback_plan(
        cfg, PREV, cfg.app_hosts, backup=BACKUP,
        safety_path="/srv/backups/safety.dump", token=TOKEN).rows()
    out["window"] = maint_plan.window_plan(cfg, backup_path="/srv/backups/nightly.dump", remove=[],
                                           release=PREV, gate_release=None, token=TOKEN).rows()
    return {k: [list(r) for r in v] for k, v in out.items()}


def test_plans_print_as_recorded(offsite):
    rows = plans()
    if os.environ.get("DEPLOYER_WRITE_GOLDEN"):
        GOLDEN.write_text(json.dumps(rows, indent=1) + "\n")
    assert rows == json.loads(GOLDEN.read_text())
    assert any("upload_backup" in r[2] for r in rows["deploy maintenance=True"])
    assert any("ensure_backup" in r[2] for r in rows["rollback restore"])


def test_a_deploy_without_maintenance_that_cleans_up_old_releases_plans_a_finalize_without_effect():
    """Finalize runs commands without maintenance too (the cleanup of old releases): its actions
    change nothing the run must undo, and the plan builds (an empty effect once broke every such
    deploy)."""
    cfg = load_config("prod", root=ROOT)
    facts = canned_facts(cfg)
    old = [f"202610{d:02d}T000000Z-aaaaaaa" for d in range(1, 1 + cfg.keep_releases + 3)]
    for state in facts.hosts.values():
        state.releases = old + [PREV]
    plan = deploy_plan.deploy_plan(cfg, facts, DeployInputs(release=REL, commit=facts.commit, ref="v2.3.0",
                                                            maintenance=False))
    finalize = [a for st in plan.stages if st.name == "finalize" for a in st.actions()]
    assert {a.host for a in finalize} == {h.name for h in cfg.app_hosts}
    assert all(a.effect is None for a in finalize)
    assert all(old[0] in a.display() for a in finalize)
