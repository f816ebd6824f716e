"""A user's machine, as the tests that run deployer from outside this repository build it:
deployer installed with pip into a fresh virtualenv, and a HOME whose ~/.ssh/config names the
fleet's hosts by aliases reached through the fleet's bastion (ProxyJump), whose
~/.ssh/known_hosts records their keys (some under the alias, some under the address) and whose
~/.ssh/id_ed25519 is the only key."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from deployer.fleet import spec as S

from .conftest import ROOT

#: what is not part of the source a user would install
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".fleet", "__pycache__", "*.pyc", "build",
                                     "*.egg-info", "reports", ".pytest_cache", ".ruff_cache")
ALIASES = {"web1": "fleet-web1", "web2": "fleet-web2", "web3": "fleet-web3", "db1": "fleet-db",
           "lb1": "fleet-lb"}


def pip_install(base: Path) -> Path:
    """`pip install` of this repository (a copy of its files: pip builds in the source tree)
    into a new virtualenv under `base`; its bin directory."""
    src = base / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=_NOT_SOURCE)
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True)
    pip = subprocess.run([str(base / "venv" / "bin" / "python"), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", str(src)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return base / "venv" / "bin"


def user_home(fleet, base: Path, *, trust_bastion: bool = True) -> Path:
    home = base / "home"
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, mode=0o700)
    key = ssh / "id_ed25519"
    shutil.copy(fleet.client_key, key)
    key.chmod(0o600)
    addresses = {h.name: h.address for h in fleet.spec.hosts}
    lines = ["# the fleet, by aliases, through its bastion",
             "Host fleet-bastion", f"    HostName {S.BASTION_PUBLIC}", f"    User {S.DEPLOY_USER}", "",
             "Host fleet-*", "    ProxyJump fleet-bastion", f"    User {S.DEPLOY_USER}", ""]
    for name, alias in ALIASES.items():
        lines += [f"Host {alias}", f"    HostName {addresses[name]}", ""]
    (ssh / "config").write_text("\n".join(lines))
    known = []
    for line in fleet.known_hosts.read_text().splitlines():
        address, keytype, blob = line.split()
        host = next(h for h in fleet.spec.hosts if address in (h.address, h.public))
        name = host.name
        if name == "bastion1":
            if trust_bastion and address == host.public:
                known.append(f"fleet-bastion {keytype} {blob}")  # under its alias
        elif address == host.public:
            continue  # lb1's public address: no SSH there
        elif name == "web1":
            known.append(f"{ALIASES[name]} {keytype} {blob}")  # under its alias
        else:
            known.append(line)  # under the address (HostName)
    (ssh / "known_hosts").write_text("\n".join(known) + "\n")
    return home


def user_env(home: Path, bindir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DEPLOYER_", "SSH_AUTH_SOCK", "PYTHON", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), PATH=f"{bindir}:{env.get('PATH', '/usr/bin:/bin')}", NO_COLOR="1")
    return env


def run_installed(bindir: Path, cwd: Path, env: dict, *args: str, check: int | None = 0,
                  timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(bindir / "deployer"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, (f"deployer {' '.join(args)}: exit {proc.returncode}\n"
                                          f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc
