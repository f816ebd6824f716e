"""OpenSSH habits, as a user has them: deployer installed with pip into a fresh virtualenv, run
from an empty project directory outside this repository, with a HOME whose ~/.ssh/config names
the fleet's hosts by aliases reached through the fleet's bastion (ProxyJump), whose
~/.ssh/known_hosts records their keys (some under the alias, some under the address) and whose
~/.ssh/id_ed25519 is the only key: the inventory names no key, no known_hosts, no user and no
jump host."""

from __future__ import annotations

import yaml

from deployer.fleet import spec as S

from .conftest import ROOT, health, serving
from .userland import ALIASES, run_installed, user_env, user_home


def _fleet_inventory(fleet, app: str) -> str:
    """The fleet's inventory with the hosts named by their aliases and no ssh settings at all."""
    data = yaml.safe_load(fleet.inventory_path.read_text())
    data["playbook"] = app
    data.pop("ssh", None)
    for h in data["hosts"]:
        h["address"] = ALIASES[h["name"]]
    return yaml.safe_dump(data, sort_keys=False)


def test_installed_deployer_deploys_through_the_bastion_by_ssh_config_aliases(fleet, installed, tmp_path):
    home = user_home(fleet, tmp_path)
    env = user_env(home, installed)
    assert not (ROOT / "deployer" / "__init__.py").is_relative_to(tmp_path)

    # `init --kind django` from an empty directory writes files that load as they are
    django = tmp_path / "shop"
    django.mkdir()
    out = run_installed(installed, django, env, "init", "--kind", "django", "--env", "production")
    assert "loads: playbook shop (extends django)" in out.stdout + out.stderr
    assert (django / "playbooks" / "shop.yaml").is_file() and (django / "hosts" / "known_hosts").is_file()

    # the demo app (what the fleet runs): init, then the fleet's hosts by their aliases
    project = tmp_path / "project"
    project.mkdir()
    run_installed(installed, project, env, "init", "--kind", "demo", "--env", "local")
    (project / "hosts" / "local.yaml").write_text(_fleet_inventory(fleet, "project"))
    assert "ssh:" not in (project / "hosts" / "local.yaml").read_text()

    # every host through the bastion: the hosts see its address as the client's
    seen = run_installed(installed, project, env, "exec", "--env", "local", "--", "echo $SSH_CONNECTION")
    for name in ALIASES:
        line = next(x for x in seen.stdout.splitlines() if x.split("|")[0].strip() == name)
        assert line.split("|", 1)[1].split()[0] == S.BASTION_ADDRESS, seen.stdout

    run_installed(installed, project, env, "deploy", "--env", "local", "--ref", "v2", "--yes")
    releases = serving(fleet)
    assert len(set(releases.values())) == 1 and None not in releases.values(), releases
    rel = next(iter(releases.values()))
    for h in fleet.spec.web_hosts:
        assert health(fleet, h).get("release") == rel


def test_unknown_jump_host_key_is_refused_naming_it(fleet, installed, tmp_path):
    home = user_home(fleet, tmp_path, trust_bastion=False)
    env = user_env(home, installed)
    project = tmp_path / "project"
    (project / "hosts").mkdir(parents=True)
    (project / "hosts" / "local.yaml").write_text(_fleet_inventory(fleet, "demo"))
    proc = run_installed(installed, project, env, "exec", "--env", "local", "--hosts", "web2", "--", "true",
                check=None)
    assert proc.returncode != 0
    assert (f"web2: jump host fleet-bastion ({S.BASTION_PUBLIC}:22): host key unknown"
            in proc.stdout + proc.stderr), proc.stdout + proc.stderr
