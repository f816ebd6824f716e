"""`restore --files`: the app's own files (`backup.files`) put back on each app host from its
archive of the nightly job (the newest, or the one of `--at STAMP`), under the env's lock,
journaled. A plan like the others: one action per host, built before anything runs."""

from __future__ import annotations

import posixpath

from .. import records as REC
from ..commands import files as F
from ..config import Config
from ..errors import ConfigError, DeployerError, NeedsHuman, Refused, message_of
from ..ledger import History
from ..output import Reporter
from ..session import Session
from ..stages import StageName
from .plan import Action, Lane, Plan, Stage, fenced
from .runs import journaled, session_of
from .state import RunState


def archives(cfg: Config, history: History, stamp: str | None) -> dict[str, REC.FilesBackup]:
    """Per app host, the archive to restore: the one taken at `stamp`, else the newest."""
    if not cfg.file_backups:
        raise ConfigError(f"{cfg.inventory_path.name}: backup.files: none listed for env {cfg.env!r}: "
                          "there are no file archives to restore")
    found: dict[str, REC.FilesBackup] = {}
    for e in history.records:
        if isinstance(e, REC.FilesBackup) and (stamp is None or posixpath.basename(e.path) ==
                                               F.archive_name(cfg.env, e.host, stamp)):
            found[e.host] = e  # the ledger's order: the last one is the newest
    missing = [h.name for h in cfg.app_hosts if h.name not in found]
    if missing:
        raise Refused(f"restore --files: no file archive{' of ' + stamp if stamp else ''} of "
                      f"{', '.join(missing)} in the ledger")
    return found


def restore_plan(cfg: Config, found: dict[str, REC.FilesBackup], stamp: str, token: int | None) -> Plan:
    lanes = tuple(Lane(h.name, (Action(host=h.name, what="restore files", timeout=cfg.ssh.command_timeout,
                                       command=F.restore(cfg.layout.shared, found[h.name].path,
                                                         found[h.name].sha256, list(found[h.name].paths), stamp)),))
                  for h in cfg.app_hosts)
    return fenced(Plan("restore", "", (Stage(StageName.FILES, "from their archives", lanes),)),
                  cfg.fence_record, token)


def run_restore(cfg: Config, rep: Reporter, *, stamp: str | None, now_stamp: str,
                session: Session | None = None) -> int:
    with session_of(session or Session(cfg, rep, reason="restore files"), rep) as s:
        s.acquire_lock(0)
        found = archives(cfg, s.history(), stamp)
        plan = restore_plan(cfg, found, now_stamp, s.fence_token)
        with journaled(s, rep, RunState(run=s.run_id, release="")) as run:
            try:
                run.ex.run(plan)
            except DeployerError as exc:
                raise NeedsHuman(f"restore --files failed: {message_of(exc)}",
                                 hint="each path is either the old or the restored one; run it again") from None
        rep.event("outcome", outcome="success", release="",
                  message=f"{cfg.env}: files restored on {len(found)} host(s) from "
                          + ", ".join(f"{h} {posixpath.basename(f.path)}" for h, f in sorted(found.items())))
        return 0
