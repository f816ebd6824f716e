"""`deploy`: read the facts, take the lock, build the plan, run it; on any failure, the rollback
plan. `--dry-run` reads the same facts and prints the same plan, changing nothing; `--dry-run --offline`
prints the plan of assumed facts (`Facts.assumed`), contacting nothing."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import NoReturn

from .. import facts as F
from .. import records as REC
from ..commands import fence as FN
from ..config import Config
from ..errors import ConfigError, DeployerError, LockLost, NeedsHuman, Refused
from ..ledger import History
from ..output import Reporter
from ..records import now_iso
from ..release_id import new_release_id, validate_ref
from ..session import Session, who
from ..shell import Secret
from ..stages import StageName
from .back_plan import Rebuild, from_artifact, rebuild_of
from .deploy_plan import BucketUrls, DeployInputs, deploy_plan
from .plan import Plan
from .runs import Run, journaled, session_of
from .state import RunState

MIN_FREE_KB = 100 * 1024
OFFLINE_HEADER = "offline plan: facts assumed, nothing contacted"


def read_facts(s: Session, cfg: Config, ref: str, rep: Reporter) -> F.Facts:
    facts = s.facts(cfg.hosts, ref)
    facts.require_reachable("preflight", trusted=True)
    low = [f"{h} ({st.disk_kb // 1024} MiB free)" for h, st in facts.hosts.items()
           if st.disk_kb is not None and st.disk_kb < MIN_FREE_KB]
    if low:
        raise Refused(f"preflight: not enough disk under {cfg.deploy_to} on: {', '.join(low)}")
    if F._is_full_sha(ref):
        facts.commit = ref
    elif facts.commit is None:
        raise ConfigError(f"--ref {ref!r}: not found in {cfg.repo}")
    return facts


def served(cfg: Config, facts: F.Facts, history: History) -> dict[str, tuple[str | None, str | None]]:
    """Per app host, the release it serves and that release's commit (None: none, or unknown to
    the ledger)."""
    out = {}
    for h in cfg.app_hosts:
        rel = facts.hosts[h.name].current
        rec = history.releases.get(rel) if rel else None
        out[h.name] = (rel, rec.commit if rec is not None and rec.commit else None)
    return out


def same_code(cfg: Config, facts: F.Facts, history: History) -> None:
    """A secret rotation goes out only while every app host serves the commit it was built
    for (read again under the lock: another deploy may have gone out meanwhile)."""
    now = served(cfg, facts, history)
    odd = sorted(h for h, (_, commit) in now.items() if commit != facts.commit)
    if odd:
        where = ", ".join(f"{h} serves {now[h][0] or 'no release'}" for h in odd)
        raise Refused(f"secret rotation: {where}, "
                      f"not commit {facts.commit[:7]}; nothing changed. Run it again once the fleet serves one "
                      "release")


def decide_maintenance(s: Session, cfg: Config, facts: F.Facts, forced: bool | None, rep: Reporter) -> bool:
    if forced is not None:
        return forced
    when = cfg.playbook.stages.maintenance.when
    if when != "auto":
        return when == "always"
    cmd = F.pending_command(cfg, facts.commit, f"{s.state_path}/probe-{s.run_id}")
    if cmd is None:
        return False
    out = s.run(cfg.migrate_host, cmd, timeout=cfg.ssh.command_timeout).stdout
    try:
        facts.pending = F.parse_pending(out)
    except ValueError as exc:
        raise DeployerError(f"migrate.pending: output is not a JSON list: {out[-200:]!r}") from exc
    breaking = [m for m in facts.pending if not m.online_safe]
    if breaking:
        rep.event("notice", message="maintenance needed: migrations not online-safe: "
                  + ", ".join(str(m.name) for m in breaking))
    return bool(breaking)


def assumed_maintenance(cfg: Config, forced: bool | None) -> tuple[bool, str]:
    """Maintenance mode of an offline plan, and what was assumed to decide it."""
    if forced is not None:
        return forced, f"maintenance: {'on' if forced else 'off'} (--{'' if forced else 'no-'}maintenance)"
    when = cfg.playbook.stages.maintenance.when
    if when != "auto":
        return when == "always", f"maintenance: {when} (the playbook)"
    return False, ("maintenance: assumed not needed (pending migrations not read; "
                   "--maintenance shows the plan with it)")


def announce(rep: Reporter, plan: Plan, cfg: Config) -> None:
    """Print a plan: one event per stage x host x command, then the dead-man re-arming."""
    for stage, host, command in plan.rows():
        rep.event("plan", stage=stage, host=host, command=command)
    if plan.keepalive:
        rep.event("notice", message=(
            f"while maintenance is on, every {max(1.0, cfg.maintenance_ttl / 3):g}s the "
            f"dead-man switch is re-armed on {', '.join(plan.keepalive)} "
            f"(expiry {cfg.maintenance_ttl:g}s)"))


def announce_assumed(rep: Reporter, notes: tuple[str, ...]) -> None:
    rep.event("notice", message=OFFLINE_HEADER)
    for note in notes:
        rep.event("notice", message=f"  - {note}")


#: how long the bucket's presigned URLs of a run's artifact stay valid beyond `artifact.serve_for`
#: (the upload comes after the build, which may take that long)
BUCKET_URL_SLACK = 3600


def artifact_bucket(cfg: Config, s: Session | None, release: str) -> dict:
    """With `artifact.store: bucket`, this run's presigned URLs of `release`'s artifact in the
    state's bucket (`bucket`: signed here, no request made); none without. A plan that is only
    shown (`s` None: an offline dry run) gets empty ones: they are never shown anyway."""
    if not cfg.artifact_bucket:
        return {}
    if s is None:
        return dict(bucket=BucketUrls(put=Secret(""), get=Secret("")))
    return dict(bucket=BucketUrls(put=presigned(s, cfg, release, put=True), get=presigned(s, cfg, release, put=False)))


def presigned(s: Session, cfg: Config, release: str, *, put: bool) -> Secret:
    """The presigned URLs of `release`'s artifact files in the bucket (PUT or GET), valid
    `artifact.serve_for` + BUCKET_URL_SLACK seconds."""
    return Secret(s.state.artifact_urls(release, put=put, ttl=BUCKET_URL_SLACK + cfg.artifact.serve_for))


def restorable(s: Session, cfg: Config, history: History, target: str, facts: F.Facts) -> Rebuild | None:
    """How `rollback --to target` gives the release back to the hosts that no longer have it
    (None: they all have it): fetched from its artifact in the bucket (`artifact.store: bucket`),
    else from the one the build host keeps (its server started for this run), else built again
    from its commit."""
    rebuild = rebuild_of(history, target, facts)
    bucket = None
    if rebuild is not None and cfg.artifact_bucket:
        sha = s.state.artifact_sha256(target)
        if sha:
            bucket = (sha, presigned(s, cfg, target, put=False))
    # the bucket's copy first; the one the build host keeps when the bucket has none
    return from_artifact(cfg, rebuild, history, target, facts, bucket=bucket, **artifact_server(cfg, fallback=True))


def artifact_server(cfg: Config, fallback: bool = False) -> dict:
    """With a build host (`artifact.build`) that serves the artifact itself (not through the
    bucket, unless `fallback`: a release the bucket does not hold), this run's artifact server:
    `token`, its capability path (random, handed on stdin only) and `port` (`artifact.port`, or
    a random unprivileged one); none without."""
    if cfg.build_host is None or (cfg.artifact_bucket and not fallback):
        return {}
    port = cfg.artifact.port or secrets.SystemRandom().randint(20000, 60999)
    return dict(token=Secret(secrets.token_urlsafe(24)), port=port)


class DeployRun:
    def __init__(self, cfg: Config, reporter: Reporter, *, ref: str, maintenance: bool | None = None,
                 lock_wait: float = 0.0, reason: str = "", force: bool = False, session: Session | None = None,
                 rotate: tuple[str, Secret] | None = None):
        """`rotate`: (secret file, new content): a release of the commit every app host serves
        (`ref`, checked again under the lock) whose only change is that file (`secrets set`)."""
        from ..windows import check_window

        self.cfg, self.rep = cfg, reporter
        self.ref = validate_ref(ref)
        self.force_maintenance = maintenance
        self.forced = check_window(cfg, force=force, reason=reason)  # exit 3 outside a window
        self._secrets: tuple[tuple[str, Secret], ...] | None = (rotate,) if rotate else None
        self.rotating = rotate is not None
        if self.rotating:  # the code every host runs: no migration, so no maintenance for one
            self.force_maintenance = False
        self.lock_wait = lock_wait or cfg.lock_timeout
        self.reason = reason or f"deploy {ref}"
        self._session = session

    @property
    def secret_files(self) -> tuple[tuple[str, Secret], ...]:
        return self.read_secrets()

    def read_secrets(self) -> tuple[tuple[str, Secret], ...]:
        """(path, content) of each secret file, read once: a run reads them before anything is
        contacted (a missing secret is bad input, exit 2); an offline plan never reads them."""
        if self._secrets is None:
            self._secrets = tuple((f.path, f.read(os.environ)) for f in self.cfg.secret_files)
        return self._secrets

    def assume_secrets(self) -> str:
        """An offline plan's secret files: their paths, contents not read (shown as *** anyway)."""
        self._secrets = tuple((f.path, Secret("")) for f in self.cfg.secret_files)
        return "secret files: contents not read (only their paths are planned)"

    @property
    def s(self) -> Session:
        """The run's session, made when first needed (an offline plan never needs one)."""
        if self._session is None:
            self._session = Session(self.cfg, self.rep, reason=self.reason)
        return self._session

    def plan(self, facts: F.Facts, history, release: str, maintenance: bool, token: int) -> Plan:
        """The deploy's plan; `token`: the lock's fencing token (`FN.DRY_RUN` for a dry run,
        which takes no lock: its plan shows `<token>` and is never run)."""
        bad = frozenset(r for r, rec in history.releases.items() if rec.bad) if history else frozenset()
        protected = frozenset(history.snapshot_releases()) if history else frozenset()
        return deploy_plan(self.cfg, facts, DeployInputs(
            release=release, commit=facts.commit, ref=self.ref, maintenance=maintenance,
            secret_files=self.secret_files, protected=protected, bad=bad,
            order=tuple(history.order) if history else (), token=token, migrate=not self.rotating,
            **{f"artifact_{k}": v for k, v in (artifact_server(self.cfg)
                                               | artifact_bucket(self.cfg, self._session, release)).items()}))

    def prepare(self) -> tuple[F.Facts, str]:
        cfg = self.cfg
        self.rep.event("stage", stage=StageName.PREFLIGHT, state="start",
                       detail=f"{len(cfg.hosts)} hosts, ref {self.ref}")
        facts = read_facts(self.s, cfg, self.ref, self.rep)
        release = new_release_id(dt.datetime.now(dt.UTC), facts.commit)
        return facts, release

    def dry_run(self) -> int:
        self.read_secrets()  # before anything is contacted
        with session_of(self.s, self.rep) as s:
            facts, release = self.prepare()
            history = s.history()
            maintenance = decide_maintenance(s, self.cfg, facts, self.force_maintenance, self.rep)
            announce(self.rep, self.plan(facts, history, release, maintenance, FN.DRY_RUN), self.cfg)
            return 0

    def offline_dry_run(self) -> int:
        """The plan from assumed facts (`Facts.assumed`): no host, ledger or remote contacted."""
        facts = F.Facts.assumed(self.cfg, self.ref)
        maintenance, why = assumed_maintenance(self.cfg, self.force_maintenance)
        secret_note = (self.assume_secrets(),) if self.cfg.secret_files else ()
        announce_assumed(self.rep, (*facts.assumptions, why, *secret_note, "ledger history: assumed "
                                    "empty (no release protected from cleanup, none known bad)"))
        release = new_release_id(dt.datetime.now(dt.UTC), facts.commit)
        announce(self.rep, self.plan(facts, None, release, maintenance, FN.DRY_RUN), self.cfg)
        return 0

    def run(self) -> int:
        self.read_secrets()  # before anything is contacted
        cfg = self.cfg
        with session_of(self.s, self.rep) as s:
            facts, history, maintenance = self.lock_and_read(s)
            if self.rotating:
                same_code(cfg, facts, history)
            # the id is taken under the lock: release ids sort by the time they went out
            release = new_release_id(dt.datetime.now(dt.UTC), facts.commit)
            plan = self.plan(facts, history, release, maintenance, s.fence_token)
            app = cfg.app_hosts
            st = RunState(run=s.run_id, release=release, commit=facts.commit, ref=self.ref,
                          snapshot=facts.snapshot_hosts(app), schema_before=facts.schema)
            start = REC.RunStarted(env=cfg.env, release=release, ref=self.ref, commit=facts.commit,
                                   who=who(), reason=s.reason, forced=self.forced, ledger=s.ledger_id)
            with journaled(s, self.rep, st, start, release_lock=True,
                           secrets=[v for _, v in self.secret_files]) as run:
                self.rep.event("run", message=f"deploying {self.ref} ({facts.commit[:7]}) to {cfg.env}: "
                                              f"{len(app)} app hosts")
                run.write(REC.Snapshot(hosts=st.snapshot, schema=facts.schema,
                                       maintenance=any(facts.hosts[h.name].maintenance for h in app)))
                if self.secret_files:
                    run.write(REC.SecretFiles(paths=[p for p, _ in self.secret_files]))
                return self.execute(run, plan)

    def lock_and_read(self, s: Session) -> tuple[F.Facts, History, bool]:
        """The lock taken (and the ledger read) while the facts are read: one round trip less.
        A failed preflight wins over the lock (released by `session_of`). Returns the facts,
        the history and whether the deploy goes through maintenance mode."""
        cfg = self.cfg
        since = now_iso()
        with ThreadPoolExecutor(2) as pool:
            giving_up = threading.Event()
            locking = pool.submit(s.acquire_lock, self.lock_wait, read_ledger=True, stop=giving_up)
            try:
                facts, _ = self.prepare()
            except BaseException:
                giving_up.set()
                wait([locking])
                raise
            if locking.done() and locking.exception() is not None:
                raise locking.exception()  # refused (held, state unwritable): no probe either
            self.rep.event("stage", stage=StageName.LOCK, state="start", detail=f"on {s.state.where()}")
            # the pending-migrations probe (a scratch export on the migrate host, removed
            # after) needs no lock: it runs while the lock is taken and the ledger read
            probe = pool.submit(decide_maintenance, s, cfg, facts, self.force_maintenance, self.rep)
            try:
                waited = locking.result()
                history = s.history()
            finally:
                wait([probe])
        # Another run held the lock, or ended while the facts were read (it wrote to the
        # ledger since): what it did is the truth now, not what we read.
        waited = waited or any(e.at >= since and e.run != s.run_id for e in history.records)
        if waited:
            facts = read_facts(s, cfg, self.ref, self.rep)
            return facts, history, decide_maintenance(s, cfg, facts, self.force_maintenance, self.rep)
        return facts, history, probe.result()

    def execute(self, run: Run, plan: Plan) -> int:
        try:
            outcome = run.ex.run(plan)
        except LockLost as exc:
            lock_lost(run, self.cfg, exc)
        except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - a bug must still take the failure path
            return run.fail(exc)
        if outcome == "paused":
            return pause(run, self.cfg, self.rep, plan)
        return succeed(run, self.cfg, self.rep)


