"""The plan of a deploy (and of `promote`, its tail): a pure function of config, facts and inputs.

Stage order is STAGES (deployer/stages.py; a unit test holds this builder to it); hooks run
before and after any stage, on its hosts. The plan is the only description of a deploy:
`--dry-run` prints it, the executor runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..commands import artifact as A
from ..commands import backup as B
from ..commands import databases as DB
from ..commands import git as GIT
from ..commands import releases as R
from ..config import Config, Host
from ..facts import Facts
from ..shell import Secret, batch, chain, raw
from ..stages import StageName
from . import ops
from .plan import (
    Action,
    Effect,
    Hook,
    Lane,
    Plan,
    PruneArtifacts,
    RecordArtifact,
    RecordBackup,
    RecordSchema,
    SchemaKey,
    Stage,
    UploadBackup,
    fenced,
)

MAINTENANCE_MESSAGE = "Deploying, back shortly"
MIGRATION_MESSAGE = "Upgrading the database, back shortly"


@dataclass(frozen=True)
class BucketUrls:
    """A release's artifact in the state's bucket (`artifact.store: bucket`): the presigned URLs
    of its three files, one per line (capabilities: on stdin only, never shown)."""

    put: Secret  # the build host's upload (`commands.artifact.UPLOAD_ORDER`)
    get: Secret  # every other host's fetch (`commands.artifact.FETCH_ORDER`)


@dataclass(frozen=True)
class DeployInputs:
    release: str
    commit: str
    ref: str
    maintenance: bool
    secret_files: tuple[tuple[str, Secret], ...] = ()
    protected: frozenset[str] = frozenset()  # releases a live snapshot refers to
    bad: frozenset[str] = frozenset()  # releases marked bad in the ledger
    order: tuple[str, ...] = ()  # the ledger's releases, first-deploy order (cleanup keeps the newest)
    start_wave: int = 0  # promote: waves already done
    snapshot: dict[str, str | None] = field(default_factory=dict)  # promote: the run's snapshot
    token: int | None = None  # the lock's fencing token, checked first by every host script
    written_secrets: tuple[str, ...] = ()  # promote: secret files the run's first part wrote
    migrate: bool = True  # False: the code the hosts already run (a secret rotation): nothing to migrate
    #: with a build host (`artifact.build`): the capability path its artifact server answers
    #: on (handed on stdin, never in argv), and its port
    artifact_token: Secret | None = None
    artifact_port: int = 0
    #: with `artifact.store: bucket`: the artifact goes through the bucket instead (no server)
    artifact_bucket: BucketUrls | None = None

    @property
    def shipped(self) -> bool:
        """A build host builds the release once and the others fetch it (`artifact.build`)."""
        return self.artifact_token is not None or self.artifact_bucket is not None

    def secret_paths(self) -> list[str]:
        """The secret files this run puts in its release (finalize promotes them to shared/)."""
        return [p for p, _ in self.secret_files] + [p for p in self.written_secrets]


def hooks(cfg: Config, when: Hook, stage: StageName, hosts: list[Host], release: str, vals: dict,
          wave: int = 0) -> list[Stage]:
    steps = cfg.playbook.hooks_for(when, stage)
    if not steps:
        return []
    lanes = ops.lanes([(h, [ops.run(h, ops.step_commands(cfg, steps, h, ops.values(cfg, h, release, **vals)),
                                    what=f"{when} {stage}")]) for h in hosts])
    return [Stage(stage, lanes=lanes, wave=wave, hook=when)] if lanes else []


def around(cfg: Config, stage: Stage, hosts: list[Host], release: str, vals: dict) -> list[Stage]:
    return (hooks(cfg, Hook.BEFORE, stage.name, hosts, release, vals, stage.wave) + [stage]
            + hooks(cfg, Hook.AFTER, stage.name, hosts, release, vals, stage.wave))


def deploy_plan(cfg: Config, facts: Facts, inp: DeployInputs) -> Plan:
    app = cfg.app_hosts
    web = [h for h in app if h.has("web")]
    rel = inp.release
    snapshot = inp.snapshot or facts.snapshot_hosts(app)
    common = dict(commit=inp.commit, ref=inp.ref)

    def vals(h: Host, **extra) -> dict:
        prev = snapshot.get(h.name) or ""
        return ops.values(cfg, h, rel, commit=inp.commit, ref=inp.ref, previous_release=prev,
                          previous_path=cfg.layout.release(prev or "none"), **extra)

    stages: list[Stage] = []
    ttl = cfg.maintenance_ttl
    if inp.start_wave == 0:
        for name in (StageName.PREFLIGHT, StageName.LOCK):
            stages += hooks(cfg, Hook.BEFORE, name, app, rel, common) + hooks(cfg, Hook.AFTER, name, app, rel, common)
        stages += around(cfg, snapshot_stage(cfg, snapshot), app, rel, common)
        # maintenance: only when needed; the dead-man switch brings the site back if we die
        lanes = ops.maintenance_lanes(cfg, app, True, ttl=ttl, message=MAINTENANCE_MESSAGE,
                                      release=rel) if inp.maintenance else ()
        stages += around(cfg, Stage(StageName.MAINTENANCE, "on" if inp.maintenance else "not needed", lanes),
                         app, rel, common)
        stages += around(cfg, backup_stage(cfg, rel, fence=inp.maintenance), app, rel, common)
        pulls = pull_stages(cfg, app, inp, vals, snapshot)
        stages += hooks(cfg, Hook.BEFORE, StageName.PULL, app, rel, common) + pulls
        stages += hooks(cfg, Hook.AFTER, StageName.PULL, app, rel, common)
        stages += around(cfg, migrate_stage(cfg, web, inp, vals, facts), app, rel, common)
        warm = ops.lanes([(h, [ops.run(h, ops.step_commands(cfg, cfg.playbook.steps("cache_warm"), h, vals(h)),
                                       what="cache warm")]) for h in app])
        stages += around(cfg, Stage(StageName.CACHE_WARM, lanes=warm), app, rel, common)
    stages += wave_stages(cfg, inp, vals)
    stages += around(cfg, finalize_stage(cfg, facts, inp, vals, snapshot), app, rel, common)
    if inp.maintenance:  # done only when users get the app again through the load balancer
        stages += ops.lb_up_stage(cfg, "finalize", app)
    stages += bucket_retention(cfg, inp)
    stages += unfence_stage(cfg, inp.maintenance)
    keepalive = {}
    if inp.maintenance and ttl:
        keepalive = {h.name: ops.watchdog(cfg, h, ttl, rel) for h in web}
    return fenced(Plan("deploy", rel, tuple(stages), keepalive=keepalive), cfg.fence_record, inp.token)


def snapshot_stage(cfg: Config, snapshot: dict[str, str | None]) -> Stage:
    """The snapshot, with a probe of each worker host's health on the release it serves (before
    anything changes): a host whose worker passes is journaled WORKER_HEALTHY. A failing probe
    changes nothing: it only tells, if the deploy then fails on that host, that the host's
    environment was unhealthy before (the release is then not marked bad)."""
    pairs = [(h, [ops.worker_check(cfg, h, snapshot[h.name], effect=Effect.WORKER_HEALTHY,
                                   what="worker probe")])
             for h in cfg.app_hosts if snapshot.get(h.name)]
    return Stage(StageName.SNAPSHOT, "", ops.lanes(pairs), best_effort=True,
                 best_effort_note="its worker was unhealthy before the deploy")


def backup_stage(cfg: Config, release: str, fence: bool = False) -> Stage:
    """The backup; under maintenance mode, then the write fence (what a lossless restore checks)."""
    if not (cfg.database and cfg.db_host):
        return Stage(StageName.BACKUP, "no database")
    db = DB.of(cfg.database)
    path = db.backup_path(cfg.env, release)
    # a fence a crashed run left behind goes first: the dump must not carry it, nor its notes
    cmds = [db.unfence(), db.dump(path)] + ([db.fence()] if fence else [])
    act = Action(host=cfg.db_host.name, command=batch(*cmds), timeout=cfg.ssh.command_timeout,
                 records=(RecordBackup(1, path),), what="backup")
    acts = (act,)
    if offsite(cfg):  # then a copy off the host, checked against the recorded sha256
        acts += (Action(host=cfg.db_host.name, backend=UploadBackup(path), what="backup off-site"),)
    return Stage(StageName.BACKUP, path, (Lane(cfg.db_host.name, acts),))


def offsite(cfg: Config) -> bool:
    """Backups are also kept by the state backend (S3) when the inventory says so."""
    return cfg.state.backend == "s3"


def pull_stage(cfg: Config, app: list[Host], inp: DeployInputs, vals) -> Stage:
    """Each host builds the release from the commit (`artifact.build: each`)."""
    return Stage(StageName.PULL, inp.commit[:12], ops.lanes([(h, _build(cfg, h, inp, vals)) for h in app]))


def _secrets(cfg: Config, host: str, inp: DeployInputs) -> list[Action]:
    """The run's secret files on `host`: a file the releases link from shared/ goes in this
    release as its own copy (a rollback gives the previous one back; finalize promotes it); any
    other goes to shared/ itself. Each on stdin: a round trip of its own."""
    release_path, pb = cfg.layout.release(inp.release), cfg.playbook
    return [Action(host=host, command=R.write_secret(release_path if pb.per_release(rel) else cfg.layout.shared,
                                                       rel), stdin=secret, timeout=60, what=f"secret file {rel}")
            for rel, secret in inp.secret_files]


def _build(cfg: Config, h: Host, inp: DeployInputs, vals) -> list[Action]:
    """The release built on `h` from the commit: fetched into the mirror, exported, linked to
    shared/, its secret files written (before the build reads them), the playbook's build."""
    mirror, release_path = cfg.layout.repo, cfg.layout.release(inp.release)
    pb = cfg.playbook
    code = [GIT.fetch(cfg.repo, mirror, inp.commit), GIT.export(mirror, inp.commit, release_path),
            R.prepare(cfg.deploy_to, inp.release, pb.shared_files, pb.shared_dirs)]
    build = ops.step_commands(cfg, pb.steps("build"), h, vals(h), cwd=release_path)
    secrets = _secrets(cfg, h.name, inp)
    if secrets:
        return [ops.run(h, code, what="pull", effect=Effect.PULLED, timeout=cfg.ssh.command_timeout),
                *secrets, ops.run(h, build, what="build")]
    return [ops.run(h, code + build, what="pull", effect=Effect.PULLED)]


