"""The shipped node playbook and the Node.js example app's repo (pure: no host, no Node.js)."""

from __future__ import annotations

import json
import subprocess

from deployer.config import load_config
from deployer.fleet import node as N
from deployer.fleet import node_repo as NR
from deployer.fleet import spec as S


def node_cfg():
    return load_config("prod", environ={}, overrides={"playbook": "node"})


def test_node_playbook_loads_and_uses_knex():
    cfg = node_cfg()
    pb = cfg.playbook
    assert pb.check_templates(cfg.vars) == []
    assert "knex migrate:latest" in pb.steps("migrate", "run")[0].run
    for sub in ("version", "pending", "down", "can_down"):
        assert "{node} -e {schema_js}" in pb.steps("migrate", sub)[0].run, sub
    assert "k.migrate.down()" in pb.vars["schema_js"] and "k.migrate.list(" in pb.vars["schema_js"]
    assert pb.stages.maintenance.flag == "var/maintenance.json"
    assert pb.stages.maintenance.hold_workers
    reload = " ".join(s.run for s in pb.steps("reload"))
    assert "pm2" not in reload and "start {web_program}" in reload
    build = [s.run for s in pb.steps("build")]
    assert build[0].startswith("{npm} ci ") and "prune --omit=dev" in build[-1]


def test_pending_reuses_node_modules_only_when_the_lockfile_is_the_same():
    run = node_cfg().playbook.steps("migrate", "pending")[0].run
    assert "cmp -s package-lock.json {current_path}/package-lock.json" in run
    assert "{npm} ci --omit=dev" in run


def test_health_gate_expects_the_release():
    cfg = node_cfg()
    assert cfg.health.expect_json == {"status": "ok", "release": "{release}"}


def test_node_repo_versions(tmp_path):
    trees = NR.version_trees()
    assert list(trees) == ["v1", "v2", "v3-bad"]
    migs = {tag: sorted(p for p in tree if p.startswith("migrations/")) for tag, tree in trees.items()}
    assert migs["v1"] == ["migrations/001_create_notes.js"]
    assert migs["v2"] == migs["v1"] + ["migrations/002_notes_processed_by.js"]
    assert migs["v3-bad"] == migs["v2"] + ["migrations/003_notes_priority.js"]
    assert b"onlineSafe = true" in trees["v2"]["migrations/002_notes_processed_by.js"]
    assert b"res.status(500)" in trees["v3-bad"]["server.js"]
    assert b"processed_by: REVISION" in trees["v2"]["worker.js"]
    # the same dependencies in every version: one npm cache serves them all
    assert len({t["package-lock.json"] for t in trees.values()}) == 1
    lock = json.loads(trees["v1"]["package-lock.json"])
    assert {"node_modules/express", "node_modules/knex", "node_modules/pg"} <= set(lock["packages"])
    tags = NR.build_node_repo(tmp_path / "repo")
    assert list(tags) == ["v1", "v2", "v3-bad"]
    listed = subprocess.run(["git", "-C", str(tmp_path / "repo"), "ls-tree", "-r", "--name-only", "v1"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert "node_modules" not in " ".join(listed) and "package-lock.json" in listed


def test_fleet_inventory_and_host_npmrc(tmp_path):
    spec = S.FleetSpec.of(3)
    path = tmp_path / "hosts" / "node.yaml"
    path.parent.mkdir()
    for name in ("id_ed25519", "known_hosts"):
        (tmp_path / name).write_text("")
    path.write_text(N.inventory(spec, tmp_path, tmp_path / "node-app"))
    cfg = load_config("node", inventory=path, environ={})
    assert cfg.playbook.name == "node" and cfg.deploy_to == N.DEPLOY_TO
    assert [h.name for h in cfg.app_hosts] == ["web1", "web2"]
    assert cfg.migrate_host.name == "web1"
    rc = N.npmrc(tmp_path / "cache")
    assert f"cache={tmp_path / 'cache'}" in rc and "offline=true" in rc
    progs = N.supervisor_programs()
    assert f"directory={N.DEPLOY_TO}/current" in progs and "worker.js" in progs
