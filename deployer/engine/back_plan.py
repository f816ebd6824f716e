"""Plans that go back: the automatic rollback of a failed run (also `abort` and `recover`), and
`rollback` by hand. Pure functions of config, the run's state and facts, like the deploy plan."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .. import records as REC
from ..commands import artifact as A
from ..commands import backup as B
from ..commands import databases as DB
from ..commands import files as F
from ..commands import releases as R
from ..config import Config, Host
from ..errors import Refused
from ..facts import Facts
from ..ledger import History
from ..shell import Secret, raw
from ..stages import StageName
from ..state.backups import Kind
from . import ops
from .deploy_plan import DeployInputs, fetch_stage, offsite, pull_stage, shipping, unfence_stage
from .plan import Action, Effect, EnsureBackup, Lane, Plan, RecordBackup, Stage, fenced
from .state import RunState

DOWN_REFUSED = 97  # exit status of the down-migration action when they cannot all run


def _workers(cfg: Config, hosts: list[Host], target: dict[str, str | None]) -> tuple[Lane, ...]:
    pairs = []
    for h in hosts:
        rel = target.get(h.name)
        if not h.has("worker") or rel is None:
            continue
        pairs.append((h, [ops.workers(cfg, h, ops.values(cfg, h, rel), verify=False, effect=None)]))
    return ops.lanes(pairs)


def database_stage(cfg: Config, st: RunState) -> Stage:
    """Undo the run's migrations: restore the backup when that loses nothing (maintenance held
    since the dump), else down migrations when all exist, else stop and say what to do."""
    before = st.schema_before
    if st.backup is not None and st.maintenance_on and cfg.database and cfg.db_host:
        db = DB.of(cfg.database)
        # Lossless or nothing: the write fence set after the backup must show no write by anyone
        # but the migration, else restoring would throw those writes away.
        act = Action(host=cfg.db_host.name, what="restore database", effect=Effect.DB_RESTORED,
                     command=db.restore_once(st.backup.path, st.backup.sha256),
                     timeout=cfg.ssh.command_timeout)
        lost = (f"the database was migrated ({before} -> {st.schema_after}) and data was written since the "
                f"backup by something else than the migration (listed above), so restoring "
                f"{st.backup.path} would lose it. The code is back on the previous release and "
                f"maintenance mode stays ON. To finish: look at those writes, then either run the down "
                f"migrations by hand and `inv maintenance.off --env {cfg.env}`, or restore anyway with "
                f"`inv rollback --env {cfg.env} --to <previous release> --restore-db` (the writes are lost)")
        acts = (act,)
        if offsite(cfg):  # the local copy may be gone: fetched back (sha256 checked) first
            acts = (Action(host=cfg.db_host.name, backend=EnsureBackup(st.backup.path, st.backup.sha256),
                           what="backup from off-site"),) + acts
        return Stage(StageName.DATABASE, f"restore {st.backup.path}", (Lane(cfg.db_host.name, acts),),
                     refuse_on=(B.FENCE_REFUSED, lost))
    host = cfg.migrate_host
    down = cfg.playbook.steps("migrate", "down")
    can = cfg.playbook.steps("migrate", "can_down")
    backup = st.backup.path if st.backup is not None else "(no backup was taken)"
    refusal = (
        f"the database was migrated ({before} -> {st.schema_after}) without maintenance mode and "
        f"the down migrations are missing, so restoring the backup could lose writes made since. "
        f"The code is back on the previous release. To finish: check the data written since the "
        f"deploy, then either write the down migrations, or restore {backup} on "
        f"{cfg.db_host.name if cfg.db_host else 'the db host'} with `inv rollback --env {cfg.env} "
        f"--restore-db`")
    if not down or host is None or before is None:
        return Stage(StageName.DATABASE, "needs a human", refuse=refusal)
    prev = st.snapshot.get(host.name) or st.release
    vals = ops.values(cfg, host, st.release, target_version=before,
                      previous_release=prev)
    run = down[0].command(vals)
    script = run.script
    if can:
        check = can[0].command(vals)
        script = (f"if {{ {check.script}\n}}; then {{ {run.script}\n}}; "
                  f"else echo 'down migrations missing' >&2; exit {DOWN_REFUSED}; fi")
    from ..shell import Command

    act = Action(host=host.name, command=Command(script, run.display), what="down migrations",
                 effect=Effect.DB_RESTORED, timeout=cfg.ssh.command_timeout)
    return Stage(StageName.DATABASE, f"down migrations to schema {before}", (Lane(host.name, (act,)),),
                 refuse_on=(DOWN_REFUSED, refusal))


def rollback_plan(cfg: Config, st: RunState, token: int | None = None) -> Plan:
    """Every host the run touched back to its snapshot: code (drained, switched, reloaded,
    checked, put back: no request lost), then the database when it changed, workers, maintenance
    off, and the failed release removed where it was pulled. `token`: the lock's fencing token
    (`plan.fenced`)."""
    app = cfg.app_hosts
    snap = st.snapshot
    touched = [h for h in app if h.name in st.switched or h.name in st.drained]
    lanes = []
    for h in touched:
        if h.name in st.switched:
            lanes.append(ops.switch_lane(cfg, h, snap.get(h.name), drained=h.name in st.drained,
                                         effect=Effect.UNSWITCHED, wait_up=not st.maintenance_on))
        elif ops.behind_lb(cfg, h):  # drained (or its drain was attempted), never switched
            lanes.append(Lane(h.name, (ops.undrain(cfg, h, missing_ok=True, wait_up=not st.maintenance_on),)))
    stages = [ops.switch_stage(cfg, "back to the snapshot", tuple(lanes))]
    migrated = st.migrated and st.schema_after != st.schema_before or (st.migrated and st.schema_after is None)
    if migrated:
        stages.append(database_stage(cfg, st))
    restarted = [h for h in app if h.name in st.workers_restarted or (migrated and h.has("worker"))]
    stages.append(Stage(StageName.WORKER_RESTART, "snapshot release", _workers(cfg, restarted, snap)))
    if st.maintenance_on:
        stages.append(Stage(StageName.MAINTENANCE, "off", ops.maintenance_lanes(cfg, app, False, ttl=None)))
        stages += ops.lb_up_stage(cfg, "maintenance", app)
    leftovers = [h for h in app if h.name in st.pulled and snap.get(h.name) != st.release]
    builder = cfg.build_host.name if cfg.build_host is not None else None
    # the build host's artifact server goes too (a fetch that failed left it serving)
    rm = ops.lanes([(h, [ops.run(h, ([A.stop(cfg.deploy_to), A.prune(cfg.deploy_to, [st.release])]
                                     if h.name == builder else [])
                                 + [R.remove(cfg.deploy_to, [st.release])], what="remove failed release")])
                    for h in leftovers])
    stages.append(Stage(StageName.FINALIZE, f"{st.release} marked bad", rm, best_effort=True))
    stages += unfence_stage(cfg, st.fenced())  # with or without a restore
    return fenced(Plan("rollback", st.release, tuple(stages)), cfg.fence_record, token)


def files_stage(cfg: Config, hosts: list[Host], found: dict[str, REC.FilesBackup], work: str) -> Stage:
    """Each host's paths of `backup.files` put back from its archive in `found` (fetched back from
    the bucket first when the host's copy is gone, with S3 state), swapped in path by path;
    `work`: a name for the extraction's scratch folder, unique to the run."""
    lanes = []
    for h in hosts:
        arc = found[h.name]
        acts: tuple[Action, ...] = (Action(host=h.name, what="restore files", timeout=cfg.ssh.command_timeout,
                                           command=F.restore(cfg.layout.shared, arc.path, arc.sha256,
                                                             list(arc.paths), work)),)
        if offsite(cfg):
            acts = (Action(host=h.name, backend=EnsureBackup(arc.path, arc.sha256, Kind.FILES),
                           what="file archive from off-site"),) + acts
        lanes.append(Lane(h.name, acts))
    return Stage(StageName.FILES, "from their archives", tuple(lanes))


