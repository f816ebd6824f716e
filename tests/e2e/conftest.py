"""The end-to-end tests run on the real local fleet: OpenSSH hosts in namespaces (needs root)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from deployer.fleet.harness import Fleet

ROOT = Path(__file__).resolve().parents[2]


def faketime(offset: str) -> tuple[str, ...]:
    """The argv prefix that runs a command with its clock `offset` off this machine's (libfaketime,
    e.g. "-1h", "+1h"), the multi-threaded library (deployer runs hosts in threads). The monotonic
    clock is shifted too: with it excluded, libfaketime turns Python's sleeps (absolute monotonic
    deadlines) into EINVAL; shifted by the same offset, every wait inside the run stays consistent."""
    if shutil.which("faketime") is None:
        pytest.fail("faketime is not installed (the bootstrap script installs it)")
    return ("faketime", "-m", "-f", offset)


class CLI:
    """Runs `deployer` as a user would, in a subprocess: real exit codes and messages. `prefix`:
    an argv the command runs under (e.g. `faketime(...)`: an orchestrator whose clock is off)."""

    def __init__(self, inventory: str, prefix: tuple[str, ...] = ()):
        self.inventory = inventory
        self.prefix = tuple(prefix)

    def under(self, *prefix: str) -> CLI:
        """The same CLI, its commands run under `prefix`."""
        return CLI(self.inventory, prefix)

    def __call__(self, *args: str, env: dict | None = None, timeout: float = 300,
                 check: int | None = None) -> subprocess.CompletedProcess:
        argv = [*self.prefix, sys.executable, "-m", "deployer.cli", *args]
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
        argv = [*self.prefix, sys.executable, "-m", "deployer.cli", *args]
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


_HTTP = r"""
import json, sys, urllib.error, urllib.request
url, data, headers, timeout = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
req = urllib.request.Request(url, data=data.encode() if data else None, headers=headers)
try:
    with urllib.request.urlopen(req, timeout=timeout) as r:
        status, hdrs, body = r.status, dict(r.headers), r.read()
except urllib.error.HTTPError as e:
    status, hdrs, body = e.code, dict(e.headers), e.read()
print(json.dumps({"status": status, "headers": hdrs, "body": body.decode("utf-8", "replace")}))
"""


class Response(NamedTuple):
    status: int
    headers: dict
    body: str

    def json(self) -> dict:
        return json.loads(self.body or "{}")


def http(fleet: Fleet, host, path: str = "/", port: int = 8000, data: bytes | str | None = None,
         headers: dict | None = None, timeout: float = 5) -> Response:
    """An HTTP request to a host's own app, made inside the host (its namespaces): the app hosts
    are on the private network, which this machine cannot reach (what users reach is the load
    balancer's public address). `host`: a name or a FleetHost. Raises ConnectionError when the
    app does not answer."""
    name = host if isinstance(host, str) else host.name
    address = fleet.spec.host(name).address  # the host's own (apps check the Host header)
    body = data.decode() if isinstance(data, bytes) else (data or "")
    proc = fleet.nsenter(name, [sys.executable, "-I", "-c", _HTTP, f"http://{address}:{port}{path}", body,
                                json.dumps(headers or {}), str(timeout)], check=False, timeout=timeout + 30)
    if proc.returncode != 0:
        raise ConnectionError(f"{name}: GET :{port}{path}: {proc.stderr.strip().splitlines()[-1:]}")
    out = json.loads(proc.stdout)
    return Response(out["status"], out["headers"], out["body"])


def health(fleet: Fleet, host, timeout: float = 5) -> dict:
    """The demo app's /health on `host` (a name or a FleetHost), read inside the host."""
    return http(fleet, host, "/health", timeout=timeout).json()


def lb_url(fleet: Fleet, path: str = "/") -> str:
    """The site as its users reach it: the load balancer's public address."""
    return f"http://{fleet.spec.host('lb1').public}{path}"


def psql(fleet: Fleet, sql: str, db: str = "demo") -> str:
    res = fleet.sh("db1", f"runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -h /srv/pg/run "
                          f"-d {db} -XAtq -c {sh_quote(sql)}")
    return res.stdout.strip()


#: what a restore must give back besides rows: each object's owner, privileges and comment
#: (the schema's, its relations', their columns'), read from the catalog
CATALOG_SQL = (
    "SELECT 'schema ' || n.nspname || ' ' || n.nspowner::regrole || ' ' || coalesce(n.nspacl::text, '-') || ' '"
    " || coalesce(obj_description(n.oid, 'pg_namespace'), '-') FROM pg_namespace n WHERE n.nspname = 'public' "
    "UNION ALL SELECT c.relkind::text || ' ' || c.relname || ' ' || c.relowner::regrole || ' ' "
    "|| coalesce(c.relacl::text, '-') || ' ' || coalesce(obj_description(c.oid, 'pg_class'), '-') "
    "FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace "
    "UNION ALL SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) "
    "|| ' ' || coalesce(a.attacl::text, '-') || ' ' || coalesce(col_description(c.oid, a.attnum), '-') "
    "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid WHERE c.relnamespace = 'public'::regnamespace "
    "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1")

#: anything deployer creates in the app's database (the write fence, its function, triggers)
DEPLOYER_OBJECTS_SQL = (
    "SELECT relname FROM pg_class WHERE relname LIKE 'deployer%' UNION ALL "
    "SELECT proname FROM pg_proc WHERE proname LIKE 'deployer%' UNION ALL "
    "SELECT tgname FROM pg_trigger WHERE tgname LIKE 'deployer%' ORDER BY 1")


def catalog(fleet: Fleet) -> list[str]:
    return psql(fleet, CATALOG_SQL).splitlines()


def deployer_objects(fleet: Fleet) -> list[str]:
    return psql(fleet, DEPLOYER_OBJECTS_SQL).splitlines()


def schema_dump(fleet: Fleet) -> str:
    """pg_dump --schema-only of the demo database (its random \\restrict key dropped)."""
    out = fleet.sh("db1", "runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_dump -h /srv/pg/run -s demo").stdout
    return "\n".join(line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))


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
