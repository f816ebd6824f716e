"""`rollback` by hand (to the previous good release, or `--to` a named one), and `promote` /
`abort` of a paused rollout: each reads the facts and the ledger, builds its plan, runs it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from .. import records as REC
from ..commands import databases as DB
from ..commands import fence as FN
from ..config import Config
from ..errors import CommandFailed, ConfigError, DeployerError, LockLost, NeedsHuman, Refused, message_of
from ..facts import ledger_place
from ..ledger import History
from ..output import Reporter
from ..release_id import validate_release_id
from ..session import Session, who
from .back_plan import manual_rollback_plan
from .deploy import announce, announce_assumed, read_facts, restorable, succeed
from .deploy_plan import DeployInputs, deploy_plan, offsite
from .restore import complete, need_files
from .runs import journaled, session_of
from .state import RunState


def pick(history: History, to: str | None, current: str | None, facts) -> str:
    if to:
        rec = history.resolve(to, present=lambda r: all(r in st.releases for st in facts.hosts.values()))
        target = rec.release if rec else None
        if target is None and history.deployed_from(to):
            raise Refused(f"--to {to}: every release deployed from it is marked bad "
                          f"({', '.join(history.deployed_from(to))}); name one by its id to return to it anyway")
        if target is None:
            try:
                target = validate_release_id(to)
            except ConfigError:
                raise ConfigError(f"--to {to!r}: no release, release prefix or deployed ref "
                                  "by that name in the ledger") from None
    else:
        rec = history.previous_good(current)
        if rec is None:
            raise Refused(f"rollback: no good release older than {current} in the ledger")
        target = rec.release
    return target


def offline_target(cfg: Config, to: str | None, restore_db: bool, restore_files: bool = False) -> str:
    """The release an offline rollback plan goes to: only a full id names one without the ledger."""
    where = ledger_place(cfg)
    if restore_files:
        raise ConfigError(f"--restore-files --offline: the file archives to restore are recorded in the "
                          f"ledger on {where}, which an offline plan does not read")
    if restore_db:
        raise ConfigError(f"--restore-db --offline: the backup to restore is recorded in the ledger on "
                          f"{where}, which an offline plan does not read")
    if to is None:
        raise ConfigError(f"--offline: name the release with --to (the previous good one is known "
                          f"only to the ledger on {where})")
    try:
        return validate_release_id(to)
    except ConfigError:
        raise ConfigError(f"--to {to!r} --offline: expected a full release id (a prefix or a ref is "
                          f"resolved by the ledger on {where}, which an offline plan does not read)") from None


class Rollback:
    def __init__(self, cfg: Config, reporter: Reporter, *, to: str | None = None,
                 restore_db: bool = False, keep_db: bool = False, lock_wait: float = 0.0,
                 dry_run: bool = False, session: Session | None = None, restore_files: bool = False):
        if restore_db and keep_db:
            raise ConfigError("--restore-db and --keep-db: choose one")
        if restore_files:
            need_files(cfg, "rollback --restore-files")
        self.cfg, self.rep = cfg, reporter
        self.to, self.restore_db, self.keep_db = to, restore_db, keep_db
        self.restore_files = restore_files
        self.lock_wait = lock_wait
        self.dry_run = dry_run
        self._session = session

    @property
    def s(self) -> Session:
        """The run's session, made when first needed (an offline plan never needs one)."""
        if self._session is None:
            self._session = Session(self.cfg, self.rep, reason=f"rollback {self.to or '(previous good)'}")
        return self._session

    def offline_dry_run(self) -> int:
        """The plan of `--to RELEASE` from assumed facts: no host or ledger contacted, so the
        target must be a full release id and the database is left out."""
        target = offline_target(self.cfg, self.to, self.restore_db, self.restore_files)
        announce_assumed(self.rep, (
            f"target: {target} is on every selected host (not checked: the hosts were not read)",
            f"schema: not compared with the target's (the ledger on {ledger_place(self.cfg)} was not "
            "read); the database is left as it is",
        ))
        app = self.cfg.app_hosts
        plan = manual_rollback_plan(self.cfg, target, app, backup=None, safety_path=None, token=FN.DRY_RUN)
        announce(self.rep, plan, self.cfg)
        return 0

    def run(self) -> int:
        app = self.cfg.app_hosts
        with session_of(self.s, self.rep) as s:
            # The lock first (the hosts' connections open meanwhile), then the facts and the
            # ledger at once: both read under the lock, so neither can be stale.
            with ThreadPoolExecutor(2) as pool:
                pool.submit(s.warm, app)
                if not self.dry_run:
                    s.acquire_lock(self.lock_wait)
                hist = pool.submit(s.history)
                facts = s.facts(app)
                history = hist.result()
            facts.require_reachable("rollback")
            return self.locked(app, facts, history)

    def locked(self, app, facts, history: History) -> int:
        cfg, s = self.cfg, self.s
        serving = [st.current for st in facts.hosts.values() if st.current]
        current = history.newest(serving)
        target = pick(history, self.to, current, facts)
        schema_now, schema_target = facts.schema, history.schema_of(target)
        if schema_now != schema_target and not (self.restore_db or self.keep_db):
            raise Refused(
                f"rollback to {target}: its schema version is {schema_target} but the database "
                f"is at {schema_now}. Pass --restore-db to restore the backup taken before it was "
                f"left (data written since is lost), or --keep-db to switch the code only.")
        backup = self.backup_to_restore(target, history) if self.restore_db else None
        safety = None
        if backup is not None:
            safety = DB.of(cfg.database).backup_path(cfg.env, s.run_id.split("-")[0], kind="prerollback")
        rebuild = restorable(s, cfg, history, target, facts)
        if rebuild is not None:
            self.rep.event("notice", message=f"release {target} is gone from {', '.join(rebuild.hosts)}: "
                                             f"{rebuild.how()} before the switch")
        files = None
        if self.restore_files:
            files = complete(cfg, history.files_before_leaving(target),
                             f"rollback to {target} --restore-files: no file archive taken while it served")
        plan = manual_rollback_plan(cfg, target, app, backup=backup, safety_path=safety,
                                    token=FN.DRY_RUN if self.dry_run else s.fence_token, files=files, work=s.run_id,
                                    rebuild=rebuild)
        if self.dry_run:
            for stage, host, command in plan.rows():
                self.rep.event("plan", stage=stage, host=host, command=command)
            return 0
        st = RunState(run=s.run_id, release=target, snapshot=facts.snapshot_hosts(app))
        start = REC.RollbackStarted(auto=False, to=target, who=who(), restore_db=self.restore_db,
                                    keep_db=self.keep_db, ledger=s.ledger_id, restore_files=self.restore_files)
        with journaled(s, self.rep, st, start, release_lock=True) as run:  # its last act: the release
            self.rep.event("rollback", message=f"rolling back {cfg.env}: {current} -> {target}")
            try:
                run.ex.run(plan)
            except (DeployerError, KeyboardInterrupt) as exc:
                msg = "interrupted" if isinstance(exc, KeyboardInterrupt) else message_of(exc)
                run.write(REC.RollbackEnded(outcome="failed", error=msg[:2000]))
                raise NeedsHuman(f"rollback to {target} failed: {msg}",
                                 hint=f"run `inv status --env {cfg.env}` and `inv rollback` again "
                                      "(it converges)") from None
            if backup is not None:
                run.write(REC.DbRestored(path=backup.path, sha256=backup.sha256, safety_backup=safety))
            for h, arc in sorted((files or {}).items()):
                run.write(REC.FilesRestored(host=h, path=arc.path, sha256=arc.sha256))
            took = time.monotonic() - run.t0
            targets = {h.name: target for h in app}
            run.write(REC.RollbackEnded(outcome="success", seconds=round(took, 3), hosts=targets))
            self.rep.event("outcome", outcome="success", release=target,
                           message=f"rolled back {cfg.env} to {target} on {len(app)} hosts in {took:.1f}s")
            return 0

    def backup_to_restore(self, target: str, history: History) -> REC.BackupRef:
        """`--restore-db`: the backup taken before `target` was left, checked on the db host
        (fetched back from off-site first when the host's copy may be gone)."""
        cfg, s = self.cfg, self.s
        backup = history.backup_before_leaving(target)
        if backup is None:
            raise Refused(f"rollback to {target} --restore-db: no backup of that release's "
                          "database is recorded in the ledger")
        failed = history.failed_proof(backup.path)
        if failed is not None:
            raise Refused(f"rollback to {target} --restore-db: backup {backup.path} failed its test restore "
                          f"({failed.at[:19]}: {failed.error}); it is not restored. Once its cause is "
                          f"mended, `inv maintenance.run --env {cfg.env}` tests it again")
        db = DB.of(cfg.database)
        remote = offsite(cfg)
        if remote and not self.dry_run:
            # the host's copy may be gone: fetched back from the bucket, sha256 checked first
            try:
                s.state.ensure_backup(cfg.db_host.name, backup.path, backup.sha256)
            except Exception as exc:  # noqa: BLE001 - any failure to fetch refuses the restore
                raise Refused(f"rollback --restore-db: backup {backup.path} is not on "
                              f"{cfg.db_host.name} and could not be fetched from {s.state.where()}: "
                              f"{message_of(exc)}") from exc
        try:
            s.run(cfg.db_host, db.verify(backup.path, backup.sha256), timeout=300)
        except CommandFailed as exc:
            if not (remote and self.dry_run):
                raise Refused(f"rollback --restore-db: backup {backup.path} on {cfg.db_host.name} "
                              "is missing or corrupt (sha256 mismatch)") from exc
            self.rep.event("notice", message=f"backup {backup.path} is not on {cfg.db_host.name}: "
                                             f"it would be fetched from {s.state.where()}")
        return backup