@dataclass(frozen=True)
class Rebuild:
    """`rollback --to` a release some hosts no longer have: fetched there from the artifact the
    build host keeps (`source`), else built there again from its commit."""

    hosts: tuple[str, ...]
    commit: str
    ref: str
    source: str | None = None  # the build host that keeps the release's artifact
    bucket: Secret | None = None  # or: the presigned URLs of the bucket's copy (on stdin only)
    token: Secret | None = None  # its server's capability path (on stdin only)
    port: int = 0
    current: tuple[tuple[str, str | None], ...] = ()  # what each of `hosts` serves (hard links)
    sha256: str = ""  # the artifact's, as the ledger recorded it when it was packed

    def how(self) -> str:
        """How the hosts get it back, for the notice."""
        if self.bucket is not None:
            return "fetched there from its artifact in the bucket"
        if self.source:
            return f"fetched there from the artifact {self.source} keeps"
        return f"built again there from its commit {self.commit[:7]}"


def from_artifact(cfg: Config, rebuild: Rebuild | None, history: History, target: str, facts: Facts,
                  token: Secret | None = None, port: int = 0,
                  bucket: tuple[str, Secret] | None = None) -> Rebuild | None:
    """`rebuild` from the release's artifact when the ledger recorded its sha256: the bucket's
    (`bucket`: the sha256 its copy names and its presigned URLs) when it names the same, else the
    build host's when it still keeps it (`token`, `port`: its server's for this run); else as it
    is (built from the commit)."""
    builder, rec = cfg.build_host, history.releases.get(target)
    if rebuild is None or builder is None or rec is None or not rec.artifact:
        return rebuild
    current = tuple((h, facts.hosts[h].current if h in facts.hosts else None) for h in rebuild.hosts)
    if bucket is not None and bucket[0] == rec.artifact:
        return replace(rebuild, bucket=bucket[1], current=current, sha256=rec.artifact)
    st = facts.hosts.get(builder.name)
    if token is None or st is None or target not in st.artifacts:
        return rebuild
    return replace(rebuild, source=builder.name, token=token, port=port, current=current, sha256=rec.artifact)


