"""Inventory models (hosts/<env>.yaml): connection, database, health, load balancer, hosts, groups,
gate, secret files, rollout waves, and the inventory itself (windows, freezes, schedules and
retention: schedule.py; the `state:` section: state.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, PlainValidator, Strict, model_validator

from deployer.errors import ConfigError
from deployer.shell import Secret, fill
from deployer.sshconfig import split_chain

from .schedule import (
    FreezeModel,
    RetentionModel,
    ScheduleModel,
    WindowModel,
)
from .state import State
from .types import (
    AbsPath,
    Bool,
    Float,
    Int,
    Name,
    Port,
    RelPath,
    Role,
    Roles,
    Vars,
    Wave,
    _address,
    _env_only,
    _fail,
    _group_name,
    _Model,
    _playbook_ref,
    _slug,
    _user,
)


def _jump_chain(value: str) -> str:
    try:
        split_chain(value)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    return value.strip()


#: one jump host or a chain of them, as ssh -J / ProxyJump: `[user@]host[:port]` items
#: (host: a name, an address or an ssh config alias) separated by commas, or `none`
JumpChain = Annotated[str, Strict(), AfterValidator(_jump_chain)]


class SSH(_Model):
    user: Annotated[str, AfterValidator(_user)] = "root"
    port: Port = 22
    key: Path | None = None
    key_data: Annotated[Any, PlainValidator(_env_only("DEPLOYER_SSH_KEY_DATA"))] = None
    known_hosts: Path | None = None
    known_hosts_data: Annotated[Any, PlainValidator(_env_only("DEPLOYER_KNOWN_HOSTS_DATA"))] = None
    jump: JumpChain | None = None
    #: the OpenSSH client config read for aliases, ProxyJump, IdentityFile...: a path, or
    #: `none`; default ~/.ssh/config when it exists (see deployer.sshconfig)
    config: Annotated[str, Strict(), Field(min_length=1)] | None = None
    connect_timeout: Annotated[Float, Field(gt=0)] = 10.0
    keepalive: Annotated[Float, Field(gt=0)] = 15.0
    command_timeout: Annotated[Float, Field(gt=0)] = 600.0


def _role(value: str) -> str:
    if not _ROLE_RE.match(value):
        raise _fail(f"invalid role name {value!r} (letters, digits, _, . and -)")
    return value


_ROLE_RE = __import__("re").compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")


class Database(_Model):
    """The database the backups are taken of. PostgreSQL's tools (pg_dump, pg_restore, psql)
    run as the SSH user and log in as `user` (libpq's default when none: the OS user's name),
    with the password from `password_file` (PGPASSFILE; default ~/.pgpass). MariaDB's and
    MySQL's (mariadb-dump, mariadb) read the account and its password from a client option
    file: `option_file` (--defaults-extra-file), else the user's ~/.my.cnf. With `os_user` the
    tools run as that OS user instead (sudo -n -u, or runuser when the SSH user is root), e.g.
    postgres with peer authentication."""

    kind: Literal["postgresql", "mariadb", "mysql"] = "postgresql"
    name: Name
    #: the database role (PostgreSQL) or account (MariaDB) the tools log in as
    user: Annotated[str, Strict(), AfterValidator(_role)] | None = None
    #: TCP host of the server; else `socket_dir` / `socket`, else the client's default
    host: Annotated[str, Strict(), AfterValidator(_address)] | None = None
    password_file: AbsPath | None = None
    option_file: AbsPath | None = None
    os_user: Annotated[str, AfterValidator(_user)] | None = None
    bin_dir: AbsPath | None = None
    socket_dir: AbsPath | None = None
    socket: AbsPath | None = None
    #: default 5432 (PostgreSQL), 3306 (MariaDB, MySQL)
    port: Port | None = None
    backup_dir: AbsPath = "/srv/backups"

    @model_validator(mode="after")
    def _one_host(self) -> Database:
        pg = self.kind == "postgresql"
        local = "socket_dir" if pg else "socket"
        if self.host is not None and (self.socket_dir if pg else self.socket) is not None:
            raise _fail(f"give host (TCP) or {local} (a Unix socket), not both")
        for key, value, ok, instead in (
                ("password_file", self.password_file, pg, "option_file (a client option file: [client] "
                                                           "user, password)"),
                ("socket_dir", self.socket_dir, pg, "socket (the socket file's path)"),
                ("option_file", self.option_file, not pg, "password_file (PGPASSFILE)"),
                ("socket", self.socket, not pg, "socket_dir (the directory of PostgreSQL's socket)")):
            if value is not None and not ok:
                raise _fail(f"{key} is not a setting of kind {self.kind}: use {instead}")
        return self


class FileBackups(_Model):
    """`backup:` the app's own files archived with each nightly backup, on each app host: paths
    relative to `shared/` (user uploads), minus `exclude` (tar patterns)."""

    files: list[RelPath] = []
    exclude: list[Annotated[str, Strict(), Field(min_length=1)]] = []


class Artifact(_Model):
    """`artifact:` where a release is built. `each` (the default): every app host builds it
    from the commit. `first` (the first app host) or an app host's name: that host builds it
    once and packs it with its sha256; the other app hosts fetch it from that host over HTTP on
    its address (`port`, 0: a random one per deploy; a capability path) and hard-link the files
    unchanged since their previous release. The server stops after the fetch, or after
    `serve_for` seconds whatever happens. The build host keeps the artifacts of the newest `keep`
    good releases (more than `keep_releases`: `rollback --to` a release no host still has
    fetches its artifact from there). `store: bucket` (the default with S3 state): the build
    host also uploads it to the state's bucket (`<prefix>/<env>/artifacts/`, the same `keep`)
    with presigned URLs, and the other hosts fetch it from there: no server on the build host,
    and a release stays restorable when the build host is gone; `store: host`: host to host
    only."""

    build: Name = "each"
    store: Literal["auto", "bucket", "host"] = "auto"
    port: Annotated[Int, Field(ge=0, le=65535)] = 0
    serve_for: Annotated[Int, Field(ge=10, le=86400)] = 600
    keep: Annotated[Int, Field(ge=1)] = 20


class Health(_Model):
    url: Name
    timeout: Annotated[Float, Field(gt=0)] = 5.0
    interval: Annotated[Float, Field(ge=0)] = 1.0
    passes: Annotated[Int, Field(ge=1)] = 3
    max_attempts: Annotated[Int, Field(ge=1)] = 30
    expect_status: Annotated[Int, Field(ge=100, le=599)] = 200
    expect_json: dict[str, Any] | None = None
    headers: dict[str, str] = {}
    #: how probes reach each host: `ssh` through its SSH connection (a forwarded channel to the
    #: url's host and port, opened on the host: works wherever SSH does, behind a bastion too),
    #: `direct` from the machine running deployer
    via: Literal["ssh", "direct"] = "ssh"
    #: this many consecutive definitive failures (the app answers, with a 5xx other than 502-504,
    #: a 4xx or a wrong body) fail the host at once; 0: only the time budget does
    fail_after: Annotated[Int, Field(ge=0)] = 3

    @model_validator(mode="after")
    def _check(self) -> Health:
        if self.max_attempts < self.passes:
            raise _fail(f"max_attempts ({self.max_attempts}) must be >= passes ({self.passes})")
        if self.via == "ssh" and self.url.lower().startswith("https:"):
            raise _fail("url: an https url is not checked through the SSH connection; use the app's "
                        "plain-HTTP port on the host (TLS ends at the load balancer) or via: direct")
        return self

    def templates(self) -> list[tuple[str, str]]:
        """(key path, template) pairs: the url and every string in expect_json."""
        out = [("health.url", self.url)]

        def walk(value: Any, path: str) -> None:
            if isinstance(value, str):
                out.append((path, value))
            elif isinstance(value, dict):
                for k, v in value.items():
                    walk(v, f"{path}.{k}")
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    walk(v, f"{path}[{i}]")

        walk(self.expect_json, "health.expect_json")
        return out

    def url_for(self, values: Mapping[str, object]) -> str:
        return fill(self.url, values, where="health.url")

    def expected_json(self, values: Mapping[str, object]) -> dict[str, Any] | None:
        """expect_json with its string values filled in (not shell-quoted)."""

        def walk(value: Any) -> Any:
            if isinstance(value, str):
                return fill(value, values, where="health.expect_json")
            if isinstance(value, dict):
                return {k: walk(v) for k, v in value.items()}
            if isinstance(value, list):
                return [walk(v) for v in value]
            return value

        return walk(self.expect_json) if self.expect_json is not None else None


class LoadBalancer(_Model):
    kind: Literal["haproxy"] = "haproxy"
    backend: Name
    socket: AbsPath
    server_name: Name = "{host}"
    #: seconds to wait for HAProxy's own health check to see a server UP (a server put back,
    #: every server at the end of a run); at least its `inter` x `rise`, with a margin
    up_timeout: Annotated[Float, Field(gt=0, le=600)] = 10.0


class HostEntry(_Model):
    name: Annotated[str, Strict(), AfterValidator(_slug("host name"))]
    address: Annotated[str, Strict(), AfterValidator(_address)]
    port: Port | None = None
    user: Annotated[str, AfterValidator(_user)] | None = None
    jump: JumpChain | None = None
    #: required unless a group gives the host roles (checked after groups are applied)
    roles: Roles | None = None
    vars: Vars = {}


class Group(_Model):
    """Hosts sharing roles and vars: the group's roles are added to each member's, its vars
    are defaults below the member's own vars."""

    hosts: Annotated[list[Annotated[str, Strict(), AfterValidator(_slug("host name"))]],
                     Field(min_length=1)]
    roles: list[Role] = []
    vars: Vars = {}


