"""`recover`: after any crash, read the journal, the ledger and the hosts, say what is found,
and converge: finish a rollback, roll a half-done deploy back to its snapshot, put drained
servers back, end maintenance unless the database may be mid-migration, free the dead run's lock.
Running it twice changes nothing the second time.
"""

from __future__ import annotations

import os
import socket

from .. import records as REC
from ..commands import databases as DB
from ..commands import lb as LB
from ..commands import lock as LK
from ..config import Config
from ..errors import DeployerError, NeedsHuman, Refused
from ..ledger import History, RunKind, RunRecord
from ..output import Reporter
from ..session import Session
from ..stages import StageName
from . import ops
from .back_plan import manual_rollback_plan, rollback_plan
from .deploy import restorable
from .deploy_plan import unfence_stage
from .maint_plan import mode_plan
from .plan import Lane, Plan, Stage
from .runs import failed_hosts, journaled, session_of
from .state import RunState


def _alive(held: LK.LockInfo, stale_after: float) -> bool:
    """Is the run holding the lock still alive? On this machine: its pid; elsewhere: its
    heartbeat (a lock without a fresh heartbeat is a dead run's). A lock without its holder's
    details (left by an older deployer whose connection died while it sent them) is nobody's:
    no run can heartbeat or release it."""
    if held.paused:
        return True
    if not held.run:
        return False
    here = alive_here(held)
    if here is not None:
        return here
    return held.heartbeat_age is not None and held.heartbeat_age <= stale_after


