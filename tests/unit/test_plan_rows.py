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


def _unfences(plan) -> list[str]:
    """The hosts of the plan's fence removals (the last stage that touches the database)."""
    return [a.host for st in plan.stages for a in st.actions()
            if "DROP TABLE IF EXISTS public.deployer_fence" in (a.command.script if a.command else "")
            and "pg_dump" not in a.command.script]


def test_every_way_back_removes_the_write_fence():
    """The write fence (and a restore's mark in it) is gone at the end of each plan that goes
    back: the automatic rollback with a restore, with down migrations, without any database
    step (abort and recover run the same plan), and `rollback --to` without a backup; the last
    stage of each, after maintenance is off. `rollback --to` with a backup restores over it."""
    cfg = load_config("prod", root=ROOT)
    app = [h.name for h in cfg.app_hosts]
    st = RunState(run="r1", release=REL, snapshot={h: PREV for h in app}, schema_before=1, schema_after=2,
                  backup=BACKUP, maintenance_on=True, migrated=True, pulled=list(app), switched=list(app))
    db = cfg.db_host.name
    for migrated, maint in ((True, True), (True, False), (False, True)):
        st.migrated, st.maintenance_on = migrated, maint
        plan = back_plan.rollback_plan(cfg, st, TOKEN)
        assert _unfences(plan) == [db], (migrated, maint)
        assert plan.stages[-1].name == "finalize" and plan.stages[-1].best_effort
    st.backup = None  # killed mid-backup under maintenance: the fence may be set, unrecorded
    assert _unfences(back_plan.rollback_plan(cfg, st, TOKEN)) == [db]
    st.maintenance_on = False  # an online run that failed before its backup: it set no fence
    assert _unfences(back_plan.rollback_plan(cfg, st, TOKEN)) == []
    plan = back_plan.manual_rollback_plan(cfg, PREV, cfg.app_hosts, backup=None, safety_path=None, token=TOKEN)
    assert _unfences(plan) == [db]
    plan = back_plan.manual_rollback_plan(cfg, PREV, cfg.app_hosts, backup=BACKUP,
                                          safety_path="/srv/backups/safety.dump", token=TOKEN)
    assert _unfences(plan) == []
    restore = [a for s in plan.stages for a in s.actions() if a.what == "restore database"]
    assert "keep text := NULL" in restore[0].command.script  # the fence goes with the rest
