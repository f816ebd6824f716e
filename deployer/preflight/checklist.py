"""The go-live checklist of an environment (`checks_for`): which checks run on which hosts,
from the config, and the local one (the deploy window)."""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from .. import windows as W
from ..commands import lock as LK
from ..config import Config, Host
from ..errors import ConfigError
from ..shell import argv
from . import fixes as FX
from . import rights as RT
from . import shared as SH
from .model import ALL, Check, Parse, Rows
from .remote import (
    app_env_command,
    binaries_command,
    disk_command,
    parse_app_check,
    parse_app_env,
    parse_binaries,
    parse_disk,
    parse_lock,
    parse_pending,
    parse_ssh,
    pending_command,
    ssh_command,
)

#: Same threshold as the deploy's own preflight (deployer.pipeline.MIN_FREE_KB).
DEFAULT_MIN_FREE_MIB = 100
APP_BINARIES = ("git", "tar", "timeout", "flock", "sha256sum")
DB_TOOLS = ("pg_dump", "pg_restore", "psql")
#: the backup stage also needs these on the db host (deployer.commands.backup)
DB_BINARIES = ("sha256sum", "runuser")
LB_BINARIES = ("socat",)
#: every host needs flock: each host script starts with the fencing token check (under flock,
#: deployer.commands.fence), and the ledger host appends to the ledger with it. The app hosts'
#: check has it already (APP_BINARIES); FENCE_BINARIES are checked on every other host.
FENCE_BINARIES = ("flock",)
#: with a build host (`artifact.build`), every app host fetches artifacts with curl and awk (and
#: GNU cp, tar, xargs: coreutils, findutils); the build host packs and serves them with python3,
#: its server in a session of its own
ARTIFACT_BINARIES = ("curl", "awk")
BUILD_BINARIES = ("python3", "setsid")
#: the roles of the app hosts (what a release runs on)
APP_ROLES = ("web", "worker")


def bucket_endpoint(cfg: Config) -> str:
    """Where the app hosts reach the state's bucket (what its presigned URLs name)."""
    st = cfg.state
    if st.endpoint_url:
        return st.endpoint_url.rstrip("/") + "/"
    return f"https://{st.bucket}.s3.{st.region}.amazonaws.com/" if st.region else f"https://{st.bucket}.s3.amazonaws.com/"


def parse_bucket(where: str) -> Parse:
    def parse(stdout: str, exit_status: int | None) -> tuple[bool, str]:
        code = stdout.strip()[-3:]
        if exit_status == 0 and code.isdigit() and code != "000":
            return True, f"{where} answers (HTTP {code})"
        return False, (f"{where} does not answer from this host: artifacts go through the bucket "
                       "(artifact.store); open the way to it, or set artifact.store: host")

    return parse


# ---------------------------------------------------------------- window


def window_parse(windows: Sequence[W.Window], freezes: Sequence[W.Freeze],
                 now: Callable[[], datetime]) -> Parse:
    def parse(stdout: str, exit_status: int | None) -> tuple[bool, str]:
        decision = W.decide(windows, freezes, now())
        return decision.allowed, decision.reason

    return parse


def _utc_now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- rights


def rights_checks(cfg: Config) -> list[Check]:
    """What a non-root SSH user must be allowed on each host (sudo rules, the load balancer's
    socket, the database, the trees deployer writes): one script per host, hosts that need the
    same rights sharing one check; one row per right."""
    same: dict[RT.Needs, list[Host]] = {}
    for host in cfg.hosts:
        needs = RT.needs(cfg, host)
        if needs is not None:
            same.setdefault(needs, []).append(host)
    out = []
    for needs, hosts in same.items():
        roles = tuple(sorted({r for h in hosts for r in h.roles}))
        rows = FX.rows(needs)
        out.append(Check("rights", RT.command(needs), roles, _all_rows(rows), _names(hosts),
                         about=f"what {needs.user} may do there", rows=rows))
    return out


