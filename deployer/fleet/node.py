"""The Node.js example app (examples/node-app) on the local fleet, installed on demand.

`NodeSite(fleet).install()` adds, to a fleet that is up, what the shipped `node` playbook needs,
and `remove()` takes it all away again (the fleet's own startup does none of this):

* an npm cache on this machine (`<fleet dir>/npm-cache`, kept between runs): `npm ci` of the
  app's package.json and package-lock.json fills it once from the registry this machine's npm
  uses (checked offline first: a filled cache is enough). The hosts have no registry: each
  host's npm reads that cache offline (`~deploy/.npmrc`, the hosts' own /home/deploy:
  `cache=...`, `offline=true`; the cache is the deploy user's), so the playbook's `npm ci` installs exactly the locked packages;
* a database `node` on db1's PostgreSQL (owner `demo`);
* on each web host: `shared/.env` (DATABASE_URL, PORT) under /srv/node, and two programs in the
  fleet's supervisord, `node-web` (Express on port 3000) and `node-worker`, both started from
  /srv/node/current (so that a restart runs the current release);
* the app's git repository (`<fleet dir>/node-app`, tags v1, v2, v3-bad) and an inventory for
  it (`<fleet dir>/inventory-node.yaml`, env state under /srv/node).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import spec as S
from .node_repo import NODE_APP_DIR, build_node_repo
from .procs import FleetError
from .sites import Programs, deploy_owned, grant

DEPLOY_TO = "/srv/node"
PORT = 3000
DB_NAME = "node"
WEB_HOSTS = 2  # the first web hosts of the fleet: enough to see each serve
WEB_PROGRAM = "node-web"
WORKER_PROGRAM = "node-worker"
PG_BIN = "/usr/lib/postgresql/15/bin"
NODE = "/usr/bin/node"
NPM = "/usr/bin/npm"
_BEGIN = "; >>> node example app (deployer.fleet.node)"
_END = "; <<< node example app"


def npm_cache_dir(fleet_dir: Path) -> Path:
    return Path(os.environ.get("DEPLOYER_NPM_CACHE", fleet_dir / "npm-cache")).resolve()


def tool(name: str) -> str:
    """The absolute path of `name` (node, npm): the hosts share this machine's /usr."""
    found = shutil.which(name, path="/usr/bin:/usr/local/bin:/bin")
    if not found:
        raise FleetError(f"fleet: `{name}` not found; run ./bootstrap to install Node.js and npm")
    return found


def fill_npm_cache(cache: Path, app: Path = NODE_APP_DIR / "app", log=print) -> Path:
    """Every package of `app`'s package-lock.json in the npm cache `cache`: checked with an
    offline `npm ci` first (a filled cache is enough), else fetched with an online one."""
    cache.mkdir(parents=True, exist_ok=True)
    npm = tool("npm")
    with tempfile.TemporaryDirectory(prefix="node-app-deps-") as scratch:
        for name in ("package.json", "package-lock.json"):
            shutil.copy(app / name, Path(scratch) / name)
        base = [npm, "ci", "--cache", str(cache), "--ignore-scripts", "--no-audit", "--no-fund",
                "--loglevel=error"]
        offline = subprocess.run(base + ["--offline"], cwd=scratch, capture_output=True, text=True,
                                 timeout=600)
        if offline.returncode == 0:
            return cache
        log(f"fleet: downloading the Node.js app's packages into {cache}")
        online = subprocess.run(base + ["--prefer-offline"], cwd=scratch, capture_output=True,
                                text=True, timeout=900)
        if online.returncode != 0:
            raise FleetError(f"fleet: npm ci for the Node.js app failed:\n{online.stderr[-2000:]}")
    return cache


def npmrc(cache: Path) -> str:
    """A host's npm configuration: no registry, every package from the cache."""
    return (f"cache={cache}\noffline=true\naudit=false\nfund=false\nupdate-notifier=false\n"
            f"logs-dir=/home/{S.DEPLOY_USER}/.npm/_logs\n")


def supervisor_programs(node: str = NODE) -> str:
    common = ("autostart=true\nautorestart=true\nstartsecs=1\nstartretries=2\nstopsignal=TERM\n"
              "stopasgroup=true\nkillasgroup=true\nredirect_stderr=true\n"
              f"user={S.DEPLOY_USER}\n"
              f'environment=NODE_ENV="production",HOME="/home/{S.DEPLOY_USER}",USER="{S.DEPLOY_USER}"\n')
    return f"""{_BEGIN}
[program:{WEB_PROGRAM}]
command={node} {DEPLOY_TO}/current/server.js
directory={DEPLOY_TO}/current
stopwaitsecs=10
stdout_logfile=/srv/supervisor/log/{WEB_PROGRAM}.log
{common}
[program:{WORKER_PROGRAM}]
command={node} {DEPLOY_TO}/current/worker.js
directory={DEPLOY_TO}/current
stopwaitsecs=30
stdout_logfile=/srv/supervisor/log/{WORKER_PROGRAM}.log
{common}{_END}
"""