def pull_stages(cfg: Config, app: list[Host], inp: DeployInputs, vals,
                previous: dict[str, str | None]) -> list[Stage]:
    """The release on every app host. With a build host (`artifact.build`): built there once and
    packed (its sha256 recorded), served from there to the other app hosts, which fetch it,
    verify it and unpack it (hard-linking what their `previous` release has unchanged), then
    write their own secret files; the server stops. Else each host builds it."""
    builder = cfg.build_host
    if builder is None or not inp.shipped or builder.name not in {h.name for h in app}:
        return [pull_stage(cfg, app, inp, vals)]
    rel, deploy_to = inp.release, cfg.deploy_to
    others = [h for h in app if h.name != builder.name]
    # the release's own secret files stay out of the artifact: each host writes its own
    private = [p for p, _ in inp.secret_files if cfg.playbook.per_release(p)]
    pack = Action(host=builder.name, command=A.pack(deploy_to, rel, private), what="pack artifact",
                  records=(RecordArtifact(0, rel, built=True),), timeout=cfg.ssh.command_timeout)
    acts = _build(cfg, builder, inp, vals) + [pack]
    built = f"{inp.commit[:12]}: built on {builder.name}"
    if inp.artifact_bucket is not None:  # through the bucket: uploaded, then fetched from there
        acts.append(Action(host=builder.name, command=A.upload(deploy_to, rel), stdin=inp.artifact_bucket.put,
                           timeout=cfg.ssh.command_timeout, what="artifact upload"))
        stages = [Stage(StageName.PULL, built + ", to the bucket", (Lane(builder.name, tuple(acts)),))]
        if others:
            stages.append(fetch_stage(cfg, rel, [h.name for h in others], inp.artifact_bucket.get, previous,
                                      lambda name: _secrets(cfg, name, inp), source="the bucket", delta=False))
        return stages
    if not others:
        return [Stage(StageName.PULL, built, (Lane(builder.name, tuple(acts)),))]
    serve, fetch, stop = shipping(cfg, rel, builder, [h.name for h in others], inp.artifact_token, inp.artifact_port,
                                  previous, lambda name: _secrets(cfg, name, inp))
    return [Stage(StageName.PULL, built, (Lane(builder.name, tuple(acts) + (serve,)),)), fetch, stop]


