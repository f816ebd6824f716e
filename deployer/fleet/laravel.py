"""The Laravel example app (examples/laravel-app) on the local fleet, installed on demand.

`LaravelSite(fleet).install()` adds, to a fleet that is up, what the shipped `laravel` playbook
needs, and `remove()` takes it all away again (the fleet's own startup does none of this):

* nothing to download: the framework is Debian's (php-laravel-framework, Laravel 8, under
  /usr/share/php, which the hosts share with this machine), and the app's composer.json has no
  package to fetch (packagist disabled), so each release's `composer install` only writes its
  autoloader, offline;
* a database `laravel` on db1's PostgreSQL (owner `demo`), or with `LaravelSite(fleet, "mariadb")`
  on a MariaDB server of its own on db1 (Debian's mariadb-server: its data directory, socket and
  logs under db1's /srv/mysql, listening on db1's address; account `demo` with ALL on
  `laravel` and on the test restores' `laravel_deployer_check`, its password in an option file
  of the deploy user, `~/.laravel-db.cnf`, mode 0600), stopped and removed by `remove()`;
* on each web host: `shared/.env` (APP_KEY, DB_*, ...) and `shared/storage` under
  /srv/laravel, and a web stack in the fleet's supervisord, all of its files under the host's
  own /srv/laravel-web (the hosts share /etc, /run and /var): `laravel-fpm` (php-fpm8.2, one
  pool on a unix socket), `laravel-nginx` (nginx on port 8080, root /srv/laravel/current/public,
  SCRIPT_FILENAME from $realpath_root) and `laravel-worker` (`artisan queue:work` started from
  /srv/laravel/current);
* the app's git repository (`<fleet dir>/laravel-app`, tags v1, v2, v3-bad) and an inventory
  for it (`<fleet dir>/inventory-laravel.yaml`, env state under /srv/laravel).

On the fleet php-fpm, nginx and the worker run as the deploy user (their master processes too,
so the playbook's reload signals php-fpm itself: its pid file is the deploy user's); on a real
server php-fpm's pool and nginx's workers run as www-data. The web hosts get the sudo rules the
`laravel` playbook needs.
"""

from __future__ import annotations

import base64
import os
import secrets
import shlex
from pathlib import Path

from . import spec as S
from .laravel_repo import build_laravel_repo
from .procs import FleetError
from .sites import Programs, deploy_owned, grant

DEPLOY_TO = "/srv/laravel"
WEB_DIR = "/srv/laravel-web"
PORT = 8080
DB_NAME = "laravel"
WEB_HOSTS = 2  # the first web hosts of the fleet: enough to see each serve
FPM_PROGRAM = "laravel-fpm"
NGINX_PROGRAM = "laravel-nginx"
WORKER_PROGRAM = "laravel-worker"
PG_BIN = "/usr/lib/postgresql/15/bin"
MARIADBD = "/usr/sbin/mariadbd"
MY_DIR = "/srv/mysql"  # db1's MariaDB: data, socket, logs
MY_SOCKET = f"{MY_DIR}/run/mysqld.sock"
MY_ROOT = f"mariadb --no-defaults -S {MY_SOCKET}"  # root, by unix_socket authentication
MY_OPTIONS = f"/home/{S.DEPLOY_USER}/.laravel-db.cnf"
PHP = "/usr/bin/php"
PHP_FPM = "/usr/sbin/php-fpm8.2"
NGINX = "/usr/sbin/nginx"
COMPOSER = "/usr/bin/composer"
LARAVEL_AUTOLOAD = "/usr/share/php/Illuminate/autoload.php"
_BEGIN = "; >>> laravel example app (deployer.fleet.laravel)"
_END = "; <<< laravel example app"


def check_tools() -> None:
    """Debian's PHP, php-fpm, nginx, composer and Laravel are installed (./bootstrap does it)."""
    missing = [p for p in (PHP, PHP_FPM, NGINX, COMPOSER, LARAVEL_AUTOLOAD) if not os.path.exists(p)]
    if missing:
        raise FleetError(f"fleet: {', '.join(missing)} not found; run ./bootstrap to install PHP 8.2, "
                         "php-fpm, nginx, composer and php-laravel-framework")


