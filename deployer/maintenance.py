"""Maintenance mode by hand, the scheduled maintenance job cron runs, and its crontab lines."""

from __future__ import annotations

import datetime as dt
import os
import posixpath
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import cron as CR
from . import retention as RT
from .commands import databases as DB
from .config import Config
from .errors import ConfigError, DeployerError, NeedsHuman, message_of
from .journal import state_dir
from .ledger import History
from .output import Reporter
from .shell import argv, raw
from .windows import check_window, window_decision  # noqa: F401 - their home moved


def set_mode(cfg: Config, rep: Reporter, *, on: bool, message: str = "Down for maintenance",
             retry: int = 60, ttl: float | None = None) -> int:
    """`maintenance.on/off` by hand. Without --ttl, maintenance set by hand does not expire."""
    from . import records as REC
    from .engine.maint_plan import mode_plan
    from .engine.runs import journaled, session_of
    from .engine.state import RunState
    from .session import Session, who

    with session_of(Session(cfg, rep, reason=f"maintenance {'on' if on else 'off'} by hand"), rep) as s:
        facts = s.facts(cfg.app_hosts)
        facts.require_reachable("maintenance")
        release = next((st.current for st in facts.hosts.values() if st.current), "")
        # without the lock (maintenance by hand takes none): no fencing token, no check
        plan = mode_plan(cfg, on, message=message, retry=retry, ttl=ttl, release=release, token=s.fence_token)
        with journaled(s, rep, RunState(run=s.run_id, release=release)) as run:
            run.ex.run(plan)
            run.write(REC.MaintenanceManual(on=on, who=who(), message=message, ttl=ttl))
        rep.event("outcome", outcome="success", release=release,
                  message=f"{cfg.env}: maintenance {'ON' if on else 'off'} on "
                          f"{len([h for h in cfg.app_hosts if h.has('web')])} web host(s)"
                          + (f", expires in {ttl:g}s" if on and ttl else ""))
        return 0


def protected_backups(history: History, current: list[str]) -> set[str]:
    """The backups retention never removes (file names): those taken before a release served
    now or one an unfinished run can return to, and the newest deploy's."""
    protected = {posixpath.basename(r.backup.path) for r in history.releases.values()
                 if r.backup is not None and r.release in set(current) | history.snapshot_releases()}
    # the backup of the newest deploy is what its rollback would restore
    newest = history.releases[history.order[-1]].backup if history.order else None
    if newest is not None:
        protected.add(posixpath.basename(newest.path))
    return protected


def run_window(cfg: Config, rep: Reporter, *, promote: bool = False, force: bool = False,
               reason: str = "", now: dt.datetime | None = None) -> int:
    """`maintenance.run`, the job cron runs: window, lock, backup with retention, the playbook's
    maintenance tasks, optionally promote a paused rollout, the gate; ledger and notices."""
    from .engine.rollback import Resume, paused_run
    from .engine.runs import session_of
    from .session import Session

    forced = check_window(cfg, force=force, reason=reason, now=now)
    rep.event("run", message=f"scheduled maintenance of {cfg.env}" + (f" ({forced})" if forced else ""))
    now = now or dt.datetime.now(dt.UTC)
    with session_of(Session(cfg, rep, reason="scheduled maintenance"), rep) as s:
        history = s.history()
        has_paused = paused_run(history) is not None
        if has_paused:
            # A paused rollout holds the lock: the nightly backup still runs, without the lock.
            rep.event("notice", message=f"{cfg.env}: a rollout is paused; the backup and tasks run, "
                                        "the lock stays with the rollout")
        else:
            s.acquire_lock(0)
        facts = s.facts(cfg.app_hosts)
        facts.require_reachable("maintenance.run")
        current = sorted({st.current for st in facts.hosts.values() if st.current})
        release = current[-1] if current else ""
        done = _nightly(cfg, s, rep, forced, release, _Backups.plan(cfg, s, history, current, now), now,
                        gate=len(current) <= 1, prove=history.to_prove())
    rep.event("outcome", outcome="success", release=release,
              message=f"{cfg.env}: scheduled maintenance done: " + "; ".join(done))
    if promote and has_paused:
        return Resume(cfg, rep, "promote").run()
    return 0


