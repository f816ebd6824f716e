"""The runtime view of a validated environment: `Host` and `Config`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from deployer import cron as _cron
from deployer import retention as _retention
from deployer import windows as _windows
from deployer.commands import fence as _fence
from deployer.errors import ConfigError
from deployer.layout import Layout
from deployer.shell import Privileged, fill
from deployer.sshconfig import Endpoint

from .inventory import SSH, Artifact, Database, Gate, Health, LoadBalancer, RolloutWave, SecretFile, State
from .playbook import Playbook, Step
from .types import _ROLE_RE, _label

#: roles of the hosts every run needs whatever it targets: the load balancer, the database, the
#: ledger (lock and history) and the host that runs migrations
INFRA_ROLES = ("lb", "db", "ledger", "migrate")
APP_ROLES = ("web", "worker")


class Host(BaseModel):
    """A host of the fleet, with port and user resolved."""

    model_config = ConfigDict(frozen=True)

    name: str
    address: str
    port: int
    user: str
    roles: tuple[str, ...]
    vars: dict[str, str] = {}
    #: how to connect, with the ssh config applied (jump hosts, keys, host key names); None:
    #: straight to address:port as user
    endpoint: Endpoint | None = None

    def has(self, role: str) -> bool:
        return role in self.roles

    def target(self) -> Endpoint:
        """How to reach this host: its endpoint (resolved with the ssh config when the config
        was loaded) under the host's own name, address, port and user, or straight to those."""
        ep = self.endpoint
        if ep is None:
            return Endpoint(self.name, self.address, self.port, self.user)
        if (ep.name, ep.address, ep.port, ep.user) != (self.name, self.address, self.port, self.user):
            ep = replace(ep, name=self.name, address=self.address, port=self.port, user=self.user)
        return ep