def rebuild_of(history: History, target: str, facts: Facts) -> Rebuild | None:
    """The hosts that no longer have `target` (cleaned up by keep_releases, a host replaced),
    with the commit and ref the ledger recorded for it: they build it again from that commit
    (the same code: `git archive` of the sha), under the same release id. None when every host
    has it; refused when the ledger does not know its commit."""
    missing = sorted(h for h, st in facts.hosts.items() if target not in st.releases)
    if not missing:
        return None
    rec = history.releases.get(target)
    if rec is None or not rec.commit:
        raise Refused(f"rollback to {target}: release missing on {', '.join(missing)} and its commit is not in "
                      "the ledger, so it cannot be built again; nothing changed")
    return Rebuild(tuple(missing), rec.commit, rec.ref)


def fetch_stages(cfg: Config, target: str, rebuild: Rebuild) -> list[Stage]:
    """`target`'s artifact served by the build host that keeps it, fetched, verified and unpacked
    by the hosts that lost the release (the build host too, from itself), its shared files
    linked again (the release's own secret files never were in the artifact); the server stops.
    Or fetched from the bucket's copy (`rebuild.bucket`), with no server."""
    pb = cfg.playbook
    link = R.prepare(cfg.deploy_to, target, pb.shared_files, pb.shared_dirs)

    def then(h: str) -> list[Action]:
        return [Action(host=h, command=link, what="link shared files")]

    if rebuild.bucket is not None:
        return [fetch_stage(cfg, target, list(rebuild.hosts), rebuild.bucket, dict(rebuild.current), then,
                            rebuild.sha256, source="the bucket", detail=f"artifact of {target} from the bucket",
                            delta=False)]
    src = cfg.host(rebuild.source)
    serve, fetch, stop = shipping(cfg, target, src, list(rebuild.hosts), rebuild.token, rebuild.port,
                                  dict(rebuild.current), then, sha256=rebuild.sha256)
    return [Stage(StageName.PULL, f"artifact of {target} kept by {src.name}", (Lane(src.name, (serve,)),)), fetch, stop]


def manual_rollback_plan(cfg: Config, target: str, hosts: list[Host], *, backup: REC.BackupRef | None,
                         safety_path: str | None, token: int | None = None,
                         files: dict[str, REC.FilesBackup] | None = None, work: str = "",
                         rebuild: Rebuild | None = None) -> Plan:
    """`rollback --to`: every app host to `target`; with a backup, the database too, under
    maintenance (a safety dump first); with `files` (`--restore-files`), each host's files put
    back from its archive before the switch; with `rebuild`, the release built again first on the
    hosts that lost it (nothing else changes before every host has it)."""
    stages: list[Stage] = []
    if rebuild is not None and (rebuild.source is not None or rebuild.bucket is not None):
        stages += fetch_stages(cfg, target, rebuild)
    elif rebuild is not None:
        inp = DeployInputs(release=target, commit=rebuild.commit, ref=rebuild.ref, maintenance=False)
        stages.append(pull_stage(cfg, [h for h in hosts if h.name in rebuild.hosts], inp, lambda h, **extra: ops.values(
            cfg, h, target, commit=rebuild.commit, ref=rebuild.ref, **extra)))
    if backup is not None:
        lanes = ops.maintenance_lanes(cfg, hosts, True, ttl=cfg.maintenance_ttl,
                                      message="Restoring, back shortly", release=target)
        stages.append(Stage(StageName.MAINTENANCE, "on", lanes))
        db = DB.of(cfg.database)
        act = Action(host=cfg.db_host.name, what="restore database", effect=Effect.DB_RESTORED,
                     command=raw(db.dump(safety_path).script + " && " + db.restore(backup.path).script),
                     timeout=cfg.ssh.command_timeout, records=(RecordBackup(0, safety_path),))
        stages.append(Stage(StageName.DATABASE, f"restore {backup.path}", (Lane(cfg.db_host.name, (act,)),)))
    if files:
        stages.append(files_stage(cfg, hosts, files, work))
    lanes = tuple(ops.switch_lane(cfg, h, target, wait_up=backup is None) for h in hosts)
    stages.append(ops.switch_stage(cfg, f"to {target}", lanes))
    stages.append(Stage(StageName.WORKER_RESTART, target, _workers(cfg, hosts, {h.name: target for h in hosts})))
    if backup is not None:
        stages.append(Stage(StageName.MAINTENANCE, "off", ops.maintenance_lanes(cfg, hosts, False, ttl=None)))
        stages += ops.lb_up_stage(cfg, "maintenance", hosts)
    # a fence a refused restore left behind (a restore, above, removes it with the rest)
    stages += unfence_stage(cfg, backup is None)
    return fenced(Plan("rollback", target, tuple(stages)), cfg.fence_record, token)