def app_env(db_password: str) -> str:
    return (f"DATABASE_URL=postgresql://{S.DB_USER}:{db_password}@{S.DB_ADDRESS}:5432/{DB_NAME}\n"
            f"PORT={PORT}\n")


def inventory(spec: S.FleetSpec, fleet_dir: Path, repo: Path, node: str = NODE, npm: str = NPM) -> str:
    lines = [
        "# The Node.js example app on the local fleet (written by deployer.fleet.node).",
        "playbook: node",
        f"repo: {repo}",
        f"deploy_to: {DEPLOY_TO}",
        "keep_releases: 3",
        *S.ssh_section(fleet_dir),
        "database:",
        "  kind: postgresql",
        f"  name: {DB_NAME}",
        f"  user: {S.DB_USER}",
        f"  bin_dir: {PG_BIN}",
        "  socket_dir: /srv/pg/run",
        f"  backup_dir: {DEPLOY_TO}/backups",
        "health:",
        f'  url: "http://{{address}}:{PORT}/health"',
        "  interval: 0.25",
        "  timeout: 2.0",
        "  max_attempts: 40",
        "vars:",
        f"  node: {node}",
        f"  npm: {npm}",
        "  supervisorctl: /srv/bin/supervisorctl",
        "  supervisor_conf: /srv/supervisor/supervisord.conf",
        f"  web_program: {WEB_PROGRAM}",
        f"  worker_program: {WORKER_PROGRAM}",
        "hosts:",
    ]
    for h in [spec.host("db1"), *web_hosts(spec)]:
        lines += [f"  - name: {h.name}", f"    address: {h.address}", f"    roles: [{', '.join(h.roles)}]"]
    return "\n".join(lines) + "\n"


def web_hosts(spec: S.FleetSpec) -> list[S.FleetHost]:
    """The web hosts the Node.js app runs on."""
    return spec.web_hosts[:WEB_HOSTS]


class NodeSite:
    """The Node.js example app's part of a fleet that is up (see the module's docstring)."""

    def __init__(self, fleet):
        self.fleet = fleet
        self.programs = Programs(fleet, _BEGIN, _END)

    @property
    def repo(self) -> Path:
        return self.fleet.dir / "node-app"

    @property
    def inventory_path(self) -> Path:
        return self.fleet.dir / "inventory-node.yaml"

    @property
    def npm_cache(self) -> Path:
        return npm_cache_dir(self.fleet.dir)

    def _npmrc(self, host: str) -> Path:
        return self.fleet.hostdir(host) / "home" / ".npmrc"

    def install(self, log=print) -> dict[str, str]:
        """Install everything; return the repo's tag -> commit sha."""
        node, npm = tool("node"), tool("npm")
        self.remove(quiet=True)  # what a crashed run left
        fleet, spec = self.fleet, self.fleet.spec
        cache = fill_npm_cache(self.npm_cache, log=log)
        from .hostfs import chown_tree

        chown_tree(cache)  # npm writes its index and temporary files there
        tags = build_node_repo(self.repo)
        pg = f"runuser -u postgres -- {PG_BIN}"
        deploy_owned(fleet, "db1", DEPLOY_TO)
        deploy_owned(fleet, "db1", f"{DEPLOY_TO}/backups", mode="700")
        fleet.sh("db1", f"{pg}/dropdb -h /srv/pg/run -U postgres --if-exists --force {DB_NAME} && "
                        f"{pg}/createdb -h /srv/pg/run -U postgres -O {S.DB_USER} {DB_NAME}")
        env = app_env(fleet._db_password())
        for h in web_hosts(spec):
            self._npmrc(h.name).write_text(npmrc(cache))
            shared = self.fleet.hostdir(h.name) / "srv" / DEPLOY_TO.removeprefix("/srv/") / "shared"
            shared.mkdir(parents=True, exist_ok=True)
            fd = os.open(shared / ".env", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(env)
            deploy_owned(fleet, h.name, DEPLOY_TO)
            self.programs.add(h.name, supervisor_programs(node))
        grant(fleet, web_hosts(spec), lambda d: inventory(spec, d, self.repo, node, npm))
        self.programs.update()
        self.inventory_path.write_text(inventory(spec, fleet.dir, self.repo, node, npm))
        return tags

    def remove(self, quiet: bool = False) -> None:
        """Take away everything install() added (idempotent)."""
        fleet, spec = self.fleet, self.fleet.spec
        changed = self.programs.remove()
        for h in spec.web_hosts:
            self._npmrc(h.name).unlink(missing_ok=True)
        if changed:
            self.programs.update()
        grant(fleet, spec.web_hosts, None)
        fleet.sh("db1", f"runuser -u postgres -- {PG_BIN}/dropdb -h /srv/pg/run -U postgres --if-exists "
                        f"--force {DB_NAME}", check=False)
        for h in spec.hosts:
            fleet.sh(h.name, f"rm -rf {DEPLOY_TO} /home/{S.DEPLOY_USER}/.npm", check=False)
        self.inventory_path.unlink(missing_ok=True)
        if not quiet:
            print("fleet: the Node.js example app removed")
