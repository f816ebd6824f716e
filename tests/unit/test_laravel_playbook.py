"""The shipped laravel playbook and the Laravel example app's repo (pure: no host, no PHP)."""

from __future__ import annotations

import subprocess

from deployer.config import load_config
from deployer.fleet import laravel as L
from deployer.fleet import laravel_repo as LR
from deployer.fleet import spec as S


def laravel_cfg():
    return load_config("prod", environ={}, overrides={"playbook": "laravel"})


def test_laravel_playbook_loads_and_uses_artisan():
    cfg = laravel_cfg()
    pb = cfg.playbook
    assert pb.check_templates(cfg.vars) == []
    assert "{php} artisan migrate --force" in pb.steps("migrate", "run")[0].run
    for sub in ("version", "pending", "can_down"):
        assert "{php} -r {schema_php}" in pb.steps("migrate", sub)[0].run, sub
    down = pb.steps("migrate", "down")[0].run
    assert "{php} artisan migrate:rollback --force" in down and '[ "$v" -eq {target_version} ]' in down
    assert '$rows->max("batch")' in pb.vars["schema_php"] and "resolvePath" in pb.vars["schema_php"]
    assert pb.stages.maintenance.flag == "storage/framework/down"
    assert [s.run for s in pb.steps("cache_warm")] == [
        f"cd {{release_path}} && {{php}} artisan {c}" for c in ("config:cache", "route:cache", "view:cache",
                                                              "event:cache")]
    reload = pb.steps("reload")[0].run
    assert "kill -USR2 $(cat {fpm_pid})" in reload and "{sudo} {systemctl} reload {fpm_service}" in reload
    restart = " ".join(s.run for s in pb.steps("worker_restart"))
    assert "artisan queue:restart" in restart and "artisan horizon:terminate" in restart
    assert "{composer} install --no-dev --optimize-autoloader" in pb.steps("build")[1].run


def test_health_gate_passes_maintenance_and_the_fleet_checks_the_release(tmp_path):
    assert laravel_cfg().health.headers == {"X-Deployer-Gate": "1"}
    path = tmp_path / "hosts" / "laravel.yaml"
    path.parent.mkdir()
    for name in ("id_ed25519", "known_hosts"):
        (tmp_path / name).write_text("")
    path.write_text(L.inventory(S.FleetSpec.of(3), tmp_path, tmp_path / "laravel-app"))
    cfg = load_config("laravel", inventory=path, environ={})
    assert cfg.health.url == f"http://{{address}}:{L.PORT}/health"
    assert cfg.health.expect_json == {"status": "ok", "release": "{release}"}
    assert cfg.health.headers == {"X-Deployer-Gate": "1"}


def test_laravel_repo_versions(tmp_path):
    trees = LR.version_trees()
    assert list(trees) == ["v1", "v2", "v3-bad"]
    migs = {tag: sorted(p for p in tree if p.startswith("database/migrations/")) for tag, tree in trees.items()}
    assert [m.rsplit("/", 1)[1] for m in migs["v1"]] == ["2026_01_01_000000_create_jobs_table.php",
                                                         "2026_01_01_000001_create_notes_table.php"]
    assert migs["v2"] == migs["v1"] + ["database/migrations/2026_02_01_000000_add_processed_by_to_notes_table.php"]
    assert migs["v3-bad"] == migs["v2"] + ["database/migrations/2026_03_01_000000_add_priority_to_notes_table.php"]
    assert b"return response()->json($body, 500);" in trees["v3-bad"]["app/Http/Controllers/HealthController.php"]
    assert b"'processed_by' => \\App\\Support\\Release::id()" in trees["v2"]["app/Jobs/ProcessNote.php"]
    # offline: no package to fetch, the framework from Debian's autoloader
    assert b'"packagist.org": false' in trees["v1"]["composer.json"]
    assert b'"packages": []' in trees["v1"]["composer.lock"]
    assert b"/usr/share/php/Illuminate/autoload.php" in trees["v1"]["bootstrap/debian.php"]
    tags = LR.build_laravel_repo(tmp_path / "repo")
    assert list(tags) == ["v1", "v2", "v3-bad"]
    listed = subprocess.run(["git", "-C", str(tmp_path / "repo"), "ls-tree", "-r", "v1"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    modes = {line.split("\t")[1]: line.split()[0] for line in listed}
    assert modes["artisan"] == "100755" and not any(p.startswith(("vendor/", "storage/")) for p in modes)


def test_fleet_inventory_and_web_stack(tmp_path):
    spec = S.FleetSpec.of(3)
    path = tmp_path / "hosts" / "laravel.yaml"
    path.parent.mkdir()
    for name in ("id_ed25519", "known_hosts"):
        (tmp_path / name).write_text("")
    path.write_text(L.inventory(spec, tmp_path, tmp_path / "laravel-app"))
    cfg = load_config("laravel", inventory=path, environ={})
    assert cfg.playbook.name == "laravel" and cfg.deploy_to == L.DEPLOY_TO
    assert [h.name for h in cfg.app_hosts] == ["web1", "web2"]
    assert cfg.migrate_host.name == "web1"
    assert cfg.vars["fpm_pid"] == f"{L.WEB_DIR}/php-fpm.pid"
    nginx = L.nginx_config()
    assert f"root {L.DEPLOY_TO}/current/public;" in nginx
    assert "SCRIPT_FILENAME $realpath_root$fastcgi_script_name" in nginx and f"listen {L.PORT};" in nginx
    assert f"pid = {L.WEB_DIR}/php-fpm.pid" in L.fpm_config()
    progs = L.supervisor_programs()
    assert f"directory={L.DEPLOY_TO}/current" in progs and "artisan queue:work" in progs
    env = L.app_env("pw", "a2V5")
    assert "APP_ENV=production\nAPP_DEBUG=false\n" in env and "DB_CONNECTION=pgsql" in env
