"""The Django example app (examples/django-app) on the local fleet, installed on demand.

`DjangoSite(fleet).install()` adds, to a fleet that is up, what the shipped `django` playbook
needs, and `remove()` takes it all away again (the fleet's own startup does none of this):

* a wheelhouse on this machine (`<fleet dir>/wheels`, kept between runs; `pip download` fills
  it once): the hosts have no index, so each host's pip is configured with `no-index` and
  `find-links` to it (`~deploy/.config/pip/pip.conf`, the hosts' own /home/deploy);
* Redis (Debian's redis-server) on db1, the Celery broker; a database `django` on db1's
  PostgreSQL (owner `demo`);
* on each web host: `shared/.env` (SECRET_KEY, DEBUG, ALLOWED_HOSTS, DATABASE_URL, REDIS_URL)
  under /srv/django, and two programs in the fleet's supervisord, `django-web` (gunicorn on
  port 8001) and `django-celery`, both started from /srv/django/current (so that a restart
  runs the current release's virtualenv);
* the app's git repository (`<fleet dir>/django-app`, tags v1, v2, v3-bad) and an inventory
  for it (`<fleet dir>/inventory-django.yaml`, env state under /srv/django).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from . import spec as S
from .django_repo import DJANGO_APP_DIR, build_django_repo
from .procs import FleetError
from .sites import Programs, deploy_owned, grant

DEPLOY_TO = "/srv/django"
PORT = 8001
DB_NAME = "django"
REDIS_PORT = 6379
WEB_HOSTS = 2  # the first web hosts of the fleet: enough to see each serve, half the builds of 3+
WEB_PROGRAM = "django-web"
WORKER_PROGRAM = "django-celery"
REQUIREMENTS = DJANGO_APP_DIR / "app" / "requirements.txt"
PG_BIN = "/usr/lib/postgresql/15/bin"
_BEGIN = "; >>> django example app (deployer.fleet.django)"
_END = "; <<< django example app"


def wheelhouse_dir(fleet_dir: Path) -> Path:
    return Path(os.environ.get("DEPLOYER_WHEELHOUSE", fleet_dir / "wheels")).resolve()


def build_wheelhouse(dest: Path, requirements: Path = REQUIREMENTS, log=print) -> Path:
    """Every wheel `requirements` needs, in `dest`: checked offline first (a cached wheelhouse
    is enough), else fetched with `pip download` from the index this machine's pip uses."""
    dest.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary", ":all:", "-d", str(dest), "-r", str(requirements)]
    offline = subprocess.run(base + ["--no-index", "--find-links", str(dest)], capture_output=True,
                             text=True)
    if offline.returncode == 0:
        return dest
    log(f"fleet: downloading the Django app's wheels into {dest}")
    online = subprocess.run(base, capture_output=True, text=True, timeout=900)
    if online.returncode != 0:
        raise FleetError(f"fleet: pip download for the Django app failed:\n{online.stderr[-2000:]}")
    return dest


def supervisor_programs() -> str:
    # the web program: `startsecs=0`, as the playbook advises (the deploy's health check tells
    # whether gunicorn serves); the worker keeps supervisord's one second
    common = ("autostart=true\nautorestart=true\nstartretries=2\nstopsignal=TERM\n"
              "stopasgroup=true\nkillasgroup=true\nredirect_stderr=true\n")
    return f"""{_BEGIN}
[program:{WEB_PROGRAM}]
command={DEPLOY_TO}/current/.venv/bin/gunicorn --bind 0.0.0.0:{PORT} --workers 2 --graceful-timeout 10 project.wsgi
directory={DEPLOY_TO}/current
stopwaitsecs=15
startsecs=0
stdout_logfile=/srv/supervisor/log/{WEB_PROGRAM}.log
{S.PROGRAM_USER}{common}
[program:{WORKER_PROGRAM}]
command={DEPLOY_TO}/current/.venv/bin/celery -A project worker --concurrency 1 --loglevel INFO --without-gossip --without-mingle --without-heartbeat
directory={DEPLOY_TO}/current
stopwaitsecs=30
startsecs=1
stdout_logfile=/srv/supervisor/log/{WORKER_PROGRAM}.log
{S.PROGRAM_USER}{common}{_END}
"""


def app_env(spec: S.FleetSpec, db_password: str, secret_key: str) -> str:
    web = web_hosts(spec)
    hosts = ",".join([h.address for h in web] + [h.name for h in web] + ["localhost", S.LB_PUBLIC])
    return (f"SECRET_KEY={secret_key}\nDEBUG=false\nALLOWED_HOSTS={hosts}\n"
            f"DATABASE_URL=postgresql://{S.DB_USER}:{db_password}@{S.DB_ADDRESS}:5432/{DB_NAME}\n"
            f"REDIS_URL=redis://{S.DB_ADDRESS}:{REDIS_PORT}/0\n")


def inventory(spec: S.FleetSpec, fleet_dir: Path, repo: Path) -> str:
    lines = [
        "# The Django example app on the local fleet (written by deployer.fleet.django).",
        "playbook: django",
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
        "  max_attempts: 24",
        "vars:",
        "  base_python: /srv/bin/python",
        "  supervisorctl: /srv/bin/supervisorctl",
        "  supervisor_conf: /srv/supervisor/supervisord.conf",
        f"  web_program: {WEB_PROGRAM}",
        f"  worker_program: {WORKER_PROGRAM}",
        "lb:",
        "  kind: haproxy",
        "  backend: django",
        f"  socket: {LB_DIR}/admin.sock",
        f"  up_timeout: {S.LB_UP_TIMEOUT}",
        "hosts:",
    ]
    for h in [spec.host("lb1"), spec.host("db1"), *web_hosts(spec)]:
        lines += [f"  - name: {h.name}", f"    address: {h.address}", f"    roles: [{', '.join(h.roles)}]"]
    return "\n".join(lines) + "\n"


