"""Plans of maintenance mode by hand and of the scheduled maintenance job (pure)."""

from __future__ import annotations

import posixpath

from ..commands import databases as DB
from ..commands import files as F
from ..config import Config
from ..records import BackupRef
from ..shell import argv
from ..stages import StageName
from ..state.backups import Kind
from . import ops
from .deploy_plan import offsite
from .plan import Action, Lane, Plan, RecordBackup, RecordFiles, RecordProof, Stage, UploadBackup, fenced


def mode_plan(cfg: Config, on: bool, *, message: str, retry: int, ttl: float | None,
              release: str, token: int | None = None) -> Plan:
    lanes = ops.maintenance_lanes(cfg, cfg.app_hosts, on, ttl=ttl, message=message, retry=retry,
                                  release=release)
    stages = [Stage(StageName.MAINTENANCE, "on" if on else "off", lanes)]
    # on or off, done only when the load balancer sees every server UP: users get the app's
    # maintenance page, or the app, not the load balancer's "no server is available"
    stages += ops.lb_up_stage(cfg, "maintenance", cfg.app_hosts)
    return fenced(Plan("maintenance", release, tuple(stages)), cfg.fence_record, token)


def window_plan(cfg: Config, *, backup_path: str | None, remove: list[str], release: str,
                gate_release: str | None, token: int | None = None,
                prove: BackupRef | None = None, files_stamp: str | None = None,
                remove_files: dict[str, list[str]] | None = None) -> Plan:
    """The scheduled job: a nightly backup proven by a test restore, retention, the playbook's
    maintenance tasks, the gate. `prove`: another backup to test-restore first (the one the
    newest deploy's rollback would restore, until it is proven)."""
    stages = []
    backup_lanes: tuple[Lane, ...] = ()
    if backup_path and cfg.database and cfg.db_host:
        db = DB.of(cfg.database)
        act = Action(host=cfg.db_host.name, command=db.dump(backup_path), timeout=cfg.ssh.command_timeout,
                     records=(RecordBackup(0, backup_path),), what="nightly backup")
        acts: tuple[Action, ...] = (act,)
        if offsite(cfg):  # a copy in the bucket too, checked against the recorded sha256
            acts += (Action(host=cfg.db_host.name, backend=UploadBackup(backup_path), what="backup off-site"),)
        # each proven by a test restore before retention may remove an older one
        for path, sha in ([(prove.path, prove.sha256)] if prove else []) + [(backup_path, None)]:
            acts += (Action(host=cfg.db_host.name, command=db.prove(path, sha), what="test restore",
                            timeout=cfg.ssh.command_timeout, records=(RecordProof(0, path, sha),)),)
        backup_lanes = (Lane(cfg.db_host.name, acts),)
    backup_lanes += files_lanes(cfg, files_stamp)
    if backup_lanes:
        stages.append(Stage(StageName.BACKUP, backup_path or "the app's files", backup_lanes))
    if backup_path and remove and cfg.database and cfg.db_host:
        rm = Action(host=cfg.db_host.name, what="retention", command=argv(
            "rm", "-f", "--", *[posixpath.join(DB.of(cfg.database).backup_dir, n) for n in remove]))
        stages.append(Stage(StageName.RETENTION, f"remove {len(remove)}", (Lane(cfg.db_host.name, (rm,)),)))
    doomed = {h: names for h, names in (remove_files or {}).items() if names}
    if doomed:
        lanes = tuple(Lane(h, (Action(host=h, what="file backup retention", command=argv(
            "rm", "-f", "--", *[posixpath.join(F.archive_dir(cfg.deploy_to), n) for n in names])),))
            for h, names in sorted(doomed.items()))
        stages.append(Stage(StageName.RETENTION, f"file archives: remove {sum(map(len, doomed.values()))}",
                            lanes))
    tasks = cfg.playbook.steps("maintenance_tasks")
    lanes = ops.lanes([(h, [ops.run(h, ops.step_commands(cfg, tasks, h, ops.values(
        cfg, h, release, release_path=cfg.layout.current)), what="maintenance tasks")]) for h in cfg.app_hosts])
    stages.append(Stage(StageName.MAINTENANCE_TASKS, f"{len(tasks)} task(s)", lanes))
    if release:
        checks = tuple(Lane(h.name, (ops.check(cfg, h, gate_release or release),))
                       for h in cfg.app_hosts if h.has("web"))
        if gate_release is None:  # hosts disagree: check each answers, whatever its release
            checks = tuple(Lane(h.name, (_any_release(ops.check(cfg, h, release)),))
                           for h in cfg.app_hosts if h.has("web"))
        stages.append(Stage(StageName.GATE, "", checks))
    return fenced(Plan("maintenance", release, tuple(stages)), cfg.fence_record, token)


def files_lanes(cfg: Config, stamp: str | None) -> tuple[Lane, ...]:
    """`backup.files` archived on each app host (beside the database's nightly backup), under
    `deploy_to/backups`."""
    if not (stamp and cfg.file_backups):
        return ()
    lanes = []
    for h in cfg.app_hosts:
        dest = posixpath.join(F.archive_dir(cfg.deploy_to), F.archive_name(cfg.env, h.name, stamp))
        act = Action(host=h.name, what="file backup", timeout=cfg.ssh.command_timeout,
                     command=F.archive(cfg.layout.shared, list(cfg.file_backups), list(cfg.file_backup_exclude), dest),
                     records=(RecordFiles(0, dest, cfg.file_backups),))
        acts = (act,)
        if offsite(cfg):  # a copy in the bucket too, checked against the recorded sha256
            acts += (Action(host=h.name, backend=UploadBackup(dest, Kind.FILES), what="file backup off-site"),)
        lanes.append(Lane(h.name, acts))
    return tuple(lanes)


def _any_release(a: Action) -> Action:
    from dataclasses import replace

    return replace(a, http=replace(a.http, expect_json=None))