def fpm_config() -> str:
    return f"""; php-fpm of the Laravel example app (deployer.fleet.laravel)
[global]
pid = {WEB_DIR}/php-fpm.pid
error_log = {WEB_DIR}/php-fpm.log
daemonize = no

[app]
listen = {WEB_DIR}/php-fpm.sock
listen.mode = 0666
pm = static
pm.max_children = 2
catch_workers_output = yes
"""


def nginx_config() -> str:
    return f"""# nginx of the Laravel example app (deployer.fleet.laravel)
daemon off;
worker_processes 1;
pid {WEB_DIR}/nginx.pid;
error_log {WEB_DIR}/nginx-error.log;
events {{ worker_connections 128; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    client_body_temp_path {WEB_DIR}/tmp/body;
    fastcgi_temp_path {WEB_DIR}/tmp/fastcgi;
    proxy_temp_path {WEB_DIR}/tmp/proxy;
    uwsgi_temp_path {WEB_DIR}/tmp/uwsgi;
    scgi_temp_path {WEB_DIR}/tmp/scgi;
    server {{
        listen {PORT};
        root {DEPLOY_TO}/current/public;
        index index.php;
        charset utf-8;
        location / {{
            try_files $uri $uri/ /index.php?$query_string;
        }}
        location ~ \\.php$ {{
            include /etc/nginx/fastcgi_params;
            fastcgi_pass unix:{WEB_DIR}/php-fpm.sock;
            fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;
        }}
        location ~ /\\.(?!well-known).* {{
            deny all;
        }}
    }}
}}
"""


def supervisor_programs() -> str:
    common = ("autostart=true\nautorestart=true\nstartsecs=1\nstartretries=2\n"
              "stopasgroup=true\nkillasgroup=true\nredirect_stderr=true\n")
    return f"""{_BEGIN}
[program:{FPM_PROGRAM}]
command={PHP_FPM} --nodaemonize --fpm-config {WEB_DIR}/php-fpm.conf
stopsignal=QUIT
stopwaitsecs=10
stdout_logfile=/srv/supervisor/log/{FPM_PROGRAM}.log
{S.PROGRAM_USER}{common}
[program:{NGINX_PROGRAM}]
command={NGINX} -e {WEB_DIR}/nginx-error.log -c {WEB_DIR}/nginx.conf
stopsignal=QUIT
stopwaitsecs=10
stdout_logfile=/srv/supervisor/log/{NGINX_PROGRAM}.log
{S.PROGRAM_USER}{common}
[program:{WORKER_PROGRAM}]
command={PHP} {DEPLOY_TO}/current/artisan queue:work --sleep=1 --tries=1
directory={DEPLOY_TO}/current
stopsignal=TERM
stopwaitsecs=30
stdout_logfile=/srv/supervisor/log/{WORKER_PROGRAM}.log
{S.PROGRAM_USER}{common}{_END}
"""


def app_env(db_password: str, app_key: str, kind: str = "postgresql") -> str:
    driver, port = ("pgsql", 5432) if kind == "postgresql" else ("mysql", 3306)
    return (
        "APP_NAME=laravel-app\nAPP_ENV=production\nAPP_DEBUG=false\n"
        f"APP_KEY=base64:{app_key}\nAPP_URL=http://localhost:{PORT}\n"
        f"DB_CONNECTION={driver}\nDB_HOST={S.DB_ADDRESS}\nDB_PORT={port}\nDB_DATABASE={DB_NAME}\n"
        f"DB_USERNAME={S.DB_USER}\nDB_PASSWORD=\"{db_password}\"\n"
        "QUEUE_CONNECTION=database\nCACHE_DRIVER=file\nLOG_CHANNEL=single\n"
    )