def shipping(cfg: Config, release: str, source: Host, hosts: list[str], token: Secret, port: int,
             previous: Mapping[str, str | None], then, sha256: str = "") -> tuple[Action, Stage, Stage]:
    """`release`'s artifact shipped from `source`: the action that starts its server (the token
    on stdin), the stage where each of `hosts` fetches, verifies and unpacks it (hard-linking
    from its `previous` release; the sha256 it unpacked must be `sha256`, or the one this run's
    build packed), followed by `then(host)`'s actions, and the stage that stops the server."""
    deploy_to = cfg.deploy_to
    serve = Action(host=source.name, command=A.serve(deploy_to, release, source.address, port, cfg.artifact.serve_for),
                   stdin=Secret(token.reveal() + "\n"), timeout=30, what="artifact server")
    where = Secret(A.urls(source.address, port, token.reveal(), release))
    stop = Action(host=source.name, command=A.stop(deploy_to), timeout=30, what="artifact server stop")
    return (serve, fetch_stage(cfg, release, hosts, where, previous, then, sha256,
                               detail=f"artifact from {source.name}:{port}"),
            Stage(StageName.PULL, "artifact server stopped", (Lane(source.name, (stop,)),), best_effort=True))


def fetch_stage(cfg: Config, release: str, hosts: list[str], where: Secret, previous: Mapping[str, str | None],
                then, sha256: str = "", *, source: str = "the build host", detail: str = "",
                delta: bool = True) -> Stage:
    """The stage where each of `hosts` fetches `release`'s artifact from the URLs `where` holds
    (on stdin), verifies it and unpacks it (hard-linking from its `previous` release; the sha256
    it unpacked must be `sha256`, or the one this run's build packed), followed by `then(host)`'s
    actions. `delta`: the source sends only the files a host does not have (the build host's
    server; not the bucket, which sends whole objects)."""
    lanes = tuple(Lane(h, (Action(host=h, command=A.fetch(cfg.deploy_to, release, previous.get(h), source, delta),
                                  stdin=where, records=(RecordArtifact(0, release, built=False, sha256=sha256),),
                                  effect=Effect.PULLED, timeout=cfg.ssh.command_timeout, what="fetch artifact"),
                           *then(h))) for h in hosts)
    return Stage(StageName.PULL, detail or f"artifact from {source}", lanes)


