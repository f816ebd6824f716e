"""Maintenance mode by hand, the scheduled maintenance job cron runs, and its crontab lines."""

from __future__ import annotations

import datetime as dt
import os
import posixpath
import subprocess
import sys
import time
from pathlib import Path

from . import cron as CR
from . import retention as RT
from . import windows as W
from .commands import backup as B
from .config import Config
from .errors import ConfigError, DeployerError, NeedsHuman, Refused
from .output import Reporter
from .shell import argv, raw

ROOT = Path(__file__).resolve().parents[1]


def window_decision(cfg: Config, now: dt.datetime | None = None) -> W.Decision:
    return W.decide(cfg.windows, cfg.freezes, now or dt.datetime.now(dt.UTC))


def check_window(cfg: Config, *, force: bool, reason: str, now: dt.datetime | None = None) -> str | None:
    """Refuse (exit 3) outside every window or inside a freeze, unless forced with a reason.
    Returns the note the ledger records for a forced run."""
    if not cfg.windows and not cfg.freezes:
        return None
    decision = window_decision(cfg, now)
    if decision.allowed:
        return None
    if not force:
        raise Refused(W.refusal_message(cfg.env, decision) +
                      '; to deploy anyway: --force --reason "why"')
    if not reason.strip():
        raise ConfigError("--force: a --reason is required (it is recorded in the ledger)")
    return W.forced_note(decision, reason)


def _deploy_like(cfg: Config, rep: Reporter, reason: str):
    """A Deploy object for its helpers (steps, maintenance, gate) without a ref."""
    from .pipeline import Deploy, DeployState
    from .session import Session

    return Deploy.helpers(cfg, rep, Session(cfg, rep, reason=reason)), DeployState


def set_mode(cfg: Config, rep: Reporter, *, on: bool, message: str = "Down for maintenance",
             retry: int = 60, ttl: float | None = None) -> int:
    """`maintenance.on/off` by hand. Without --ttl, maintenance set by hand does not expire."""
    from .session import who

    d, DeployState = _deploy_like(cfg, rep, f"maintenance {'on' if on else 'off'} by hand")
    try:
        states = d.s.host_states(d.app_hosts)
        states.raise_failures("maintenance")
        current = {h: s.current for h, s in states.results.items()}
        st = DeployState(release=next((r for r in current.values() if r), ""), commit="", ref="")
        d.maintenance(st, on=on, message=message, retry=retry, ttl=ttl)
        d.s.ledger.append({"type": "maintenance.manual", "run": d.s.run_id, "on": on, "who": who(),
                           "message": message, "ttl": ttl})
        rep.event("outcome", outcome="success", release=st.release,
                  message=f"{cfg.env}: maintenance {'ON' if on else 'off'} on "
                          f"{len([h for h in d.app_hosts if h.has('web')])} web host(s)"
                          + (f", expires in {ttl:g}s" if on and ttl else ""))
        return 0
    finally:
        d.s.close()


def backup_names(cfg: Config, d) -> list[str]:
    out = d.s.run(cfg.db_host, argv("ls", "-1", cfg.database.backup_dir), check=False).stdout
    return [n for n in out.split() if n.endswith(".dump")]


