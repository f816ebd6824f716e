"""What every run shares: its session, its journal, its executor, and the guaranteed failure
path (a failed or interrupted run goes back to its snapshot with the rollback plan)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .. import records as REC
from ..errors import CommandFailed, DeployerError, DeployFailed, NeedsHuman, interrupted
from ..journal import Journal
from ..output import Reporter
from ..session import Session, who
from ..signals import deferred
from ..stages import StageName
from .back_plan import rollback_plan
from .executor import Executor, GateFailed, StageFailed
from .plan import SchemaKey
from .state import RunState


@contextmanager
def session_of(s: Session, reporter: Reporter) -> Iterator[Session]:
    """A verb's session, whatever happens in it: the lock it took or adopted released (a
    release that fails is reported, with how to free the lock; a paused rollout keeps it), then
    its connections closed. Every verb runs inside one."""
    try:
        yield s
    finally:
        try:
            release_or_report(s, reporter)
        finally:
            s.close()


def release_or_report(s: Session, reporter: Reporter) -> None:
    try:
        s.release_lock()  # nothing when no lock is held (or it was released with the last shipment)
    except DeployerError as exc:
        reporter.event("notice", message=f"lock NOT released ({exc.message.splitlines()[0]}): it "
                                         f"is held by run {s.run_id}, which has ended; "
                                         f"`inv recover --env {s.cfg.env}` frees it")


@contextmanager
def journaled(s: Session, reporter: Reporter, state: RunState, start: REC.Record | None = None, *,
              release_lock: bool = False, secrets=()) -> Iterator[Run]:
    """One run's journal: its first record written (none when it continues a run already
    started), its last lines shipped whatever happens (and with `release_lock`, the lock
    released in the same round trip: the run's last act)."""
    run = Run(s, reporter, state, secrets=secrets)
    try:
        if start is not None:
            run.write(start)
        yield run
    finally:
        run.close(release_lock=release_lock)


class Run:
    """One run: a Session (connections, lock), a Journal (shipped to the ledger) and an Executor."""

    def __init__(self, session: Session, reporter: Reporter, state: RunState, secrets=()):
        from ..redact import Redactor

        self.s = session
        self.rep = reporter
        self.st = state
        # Secret values the run knows (secret files, the SSH key data...) and KEY=value patterns
        # never reach the journal, the ledger, events or notifications through an error text.
        self.redactor = Redactor(list(secrets) + [x for x in (session.cfg.ssh.key_data,) if x])
        self.journal = Journal(session.cfg.env, session.run_id, session.ledger_id)
        self.journal.start_shipping(session.ship)
        self.ex = Executor(session, self.journal, reporter, state, redact=self.redactor.redact)
        self.t0 = time.monotonic()

    def write(self, rec: REC.Record) -> dict:
        return self.journal.write(rec)

    def close(self, *, release_lock: bool = False) -> None:
        """Last shipment (bounded: an unreachable ledger never holds the run up); with
        `release_lock`, the lock is released in the same round trip (the run's last act)."""
        ship = self.s.ship_and_release if release_lock else self.s.ship
        if not self.journal.close(ship, timeout=5):
            self.rep.event("notice", message=(
                f"ledger {self.s.state.where()} not reachable "
                f"({self.journal.ship_error or 'timeout'}): this run's record is kept in "
                f"{self.journal.path} and shipped by the next command that reaches it"))

    def fail(self, exc: BaseException) -> int:
        """The failure path of a plan that raised: Ctrl-C/SIGTERM (also when Python reports it
        as a lock's RuntimeError), a DeployerError, or a bug; each rolls back."""
        if interrupted(exc):
            return self.roll_back(DeployerError("interrupted (Ctrl-C)"), interrupted=True)
        if not isinstance(exc, DeployerError):
            exc = DeployerError(f"internal error: {type(exc).__name__}: {exc}")
        return self.roll_back(exc)

    def roll_back(self, cause: DeployerError, *, interrupted: bool = False, outcome: str = "") -> int:
        """Every host the run touched back to its snapshot. Exit 1 (or 130), or NeedsHuman."""
        with self.shield():
            return self._roll_back(cause, interrupted=interrupted, outcome=outcome)

    def _roll_back(self, cause: DeployerError, *, interrupted: bool, outcome: str) -> int:
        st = self.st
        cfg = self.s.cfg
        failed_in = self.ex.stage.name if self.ex.stage is not None else None
        cause.message = self.redactor.redact(cause.message)
        self.rep.event("rollback", message=f"deploy failed: {cause.message}\nrolling back to the snapshot")
        self.write(REC.RollbackStarted(auto=True, to=st.snapshot, cause=cause.message[:500], who=who()))
        t0 = time.monotonic()
        self.settle_schema()
        plan = rollback_plan(cfg, st, self.s.fence_token)
        switched = len(st.switched)
        try:
            self._run_shielded(plan)
        except DeployerError as rb:
            rb.message = self.redactor.redact(rb.message)
            self.keep_closed(rb.message)
            self.write(REC.RollbackEnded(outcome="failed", error=rb.message[:2000]))
            self.write(REC.RunEnded(outcome="needs_human", error=cause.message[:2000],
                                    rollback_error=rb.message[:2000]))
            raise NeedsHuman(f"deploy of {st.release} failed ({cause.message}) AND its rollback failed: "
                             f"{rb.message}", hint=f"run `inv status --env {cfg.env}`, then "
                                               f"`inv recover --env {cfg.env}`") from rb
        took = time.monotonic() - t0
        blamed = environment_at_fault(self.s.cfg, st, cause, failed_in)
        if not blamed:
            self.write(REC.ReleaseBad(release=st.release, reason=cause.message[:500]))
        self.write(REC.RollbackEnded(outcome="success", seconds=round(took, 3)))
        self.write(REC.RunEnded(outcome=outcome or ("interrupted" if interrupted else "rolled_back"),
                                error=cause.message[:2000], hosts=dict(st.snapshot)))
        verdict = f"{st.release} marked bad"
        if blamed:
            verdict = (f"{st.release} NOT marked bad (it stays a rollback target): the environment was at "
                       f"fault: the worker of {', '.join(blamed)} was already unhealthy before the switch")
        self.rep.event("rollback", message=f"rolled back {switched} switched host(s) in {took:.1f}s; {verdict}")
        if interrupted:
            return 130
        if outcome:
            return 0
        raise DeployFailed(f"deploy of {st.release} ({st.ref}) failed and was rolled back: {cause.message}"
                           + (f"\n{verdict}" if blamed else ""))

    def settle_schema(self) -> None:
        """A migration cut short (Ctrl-C, a lost host) left no `after` version: read it now, once the
        remote commands are stopped, so that the rollback undoes what really changed (and nothing
        when the schema did not move, e.g. a release older than the database). Unreadable: the
        database stays "maybe migrated" and its rollback plan says what to do."""
        st, cfg = self.st, self.s.cfg
        version = cfg.playbook.steps("migrate", "version")
        host = cfg.migrate_host
        if not (st.migrated and st.schema_after is None and version and host is not None):
            return
        from ..facts import parse_schema
        from . import ops

        try:
            out = self.s.run(host, version[0].command(ops.values(cfg, host, st.release)),
                             timeout=min(60, cfg.ssh.command_timeout)).stdout
        except DeployerError:
            return
        after = parse_schema(out)
        if after is not None:
            st.record_schema(SchemaKey.AFTER, after)
            self.write(REC.Migrated(before=st.schema_before, after=after))

    def keep_closed(self, why: str) -> None:
        """A rollback failed while maintenance was on: the site must not reopen by itself (over
        a database in an unknown state): the dead-man switches are disarmed and the flag tells
        why, for `status` and for users. Best effort: the failure is what gets reported."""
        if not self.st.maintenance_on:
            return
        from . import ops
        from .plan import Plan, Stage

        cfg = self.s.cfg
        msg = "Maintenance: the deploy failed and its rollback needs a human (see inv status)"
        web = [h for h in cfg.app_hosts if h.has("web")]
        lanes = ops.maintenance_lanes(cfg, web, True, ttl=None, message=msg, release=self.st.release,
                                      what="maintenance held", journaled=False)
        try:
            self.ex.run(Plan("rollback", self.st.release, (Stage(StageName.MAINTENANCE, "held: " + why[:80], lanes),)))
        except DeployerError:
            pass

    def _run_shielded(self, plan) -> None:
        while True:
            try:
                self.ex.run(plan, interruptible=False)
                return
            except KeyboardInterrupt:  # raised before the shield was up
                plan = rollback_plan(self.s.cfg, self.st, self.s.fence_token)  # what is left, from the state so far

    @contextmanager
    def shield(self):
        """Ctrl-C or SIGTERM (a cancelled CI job sends both, often twice) do not stop a rollback
        halfway: they are reported and the rollback goes on to its end."""
        received: list[int] = []

        def note(signum: int) -> None:
            received.append(signum)
            self.rep.event("notice", message=f"signal {signal.Signals(signum).name} received during the "
                                             "rollback: finishing the rollback first")

        with deferred(note):
            yield received


def failed_hosts(exc: BaseException) -> set[str]:
    """The hosts a stage's failure names (none for a failure of no host, e.g. a bake)."""
    if isinstance(exc, StageFailed):
        return set(exc.failures)
    if isinstance(exc, GateFailed):
        return set(exc.failed)
    if isinstance(exc, CommandFailed) and exc.host:
        return {exc.host}
    return set()


def environment_at_fault(cfg, st: RunState, cause: BaseException, stage: StageName | None) -> list[str]:
    """The failing hosts, when the deploy failed at a worker check or the gate on hosts that ALL
    failed their worker probe before the switch (a host with a worker, serving a release then, not
    journaled WORKER_HEALTHY): their environment, not the release, is at fault. Else []."""
    if stage not in (StageName.WORKER_RESTART, StageName.GATE):
        return []
    hosts = failed_hosts(cause)
    probed = {h.name for h in cfg.app_hosts if st.snapshot.get(h.name)
              and any(cfg.runs_step(step, h) for step in cfg.playbook.steps("worker_verify"))}
    unhealthy = probed - set(st.workers_healthy)
    return sorted(hosts) if hosts and hosts <= unhealthy else []