def migrate_stage(cfg: Config, web: list[Host], inp: DeployInputs, vals, facts: Facts | None = None) -> Stage:
    """The migration on the migrate host; none when the playbook's `migrate.pending` probe read
    no pending migration in the new code (`facts.pending == []`: nothing to apply, the schema
    version stays the snapshot's)."""
    steps = cfg.playbook.steps("migrate", "run")
    host = cfg.migrate_host
    if not inp.migrate:
        return Stage(StageName.MIGRATE, "the code the hosts run: nothing to migrate")
    if facts is not None and facts.pending == [] and not inp.maintenance:
        return Stage(StageName.MIGRATE, "no pending migration")
    if not steps or host is None:
        return Stage(StageName.MIGRATE, "nothing to migrate")
    version = cfg.playbook.steps("migrate", "version")
    # The migration's own connections name themselves (PostgreSQL): the write fence tells them
    # from others. MariaDB's fence needs the end of the migration marked instead (below).
    db = DB.of(cfg.database) if cfg.database and cfg.db_host else None
    run = steps[0].command(vals(host))
    env = db.migration_env() if db is not None else raw(f"export PGAPPNAME={B.FENCE_APP}")
    cmds = [chain(env, run, op=";").with_timeout(run.timeout) if env is not None else run]
    records: tuple = ()
    if version:
        v = version[0].command(vals(host))
        cmds = [v, cmds[0], v]
        records = (RecordSchema(0, SchemaKey.BEFORE), RecordSchema(2, SchemaKey.AFTER))
    acts: list[Action | None] = []
    if inp.maintenance:
        # Mid-migration the site must not come back by itself on the old code: no expiry.
        acts += [ops.maintenance(cfg, h, True, ttl=None, message=MIGRATION_MESSAGE, release=inp.release,
                                 what="maintenance: migrating", journaled=False) for h in web]
    acts.append(ops.run(host, cmds, what="migrate", effect=Effect.MIGRATED, records=records,
                        timeout=cfg.ssh.command_timeout))
    over = db.migration_over() if db is not None and inp.maintenance else None
    if over is not None:
        acts.append(Action(host=cfg.db_host.name, command=over, what="write fence: migration over"))
    if inp.maintenance:
        acts += [ops.maintenance(cfg, h, True, ttl=cfg.maintenance_ttl, message=MAINTENANCE_MESSAGE,
                                 release=inp.release, what="maintenance: migrated",
                                 journaled=False) for h in web]
    return Stage(StageName.MIGRATE, host.name, (Lane(host.name, tuple(a for a in acts if a)),))