def inventory(spec: S.FleetSpec, fleet_dir: Path, repo: Path, kind: str = "postgresql") -> str:
    database = ([
        "  kind: postgresql",
        f"  name: {DB_NAME}",
        f"  user: {S.DB_USER}",
        f"  bin_dir: {PG_BIN}",
        "  socket_dir: /srv/pg/run",
    ] if kind == "postgresql" else [
        f"  kind: {kind}",
        f"  name: {DB_NAME}",
        f"  socket: {MY_SOCKET}",
        f"  option_file: {MY_OPTIONS}",
    ])
    lines = [
        "# The Laravel example app on the local fleet (written by deployer.fleet.laravel).",
        "playbook: laravel",
        f"repo: {repo}",
        f"deploy_to: {DEPLOY_TO}",
        "keep_releases: 3",
        *S.ssh_section(fleet_dir),
        "database:",
        *database,
        f"  backup_dir: {DEPLOY_TO}/backups",
        "health:",
        f'  url: "http://{{address}}:{PORT}/health"',
        '  expect_json: {status: ok, release: "{release}"}',
        "  interval: 0.25",
        "  timeout: 2.0",
        "  max_attempts: 40",
        "vars:",
        f"  php: {PHP}",
        f"  composer: {COMPOSER}",
        f"  fpm_pid: {WEB_DIR}/php-fpm.pid",
        "  supervisorctl: /srv/bin/supervisorctl",
        "  supervisor_conf: /srv/supervisor/supervisord.conf",
        f"  worker_program: {WORKER_PROGRAM}",
        "hosts:",
    ]
    for h in [spec.host("db1"), *web_hosts(spec)]:
        lines += [f"  - name: {h.name}", f"    address: {h.address}", f"    roles: [{', '.join(h.roles)}]"]
    return "\n".join(lines) + "\n"


def web_hosts(spec: S.FleetSpec) -> list[S.FleetHost]:
    """The web hosts the Laravel app runs on."""
    return spec.web_hosts[:WEB_HOSTS]