def _all_rows(rows: Rows) -> Parse:
    """One (ok, detail) for all the rows: ok when every row is."""
    def parse(stdout: str, exit_status: int | None) -> tuple[bool, str]:
        found = rows(stdout, exit_status)
        return all(ok for _, ok, _ in found), "; ".join(f"{name}: {detail}" for name, _, detail in found)

    return parse


# ---------------------------------------------------------------- shared/


def shared_checks(cfg: Config, mirror: str, expect_app_env: str | None) -> list[Check]:
    """What every release links from shared/: the .env (`app_env`, when shared), then the other
    shared files and dirs (`shared`); an entry the next deploy creates (a shared dir, a file of
    the inventory's secret_files) is no failure when it is missing."""
    pb = cfg.playbook
    app = cfg.app_hosts
    secret_paths = [s.path for s in cfg.secret_files]
    out = []
    skip = []
    if ".env" in pb.shared_files:
        skip.append(".env")
        env_file = cfg.layout.shared_file(".env")
        keys = pb.preflight.app_env
        maker = SH.made_by(".env", SH.Kind.FILE, secret_paths)
        out.append(Check("app_env", app_env_command(cfg.layout.shared, mirror), APP_ROLES,
                         parse_app_env(env_file, expect_app_env, app_keys=keys, made_by=maker),
                         _names(app),
                         about="the shared .env: " + ("APP_DEBUG, APP_ENV, " if keys else "")
                               + "mode 0600, not in git"))
    found = SH.entries(pb.shared_files, pb.shared_dirs, secret_paths, skip=skip)
    if found:
        out.append(Check("shared", SH.command(cfg.layout.shared, found), APP_ROLES,
                         SH.parse(cfg.layout.shared, found), _names(app),
                         about="the shared files and dirs every release links"))
    return out


def binaries_checks(cfg: Config) -> list[Check]:
    """The tools each host needs: the pull stage's on the app hosts, the PostgreSQL client on
    the database host, socat on the load balancer, and flock on every other host (FENCE_BINARIES)."""
    app = cfg.app_hosts
    out: list[Check] = []
    tools = APP_BINARIES + (ARTIFACT_BINARIES if cfg.build_host is not None else ())
    out.append(Check("binaries", binaries_command(tools), APP_ROLES,
                     parse_binaries(tools), _names(app), about="tools of the pull stage"))
    if cfg.build_host is not None:
        out.append(Check("binaries", binaries_command(BUILD_BINARIES), APP_ROLES, parse_binaries(BUILD_BINARIES),
                         (cfg.build_host.name,), about="python3, to pack and serve release artifacts"))
    if cfg.artifact_bucket:
        where = bucket_endpoint(cfg)
        out.append(Check("bucket", argv("curl", "-sS", "-o", "/dev/null", "--max-time", "5", "-w", "%{http_code}",
                                        where), APP_ROLES, parse_bucket(where), _names(app),
                         about="the state's bucket answers the app hosts (artifacts go through it)"))
    if cfg.database is not None and cfg.db_host is not None:
        bin_dir = cfg.database.bin_dir
        db_tools = tuple(posixpath.join(bin_dir, t) if bin_dir else t for t in DB_TOOLS) + DB_BINARIES
        out.append(Check("binaries", binaries_command(db_tools), ("db",), parse_binaries(db_tools),
                         (cfg.db_host.name,), about="PostgreSQL client tools for backups"))
    if cfg.lb is not None and cfg.lb_host is not None:
        out.append(Check("binaries", binaries_command(LB_BINARIES), ("lb",),
                         parse_binaries(LB_BINARIES), (cfg.lb_host.name,),
                         about="socat, to drive the HAProxy admin socket"))
    others = [h for h in cfg.hosts if h not in app]
    if others:
        out.append(Check("binaries", binaries_command(FENCE_BINARIES), ALL,
                         parse_binaries(FENCE_BINARIES), _names(others),
                         about="flock, for the fencing token check every host script starts with "
                               "(and the ledger); the app hosts' is above"))
    return out


