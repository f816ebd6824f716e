"""The shipped django playbook and the Django example app's repo (pure: no host, no Django)."""

from __future__ import annotations

from deployer import preflight as P
from deployer.config import load_config
from deployer.fleet import django as D
from deployer.fleet import django_repo as DR
from deployer.fleet import spec as S

ENV_FILE = "/var/www/app/shared/.env"


def django_cfg():
    return load_config("prod", environ={}, overrides={"playbook": "django"})


def test_django_playbook_loads_and_needs_no_custom_management_command():
    cfg = django_cfg()
    pb = cfg.playbook
    assert pb.check_templates(cfg.vars) == []
    steps = {sub: pb.steps("migrate", sub)[0].run for sub in ("version", "pending", "down", "can_down")}
    for sub, run in steps.items():
        assert "manage.py shell -c {schema_py}" in run, sub
    assert "call_command(\"migrate\", app" in pb.vars["schema_py"]
    assert pb.stages.maintenance.flag == "var/maintenance.json"
    reload = " ".join(s.run for s in pb.steps("reload"))
    assert "HUP" not in reload and "start {web_program}" in reload


def test_pending_builds_a_venv_when_the_served_one_does_not_fit():
    run = django_cfg().playbook.steps("migrate", "pending")[0].run
    assert "cmp -s requirements.txt {current_path}/requirements.txt" in run
    assert "{base_python} -m venv .venv" in run


def test_django_preflight_checks_settings_not_laravel_keys():
    cfg = django_cfg()
    checks = P.checks_for(cfg)
    env = [c for c in checks if c.name == "app_env"]
    assert len(env) == 1 and "APP_DEBUG" not in env[0].about
    app = [c for c in checks if c.name == "app_check"]
    assert len(app) == 1 and "manage.py shell -c" in app[0].command.script
    assert set(app[0].hosts) == {h.name for h in cfg.app_hosts if h.has("web")}
    laravel = load_config("prod", environ={})
    assert not [c for c in P.checks_for(laravel) if c.name == "app_check"]


def test_parse_app_env_without_app_keys_checks_mode_and_git_only():
    out = "env_file=present\nmode=600\napp_debug=true\napp_env=local\nenv_tracked=no\n"
    assert P.parse_app_env(ENV_FILE, app_keys=False)(out, 0) == (True, "mode 600, not in git")
    assert P.parse_app_env(ENV_FILE)(out, 0)[0] is False
    bad = out.replace("mode=600", "mode=644")
    assert P.parse_app_env(ENV_FILE, app_keys=False)(bad, 0)[0] is False


def test_parse_app_check():
    assert P.parse_app_check("DEBUG off, ALLOWED_HOSTS a, SECRET_KEY set\n", 0) == (
        True, "DEBUG off, ALLOWED_HOSTS a, SECRET_KEY set")
    assert P.parse_app_check("noise\nDEBUG is on\n", 1) == (False, "DEBUG is on")
    assert P.parse_app_check("", 2) == (False, "exit 2")
    assert P.parse_app_check("", 0) == (True, "ok")


def test_django_repo_versions():
    trees = DR.version_trees()
    assert list(trees) == ["v1", "v2", "v3-bad"]
    mig = "notes/migrations/"
    assert sorted(p for p in trees["v1"] if p.startswith(mig) and p.endswith(".py")) == [
        mig + "0001_initial.py", mig + "__init__.py"]
    assert mig + "0002_note_processed_by.py" in trees["v2"]
    assert mig + "0003_note_priority.py" in trees["v3-bad"]
    assert b"online_safe = True" in trees["v2"][mig + "0002_note_processed_by.py"]
    assert b"status=500" in trees["v3-bad"]["notes/views.py"]
    assert all(t["requirements.txt"] == trees["v1"]["requirements.txt"] for t in trees.values())
    assert not any(".env" in p.split("/") or "__pycache__" in p for t in trees.values() for p in t)


def test_django_fleet_inventory_and_env():
    spec = S.FleetSpec.of(3)
    text = D.inventory(spec, S.Path("/f"), S.Path("/f/django-app"))
    assert "playbook: django" in text and f"deploy_to: {D.DEPLOY_TO}" in text
    assert "name: web3" not in text and "name: web2" in text and "name: db1" in text
    env = D.app_env(spec, "pw", "key")
    assert "DEBUG=false" in env and f"/{D.DB_NAME}\n" in env and "REDIS_URL=redis://" in env
    programs = D.supervisor_programs()
    assert f"command={D.DEPLOY_TO}/current/.venv/bin/gunicorn" in programs
    assert f"directory={D.DEPLOY_TO}/current" in programs