class LaravelSite:
    """The Laravel example app's part of a fleet that is up (see the module's docstring)."""

    def __init__(self, fleet, kind: str = "postgresql"):
        self.fleet = fleet
        self.kind = kind  # the database: postgresql, or mariadb (a server of its own on db1)
        self.programs = Programs(fleet, _BEGIN, _END)

    @property
    def repo(self) -> Path:
        return self.fleet.dir / "laravel-app"

    @property
    def inventory_path(self) -> Path:
        return self.fleet.dir / "inventory-laravel.yaml"

    def _srv(self, host: str, path: str) -> Path:
        return self.fleet.hostdir(host) / "srv" / path.removeprefix("/srv/")

    def install(self, log=print) -> dict[str, str]:
        """Install everything; return the repo's tag -> commit sha."""
        check_tools()
        self.remove(quiet=True)  # what a crashed run left
        fleet, spec = self.fleet, self.fleet.spec
        tags = build_laravel_repo(self.repo)
        pg = f"runuser -u postgres -- {PG_BIN}"
        deploy_owned(fleet, "db1", DEPLOY_TO)
        deploy_owned(fleet, "db1", f"{DEPLOY_TO}/backups", mode="700")
        if self.kind == "postgresql":
            fleet.sh("db1", f"{pg}/dropdb -h /srv/pg/run -U postgres --if-exists --force {DB_NAME} && "
                            f"{pg}/createdb -h /srv/pg/run -U postgres -O {S.DB_USER} {DB_NAME}")
        else:
            self._mariadb(fleet._db_password())
        env = app_env(fleet._db_password(), base64.b64encode(secrets.token_bytes(32)).decode(), self.kind)
        for h in web_hosts(spec):
            shared = self._srv(h.name, DEPLOY_TO) / "shared"
            for sub in ("framework/cache/data", "framework/sessions", "framework/views", "logs"):
                (shared / "storage" / sub).mkdir(parents=True, exist_ok=True)
            fd = os.open(shared / ".env", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(env)
            web = self._srv(h.name, WEB_DIR)
            (web / "tmp").mkdir(parents=True, exist_ok=True)
            (web / "php-fpm.conf").write_text(fpm_config())
            (web / "nginx.conf").write_text(nginx_config())
            deploy_owned(fleet, h.name, DEPLOY_TO, WEB_DIR)
            self.programs.add(h.name, supervisor_programs())
        grant(fleet, web_hosts(spec), lambda d: inventory(spec, d, self.repo, self.kind))
        self.programs.update()
        self.inventory_path.write_text(inventory(spec, fleet.dir, self.repo, self.kind))
        return tags

    def _mariadb(self, password: str) -> None:
        """db1's MariaDB: initialised, started (as mysql, its own data directory, socket and
        address), the app's database and account, the deploy user's option file."""
        from ..commands.mariadb import lit

        fleet = self.fleet
        fleet.sh("db1", "\n".join([
            f"mkdir -p {MY_DIR}/run && chown -R mysql:mysql {MY_DIR}",
            f"[ -d {MY_DIR}/data/mysql ] || mariadb-install-db --user=mysql --datadir={MY_DIR}/data "
            f"--auth-root-authentication-method=socket --skip-test-db >{MY_DIR}/install.log 2>&1",
            f"nohup runuser -u mysql -- {MARIADBD} --no-defaults --datadir={MY_DIR}/data --socket={MY_SOCKET} "
            f"--bind-address={S.DB_ADDRESS} --port=3306 --pid-file={MY_DIR}/run/mariadbd.pid "
            f"--log-error={MY_DIR}/error.log --skip-log-bin --skip-name-resolve --innodb-buffer-pool-size=32M "
            "--innodb-flush-log-at-trx-commit=0 --max-connections=300 >/dev/null 2>&1 &",
            f"for i in $(seq 1 300); do {MY_ROOT} -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done",
            f"{MY_ROOT} -e 'SELECT 1' >/dev/null || {{ tail -5 {MY_DIR}/error.log >&2; exit 1; }}",
        ]))
        pw = lit(password)
        users = " ".join(
            f"CREATE USER IF NOT EXISTS '{S.DB_USER}'@'{h}' IDENTIFIED BY {pw}; "
            f"ALTER USER '{S.DB_USER}'@'{h}' IDENTIFIED BY {pw}; "
            f"GRANT ALL ON `{DB_NAME}`.* TO '{S.DB_USER}'@'{h}'; "
            f"GRANT ALL ON `{DB_NAME}_deployer_check`.* TO '{S.DB_USER}'@'{h}';" for h in ("%", "localhost"))
        sql = (f"DROP DATABASE IF EXISTS `{DB_NAME}`; DROP DATABASE IF EXISTS `{DB_NAME}_deployer_check`; "
               f"CREATE DATABASE `{DB_NAME}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci; {users}")
        fleet.sh("db1", f"{MY_ROOT} -e {shlex.quote(sql)}")
        options = f"[client]\nuser={S.DB_USER}\npassword=\"{password}\"\n"
        fleet.sh("db1", f"install -m 600 -o {S.DEPLOY_USER} -g {S.DEPLOY_USER} /dev/null {MY_OPTIONS} && "
                        f"printf %s {shlex.quote(options)} > {MY_OPTIONS}")

    def _stop_mariadb(self) -> None:
        """db1's MariaDB stopped (TERM, then KILL after 20 s) and its files removed."""
        self.fleet.sh("db1", f"p=$(cat {MY_DIR}/run/mariadbd.pid 2>/dev/null); if [ -n \"$p\" ]; then "
                             "kill $p 2>/dev/null; for i in $(seq 1 200); do kill -0 $p 2>/dev/null || break; "
                             f"sleep 0.1; done; kill -9 $p 2>/dev/null; fi; rm -rf {MY_DIR} {MY_OPTIONS}",
                      check=False)

    def remove(self, quiet: bool = False) -> None:
        """Take away everything install() added (idempotent)."""
        fleet, spec = self.fleet, self.fleet.spec
        changed = self.programs.remove()
        if changed:
            self.programs.update()
        grant(fleet, spec.web_hosts, None)
        fleet.sh("db1", f"runuser -u postgres -- {PG_BIN}/dropdb -h /srv/pg/run -U postgres --if-exists "
                        f"--force {DB_NAME}", check=False)
        self._stop_mariadb()
        # the env's state (its lock's token counter) goes with DEPLOY_TO: the hosts' fence
        # records of the env go too, else the next install's first tokens would be refused
        for h in spec.hosts:
            fleet.sh(h.name, f"rm -rf {DEPLOY_TO} {WEB_DIR} /home/{S.DEPLOY_USER}/.cache/composer "
                             f"/home/{S.DEPLOY_USER}/.config/composer /home/{S.DEPLOY_USER}/.deployer/fence-laravel-*",
                     check=False)
        self.inventory_path.unlink(missing_ok=True)
        if not quiet:
            print("fleet: the Laravel example app removed")


__all__ = ["LaravelSite", "DEPLOY_TO", "PORT", "DB_NAME", "web_hosts"]
