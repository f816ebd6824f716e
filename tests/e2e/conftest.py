"""The end-to-end tests run on the real local fleet: OpenSSH hosts in namespaces (needs root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from deployer.fleet.harness import Fleet

ROOT = Path(__file__).resolve().parents[2]


class CLI:
    """Runs `deployer` as a user would, in a subprocess: real exit codes and messages."""

    def __init__(self, inventory: str):
        self.inventory = inventory

    def __call__(self, *args: str, env: dict | None = None, timeout: float = 300,
                 check: int | None = None) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "deployer.cli", *args]
        if "--env" in args and "--inventory" not in args and args[0] != "fleet":
            argv += ["--inventory", self.inventory]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env={**os.environ, **(env or {})})
        if check is not None:
            assert proc.returncode == check, (
                f"{' '.join(args)}: exit {proc.returncode}, expected {check}\n"
                f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
        return proc

    def popen(self, *args: str) -> subprocess.Popen:
        argv = [sys.executable, "-m", "deployer.cli", *args]
        if "--inventory" not in args:
            argv += ["--inventory", self.inventory]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


# -- what the fleet really serves, read without deployer's own code ------------------------------

def serving(fleet: Fleet, deploy_to: str = "/srv/app", hosts=None) -> dict[str, str | None]:
    """host -> release id its `current` symlink points at (read inside the host's namespaces);
    `hosts`: the web hosts by default."""
    out = {}
    for h in fleet.spec.web_hosts if hosts is None else hosts:
        res = fleet.sh(h.name, f"readlink {deploy_to}/current || true")
        out[h.name] = Path(res.stdout.strip()).name or None
    return out


def health(address: str, timeout: float = 5) -> dict:
    try:
        with urllib.request.urlopen(f"http://{address}:8000/health", timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"{}")


def psql(fleet: Fleet, sql: str, db: str = "demo") -> str:
    res = fleet.sh("db1", f"runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -h /srv/pg/run "
                          f"-d {db} -XAtq -c {sh_quote(sql)}")
    return res.stdout.strip()


def sh_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def release_of_ref(cli: CLI, ref: str, env: str = "local") -> list[str]:
    proc = cli("releases", "--env", env, "--output", "json", check=0)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return [r["release"] for r in rows if r.get("event") == "row" and r.get("ref") == ref]


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Path:
    """deployer `pip install`ed into a fresh virtualenv: its bin directory (one per session)."""
    from .userland import pip_install

    return pip_install(tmp_path_factory.mktemp("install"))
