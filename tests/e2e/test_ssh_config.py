"""OpenSSH habits, as a user has them: deployer installed with pip into a fresh virtualenv, run
from an empty project directory outside this repository, with a HOME whose ~/.ssh/config names
the fleet's hosts by aliases reached through the fleet's bastion (ProxyJump), whose
~/.ssh/known_hosts records their keys (some under the alias, some under the address) and whose
~/.ssh/id_ed25519 is the only key: the inventory names no key, no known_hosts, no user and no
jump host."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from deployer.fleet import spec as S

from .conftest import ROOT, health, serving

#: what is not part of the source a user would install
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".fleet", "__pycache__", "*.pyc", "build",
                                     "*.egg-info", "reports", ".pytest_cache", ".ruff_cache")
ALIASES = {"web1": "fleet-web1", "web2": "fleet-web2", "web3": "fleet-web3", "db1": "fleet-db",
           "lb1": "fleet-lb"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip install` of this repository (a copy of its files: pip builds in the source tree)
    into a new virtualenv; its bin directory."""
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=_NOT_SOURCE)
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True)
    pip = subprocess.run([str(base / "venv" / "bin" / "python"), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", str(src)],
                         capture_output=True, text=True, timeout=300)
    took = time.monotonic() - t0
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    print(f"venv + pip install: {took:.1f}s")
    assert took < 90, f"venv + pip install took {took:.0f}s"
    return base / "venv" / "bin"


def _home(fleet, base: Path, *, trust_bastion: bool = True) -> Path:
    home = base / "home"
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, mode=0o700)
    key = ssh / "id_ed25519"
    shutil.copy(fleet.client_key, key)
    key.chmod(0o600)
    addresses = {h.name: h.address for h in fleet.spec.hosts}
    lines = ["# the fleet, by aliases, through its bastion",
             "Host fleet-bastion", f"    HostName {S.BASTION_ADDRESS}", "    User root", "",
             "Host fleet-*", "    ProxyJump fleet-bastion", "    User root", ""]
    for name, alias in ALIASES.items():
        lines += [f"Host {alias}", f"    HostName {addresses[name]}", ""]
    (ssh / "config").write_text("\n".join(lines))
    known = []
    for line in fleet.known_hosts.read_text().splitlines():
        address, keytype, blob = line.split()
        name = next(h.name for h in fleet.spec.hosts if h.address == address)
        if name == "bastion1":
            if trust_bastion:
                known.append(f"fleet-bastion {keytype} {blob}")  # under its alias
        elif name == "web1":
            known.append(f"{ALIASES[name]} {keytype} {blob}")  # under its alias
        else:
            known.append(line)  # under the address (HostName)
    (ssh / "known_hosts").write_text("\n".join(known) + "\n")
    return home


def _env(home: Path, bindir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DEPLOYER_", "SSH_AUTH_SOCK", "PYTHON", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), PATH=f"{bindir}:{env.get('PATH', '/usr/bin:/bin')}", NO_COLOR="1")
    return env


def _run(bindir: Path, cwd: Path, env: dict, *args: str, check: int | None = 0,
         timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(bindir / "deployer"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, (f"deployer {' '.join(args)}: exit {proc.returncode}\n"
                                          f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def _fleet_inventory(fleet, app: str) -> str:
    """The fleet's inventory with the hosts named by their aliases and no ssh settings at all."""
    data = yaml.safe_load(fleet.inventory_path.read_text())
    data["playbook"] = app
    data.pop("ssh", None)
    for h in data["hosts"]:
        h["address"] = ALIASES[h["name"]]
    return yaml.safe_dump(data, sort_keys=False)


def test_installed_deployer_deploys_through_the_bastion_by_ssh_config_aliases(fleet, installed, tmp_path):
    home = _home(fleet, tmp_path)
    env = _env(home, installed)
    assert not (ROOT / "deployer" / "__init__.py").is_relative_to(tmp_path)

    # `init --kind django` from an empty directory writes files that load as they are
    django = tmp_path / "shop"
    django.mkdir()
    out = _run(installed, django, env, "init", "--kind", "django", "--env", "production")
    assert "loads: playbook shop (extends django)" in out.stdout + out.stderr
    assert (django / "playbooks" / "shop.yaml").is_file() and (django / "hosts" / "known_hosts").is_file()

    # the demo app (what the fleet runs): init, then the fleet's hosts by their aliases
    project = tmp_path / "project"
    project.mkdir()
    _run(installed, project, env, "init", "--kind", "demo", "--env", "local")
    (project / "hosts" / "local.yaml").write_text(_fleet_inventory(fleet, "project"))
    assert "ssh:" not in (project / "hosts" / "local.yaml").read_text()

    # every host through the bastion: the hosts see its address as the client's
    seen = _run(installed, project, env, "exec", "--env", "local", "--", "echo $SSH_CONNECTION")
    for name in ALIASES:
        line = next(x for x in seen.stdout.splitlines() if x.split("|")[0].strip() == name)
        assert line.split("|", 1)[1].split()[0] == S.BASTION_ADDRESS, seen.stdout

    _run(installed, project, env, "deploy", "--env", "local", "--ref", "v2", "--yes")
    releases = serving(fleet)
    assert len(set(releases.values())) == 1 and None not in releases.values(), releases
    rel = next(iter(releases.values()))
    for h in fleet.spec.web_hosts:
        assert health(h.address).get("release") == rel


def test_unknown_jump_host_key_is_refused_naming_it(fleet, installed, tmp_path):
    home = _home(fleet, tmp_path, trust_bastion=False)
    env = _env(home, installed)
    project = tmp_path / "project"
    (project / "hosts").mkdir(parents=True)
    (project / "hosts" / "local.yaml").write_text(_fleet_inventory(fleet, "demo"))
    proc = _run(installed, project, env, "exec", "--env", "local", "--hosts", "web2", "--", "true",
                check=None)
    assert proc.returncode != 0
    assert (f"web2: jump host fleet-bastion ({S.BASTION_ADDRESS}:22): host key unknown"
            in proc.stdout + proc.stderr), proc.stdout + proc.stderr