def wave_stages(cfg: Config, inp: DeployInputs, vals) -> list[Stage]:
    app = cfg.app_hosts
    waves = ops.plan_waves(app, [w.size for w in cfg.rollout])
    log = cfg.playbook.log_file
    out: list[Stage] = []
    common = dict(commit=inp.commit, ref=inp.ref)
    for i in range(inp.start_wave, len(waves)):
        wave, spec, n = waves[i], cfg.rollout[i], i + 1
        label = f"wave {n}/{len(waves)}: {', '.join(h.name for h in wave)}"
        lanes = tuple(ops.switch_lane(cfg, h, inp.release, log_mark=log) for h in wave)
        out += around(cfg, ops.switch_stage(cfg, label, lanes, stop_on_failure=True, wave=n),
                      wave, inp.release, common)
        # Under maintenance mode the workers stay stopped (writers fenced) until it ends.
        hold = inp.maintenance and cfg.playbook.stages.maintenance.hold_workers
        workers = [] if hold else worker_lanes(cfg, wave, vals)
        out += around(cfg, Stage(StageName.WORKER_RESTART, label + (" (after maintenance)" if hold else ""),
                                 ops.lanes(workers), wave=n), wave, inp.release, common)
        checks = []
        for h in wave:
            cmds = ops.step_commands(cfg, cfg.playbook.steps("gate_checks"), h, vals(h))
            if log and h.has("web"):
                cmds.append(R.log_errors_since_mark(cfg.deploy_to, inp.release, log, cfg.gate.log_pattern))
            checks.append((h, [ops.run(h, cmds, what="gate checks")]))
        bake = spec.bake or 0.0
        pause = bool(spec.pause) and n < len(waves) and not inp.maintenance
        out += around(cfg, Stage(StageName.GATE, label + (f", bake {bake:g}s" if bake else ""), ops.lanes(checks),
                                 wave=n, bake=bake, pause_after=pause), wave, inp.release, common)
    return out


def worker_lanes(cfg: Config, hosts: list[Host], vals) -> list:
    return [(h, [ops.workers(cfg, h, vals(h))]) for h in hosts]


def cleanup_targets(cfg: Config, facts: Facts, inp: DeployInputs, snapshot: dict) -> dict[str, list[str]]:
    """Per host, the releases to remove: beyond keep_releases, never the new one, the one of the
    snapshot, the one served, or one a live snapshot refers to; bad and partial ones go first.
    "Beyond" counts in the ledger's order, not by release id (a timestamp of some clock)."""
    out = {}
    for h in cfg.app_hosts:
        st = facts.hosts.get(h.name)
        if st is None:
            continue
        keep = set(inp.protected) | {inp.release}
        keep |= {r for r in (snapshot.get(h.name), st.current) if r}
        # oldest first by the ledger's order, the new release last (not in the ledger yet)
        on_disk = R.in_order(set(st.releases) - {inp.release}, inp.order) + [inp.release]
        good = [r for r in on_disk if r not in inp.bad and not r.endswith(".partial")]
        doomed = R.to_remove(good, cfg.keep_releases, keep)
        doomed += [r for r in on_disk if (r in inp.bad or r.endswith(".partial")) and r not in keep]
        if doomed:
            out[h.name] = sorted(set(doomed))
    return out