class Gate(_Model):
    """What a wave must pass beyond the health check: a bake with bounded probes, compared
    with absolute thresholds (seed 001) and, when old-release hosts remain, against them."""

    bake: Annotated[Float, Field(ge=0)] = 0.0
    probe_url: Name | None = None  # template; default: the health url
    probe_interval: Annotated[Float, Field(gt=0)] = 0.05
    probe_timeout: Annotated[Float, Field(gt=0)] = 5.0
    error_warn: Annotated[Float, Field(ge=0, le=1)] = 0.01
    error_fail: Annotated[Float, Field(ge=0, le=1)] = 0.05
    p95_warn_ms: Annotated[Float, Field(gt=0)] = 500.0
    p95_fail_ms: Annotated[Float, Field(gt=0)] = 2000.0
    min_samples: Annotated[Int, Field(ge=1)] = 20
    max_inconclusive: Annotated[Float, Field(ge=0, le=1)] = 0.2
    canary: Bool = True
    alpha: Annotated[Float, Field(gt=0, lt=1)] = 0.01
    min_effect_ms: Annotated[Float, Field(ge=0)] = 20.0
    min_effect_ratio: Annotated[Float, Field(ge=1)] = 1.2
    log_pattern: Name = "ERROR"


class SecretFile(_Model):
    """A secret file written into shared/ on every app host at each deploy, mode 0600 from
    creation; its content comes from an environment variable or a local file, never the YAML."""

    path: RelPath
    from_env: Name | None = None
    from_file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretFile:
        if (self.from_env is None) == (self.from_file is None):
            raise _fail("give exactly one of from_env, from_file")
        return self

    def read(self, environ: Mapping[str, str]) -> Secret:
        if self.from_env is not None:
            if self.from_env not in environ:
                raise ConfigError(f"secret_files: {self.path}: environment variable {self.from_env} is not set")
            return Secret(environ[self.from_env])
        try:
            return Secret(Path(self.from_file).read_text())
        except OSError as exc:
            raise ConfigError(f"secret_files: {self.path}: cannot read {self.from_file}: {exc.strerror}") from None