def run_window(cfg: Config, rep: Reporter, *, promote: bool = False, force: bool = False,
               reason: str = "", now: dt.datetime | None = None) -> int:
    """`maintenance.run`, the job cron runs: window, lock, backup with retention, the playbook's
    maintenance tasks, optionally promote a paused rollout, the gate; ledger and notices."""
    forced = check_window(cfg, force=force, reason=reason, now=now)
    d, DeployState = _deploy_like(cfg, rep, "scheduled maintenance")
    rep.event("run", message=f"scheduled maintenance of {cfg.env}" + (f" ({forced})" if forced else ""))
    s = d.s
    try:
        s.acquire_lock(0)
        try:
            s.ledger.append({"type": "maintenance.start", "run": s.run_id, "forced": forced})
            history = s.ledger.history()
            states = s.host_states(d.app_hosts)
            states.raise_failures("maintenance.run")
            current = sorted({st.current for st in states.results.values() if st.current})
            st = DeployState(release=current[-1] if current else "", commit="", ref="")
            done = []
            if cfg.database and cfg.db_host:
                db = B.Database.of(cfg.database)
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                path = posixpath.join(db.backup_dir, f"{cfg.env}-nightly-{stamp}.dump")
                sha, size = B.parse_dump(s.run(cfg.db_host, B.dump(db, path),
                                               timeout=cfg.ssh.command_timeout).stdout)
                s.ledger.append({"type": "backup", "run": s.run_id, "path": path, "sha256": sha,
                                 "size": size, "host": cfg.db_host.name, "kind": "nightly"})
                protected = {posixpath.basename(r.backup["path"]) for r in history.releases.values()
                             if r.backup and r.release in set(current) | history.snapshot_releases()}
                # the backup of the newest deploy is what its rollback would restore
                if history.order and history.releases[history.order[-1]].backup:
                    protected.add(posixpath.basename(history.releases[history.order[-1]].backup["path"]))
                kept, removed, unknown = RT.plan(backup_names(cfg, d), now or dt.datetime.now(dt.UTC),
                                                 cfg.retention, protected)
                if removed:
                    s.run(cfg.db_host, argv("rm", "-f", "--",
                                            *[posixpath.join(db.backup_dir, n) for n in removed]))
                s.ledger.append({"type": "retention", "run": s.run_id, "kept": kept, "removed": removed,
                                 "unknown": unknown, "protected": sorted(protected)})
                done.append(f"backup {posixpath.basename(path)} ({size} bytes), retention kept "
                            f"{len(kept)}, removed {len(removed)}")
            d.steps_on(cfg.playbook.steps("maintenance_tasks"), d.app_hosts, st, "maintenance_tasks",
                       release_path=cfg.current_path)
            done.append(f"{len(cfg.playbook.steps('maintenance_tasks'))} maintenance task(s)")
            web = [h for h in d.app_hosts if h.has("web")]
            if st.release:
                d.gate(st, web, release=None if len(current) > 1 else st.release)
                done.append("gate passed")
            s.ledger.append({"type": "maintenance.end", "run": s.run_id, "outcome": "success",
                             "done": done})
        except DeployerError as exc:
            s.ledger.append({"type": "maintenance.end", "run": s.run_id, "outcome": "failed",
                             "error": exc.message[:2000]})
            raise
        finally:
            s.release_lock()
    finally:
        s.close()
    rep.event("outcome", outcome="success", release=st.release,
              message=f"{cfg.env}: scheduled maintenance done: " + "; ".join(done))
    if promote:
        from .resume import Resume, paused_run
        from .session import Session

        probe = Session(cfg, rep)
        try:
            has_paused = paused_run(probe.ledger.history()) is not None
        finally:
            probe.close()
        if has_paused:
            return Resume(cfg, rep, "promote").run()
    return 0


def _paths() -> dict[str, Path]:
    venv = Path(sys.prefix)
    return {"project_dir": ROOT, "inv_path": venv / "bin" / "inv",
            "log_dir": Path(os.environ.get("DEPLOYER_LOG_DIR", "/var/log/deployer")),
            "lock_dir": Path(os.environ.get("DEPLOYER_LOCK_DIR", "/run/lock"))}


def cron_block(cfg: Config) -> list[str]:
    if not cfg.schedules:
        raise ConfigError(f"{cfg.inventory_path.name}: schedules: none defined for env {cfg.env!r}")
    paths = _paths()
    paths["log_dir"].mkdir(parents=True, exist_ok=True)  # the lines append to it from their start
    return CR.cron_lines(cfg.env, cfg.schedules, **paths)


def cron_install(cfg: Config, rep: Reporter) -> int:
    """Install the env's lines in this machine's crontab, in a marked block, idempotently."""
    lines = cron_block(cfg)
    _paths()["log_dir"].mkdir(parents=True, exist_ok=True)
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
