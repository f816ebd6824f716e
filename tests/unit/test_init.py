"""`deployer init`: the files it writes load as they are, from the project as the current directory."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deployer import verbs
from deployer.config import load_config
from deployer.errors import ConfigError, Refused
from deployer.init import KINDS, app_name, write_project
from deployer.output import JsonReporter


@pytest.fixture
def rep():
    return JsonReporter(io.StringIO())


@pytest.mark.parametrize("kind", KINDS)
def test_init_then_load_config_from_the_project_directory(kind, tmp_path, monkeypatch, rep):
    project = tmp_path / "My Shop"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.delenv("DEPLOYER_ROOT", raising=False)
    assert verbs.init(kind=kind) == 0
    assert sorted(p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()) == [
        "deploy/sudoers", "hosts/known_hosts", "hosts/production.yaml", "playbooks/my-shop.yaml",
        "tasks.py"]
    cfg = load_config("production")  # the root: the current directory, which now has hosts/
    assert cfg.root == project
    assert cfg.playbook.name == "my-shop" and cfg.playbook_path == project / "playbooks" / "my-shop.yaml"
    # the shipped playbook is extended, not copied
    assert cfg.playbook._sources[0][0].endswith(f"playbooks/{kind}.yaml")
    assert cfg.playbook._sources[-1][0] == "playbooks/my-shop.yaml" and len(cfg.playbook._sources) == 2
    assert cfg.playbook.stages.migrate is not None
    assert [(h.name, h.roles) for h in cfg.hosts] == [
        ("web1", ("web", "worker", "migrate")), ("web2", ("web", "worker")), ("db1", ("db", "ledger"))]
    assert all(h.address.startswith("203.0.113.") for h in cfg.hosts)
    assert cfg.database.name == "my_shop" and cfg.deploy_to == "/srv/my-shop"
    inventory = (project / "hosts" / "production.yaml").read_text()
    playbook = (project / "playbooks" / "my-shop.yaml").read_text()
    assert f"extends: {kind}" in playbook and "<<" not in inventory + playbook
    # commented: every active key of the inventory has a comment line before it or on it
    lines = inventory.splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith((" ", "#", "-")) and ":" in line:
            assert "#" in line or lines[i - 1].lstrip().startswith("#"), line
    # the commented examples are valid YAML once uncommented, for the parts that are mappings
    assert yaml.safe_load(playbook)["extends"] == kind


def test_init_refuses_to_overwrite_without_force(tmp_path, rep):
    assert write_project(tmp_path, rep, kind="laravel", env="staging", app="shop") == 0
    inventory = tmp_path / "hosts" / "staging.yaml"
    inventory.write_text(inventory.read_text() + "# my change\n")
    (tmp_path / "hosts" / "known_hosts").write_text("web1 ssh-ed25519 AAAA...\n")
    with pytest.raises(Refused) as exc:
        write_project(tmp_path, rep, kind="laravel", env="staging", app="shop")
    assert exc.value.exit_code == 3
    assert exc.value.message == ("init: hosts/staging.yaml, playbooks/shop.yaml already exist; nothing "
                                 "was written")
    assert inventory.read_text().endswith("# my change\n")
    assert write_project(tmp_path, rep, kind="node", env="staging", app="shop", force=True) == 0
    assert not inventory.read_text().endswith("# my change\n")
    assert "extends: node" in (tmp_path / "playbooks" / "shop.yaml").read_text()
    # known_hosts holds real keys: never overwritten
    assert (tmp_path / "hosts" / "known_hosts").read_text() == "web1 ssh-ed25519 AAAA...\n"


def test_init_exit_codes_through_the_verb(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert verbs.init(kind="django", env="staging") == 0
    assert verbs.init(kind="django", env="staging") == 3
    assert "--force overwrites them" in capsys.readouterr().err
    assert verbs.init(kind="django", env="Staging") == 2
    assert verbs.init(kind="django", app="Bad_Name") == 2
    assert verbs.init(root=str(tmp_path / "missing")) == 2


def test_bad_values(tmp_path, rep):
    with pytest.raises(ConfigError, match=r"^--kind rails: expected one of laravel, django, node, demo$"):
        write_project(tmp_path, rep, kind="rails")
    with pytest.raises(ConfigError, match=r"^--env Prod: "):
        write_project(tmp_path, rep, env="Prod")
    assert list(tmp_path.iterdir()) == []


def test_app_name_from_the_directory(tmp_path):
    assert app_name(tmp_path / "Acme Shop_v2") == "acme-shop-v2"
    assert app_name(tmp_path / "___") == "app"


#: the rules of each kind's shipped playbook (its {sudo} commands), for the inventory's user
RULES = {
    "demo": ["Cmnd_Alias DEPLOYER_SHOP = \\"]
            + [f"    /srv/bin/supervisorctl -c /srv/supervisor/supervisord.conf {c}, \\"
               for c in ("stop worker", "start worker", "status worker", "signal HUP web")]
            + ["    /srv/bin/supervisorctl -c /srv/supervisor/supervisord.conf start web",
               "deploy ALL=(root) NOPASSWD: DEPLOYER_SHOP"],
    "laravel": ["Cmnd_Alias DEPLOYER_SHOP = \\", "    /usr/bin/systemctl reload php8.2-fpm, \\"]
               + [f"    /usr/bin/supervisorctl -c /etc/supervisor/supervisord.conf {c}, \\"
                  for c in ("start laravel-worker", "status laravel-worker")]
               + ["    /usr/bin/supervisorctl -c /etc/supervisor/supervisord.conf pid laravel-worker",
                  "deploy ALL=(root) NOPASSWD: DEPLOYER_SHOP"],
    "django": ["Cmnd_Alias DEPLOYER_SHOP = \\"]
              + [f"    /usr/bin/supervisorctl -c /etc/supervisor/supervisord.conf {c}, \\"
                 for c in ("stop celery", "status celery", "start celery", "restart gunicorn", "restart celery")]
              + ["    /usr/bin/supervisorctl -c /etc/supervisor/supervisord.conf pid celery",
                 "deploy ALL=(root) NOPASSWD: DEPLOYER_SHOP"],
    "node": ["Cmnd_Alias DEPLOYER_SHOP = \\"]
            + [f"    /usr/bin/supervisorctl -c /etc/supervisor/supervisord.conf {c}, \\"
               for c in ("stop node-worker", "status node-worker", "start node-worker", "stop node-web",
                         "start node-web")]
            + ["    /usr/bin/supervisorctl -c /etc/supervisor/supervisord.conf pid node-worker",
               "deploy ALL=(root) NOPASSWD: DEPLOYER_SHOP"],
}
VISUDO = shutil.which("visudo") or ("/usr/sbin/visudo" if Path("/usr/sbin/visudo").exists() else None)


@pytest.mark.parametrize("kind", KINDS)
def test_init_writes_the_sudo_rules_of_its_kind(kind, tmp_path):
    out = io.StringIO()
    assert write_project(tmp_path, JsonReporter(out), kind=kind, env="prod", app="shop") == 0
    text = (tmp_path / "deploy" / "sudoers").read_text()
    lines = text.splitlines()
    assert lines[0] == "# deploy/sudoers: the sudo rules of deploy, the user deployer logs in as to deploy shop"
    assert "#   visudo -cf deploy/sudoers" in lines
    assert "#   install -m 0440 -o root -g root deploy/sudoers /etc/sudoers.d/shop" in lines
    assert lines[-len(RULES[kind]):] == RULES[kind]
    # every line is a comment, a blank, or part of the rules: nothing else reaches sudo
    assert all(not line or line.startswith("#") or line in RULES[kind] for line in lines)
    assert "wrote deploy/sudoers (the sudo rules of deploy: install it as /etc/sudoers.d/shop, see " \
           "its first lines)" in out.getvalue()
    if VISUDO:
        check = subprocess.run([VISUDO, "-cf", str(tmp_path / "deploy" / "sudoers")],
                               capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr


def test_init_keeps_an_existing_sudoers_file_unless_forced(tmp_path, rep):
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "sudoers").write_text("# mine\n")
    assert write_project(tmp_path, rep, kind="demo", env="prod", app="shop") == 0
    assert (tmp_path / "deploy" / "sudoers").read_text() == "# mine\n"
    assert write_project(tmp_path, rep, kind="demo", env="prod", app="shop", force=True) == 0
    assert "Cmnd_Alias DEPLOYER_SHOP" in (tmp_path / "deploy" / "sudoers").read_text()


def test_app_name_is_one_yaml_reads_as_a_string(tmp_path):
    assert app_name(tmp_path / "123") == "app-123"
    assert app_name(tmp_path / "2fa-server") == "app-2fa-server"
    assert app_name(tmp_path / "null") == "app-null"
    assert app_name(tmp_path / "True") == "app-true"


@pytest.mark.parametrize("kind", KINDS)
def test_the_health_url_in_the_inventory_comments_is_the_one_the_config_loads(kind, tmp_path, rep):
    assert write_project(tmp_path, rep, kind=kind, env="prod", app="shop") == 0
    url = load_config("prod", root=tmp_path, environ={}).health.url
    inventory = (tmp_path / "hosts" / "prod.yaml").read_text()
    assert f"#   url: \"{url}\"" in inventory and f"(default: the playbook's,\n# {url})" in inventory
    assert "healthz" not in inventory + (tmp_path / "playbooks" / "shop.yaml").read_text()


def test_init_in_a_directory_named_123_writes_a_project_that_config_check_passes(tmp_path, monkeypatch, capsys):
    project = tmp_path / "123"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.delenv("DEPLOYER_ROOT", raising=False)
    assert verbs.init(kind="django") == 0
    assert (project / "playbooks" / "app-123.yaml").is_file()
    capsys.readouterr()
    assert verbs.config_check("production") == 0
    assert "production: OK: hosts/production.yaml with playbook app-123" in capsys.readouterr().out


def test_init_writes_nothing_when_what_it_would_write_does_not_load_and_a_rerun_is_not_blocked(
        tmp_path, monkeypatch, capsys):
    """The project's own playbooks/django.yaml (broken here) is what `extends: django` finds: the
    rendered files are loaded with it before anything is written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "django.yaml").write_text("name: django\nstages: {pull: 3}\n")
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    capsys.readouterr()
    assert verbs.init(kind="django", app="shop") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: init: the files it would write do not load, so none was written:\n"
                          "playbooks/django.yaml: stages.pull")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before
    (tmp_path / "playbooks" / "django.yaml").unlink()
    assert verbs.init(kind="django", app="shop") == 0
    assert load_config("production", root=tmp_path, environ={}).playbook.name == "shop"


