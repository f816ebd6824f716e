"""One ordered list of stages: config's hook stages and the live table's columns come from it,
and a built deploy plan runs its stages in that order (per-wave stages repeat, in order, per
wave; hooks sit right before and after their stage)."""

from __future__ import annotations

import pytest
from test_engine_pure import REL, ROOT, canned_facts

from deployer import output
from deployer.config import HOOK_STAGES, load_config
from deployer.engine.deploy_plan import DeployInputs, deploy_plan
from deployer.stages import LIVE_STAGES, PER_WAVE, STAGES


def test_config_and_the_live_table_use_the_one_list():
    assert HOOK_STAGES is STAGES
    assert output.LIVE_STAGES is LIVE_STAGES
    assert LIVE_STAGES == ("maintenance", "backup", "pull", "migrate", "cache_warm", "switch",
                           "worker_restart", "gate", "finalize")
    first = STAGES.index(PER_WAVE[0])
    assert STAGES[first:first + len(PER_WAVE)] == PER_WAVE  # a wave's stages are adjacent


def position(name: str, wave: int) -> tuple:
    """Where a stage (or hook) belongs in a deploy: by STAGES, per-wave stages grouped by wave."""
    stage = name.rpartition(":")[2]
    i = STAGES.index(stage)
    first = STAGES.index(PER_WAVE[0])
    return (first, wave, i) if stage in PER_WAVE else (i, 0, 0)


@pytest.mark.parametrize("maintenance", [True, False])
@pytest.mark.parametrize("with_hooks", [True, False])
def test_a_deploy_plan_runs_its_stages_in_the_order_of_the_list(maintenance, with_hooks, monkeypatch):
    cfg = load_config("prod", root=ROOT)
    if with_hooks:  # a hook before and after every stage
        step = cfg.playbook.steps("cache_warm")[:1]
        assert step
        monkeypatch.setattr(type(cfg.playbook), "hooks_for", lambda self, when, stage: list(step))
    facts = canned_facts(cfg)
    plan = deploy_plan(cfg, facts, DeployInputs(release=REL, commit=facts.commit, ref="v2.3.0",
                                                 maintenance=maintenance))
    where = [position(st.name, st.wave) for st in plan.stages]
    assert where == sorted(where)
    # a hook sits right next to its stage (preflight's and lock's have no stage in the plan)
    names = [st.name for st in plan.stages]
    for i, name in enumerate(names):
        when, _, stage = name.rpartition(":")
        if when and stage not in ("preflight", "lock"):
            assert names[i + 1 if when == "before" else i - 1] == stage, (i, name)
    seen = {name.rpartition(":")[2] for name in names}
    assert seen == (set(STAGES) if with_hooks else set(STAGES) - {"preflight", "lock"})
    assert max(st.wave for st in plan.stages) > 1  # the per-wave ordering is exercised