#: the Django app's own HAProxy on lb1: users at LB_PUBLIC:PORT, its check sending a Host header
#: Django accepts (ALLOWED_HOSTS), and the gate's header (servers in maintenance stay UP)
LB_DIR = "/srv/haproxy-django"


def haproxy_config(spec: S.FleetSpec) -> str:
    return S.haproxy_config(web_hosts(spec), backend="django", port=PORT, bind=f"{S.LB_PUBLIC}:{PORT}",
                            socket=f"{LB_DIR}/admin.sock", pidfile=f"{LB_DIR}/haproxy.pid",
                            check_host=S.LB_PUBLIC)


def web_hosts(spec: S.FleetSpec) -> list[S.FleetHost]:
    """The web hosts the Django app runs on."""
    return spec.web_hosts[:WEB_HOSTS]


class DjangoSite:
    """The Django example app's part of a fleet that is up (see the module's docstring)."""

    def __init__(self, fleet):
        self.fleet = fleet
        self.programs = Programs(fleet, _BEGIN, _END)

    @property
    def repo(self) -> Path:
        return self.fleet.dir / "django-app"

    @property
    def inventory_path(self) -> Path:
        return self.fleet.dir / "inventory-django.yaml"

    @property
    def wheelhouse(self) -> Path:
        return wheelhouse_dir(self.fleet.dir)

    def _pip_conf(self, host: str) -> Path:
        return self.fleet.hostdir(host) / "home" / ".config" / "pip" / "pip.conf"

    def install(self, log=print) -> dict[str, str]:
        """Install everything; return the repo's tag -> commit sha."""
        if not shutil.which("redis-server"):
            raise FleetError("fleet: `redis-server` not found; run ./bootstrap to install the fleet's packages")
        self.remove(quiet=True)  # what a crashed run left
        fleet, spec = self.fleet, self.fleet.spec
        wheels = build_wheelhouse(self.wheelhouse, log=log)
        tags = build_django_repo(self.repo)
        deploy_owned(fleet, "db1", DEPLOY_TO)
        deploy_owned(fleet, "db1", f"{DEPLOY_TO}/backups", mode="700")
        fleet.sh("db1", "mkdir -p /srv/redis && "
                        f"redis-server --bind {S.DB_ADDRESS} --port {REDIS_PORT} --protected-mode no "
                        "--save '' --appendonly no --daemonize yes --dir /srv/redis "
                        "--pidfile /srv/redis/redis.pid --logfile /srv/redis/redis.log")
        pg = f"runuser -u postgres -- {PG_BIN}"
        fleet.sh("db1", f"{pg}/dropdb -h /srv/pg/run -U postgres --if-exists --force {DB_NAME} && "
                        f"{pg}/createdb -h /srv/pg/run -U postgres -O {S.DB_USER} {DB_NAME}")
        env = app_env(spec, fleet._db_password(), secrets.token_urlsafe(40))
        for h in web_hosts(spec):
            pip_conf = self._pip_conf(h.name)
            pip_conf.parent.mkdir(parents=True, exist_ok=True)
            pip_conf.write_text(f"[global]\nno-index = true\nfind-links = {wheels}\n")
            deploy_owned(fleet, h.name, f"/home/{S.DEPLOY_USER}/.config")
            shared = self.fleet.hostdir(h.name) / "srv" / DEPLOY_TO.removeprefix("/srv/") / "shared"
            shared.mkdir(parents=True, exist_ok=True)
            env_file = shared / ".env"
            fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(env)
            deploy_owned(fleet, h.name, DEPLOY_TO)
            self.programs.add(h.name, supervisor_programs())
        grant(fleet, web_hosts(spec), lambda d: inventory(spec, d, self.repo))
        self.programs.update()
        fleet.sh("lb1", f"mkdir -p {LB_DIR} && cat > {LB_DIR}/haproxy.cfg && haproxy -D -f {LB_DIR}/haproxy.cfg",
                 input=haproxy_config(spec))
        self.inventory_path.write_text(inventory(spec, fleet.dir, self.repo))
        return tags

    def remove(self, quiet: bool = False) -> None:
        """Take away everything install() added (idempotent)."""
        fleet, spec = self.fleet, self.fleet.spec
        changed = self.programs.remove()
        for h in spec.web_hosts:
            self._pip_conf(h.name).unlink(missing_ok=True)
        if changed:
            self.programs.update()
        grant(fleet, spec.web_hosts, None)
        fleet.sh("lb1", f"if [ -f {LB_DIR}/haproxy.pid ]; then kill $(cat {LB_DIR}/haproxy.pid) 2>/dev/null; fi; "
                        f"rm -rf {LB_DIR}", check=False)
        fleet.sh("db1", "if [ -f /srv/redis/redis.pid ]; then kill $(cat /srv/redis/redis.pid) 2>/dev/null; "
                        "for i in $(seq 1 50); do [ -f /srv/redis/redis.pid ] || break; sleep 0.1; done; fi; "
                        "rm -rf /srv/redis", check=False)
        fleet.sh("db1", f"runuser -u postgres -- {PG_BIN}/dropdb -h /srv/pg/run -U postgres --if-exists "
                        f"--force {DB_NAME}", check=False)
        for h in spec.hosts:
            fleet.sh(h.name, f"rm -rf {DEPLOY_TO}", check=False)
        self.inventory_path.unlink(missing_ok=True)
        if not quiet:
            print("fleet: the Django example app removed")
