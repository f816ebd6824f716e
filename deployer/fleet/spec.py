"""What the local fleet is made of: hosts, addresses and their config files (pure, no I/O)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

#: the public network: this machine (the orchestrator, GATEWAY), the bastion's and the load
#: balancer's public legs, the S3 server
SUBNET = ipaddress.ip_network("10.77.0.0/24")
GATEWAY = "10.77.0.1"
BRIDGE = "dplbr0"
#: the private network of the app hosts: no address of this machine, no route out; reached
#: through the bastion (SSH) and the load balancer (HTTP) only
PRIVATE_SUBNET = ipaddress.ip_network("10.78.0.0/24")
PRIVATE_BRIDGE = "dplbr1"
NETNS_PREFIX = "dpl-"
VETH_PREFIX = "dv-"  # a host's leg on its first network (eth0)
PRIVATE_VETH_PREFIX = "dp-"  # the private leg (eth1) of a host on both networks
LB_PUBLIC = "10.77.0.10"  # HAProxy's frontend (:80)
LB_ADDRESS = "10.78.0.10"  # lb1's private leg: its sshd and the admin side
#: lb.up_timeout of the fleet's inventories: its HAProxy checks every 500 ms (2 s with production
#: intervals), rise 1
LB_UP_TIMEOUT = 5
DB_ADDRESS = "10.78.0.20"
BASTION_PUBLIC = "10.77.0.5"  # the jump host (role bastion): in no inventory, reaches every host
BASTION_ADDRESS = "10.78.0.5"
S3_ADDRESS = "10.77.0.30"  # SeaweedFS's S3 gateway, in its own network namespace
#: its leg on the private network: the app hosts' one route out goes there, to S3_ADDRESS only
#: (as a VPC's gateway endpoint lets private hosts reach the bucket and nothing else)
S3_PRIVATE = "10.78.0.30"
DEPLOY_USER = "deploy"  # the OS user deployer logs in as on every host
S3_PORT = 8333
S3_BUCKET = "deployer-state"
WEB_BASE = 100
MAX_WEB = 150
APP_PORT = 8000
DB_NAME = "demo"
DB_USER = "demo"
DEPLOY_TO = "/srv/app"


@dataclass(frozen=True)
class FleetHost:
    """One host: `address` on the private network (the S3 server's on the public one), and
    `public` for the two hosts with a leg on the public network too (bastion1, lb1)."""

    name: str
    address: str
    roles: tuple[str, ...]
    public: str | None = None

    @property
    def netns(self) -> str:
        return NETNS_PREFIX + self.name

    @property
    def veth(self) -> str:
        """The host's leg on its first network: the public one when it has one, else the
        private one (eth0 inside)."""
        return VETH_PREFIX + self.name

    @property
    def private_veth(self) -> str | None:
        """The private leg (eth1 inside) of a host on both networks."""
        return PRIVATE_VETH_PREFIX + self.name if self.public else None

    @property
    def private(self) -> bool:
        """On the private network only (no route to the public side): web and db hosts."""
        return self.public is None and ipaddress.ip_address(self.address) in PRIVATE_SUBNET

    def bridges(self) -> list[tuple[str, str]]:
        """(veth, bridge) of each leg, eth0 first."""
        if self.public:
            return [(self.veth, BRIDGE), (PRIVATE_VETH_PREFIX + self.name, PRIVATE_BRIDGE)]
        if self.private:
            return [(self.veth, PRIVATE_BRIDGE)]
        return [(self.veth, BRIDGE)]


@dataclass(frozen=True)
class FleetSpec:
    web: int = 3
    hosts: tuple[FleetHost, ...] = field(default=())
    #: HAProxy's check interval and the demo worker's job poll: the tests' fast ones by default
    #: (a host down is seen within a second, a job done within 0.2 s); `production`: HAProxy's
    #: default (2 s) and a 1 s poll, for the benchmarks whose fleet's own load would otherwise
    #: take most of this machine's cores (100 idle hosts at the tests' intervals: about 1 core)
    check_inter: str = "500ms"
    worker_poll: float = 0.2
    #: each health probe's timeout (health.timeout): 2 s in the tests (the demo app answers in
    #: milliseconds; a gate that cannot pass fails within 75 x 0.1 + 3 x 2 = 13.5 s), the demo
    #: playbook's 5 s for the benchmarks, whose hundred hosts can keep both cores busy
    probe_timeout: float = 2.0

    @classmethod
    def of(cls, web: int, production: bool = False) -> FleetSpec:
        if not 1 <= web <= MAX_WEB:
            raise ValueError(f"--web {web}: expected 1..{MAX_WEB} web hosts")
        hosts = [FleetHost("lb1", LB_ADDRESS, ("lb",), public=LB_PUBLIC),
                 FleetHost("db1", DB_ADDRESS, ("db", "ledger"))]
        for i in range(1, web + 1):
            roles = ("web", "worker", "migrate") if i == 1 else ("web", "worker")
            hosts.append(FleetHost(f"web{i}", str(PRIVATE_SUBNET[WEB_BASE + i]), roles))
        hosts.append(FleetHost("bastion1", BASTION_ADDRESS, ("bastion",), public=BASTION_PUBLIC))
        intervals = {"check_inter": "2s", "worker_poll": 1.0, "probe_timeout": 5.0} if production else {}
        return cls(web=web, hosts=tuple(hosts), **intervals)

    def host(self, name: str) -> FleetHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"no fleet host named {name!r} (have: {', '.join(h.name for h in self.hosts)})")

    @property
    def web_hosts(self) -> list[FleetHost]:
        return [h for h in self.hosts if "web" in h.roles]


#: the S3 server's namespace (not an SSH host: it is not in FleetSpec.hosts)
S3_HOST = FleetHost("s3", S3_ADDRESS, ("s3",))
S3_ENDPOINT = f"http://{S3_ADDRESS}:{S3_PORT}"


def s3_env_file(access_key: str, secret_key: str, region: str) -> str:
    """`.fleet/s3.env`: the S3 server's credentials for boto3's standard chain (KEY=value lines,
    for `set -a; . .fleet/s3.env` or a CI's environment)."""
    return (f"AWS_ACCESS_KEY_ID={access_key}\nAWS_SECRET_ACCESS_KEY={secret_key}\n"
            f"AWS_DEFAULT_REGION={region}\n")


def parse_env_file(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.removeprefix("export ").partition("=")
            out[key.strip()] = value.strip()
    return out


def state_section(prefix: str = "fleet", lease: float | None = None, bucket: str = S3_BUCKET,
                  endpoint: str = S3_ENDPOINT) -> str:
    """An inventory's `state:` section keeping the lock and the ledger in the fleet's S3."""
    lines = ["state:", "  backend: s3", f"  bucket: {bucket}", f"  prefix: {prefix}",
             f"  endpoint_url: {endpoint}", "  region: us-east-1"]
    if lease is not None:
        lines.append(f"  lease: {lease:g}")
    return "\n".join(lines) + "\n"


def sshd_config(hostdir: Path, authorized_keys: Path, listen: str = "0.0.0.0",
                root_login: bool = False) -> str:
    """A host's sshd: key logins only (the fleet's key for every user), on `listen` (an app
    host's private address); root may log in only where `root_login` (the bastion)."""
    permit = "prohibit-password" if root_login else "no"
    return f"""# generated by deployer fleet
Port 22
ListenAddress {listen}
HostKey {hostdir}/ssh_host_ed25519_key
PidFile {hostdir}/sshd.pid
PermitRootLogin {permit}
PubkeyAuthentication yes
AuthorizedKeysFile {authorized_keys}
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
MaxSessions 64
MaxStartups 200
ClientAliveInterval 30
LogLevel ERROR
Subsystem sftp internal-sftp
SetEnv PATH=/srv/bin:/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin
"""


#: what the app's programs run as under supervisord (supervisord itself is root's; its socket
#: too: the deploy user controls the programs through its sudo rules only)
PROGRAM_USER = f"""user={DEPLOY_USER}
environment=HOME="/home/{DEPLOY_USER}",USER="{DEPLOY_USER}",LOGNAME="{DEPLOY_USER}"
"""


def supervisord_config(worker_poll: float = 0.2) -> str:
    return f"""; generated by deployer fleet
[unix_http_server]
file=/srv/supervisor/supervisor.sock
chmod=0700

[supervisord]
logfile=/srv/supervisor/supervisord.log
pidfile=/srv/supervisor/supervisord.pid
childlogdir=/srv/supervisor/log
directory=/srv

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix:///srv/supervisor/supervisor.sock

; started with supervisord only when the host has a release (DEPLOYER_APP_AUTOSTART, set by the
; host's init script): on a fresh host they would fail to start, and a deploy's reload racing
; their last retries could leave them FATAL; the deploy's reload and worker restart start them
; one gunicorn worker per host: all the fleet's hosts share this machine's few cores
[program:web]
command=/srv/bin/gunicorn --pythonpath {DEPLOY_TO}/current --bind 0.0.0.0:{APP_PORT} --workers 1 --graceful-timeout 10 --access-logfile - app:application
directory={DEPLOY_TO}
autostart=%(ENV_DEPLOYER_APP_AUTOSTART)s
autorestart=true
startsecs=1
startretries=2
stopsignal=TERM
stopwaitsecs=15
stopasgroup=true
redirect_stderr=true
stdout_logfile=/srv/supervisor/log/web.log
{PROGRAM_USER}
[program:worker]
command=/srv/bin/python {DEPLOY_TO}/current/worker.py --poll {worker_poll:g}
directory={DEPLOY_TO}
autostart=%(ENV_DEPLOYER_APP_AUTOSTART)s
autorestart=true
startsecs=1
startretries=2
stopsignal=TERM
stopwaitsecs=15
stopasgroup=true
redirect_stderr=true
stdout_logfile=/srv/supervisor/log/worker.log
{PROGRAM_USER}"""


def haproxy_config(web_hosts: list[FleetHost], backend: str = "web", port: int = APP_PORT,
                   check_uri: str = "/health", bind: str = f"{LB_PUBLIC}:80",
                   socket: str = "/srv/haproxy/admin.sock", pidfile: str = "/srv/haproxy/haproxy.pid",
                   check_host: str | None = None, check_inter: str = "500ms") -> str:
    """HAProxy on lb1: the frontend on the public address (a client's X-Deployer-Gate header
    dropped: only the health checks carry it, so a server in maintenance stays UP while it answers
    its maintenance page), the servers at their private addresses, the admin socket usable by
    the deploy user's group (drain and put back without root)."""
    servers = "\n".join(
        f"    server {h.name} {h.address}:{port} check inter {check_inter} fall 2 rise 1" for h in web_hosts
    )
    # an app that checks the Host header (Django's ALLOWED_HOSTS) needs one it accepts
    host = f" ver HTTP/1.1 hdr Host {check_host}" if check_host else ""
    return f"""# generated by deployer fleet
global
    stats socket {socket} mode 660 group {DEPLOY_USER} level admin
    pidfile {pidfile}
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 2
    option redispatch

frontend http
    bind {bind}
    # the gate's header lets a request through maintenance mode: never from a client
    http-request del-header X-Deployer-Gate
    default_backend {backend}

backend {backend}
    balance roundrobin
    # HAProxy's own check carries the gate's header: a server answering the app's maintenance
    # page (503 + Retry-After to users) stays UP, so users get that page, not "no server"
    option httpchk
    http-check send meth GET uri {check_uri}{host} hdr X-Deployer-Gate 1
    http-check expect status 200
    http-response set-header X-Backend %s
{servers}
"""


def app_env(db_password: str) -> str:
    return (
        f"DATABASE_URL=postgresql://{DB_USER}:{db_password}@{DB_ADDRESS}:5432/{DB_NAME}\n"
        "APP_ENV=production\nAPP_DEBUG=false\n"
    )


def inventory(spec: FleetSpec, fleet_dir: Path, repo: Path) -> str:
    lines = [
        "# The local fleet (generated by `inv fleet.up`; see deployer/fleet).",
        "playbook: demo",
        f"repo: {repo}",
        f"deploy_to: {DEPLOY_TO}",
        "keep_releases: 5",
        "parallel: 10",
        *ssh_section(fleet_dir),
        "database:",
        "  kind: postgresql",
        f"  name: {DB_NAME}",
        f"  user: {DB_USER}",
        "  bin_dir: /usr/lib/postgresql/15/bin",
        "  socket_dir: /srv/pg/run",
        "  backup_dir: /srv/backups",
        "lb:",
        "  kind: haproxy",
        "  backend: web",
        "  socket: /srv/haproxy/admin.sock",
        f"  up_timeout: {LB_UP_TIMEOUT}",
        "health:",
        f"  timeout: {spec.probe_timeout:g}",
        "schedules:",
        '  - {name: maintenance, cron: "0 3 * * 0", command: maintenance.run}',
        "hosts:",
    ]
    for h in spec.hosts:
        if "bastion" in h.roles:  # a jump host, not a host deployed to
            continue
        lines += [f"  - name: {h.name}", f"    address: {h.address}", f"    roles: [{', '.join(h.roles)}]"]
    return "\n".join(lines) + "\n"


def ssh_section(fleet_dir: Path) -> list[str]:
    """An inventory's `ssh:` lines for the fleet: the deploy user, through the bastion."""
    return [
        "ssh:",
        f"  user: {DEPLOY_USER}",
        f"  jump: {DEPLOY_USER}@{BASTION_PUBLIC}",
        f"  key: {fleet_dir}/id_ed25519",
        f"  known_hosts: {fleet_dir}/known_hosts",
    ]