@dataclass(frozen=True)
class _Backups:
    """The nightly backup's path and what retention keeps and removes (no database: nothing)."""

    path: str | None = None
    stamp: str | None = None  # the nightly backup's UTC time (the file archives' too)
    kept: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    protected: frozenset[str] = frozenset()

    @classmethod
    def plan(cls, cfg: Config, s, history: History, current: list[str], now: dt.datetime) -> _Backups:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())  # the dump's own time, not the window's
        if not (cfg.database and cfg.db_host):
            return cls(stamp=stamp if cfg.file_backups else None)
        db = DB.of(cfg.database)
        path = posixpath.join(db.backup_dir, f"{cfg.env}-nightly-{stamp}.dump")
        protected = protected_backups(history, current)
        names = backup_names(cfg, s) + [posixpath.basename(path)]
        kept, removed, unknown = RT.plan(names, now, cfg.retention, protected | {posixpath.basename(path)})
        return cls(path, stamp, tuple(kept), tuple(removed), tuple(unknown), frozenset(protected))


def _nightly(cfg: Config, s, rep: Reporter, forced: str, release: str, backups: _Backups,
             now: dt.datetime, *, gate: bool, prove=None) -> list[str]:
    """The job's run: its plan executed and journaled; what it did, for the outcome."""
    from . import records as REC
    from .engine.maint_plan import window_plan
    from .engine.runs import journaled
    from .engine.state import RunState

    path = backups.path
    remove_files = file_retention(cfg, s, now, backups.stamp)
    plan = window_plan(cfg, backup_path=path, remove=list(backups.removed), release=release,
                       gate_release=release if gate else None, token=s.fence_token,
                       prove=prove if path else None, files_stamp=backups.stamp, remove_files=remove_files)
    done: list[str] = []
    with journaled(s, rep, RunState(run=s.run_id, release=release),
                   REC.MaintenanceStarted(forced=forced, ledger=s.ledger_id)) as run:
        try:
            run.ex.run(plan)
        except DeployerError as exc:
            run.write(REC.MaintenanceEnded(outcome="failed", error=exc.message[:2000]))
            failed = next((p for p in run.st.proofs if not p.ok), None)
            again = f"`inv maintenance.run --env {cfg.env} --force --reason \"...\"`"
            if failed is not None and failed.tested:
                raise NeedsHuman(
                    f"{cfg.env}: backup {failed.path} failed its test restore ({failed.error}); a rollback "
                    "will never restore it, and retention removed nothing tonight",
                    hint=f"look at {cfg.db_host.name}'s disk and database server, then run {again} again") from exc
            if failed is not None:
                raise NeedsHuman(
                    f"{cfg.env}: backup {failed.path} could not be test-restored ({failed.error}): it is not "
                    "proven, and retention removed nothing tonight",
                    hint=f"the database role needs CREATEDB for the test restore's scratch database "
                         f"({DB.of(cfg.database).scratch_name()}); then run {again}") from exc
            raise
        if path:
            run.write(REC.Retention(kept=list(backups.kept), removed=list(backups.removed),
                                    unknown=list(backups.unknown), protected=sorted(backups.protected)))
            size = run.st.backup.size if run.st.backup is not None else 0
            proven = "; ".join(f"test restore of {posixpath.basename(p.path)}: {p.tables} table(s), {p.rows} row(s)"
                               for p in run.st.proofs)
            done.append(f"backup {posixpath.basename(path)} ({size} bytes), {proven}, retention kept "
                        f"{len(backups.kept)}, removed {len(backups.removed)}")
            done += _in_bucket(run, "bucket retention", lambda: _bucket_retention(
                cfg, s, now, backups.protected | {posixpath.basename(path)}))
        if run.st.archives:
            removed = sum(map(len, remove_files.values()))
            done.append(f"file archives on {len(run.st.archives)} host(s) "
                        f"({sum(a.size for a in run.st.archives)} bytes), retention removed {removed}")
            done += _in_bucket(run, "bucket retention of the file archives", lambda: _bucket_files_retention(
                cfg, s, now, {posixpath.basename(a.path) for a in run.st.archives}))
        done.append(f"{len(cfg.playbook.steps('maintenance_tasks'))} maintenance task(s)")
        if release:
            done.append("gate passed")
        run.write(REC.MaintenanceEnded(outcome="success", done=done))
    return done