def app_checks(cfg: Config) -> list[Check]:
    """The playbook's own `preflight.checks`, on the app hosts of their roles."""
    app = cfg.app_hosts
    out: list[Check] = []
    for i, step in enumerate(cfg.playbook.preflight.checks):
        hosts = [h for h in app if any(h.has(r) for r in (step.roles or []))]
        if step.once:
            hosts = hosts[:1]
        if not hosts:
            continue
        try:
            commands = {h.name: step.command(cfg.template_values(h)) for h in hosts}
        except ConfigError as exc:
            msg = exc.message
            out.append(Check("app_check", None, tuple(step.roles or ()),
                             lambda s, e, msg=msg: (False, f"cannot render: {msg}")))
            continue
        # the same command on every host (no host value in it) is one check; else one per host
        groups: dict[str, list[str]] = {}
        for name, cmd in commands.items():
            groups.setdefault(cmd.script, []).append(name)
        for names in groups.values():
            out.append(Check("app_check", commands[names[0]], tuple(step.roles or ()), parse_app_check,
                             tuple(names), about=f"the playbook's preflight.checks[{i}]"))
    return out


# ---------------------------------------------------------------- the checklist


def _names(hosts: Iterable[Host]) -> tuple[str, ...]:
    return tuple(h.name for h in hosts)


def checks_for(cfg: Config, *, min_free_mib: int = DEFAULT_MIN_FREE_MIB,
               expect_app_env: str | None = "production", release_path: str | None = None,
               now: Callable[[], datetime] | datetime | None = None) -> list[Check]:
    """The checks of `cfg`'s environment, in the order of a report.

    `release_path`: where pending migrations are listed (default: the live release,
    ``<deploy_to>/current``). `now`: the clock of the window check (default: UTC now).
    """
    if isinstance(now, datetime):
        fixed = now
        clock: Callable[[], datetime] = lambda: fixed  # noqa: E731
    else:
        clock = now or _utc_now
    mirror = cfg.layout.repo
    out: list[Check] = [
        Check("ssh", ssh_command(), ALL, parse_ssh, _names(cfg.hosts),
              about="reachable over SSH with a verified host key"),
        Check("disk", disk_command(cfg.deploy_to), ALL, parse_disk(cfg.deploy_to, min_free_mib),
              _names(cfg.hosts), about=f"free space under {cfg.deploy_to}"),
    ]
    if cfg.database is not None and cfg.db_host is not None:
        backups = cfg.database.backup_dir
        out.append(Check("disk", disk_command(backups), ("db",),
                         parse_disk(backups, min_free_mib), (cfg.db_host.name,),
                         about=f"free space for backups under {backups}"))
    out += binaries_checks(cfg)
    ledger = cfg.ledger_host
    out += rights_checks(cfg)
    out += shared_checks(cfg, mirror, expect_app_env)
    out += app_checks(cfg)
    pending = cfg.playbook.steps("migrate", "pending")
    host = cfg.migrate_host
    if pending and host is not None:
        path = release_path or cfg.layout.current
        try:
            step = pending[0].command(cfg.template_values(host, release_path=path))
        except ConfigError as exc:
            msg = exc.message
            out.append(Check("pending_migrations", None, ("migrate",),
                             lambda s, e, msg=msg: (False, f"cannot render migrate.pending: {msg}"),
                             blocking=False))
        else:
            out.append(Check("pending_migrations", pending_command(step, path), ("migrate",),
                             parse_pending, (host.name,), blocking=False,
                             about=f"pending migrations of {path}"))
    out.append(Check("lock", LK.read(cfg.layout.state), ("ledger",), parse_lock, (ledger.name,),
                     about="the env lock is free"))
    out.append(Check("window", None, (), window_parse(cfg.windows, cfg.freezes, clock),
                     about="inside a deploy window, outside every freeze"))
    return out