def alive_here(held: LK.LockInfo) -> bool | None:
    """Is the lock's holder a live process of this machine (same host name, its pid answers)?
    None when the holder is not of this machine (or names no pid)."""
    if held.host != socket.gethostname() or not held.pid:
        return None
    try:
        os.kill(int(held.pid), 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class Recover:
    def __init__(self, cfg: Config, reporter: Reporter, *, force: bool = False, reason: str = "",
                 session: Session | None = None):
        self.cfg, self.rep, self.force = cfg, reporter, force
        self.s = session or Session(cfg, reporter, reason=f"recover: {reason}" if reason else "recover")
        self.restarted: list[str] = []  # hosts whose wedged worker recover restarted

    def say(self, message: str) -> None:
        self.rep.event("notice", message=message)

    def run(self) -> int:
        cfg = self.cfg
        with session_of(self.s, self.rep) as s:
            history = s.history()
            held = s.state.read_lock()
            if held is not None and held.paused:
                self.say(f"{cfg.env}: a rollout is paused ({held.describe()}): it is not dead; "
                         f"`inv promote --env {cfg.env}` or `inv abort --env {cfg.env}`")
                return 0
            if held is not None and _alive(held, s.stale_after) and not self.force:
                raise Refused(f"{cfg.env}: run {held.run} is alive ({held.describe()}); nothing to "
                              "recover (or pass --force --reason \"why\" if that process is gone)")
            in_flight = list(history.in_flight) + list(history.unfinished)
            dead_runs = [r.run for r in in_flight]
            if held is not None:
                self.say(f"lock held by a dead run: {held.describe()}")
                s.state.force_release()
            s.acquire_lock(0)
            code = 0
            own = s.run_id
            for r in in_flight:
                try:
                    code = max(code, self.converge(r, history))
                finally:
                    s.continue_run(own)  # back to its own story
            code = max(code, self.leftovers())
            if code == 0:
                code = max(code, self.stray_fence())
            code = max(code, self.check_workers())
            if not dead_runs and code == 0 and self.restarted:
                self.rep.event("outcome", outcome="success", release="",
                               message=f"{cfg.env}: restarted the wedged worker of {', '.join(self.restarted)}; "
                                       "consistent")
            elif not dead_runs and code == 0:
                self.rep.event("outcome", outcome="success", release="",
                               message=f"{cfg.env}: nothing to recover (lock free, no run in flight, "
                                       "no server drained)")
            elif code == 0:
                self.rep.event("outcome", outcome="success", release="",
                               message=f"{cfg.env}: recovered {len(dead_runs)} run(s); consistent")
            if code == 4:
                raise NeedsHuman(f"{cfg.env}: recovery stopped: see the notices above",
                                 hint=f"then run `inv recover --env {cfg.env} --force --reason \"why\"`")
            return code

    # -- one dead run ---------------------------------------------------------------------
    def converge(self, r: RunRecord, history: History) -> int:
        cfg, s = self.cfg, self.s
        run_id = r.run
        records = history.records_of(run_id)
        kinds = {type(e) for e in records}
        stages = [e for e in records if isinstance(e, REC.Stage)]
        self.say(f"run {run_id} ({r.kind}) ended without a record of its end; last stage: "
                 + (f"{stages[-1].stage} ({stages[-1].state})" if stages else "none"))
        s.continue_run(run_id)  # the recovery is written into the dead run's own story
        if r.kind is RunKind.MAINTENANCE:
            return self.end_maintenance(run_id)
        if r.kind is RunKind.ROLLBACK:
            return self.redo_rollback(run_id, r, history)
        st = RunState.from_events(records)
        if st is None:
            return 0
        self.add_switched_hosts(st)
        st.drained = sorted(set(st.drained) | set(self.drained_hosts()))
        with journaled(s, self.rep, st) as run:
            mid = self.mid_migration(stages, records)
            if mid and not self.force:
                self.say(f"the deploy died DURING THE MIGRATION on {cfg.migrate_host.name}: the database "
                         "may be half-migrated and the migration may still be running there. "
                         "Maintenance mode stays ON. Check that no migration process runs any more and "
                         f"what the schema is, then run `inv recover --env {cfg.env} --force --reason \"why\"` (it rolls "
                         "back code and database to the snapshot)")
                return 4
            rolling_back = REC.RollbackStarted in kinds
            finalizing = any(e.stage == StageName.FINALIZE for e in stages) and not rolling_back
            if finalizing:
                self.say(f"it had passed every gate: finishing it ({st.release} stays)")
                plan = Plan("recover", st.release, tuple(
                    ([mode_plan(cfg, False, message="", retry=0, ttl=None,
                                release=st.release, token=s.fence_token).stages[0]] if st.maintenance_on else [])
                    + self.undrain_stage(st) + unfence_stage(cfg, st.fenced())))
                run.ex.run(plan)
                run.write(REC.RunEnded(outcome="success", error="finished by recover"))
                return 0
            self.say(("finishing its rollback" if rolling_back else "rolling it back to its snapshot")
                     + f": {len(st.switched)} host(s) switched, {len(st.drained)} drained"
                     + (", database migrated" if st.migrated else "")
                     + (", maintenance on" if st.maintenance_on else ""))
            try:
                run.settle_schema()
                run.ex.run(rollback_plan(cfg, st, s.fence_token))
            except DeployerError as exc:
                run.write(REC.RollbackEnded(outcome="failed", error=exc.message[:2000]))
                self.say(f"rollback failed: {exc.message}")
                return 4
            run.write(REC.ReleaseBad(release=st.release, reason="its run died; rolled back by recover"))
            run.write(REC.RollbackEnded(outcome="success"))
            run.write(REC.RunEnded(outcome="rolled_back", error="the run died; recovered",
                                   hosts=dict(st.snapshot)))
            return 0

    def end_maintenance(self, run_id: str) -> int:
        """A maintenance job that died: its end is recorded, failed (nothing to undo)."""
        with journaled(self.s, self.rep, RunState(run=run_id, release=""),
                       REC.MaintenanceEnded(outcome="failed", error="the job died; recovered")):
            return 0

    def add_switched_hosts(self, st: RunState) -> None:
        """Defensive: a host serving the run's release is switched, recorded or not."""
        facts = self.s.facts(self.cfg.app_hosts)
        facts.require_reachable("recover")
        for name, hs in facts.hosts.items():
            if hs.current == st.release and name not in st.switched and st.snapshot.get(name) != st.release:
                st.switched.append(name)

    def redo_rollback(self, run_id: str, r: RunRecord, history: History) -> int:
        cfg = self.cfg
        target = r.release  # the release a rollback by hand returns to (None: an automatic one)
        if target is None:
            return 0
        self.say(f"a rollback by hand to {target} died: running it again (code only)")
        facts = self.s.facts(cfg.app_hosts)
        facts.require_reachable("recover")
        # it died while building the release again
        rebuild = restorable(self.s, cfg, history, target, facts)
        with journaled(self.s, self.rep, RunState(run=run_id, release=target)) as run:
            try:
                run.ex.run(manual_rollback_plan(cfg, target, cfg.app_hosts, backup=None, safety_path=None,
                                                token=self.s.fence_token, rebuild=rebuild))
            except DeployerError as exc:
                run.write(REC.RollbackEnded(outcome="failed", error=exc.message[:2000]))
                self.say(f"rollback failed: {exc.message}")
                return 4
            run.write(REC.RollbackEnded(outcome="success", hosts={h.name: target for h in cfg.app_hosts}))
            return 0

    @staticmethod
    def mid_migration(stages: list[REC.Stage], records: list[REC.Record]) -> bool:
        started = any(e.stage == StageName.MIGRATE and e.state == "start" for e in stages)
        ended = any(e.stage == StageName.MIGRATE and e.state in ("done", "failed") for e in stages)
        return started and not ended and not any(isinstance(e, REC.Migrated) for e in records)

    # -- what no run explains -------------------------------------------------------------
    def drained_hosts(self) -> list[str]:
        cfg = self.cfg
        if not (cfg.lb and cfg.lb_host):
            return []
        out = self.s.run(cfg.lb_host, LB.states(cfg.lb.socket), timeout=30).stdout
        states = LB.parse_states(out, cfg.lb.backend)
        return [h.name for h in cfg.app_hosts if ops.behind_lb(cfg, h)
                and states.get(cfg.lb_server_name(h)) in ("drain", "maint")]

    def undrain_stage(self, st: RunState) -> list[Stage]:
        cfg = self.cfg
        lanes = tuple(Lane(h.name, (ops.undrain(cfg, h, wait_up=not st.maintenance_on),))
                      for h in cfg.app_hosts if h.name in st.drained)
        return [Stage(StageName.SWITCH, "put back", lanes)] if lanes else []

    def leftovers(self) -> int:
        """Servers left drained by nobody's run: checked, then put back."""
        cfg, s = self.cfg, self.s
        drained = self.drained_hosts()
        if not drained:
            return 0
        self.say(f"servers drained at the load balancer with no run in flight: {', '.join(drained)}")
        facts = s.facts([cfg.host(n) for n in drained])
        lanes = []
        for name in drained:
            h = cfg.host(name)
            current = facts.current(name)
            acts = ([ops.check(cfg, h, current)] if current else []) + [ops.undrain(cfg, h)]
            lanes.append(Lane(name, tuple(acts)))
        with journaled(s, self.rep, RunState(run=s.run_id, release="")) as run:
            try:
                run.ex.run(Plan("recover", "", (Stage(StageName.SWITCH, "put back", tuple(lanes)),)))
            except DeployerError as exc:
                self.say(f"could not put them back: {exc.message}")
                return 4
            return 0

    def stray_fence(self) -> int:
        """A write fence no run needs any more (the rollback of its run could not reach the
        database host, say): removed once every run is over. Read first: a recover with
        nothing to do changes nothing."""
        cfg, s = self.cfg, self.s
        if not (cfg.database and cfg.db_host):
            return 0
        try:
            left = s.run(cfg.db_host, DB.of(cfg.database).fence_left(), timeout=60).stdout.strip()
        except DeployerError as exc:
            self.say(f"{cfg.db_host.name}: could not check for a write fence left in {cfg.database.name} "
                     f"({exc.message}); `inv recover --env {cfg.env}` again removes it")
            return 4
        if left != "fence":
            return 0
        self.say(f"a write fence was left in {cfg.database.name} with no run in flight: removing it")
        with journaled(s, self.rep, RunState(run=s.run_id, release="")) as run:
            run.ex.run(Plan("recover", "", tuple(unfence_stage(cfg, True))))
        return 0

    # -- the workers ------------------------------------------------------------------------
    def worker_lanes(self, served: dict[str, str], *, restart: bool) -> tuple[Lane, ...]:
        """Per worker host serving a release: its worker checked on that release (a heartbeat
        newer than the check's start), after the playbook's worker restart when `restart`."""
        cfg = self.cfg
        if restart:
            pairs = [(cfg.host(n), [ops.workers(cfg, cfg.host(n), ops.values(cfg, cfg.host(n), r), effect=None)])
                     for n, r in served.items()]
        else:
            pairs = [(cfg.host(n), [ops.worker_check(cfg, cfg.host(n), r)]) for n, r in served.items()]
        return ops.lanes(pairs)

    def check_workers(self) -> int:
        """Once converged, each app host's worker must report the release the host serves with a
        fresh heartbeat: a wedged one (stale heartbeat: stuck on a dead database connection after
        a partition, say) is restarted and checked again; still wedged, a human must look (4)."""
        cfg, s = self.cfg, self.s
        facts = s.facts(cfg.app_hosts)
        for name, why in sorted(facts.unreachable.items()):
            self.say(f"{name}: not reachable ({why}): its worker is not checked")
        served = {h.name: cur for h in cfg.app_hosts if (cur := facts.current(h.name))}
        lanes = self.worker_lanes(served, restart=False)
        if not lanes:
            return 0
        with journaled(s, self.rep, RunState(run=s.run_id, release="")) as run:
            try:
                run.ex.run(Plan("recover", "", (Stage(StageName.WORKER_RESTART, "check", lanes),)))
                return 0
            except DeployerError as exc:
                wedged = sorted(failed_hosts(exc) & set(served)) or sorted(lane.subject for lane in lanes)
            self.say(f"worker not reporting its release with a fresh heartbeat on {', '.join(wedged)}: "
                     "restarting it")
            again = self.worker_lanes({n: served[n] for n in wedged}, restart=True)
            try:
                run.ex.run(Plan("recover", "", (Stage(StageName.WORKER_RESTART, "restart wedged", again),)))
            except DeployerError as exc:
                self.say(f"worker still wedged after a restart: {exc.message}; look at the worker's log "
                         f"on {', '.join(sorted(failed_hosts(exc)) or wedged)}")
                return 4
            self.say(f"worker restarted and reporting its release on {', '.join(wedged)}")
            self.restarted = wedged
            return 0