def _in_bucket(run, what: str, prune) -> list[str]:
    """What `prune` (a retention of the bucket) says it did; its failure recorded as the job's."""
    from . import records as REC

    try:
        said = prune()
    except Exception as exc:  # noqa: BLE001 - recorded, then reported as a failure
        msg = f"{what} failed: {message_of(exc)}"
        run.write(REC.MaintenanceEnded(outcome="failed", error=msg[:2000]))
        raise DeployerError(msg) from exc
    return [said] if said else []


def _bucket_retention(cfg: Config, s, now: dt.datetime, protected: set[str]) -> str | None:
    """The same retention policy applied to the backups kept in the state bucket (S3 state):
    what the planner keeps from the bucket's names, protected backups (those a live snapshot,
    the current release or the newest deploy would restore) always kept. None without S3."""
    from .engine.deploy_plan import offsite

    if not offsite(cfg):
        return None
    names = [b.name for b in s.state.list_backups()]
    kept, removed, unknown = RT.plan(names, now, cfg.retention, protected)
    deleted = s.state.apply_retention(set(kept) | set(unknown) | protected) if removed else []
    s.reporter.event("notice", message=f"{cfg.env}: bucket {s.state.where()}: retention kept "
                                       f"{len(kept)}, removed {len(deleted)}"
                                       + (f" ({', '.join(n.rsplit('/', 1)[-1] for n in deleted)})" if deleted else ""))
    return f"bucket retention kept {len(kept)}, removed {len(deleted)}"


def _bucket_files_retention(cfg: Config, s, now: dt.datetime, tonight: set[str]) -> str | None:
    """The retention policy applied to each app host's file archives in the bucket (S3 state),
    tonight's always kept. None without S3."""
    from .commands import files as F
    from .engine.deploy_plan import offsite
    from .state.backups import Kind

    if not offsite(cfg):
        return None
    names = [b.name for b in s.state.list_backups(Kind.FILES)]
    kept: set[str] = set()
    removed = 0
    for h in cfg.app_hosts:
        mine = [n for n in names if F.owner(cfg.env, n) == h.name]
        k, r, u = RT.plan(mine, now, cfg.retention, tonight & set(mine))
        kept |= set(k) | set(u)
        removed += len(r)
    # names of no listed host (a host gone from the inventory) are kept: never pruned blind
    kept |= {n for n in names if F.owner(cfg.env, n) not in {h.name for h in cfg.app_hosts}}
    deleted = s.state.apply_retention(kept | tonight, Kind.FILES) if removed else []
    s.reporter.event("notice", message=f"{cfg.env}: bucket {s.state.where()}: file archives kept "
                                       f"{len(names) - len(deleted)}, removed {len(deleted)}")
    return f"bucket file archives kept {len(names) - len(deleted)}, removed {len(deleted)}"


def file_retention(cfg: Config, s, now: dt.datetime, stamp: str | None) -> dict[str, list[str]]:
    """Per app host, the file archives the retention policy removes tonight (tonight's kept)."""
    from .commands import files as F

    if not (stamp and cfg.file_backups):
        return {}
    listing = s.each(cfg.app_hosts, lambda h: s.run(h, argv("ls", "-1", F.archive_dir(cfg.deploy_to)),
                                                     check=False).stdout.split())  # every host at once
    listing.raise_failures("file backup retention: listing the archives")
    out = {}
    for h in cfg.app_hosts:
        new = F.archive_name(cfg.env, h.name, stamp)
        names = [n for n in listing.results[h.name] if F.owner(cfg.env, n) == h.name] + [new]
        _kept, removed, _unknown = RT.plan(names, now, cfg.retention, {new})
        out[h.name] = removed
    return out


def backup_names(cfg: Config, s) -> list[str]:
    out = s.run(cfg.db_host, argv("ls", "-1", cfg.database.backup_dir), check=False).stdout
    return [n for n in out.split() if n.endswith(".dump")]