@dataclass(frozen=True)
class Config:
    """A validated environment: inventory settings, hosts and playbook."""

    env: str
    root: Path
    inventory_path: Path
    playbook_path: Path
    playbook: Playbook
    repo: str
    deploy_to: str
    keep_releases: int
    parallel: int
    ssh: SSH
    database: Database | None
    health: Health
    lb: LoadBalancer | None
    waves: list[int | str]
    lock_timeout: float
    vars: dict[str, str]
    hosts: list[Host] = field(default_factory=list)
    windows: list[_windows.Window] = field(default_factory=list)
    freezes: list[_windows.Freeze] = field(default_factory=list)
    schedules: list[_cron.Schedule] = field(default_factory=list)
    retention: _retention.Policy = field(default_factory=_retention.Policy)
    #: the app's own files archived with each nightly backup (`backup:`; paths under shared/)
    file_backups: tuple[str, ...] = ()
    file_backup_exclude: tuple[str, ...] = ()
    #: seconds after which maintenance mode switches itself off (dead-man expiry)
    maintenance_ttl: int = 900
    rollout: list[RolloutWave] = field(default_factory=list)
    max_unavailable: int | str = "34%"
    gate: Gate = field(default_factory=Gate)
    notify: dict | None = None
    secret_files: list[SecretFile] = field(default_factory=list)
    #: where the lock and the ledger live (`state:`; backend ssh: the ledger host)
    state: State = field(default_factory=State)
    #: where releases are built (`artifact:`): on each app host, or once and fetched
    artifact: Artifact = field(default_factory=Artifact)

    @property
    def layout(self) -> Layout:
        """The paths of the deploy tree under `deploy_to` on every app host."""
        return Layout(self.deploy_to)

    @property
    def lock_place(self) -> str:
        """Where the env's lock lives, and with it the counter of its fencing tokens: the S3
        bucket and prefix, or the ledger host and the state directory."""
        st = self.state
        if st.backend == "s3":
            return f"s3:{st.endpoint_url or 'aws'}/{st.bucket}/{st.prefix}"
        h = self.ledger_host
        return f"ssh:{h.address}:{h.port}:{self.layout.state}"

    @property
    def fence_record(self) -> str:
        """The file name of the fence record every host keeps for this env and lock, under the
        SSH user's `$HOME/.deployer` (`commands.fence.record`)."""
        return _fence.record(self.env, self.deploy_to, self.lock_place)

    def hosts_with(self, role: str) -> list[Host]:
        if not _ROLE_RE.match(role):
            raise ValueError(f"invalid role {role!r}")
        return [h for h in self.hosts if h.has(role)]

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise ConfigError(
            f"{_label(self.inventory_path, self.root)}: no host named {name!r} "
            f"(hosts: {', '.join(h.name for h in self.hosts)})"
        )

    def select(self, hosts: Iterable[str] = (), roles: Iterable[str] = ()) -> list[Host]:
        """The hosts named in `hosts` that have one of `roles` (either may be empty: no filter),
        in inventory order. Unknown names, and a selection of no host, are a ConfigError that
        names them (``--hosts``, ``--roles``: the options this comes from)."""
        names, wanted = list(dict.fromkeys(hosts)), list(dict.fromkeys(roles))
        label = _label(self.inventory_path, self.root)
        known_hosts = [h.name for h in self.hosts]
        known_roles = sorted({r for h in self.hosts for r in h.roles})
        errors = []
        for option, given, known, what in (("--hosts", names, known_hosts, "host"),
                                           ("--roles", wanted, known_roles, "role")):
            unknown = [n for n in given if n not in known]
            if unknown:
                close = [m for n in unknown for m in difflib.get_close_matches(n, known, n=1)]
                errors.append(f"{option}: unknown {what}{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(repr(n) for n in unknown)} in {label} "
                              f"({what}s: {', '.join(known)})"
                              + (f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""))
        if errors:
            raise ConfigError("\n".join(errors))
        chosen = [h for h in self.hosts if (not names or h.name in names)
                  and (not wanted or any(h.has(r) for r in wanted))]
        if not chosen:
            raise ConfigError(f"--hosts {','.join(names)} --roles {','.join(wanted)}: no host of "
                              f"{label} is both one of those hosts and has one of those roles")
        return chosen

    def narrow(self, hosts: Iterable[str] = (), roles: Iterable[str] = ()) -> Config:
        """This environment with its app hosts narrowed to a selection (`select`), for
        ``--hosts`` / ``--roles``. The selected hosts keep every role; a host not selected stays
        only when it has an infrastructure role (lb, db, ledger, migrate), with those roles only,
        so that the run still reaches the load balancer, the database and the same ledger (the
        ledger host is kept, marked as such, even when it was the ledger by default). The
        migrate role stays on its host only when that host is still an app host: migrations run
        from the new release, which only app hosts receive; a narrowed deploy that leaves the
        migrate host out runs no migration. Without hosts and roles: this Config unchanged."""
        hosts, roles = list(hosts), list(roles)
        if not hosts and not roles:
            return self
        chosen = {h.name for h in self.select(hosts, roles)}
        ledger = self.ledger_host.name
        kept: list[Host] = []
        for h in self.hosts:
            if h.name in chosen:
                keep = list(h.roles)
            else:
                keep = [r for r in h.roles if r in INFRA_ROLES]
            is_app = any(r in APP_ROLES for r in keep)
            keep = [r for r in keep if r != "migrate" or is_app]
            if h.name == ledger and "ledger" not in keep:
                keep.append("ledger")
            if keep:
                kept.append(h if tuple(keep) == h.roles else h.model_copy(update={"roles": tuple(keep)}))
        return replace(self, hosts=kept)

    @property
    def app_hosts(self) -> list[Host]:
        """Hosts that run the app's code: role web or worker."""
        return [h for h in self.hosts if h.has("web") or h.has("worker")]

    @property
    def build_host(self) -> Host | None:
        """The app host that builds each release once (`artifact.build`); None: each app host
        builds its own."""
        app, build = self.app_hosts, self.artifact.build
        if build == "each" or not app:
            return None
        return next((h for h in app if h.name == build), app[0])

    @property
    def artifact_bucket(self) -> bool:
        """Artifacts also go through the state's bucket (`artifact.store`: bucket, or auto with
        S3 state), when a build host builds them."""
        store = self.artifact.store
        return self.build_host is not None and (store == "bucket" or (store == "auto" and self.state.backend == "s3"))

    @property
    def web_hosts(self) -> list[Host]:
        return self.hosts_with("web")

    @property
    def migrate_host(self) -> Host | None:
        return next(iter(self.hosts_with("migrate")), None)

    @property
    def db_host(self) -> Host | None:
        return next(iter(self.hosts_with("db")), None)

    @property
    def lb_host(self) -> Host | None:
        return next(iter(self.hosts_with("lb")), None)

    @property
    def ledger_host(self) -> Host:
        """The first host with role ledger, else the migrate host, else the first host."""
        return next(iter(self.hosts_with("ledger")), None) or self.migrate_host or self.hosts[0]

    def runs_step(self, step: Step, host: Host) -> bool:
        """Whether a playbook step runs on `host`: the host has one of the step's roles and, for a
        `once` step, is the first host of the inventory that has one."""
        roles = step.roles or []
        if not any(host.has(r) for r in roles):
            return False
        first = next((h for h in self.hosts if any(h.has(r) for r in roles)), host)
        return not step.once or first.name == host.name

    def template_values(self, host: Host | str, **extra: object) -> dict[str, object]:
        """Values for playbook templates on `host`; `extra` gives release, release_path, ..."""
        if isinstance(host, str):
            host = self.host(host)
        values: dict[str, object] = {
            "env": self.env,
            "host": host.name,
            "address": host.address,
            "deploy_to": self.deploy_to,
            "shared_path": self.layout.shared,
            "current_path": self.layout.current,
            "releases_path": self.layout.releases,
            # `{sudo} cmd`: cmd runs as root through one of the host's sudo rules (see
            # Playbook.privileged and docs/servers.md)
            "sudo": Privileged(host.user),
        }
        values.update(self.playbook.vars)
        values.update(self.vars)
        values.update(host.vars)
        values.update(extra)
        return values

    def health_values(self, host: Host, release: str) -> dict[str, object]:
        """Values for health templates: address, host, release, port (the host's SSH port)."""
        return {"address": host.address, "host": host.name, "release": release, "port": host.port}

    def lb_server_name(self, host: Host) -> str:
        if self.lb is None:
            raise ValueError("no lb configured")
        return fill(self.lb.server_name, {"host": host.name, "address": host.address},
                    where="lb.server_name")