class RolloutWave(_Model):
    size: Wave
    bake: Annotated[Float, Field(ge=0)] | None = None  # default: gate.bake
    pause: Bool = False


#: keys of each `notify:` section (deployer.notify reads them; it ignores any other key)
NOTIFY_KEYS = {
    "slack": ("url_env", "timeout"),
    "webhook": ("url", "url_env", "headers", "headers_env", "timeout"),
    "email": ("host", "port", "from", "to", "username", "username_env", "password_env",
              "starttls", "implicit_tls", "tls_ca_file", "timeout"),
}
#: keys deployer.notify refuses with its own message (secrets written inline)
_NOTIFY_REFUSED = {"slack": ("url",), "email": ("password",)}


class Inventory(_Model):
    """The merged settings of one environment (all layers), before cross-checks."""

    playbook: Annotated[str, Strict(), AfterValidator(_playbook_ref)]
    repo: Name
    deploy_to: AbsPath = "/srv/app"
    keep_releases: Annotated[Int, Field(ge=2)] = 5
    parallel: Annotated[Int, Field(ge=1, le=500)] = 10
    ssh: SSH = SSH()
    database: Database | None = None
    health: Health
    lb: LoadBalancer | None = None
    waves: Annotated[list[Wave], Field(min_length=1)] = ["100%"]
    rollout: list[RolloutWave] | None = None
    max_unavailable: Wave = "34%"
    notify: dict[str, Any] | None = None  # slack / webhook / email; secrets from env vars only
    secret_files: list[SecretFile] = []
    gate: Gate = Gate()
    lock_timeout: Annotated[Float, Field(ge=0)] = 0.0
    vars: Vars = {}
    hosts: Annotated[list[HostEntry], Field(min_length=1)]
    groups: dict[Annotated[str, AfterValidator(_group_name)], Group] = {}
    windows: list[WindowModel] = []
    freezes: list[FreezeModel] = []
    schedules: list[ScheduleModel] = []
    retention: RetentionModel = RetentionModel()
    backup: FileBackups = FileBackups()
    artifact: Artifact = Artifact()
    maintenance_ttl: Annotated[Int, Field(ge=1)] = 900
    state: State = State()

    @model_validator(mode="after")
    def _last_wave(self) -> Inventory:
        if self.waves[-1] != "100%":
            raise _fail('waves: the last wave must be "100%"')
        if self.rollout is not None and (not self.rollout or self.rollout[-1].size != "100%"):
            raise _fail('rollout: the last wave must have size "100%"')
        return self

    def rollout_waves(self) -> list[RolloutWave]:
        if self.rollout is not None:
            return [RolloutWave(size=w.size, bake=self.gate.bake if w.bake is None else w.bake,
                                pause=w.pause) for w in self.rollout]
        return [RolloutWave(size=w, bake=self.gate.bake) for w in self.waves]