def lock_lost(run: Run, cfg: Config, exc: LockLost) -> NoReturn:
    """The run lost its lock (broken, taken over, or a host refused its fencing token): it
    stops, not rolled back since another run may be at work (exit 4)."""
    run.write(REC.RunEnded(outcome="needs_human", error=exc.message))
    raise NeedsHuman(f"{exc.message}. Hosts switched so far: {', '.join(run.st.switched) or 'none'} "
                     f"(on {run.st.release}); not rolled back since another run may be at work",
                     hint=f"`inv status --env {cfg.env}`, then `inv recover --env {cfg.env}`") from exc


def pause(run: Run, cfg: Config, rep: Reporter, plan: Plan) -> int:
    st = run.st
    done = run.ex.stage.wave if run.ex.stage is not None else 0
    total = max((s.wave for s in plan.stages), default=done)
    run.write(REC.Paused(release=st.release, waves_done=done, waves=total))
    run.s.pause_with_lock()  # the lock stays with the paused rollout
    rep.event("outcome", outcome="paused", release=st.release,
              message=f"paused after wave {done}/{total} ({', '.join(st.switched)} on {st.release}); "
                      f"continue with `inv promote --env {cfg.env}` or roll back with "
                      f"`inv abort --env {cfg.env}`, from any machine")
    return 0


def succeed(run: Run, cfg: Config, rep: Reporter, verb: str = "deployed") -> int:
    st = run.st
    took = time.monotonic() - run.t0
    hosts = {h.name: st.release for h in cfg.app_hosts}
    run.write(REC.RunEnded(outcome="success", seconds=round(took, 3), hosts=hosts))
    rep.event("outcome", outcome="success", release=st.release,
              message=f"{verb} {st.release} ({st.ref}) to {len(hosts)} hosts in {took:.1f}s")
    return 0