def installed_deployer() -> Path:
    """The absolute path of the `deployer` program running (or installed beside this Python),
    the one a crontab line can call without the user's PATH."""
    ran = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    candidates = [ran.resolve() if ran and ran.name == "deployer" else None,
                  Path(sys.executable).parent / "deployer",  # the virtualenv's bin, not resolved
                  shutil.which("deployer")]
    for path in candidates:
        if path and os.access(path, os.X_OK) and Path(path).is_file():
            return Path(path).absolute()
    raise ConfigError("cron: no `deployer` program found (not beside "
                      f"{sys.executable}, not on PATH): install deployer with pip first")


def _log_dir() -> Path:
    if os.environ.get("DEPLOYER_LOG_DIR"):
        return Path(os.environ["DEPLOYER_LOG_DIR"]).absolute()
    return Path("/var/log/deployer") if os.geteuid() == 0 else state_dir() / "log"


def _lock_dir(log_dir: Path) -> Path:
    if os.environ.get("DEPLOYER_LOCK_DIR"):
        return Path(os.environ["DEPLOYER_LOCK_DIR"]).absolute()
    run_lock = Path("/run/lock")
    return run_lock if os.access(run_lock, os.W_OK | os.X_OK) else log_dir


def _paths(cfg: Config) -> dict[str, Path]:
    log_dir = _log_dir()
    try:
        log_dir.mkdir(parents=True, exist_ok=True)  # the lines append to it from their start
    except OSError as exc:
        raise ConfigError(f"cron: cannot create the log directory {log_dir}: {exc.strerror} "
                          "(DEPLOYER_LOG_DIR sets another)") from None
    return {"project_dir": cfg.root.resolve(), "deployer_path": installed_deployer(),
            "log_dir": log_dir, "lock_dir": _lock_dir(log_dir)}


def cron_block(cfg: Config) -> list[str]:
    if not cfg.schedules:
        raise ConfigError(f"{cfg.inventory_path.name}: schedules: none defined for env {cfg.env!r}")
    return CR.cron_lines(cfg.env, cfg.schedules, **_paths(cfg))


def check_jobs(cfg: Config) -> None:
    """Run each job's command with --help as cron would (`cron.check_argv`); ConfigError (exit 2)
    naming the job and what it printed when one fails: nothing is installed then."""
    paths = _paths(cfg)
    for schedule in cfg.schedules:
        lock = paths["lock_dir"] / f"deployer-{cfg.env}-{schedule.name}.check.lock"
        command = CR.job_command(cfg.env, schedule, project_dir=paths["project_dir"],
                                 deployer_path=paths["deployer_path"], lock=lock, for_cron=False)
        proc = subprocess.run(CR.check_argv(command, Path.home()), capture_output=True, text=True,
                              timeout=120)
        if proc.returncode != 0:
            said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise ConfigError(f"cron install: schedule {schedule.name!r} does not run from cron's "
                              f"environment (`{command} --help` exited {proc.returncode}: {said[0]}); "
                              "nothing was installed")


def cron_install(cfg: Config, rep: Reporter) -> int:
    """Install the env's lines in this machine's crontab, in a marked block, idempotently, once
    each job's command ran from cron's environment."""
    lines = cron_block(cfg)
    check_jobs(cfg)
    current = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    existing = current.stdout if current.returncode == 0 else ""
    new = CR.install_block(existing, cfg.env, lines)
    if new == existing:
        rep.event("notice", message=f"crontab: {cfg.env} block already up to date")
        return 0
    proc = subprocess.run(["crontab", "-"], input=new, capture_output=True, text=True)
    if proc.returncode != 0:
        raise NeedsHuman(f"crontab: install failed: {proc.stderr.strip()}")
    rep.event("notice", message=f"crontab: installed {len(lines) - len(CR.HEADER)} job(s) for {cfg.env}")
    return 0


def cron_remove(cfg: Config, rep: Reporter) -> int:
    current = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    if current.returncode != 0:
        return 0
    new = CR.remove_block(current.stdout, cfg.env)
    if new != current.stdout:
        subprocess.run(["crontab", "-"], input=new, capture_output=True, text=True, check=True)
    rep.event("notice", message=f"crontab: {cfg.env} block removed")
    return 0


__all__ = ["check_window", "set_mode", "run_window", "cron_block", "cron_install", "cron_remove", "raw"]