def test_init_refuses_an_app_name_yaml_would_not_read_as_a_string(tmp_path, rep):
    for app in ("123", "null", "9-lives"):
        with pytest.raises(ConfigError, match=rf"^--app {app}: expected lowercase letters, digits and -, "
                                              r"starting with a letter \(not null, true, false\)$"):
            write_project(tmp_path, rep, kind="django", app=app)
    assert list(tmp_path.iterdir()) == []
def _ns_of(path: Path):
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)  # as Invoke imports it
    return namespace["ns"]


def test_init_writes_a_tasks_py_that_is_deployers_collection(tmp_path, rep):
    from deployer.tasks import ns

    assert write_project(tmp_path, rep, kind="laravel", env="staging", app="shop") == 0
    text = (tmp_path / "tasks.py").read_text()
    assert "from deployer.tasks import ns" in text and "<<" not in text
    assert _ns_of(tmp_path / "tasks.py") is ns
    assert {"deploy", "rollback", "status"} <= set(ns.tasks)


def test_init_never_rewrites_a_projects_own_tasks_py(tmp_path):
    mine = "from invoke import task\n\n\n@task\ndef build(c):\n    pass\n"
    (tmp_path / "tasks.py").write_text(mine)
    out = io.StringIO()
    assert write_project(tmp_path, JsonReporter(out), kind="demo", env="prod", app="shop", force=True) == 0
    assert (tmp_path / "tasks.py").read_text() == mine
    assert "kept tasks.py (yours): add `from deployer.tasks import ns` to it" in out.getvalue()