def paused_run(history: History) -> tuple[str, list[REC.Record]] | None:
    """The run id and typed records of a paused, unfinished deploy, if any."""
    for r in reversed(history.in_flight):
        records = history.records_of(r.run)
        if any(isinstance(e, REC.Paused) for e in records):
            return r.run, records
    return None


class Resume:
    """`promote` or `abort` a paused rollout, from any machine: the run's state comes from its
    typed records in the ledger; the lock is adopted; the plan is the deploy's tail, or its
    rollback."""

    def __init__(self, cfg: Config, reporter: Reporter, action: str, session: Session | None = None):
        self.cfg, self.rep, self.action = cfg, reporter, action
        self.s = session or Session(cfg, reporter, reason=f"{action} paused rollout")

    def run(self) -> int:
        cfg = self.cfg
        with session_of(self.s, self.rep) as s:
            history = s.history()
            found = paused_run(history)
            if found is None:
                raise Refused(f"{cfg.env}: no paused rollout to {self.action}")
            run_id, records = found
            info = s.adopt_lock(run_id)  # the resumed run keeps its id: one story in the ledger
            if info is None:
                held = s.state.read_lock()
                raise Refused(f"{cfg.env}: cannot take over the paused rollout's lock "
                              f"(held by {held.describe() if held else 'nobody'})")
            return self.resume(run_id, records, history, info)

    def resume(self, run_id: str, records: list[REC.Record], history: History, info: dict) -> int:
        cfg, s = self.cfg, self.s
        st = RunState.from_events(records)
        kind = REC.Resumed if self.action == "promote" else REC.Aborted
        with journaled(s, self.rep, st, kind(who=info["holder"], from_host=info["host"]),
                       release_lock=True) as run:
            self.rep.event("run", message=f"{self.action}: {st.release} ({st.ref}), {len(st.switched)} "
                                          f"host(s) switched, {st.waves_done} wave(s) done")
            if self.action == "abort":
                return run.roll_back(DeployerError("aborted by hand"), outcome="aborted")
            facts = read_facts(s, cfg, st.commit, self.rep)
            plan = deploy_plan(cfg, facts, DeployInputs(
                release=st.release, commit=st.commit, ref=st.ref, maintenance=st.maintenance_on,
                start_wave=st.waves_done, snapshot=st.snapshot, token=s.fence_token,
                protected=frozenset(history.snapshot_releases()),
                bad=frozenset(r for r, rec in history.releases.items() if rec.bad),
                order=tuple(history.order), written_secrets=tuple(st.secret_paths)))
            from .deploy import lock_lost, pause

            try:
                outcome = run.ex.run(plan)
            except LockLost as exc:
                lock_lost(run, cfg, exc)
            except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - same failure path as a deploy
                return run.fail(exc)
            if outcome == "paused":
                return pause(run, cfg, self.rep, plan)
            return succeed(run, cfg, self.rep, verb="promoted")
