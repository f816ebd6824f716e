"""`restore --files`: the app's own files (`backup.files`) put back on each app host from its
archive of the nightly job (the newest, or the one of `--at STAMP`), under the env's lock,
journaled. A plan like the others (`back_plan.files_stage`), built before anything runs;
`--dry-run` prints it."""

from __future__ import annotations

import posixpath

from .. import records as REC
from ..commands import fence as FN
from ..commands import files as F
from ..config import Config
from ..errors import ConfigError, DeployerError, NeedsHuman, Refused, message_of
from ..ledger import History
from ..output import Reporter
from ..session import Session
from .back_plan import files_stage
from .plan import Plan, fenced
from .runs import journaled, session_of
from .state import RunState


def archives(cfg: Config, history: History, stamp: str | None) -> dict[str, REC.FilesBackup]:
    """Per app host, the archive to restore: the one taken at `stamp`, else the newest."""
    need_files(cfg, "restore --files")
    found: dict[str, REC.FilesBackup] = {}
    for e in history.archives():
        if stamp is None or posixpath.basename(e.path) == F.archive_name(cfg.env, e.host, stamp):
            found[e.host] = e  # the ledger's order: the last one is the newest
    return complete(cfg, found, f"no file archive{' of ' + stamp if stamp else ''}")


def need_files(cfg: Config, what: str) -> None:
    if not cfg.file_backups:
        raise ConfigError(f"{cfg.inventory_path.name}: backup.files: none listed for env {cfg.env!r}, "
                          f"so there are no file archives for {what}")


def complete(cfg: Config, found: dict[str, REC.FilesBackup], missing_why: str) -> dict[str, REC.FilesBackup]:
    """`found` when every app host has an archive in it, else refused naming the hosts without."""
    missing = [h.name for h in cfg.app_hosts if h.name not in found]
    if missing:
        raise Refused(f"{missing_why} of {', '.join(missing)} in the ledger (the maintenance job archives "
                      f"backup.files each night); nothing changed")
    return found


def restore_plan(cfg: Config, found: dict[str, REC.FilesBackup], work: str, token: int | None) -> Plan:
    return fenced(Plan("restore", "", (files_stage(cfg, cfg.app_hosts, found, work),)), cfg.fence_record, token)


def run_restore(cfg: Config, rep: Reporter, *, stamp: str | None, dry_run: bool = False,
                session: Session | None = None) -> int:
    with session_of(session or Session(cfg, rep, reason="restore files"), rep) as s:
        if not dry_run:
            s.acquire_lock(0)
        found = archives(cfg, s.history(), stamp)
        plan = restore_plan(cfg, found, s.run_id, FN.DRY_RUN if dry_run else s.fence_token)
        if dry_run:
            for stage, host, command in plan.rows():
                rep.event("plan", stage=stage, host=host, command=command)
            return 0
        done = f"files restored on {len(found)} host(s) from " + ", ".join(
            f"{h} {posixpath.basename(f.path)}" for h, f in sorted(found.items()))
        with journaled(s, rep, RunState(run=s.run_id, release=""),
                       REC.MaintenanceStarted(ledger=s.ledger_id, task="restore files")) as run:
            try:
                run.ex.run(plan)
            except DeployerError as exc:
                run.write(REC.MaintenanceEnded(outcome="failed", error=message_of(exc)[:2000]))
                raise NeedsHuman(f"restore --files failed: {message_of(exc)}",
                                 hint="each path is either the old or the restored one; run it again") from None
            for h, arc in sorted(found.items()):
                run.write(REC.FilesRestored(host=h, path=arc.path, sha256=arc.sha256))
            run.write(REC.MaintenanceEnded(outcome="success", done=[done]))
        rep.event("outcome", outcome="success", release="", message=f"{cfg.env}: {done}")
        return 0