def artifacts_to_prune(cfg: Config, facts: Facts, inp: DeployInputs) -> list[str]:
    """The build host's artifacts beyond `artifact.keep` (the ledger's order, the new one last),
    and those of bad releases; never one a live snapshot refers to."""
    builder = cfg.build_host
    st = facts.hosts.get(builder.name) if builder is not None and inp.shipped else None
    if st is None:
        return []
    have = R.in_order(set(st.artifacts) - {inp.release}, inp.order) + [inp.release]
    good = [r for r in have if r not in inp.bad]
    doomed = R.to_remove(good, cfg.artifact.keep, set(inp.protected) | {inp.release})
    return sorted(set(doomed) | {r for r in have if r in inp.bad and r not in inp.protected})


def bucket_retention(cfg: Config, inp: DeployInputs) -> list[Stage]:
    """With artifacts in the bucket: those of the newest `artifact.keep` good releases (the
    ledger's order, the new one last) and of any a live snapshot refers to are kept, the others
    deleted; best effort (the next deploy prunes what this one could not)."""
    builder = cfg.build_host
    if builder is None or inp.artifact_bucket is None:
        return []
    good = [r for r in inp.order if r not in inp.bad and r != inp.release] + [inp.release]
    keep = tuple(sorted(set(good[-cfg.artifact.keep:]) | set(inp.protected)))
    act = Action(host=builder.name, backend=PruneArtifacts(keep), what="bucket artifacts pruned")
    return [Stage(StageName.FINALIZE, "artifacts in the bucket pruned", (Lane(builder.name, (act,)),),
                  best_effort=True)]


def finalize_stage(cfg: Config, facts: Facts, inp: DeployInputs, vals, snapshot: dict) -> Stage:
    doomed = cleanup_targets(cfg, facts, inp, snapshot)
    pruned = artifacts_to_prune(cfg, facts, inp)
    pairs = []
    for h in cfg.app_hosts:
        cmds = []
        if inp.maintenance:
            cmds += ops.maintenance_cmds(cfg, h, False, ttl=None, release=inp.release)
        cmds += ops.step_commands(cfg, cfg.playbook.steps("finalize"), h, vals(h))
        # the release's own secret files passed the gate: later releases link them from shared/
        cmds += [R.promote_secret(cfg.layout.release(inp.release), cfg.layout.shared, rel)
                 for rel in inp.secret_paths() if cfg.playbook.per_release(rel)]
        if pruned and cfg.build_host is not None and h.name == cfg.build_host.name:
            cmds.append(A.prune(cfg.deploy_to, pruned))
        if doomed.get(h.name):
            cmds.append(R.remove(cfg.deploy_to, doomed[h.name]))
        effect = Effect.MAINTENANCE_OFF if inp.maintenance else None
        pairs.append((h, [ops.run(h, cmds, what="finalize", effect=effect)]))
    if inp.maintenance and cfg.playbook.stages.maintenance.hold_workers:
        # maintenance ends first (with it, the workers it stopped), then they restart on the new
        # release
        for (_h, acts), (_, workers) in zip(pairs, worker_lanes(cfg, cfg.app_hosts, vals), strict=True):
            acts += workers
    return Stage(StageName.FINALIZE, "", ops.lanes(pairs))


def unfence_stage(cfg: Config, fenced: bool) -> list[Stage]:
    """The write fence goes, with a restore's mark (best effort: the next backup removes a fence
    left behind before it dumps). `fenced`: the run may have set one."""
    if not (fenced and cfg.database and cfg.db_host):
        return []
    act = Action(host=cfg.db_host.name, command=DB.of(cfg.database).unfence(), what="unfence")
    return [Stage(StageName.FINALIZE, "write fence removed", (Lane(cfg.db_host.name, (act,)),), best_effort=True)]
