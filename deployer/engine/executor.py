"""The executor: runs a plan exactly as built, and keeps the run's state in one place.

For each stage: journal its start, run its lanes (in parallel, at most `limit` at once; a
switch wave schedules no new host after its first failure), journal each effect before the
change it names, parse what actions record, journal the end, ask the shipper to ship. It never
builds a command: everything it runs comes from the plan.
"""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from .. import records as REC
from ..commands import artifact as A
from ..commands import backup as B
from ..commands import fence as FN
from ..commands import files as F
from ..errors import CommandFailed, DeployerError, DeployFailed, Fenced, LockLost, NeedsHuman, message_of
from ..facts import parse_schema
from ..shell import STEP_MARK, step_outputs
from ..signals import deferred
from ..stages import StageName
from . import plan as P
from .plan import Action, Effect, Lane, Plan, Stage
from .state import RunState


class GateFailed(DeployFailed):
    def __init__(self, failed: dict[str, str]):
        lines = "; ".join(f"{h}: {r}" for h, r in sorted(failed.items()))
        super().__init__(f"health gate failed on {len(failed)} host(s): {lines}")
        self.failed = failed


class StageFailed(DeployFailed):
    """Some lanes of a stage failed: the map of host -> error, raised once after all ended."""

    def __init__(self, stage: str, failures: dict[str, BaseException]):
        lines = [f"{stage} failed on {len(failures)} host(s)"]
        for host, exc in sorted(failures.items()):
            lines.append(f"  {host}: {message_of(exc)}")
        super().__init__("\n".join(lines))
        self.failures = failures


class Executor:
    def __init__(self, session, journal, reporter, state: RunState, *, redact=None):
        self.s = session
        self.journal = journal
        self.rep = reporter
        self.st = state
        self.redact = redact or (lambda text: text)
        self._state_lock = threading.Lock()
        self._keepalive_stop = threading.Event()
        self.first_failure_at: float | None = None
        self.stage: Stage | None = None
        self.interrupted = threading.Event()
        self.interruptible = True

    # -- the journal ----------------------------------------------------------------------
    def write(self, rec: REC.Record) -> dict:
        return self.journal.write(rec)

    def effect(self, effect: Effect, host: str, release: str = "") -> None:
        with self._state_lock:
            self.write(REC.Effect(host=host, effect=effect.value, release=release or self.st.release))
            self.st.apply(effect, host)

    # -- plans ----------------------------------------------------------------------------
    def run(self, plan: Plan, *, on_stage=None, interruptible: bool = True) -> str:
        """Run every stage; 'done', or 'paused' after a stage that pauses the rollout.

        Ctrl-C and SIGTERM never strike at a random point: they are noted, the running hosts'
        remote commands are stopped and their lanes waited for, then KeyboardInterrupt is raised
        between two well-defined points. `interruptible=False` (a rollback): they are ignored.
        """
        plan = self.fenced(plan)
        keep = self._start_keepalive(plan)
        self.interruptible = interruptible
        if not interruptible:
            self.interrupted.clear()  # what interrupted the run is being handled: this is the rollback
        try:
            with deferred(self._note_signal):
                for stage in plan.stages:
                    self.stage = stage
                    self._check_interrupt()
                    if on_stage:
                        on_stage(stage)
                    self.run_stage(stage, plan)
                    if stage.pause_after:
                        return "paused"
                self._check_interrupt()
                return "done"
        finally:
            keep()

    def fenced(self, plan: Plan) -> Plan:
        """The plan with the lock's fencing token checked first by every host script: a plan
        built without it (one made on the spot: put back, maintenance held) gets it here; a plan
        built for another token (a dry run's) is never run."""
        token = self.s.fence_token
        if plan.token is None:
            return P.fenced(plan, self.s.cfg.fence_record, token)
        if plan.token != token:
            raise DeployerError(f"internal error: a plan built for fencing token {plan.token} run with "
                                f"the lock's {token}")
        return plan

    def _note_signal(self, signum: int) -> None:
        """Called by the signal relay thread (never inside the handler: see deployer.signals)."""
        if self.interruptible:
            self.interrupted.set()
        self.rep.event("notice", message=f"signal {signal.Signals(signum).name} received: "
                       + ("stopping; the rollback follows" if self.interruptible
                          else "finishing the rollback first"))

    def _check_interrupt(self) -> None:
        if self.interruptible and self.interrupted.is_set():
            raise KeyboardInterrupt

    def run_stage(self, stage: Stage, plan: Plan) -> None:
        label = f"{stage.label}" + (f" (wave {stage.wave})" if stage.wave else "")
        self.write(REC.Stage(stage=stage.label, state="start", detail=stage.detail, wave=stage.wave))
        self.rep.event("stage", stage=stage.label, state="start", detail=stage.detail)
        t0 = time.monotonic()
        try:
            if stage.refuse:
                raise NeedsHuman(stage.refuse)
            failures = self.run_lanes(stage, plan)
            for exc in failures.values():
                if isinstance(exc, LockLost):  # even where failures are harmless: the run ends
                    raise exc
            if failures and stage.best_effort:
                for host, exc in sorted(failures.items()):
                    msg = self.redact(message_of(exc).splitlines()[0])
                    self.rep.event("notice", message=f"{stage.label}: not done on {host} ({msg}); "
                                                       f"{stage.best_effort_note}")
                failures = {}
            if failures:
                for exc in failures.values():
                    refused = self._refusal(stage, exc)
                    if refused:
                        raise NeedsHuman(refused)
                if len(failures) == 1:
                    raise next(iter(failures.values()))
                raise StageFailed(label, failures)
            if stage.bake:
                self.bake(stage)
        except BaseException as exc:
            msg = message_of(exc)
            self.write(REC.Stage(stage=stage.label, state="failed", wave=stage.wave,
                                 error=self.redact(msg)[:2000]))
            self.rep.event("stage", stage=stage.label, state="failed", error=self.redact(msg)[:2000])
            self.journal.request_ship()
            raise
        took = round(time.monotonic() - t0, 3)
        self.write(REC.Stage(stage=stage.label, state="done", wave=stage.wave, seconds=took))
        self.journal.request_ship()

    def _refusal(self, stage: Stage, exc: BaseException) -> str | None:
        if stage.refuse_on and isinstance(exc, CommandFailed) and exc.exit_status == stage.refuse_on[0]:
            tail = "\n".join(self.redact(exc.stderr).strip().splitlines()[-12:])
            return stage.refuse_on[1] + (f"\n{tail}" if tail else "")
        return None

    def run_lanes(self, stage: Stage, plan: Plan) -> dict[str, BaseException]:
        lanes = list(stage.lanes)
        failures: dict[str, BaseException] = {}
        if not lanes:
            return failures
        width = max(1, min(stage.limit or self.s.transport.parallel, self.s.transport.parallel, len(lanes)))
        stop = threading.Event()
        it = iter(lanes)
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix=stage.label) as pool:
            running: dict = {}

            def submit() -> None:
                if stop.is_set():
                    return
                lane = next(it, None)
                if lane is not None:
                    running[pool.submit(self.run_lane, stage, lane)] = lane

            for _ in range(width):
                submit()
            while running:
                done, _ = wait(list(running), timeout=0.1, return_when=FIRST_COMPLETED)
                if self.interruptible and self.interrupted.is_set() and not stop.is_set():
                    # Ctrl-C or SIGTERM: no new host, and the remote commands still running
                    # (a migration, say) are stopped, not just their channels closed; the lanes
                    # end (failing) before the rollback starts.
                    stop.set()
                    stopped = self.s.transport.cancel()
                    if stopped:
                        self.rep.event("notice", message=f"interrupted: stopped the commands running on "
                                                         f"{', '.join(sorted(set(stopped)))}")
                for fut in done:
                    lane = running.pop(fut)
                    exc = fut.exception()
                    if exc is not None:
                        failures[lane.subject] = exc
                        if self.first_failure_at is None:
                            self.first_failure_at = time.monotonic()
                        if stage.stop_on_failure:
                            stop.set()  # no new host gets the release after a failed one
                    submit()
        self._check_interrupt()
        return failures

    def run_lane(self, stage: Stage, lane: Lane) -> None:
        for action in lane.actions:
            self.run_action(stage, lane.subject, action)

    def run_action(self, stage: Stage, subject: str, a: Action) -> None:
        label = f"{stage.label} w{stage.wave}" if stage.wave else stage.label
        self.rep.event("command", stage=label, host=a.host, command=a.display())
        if a.effect is Effect.SWITCHED:
            self.s.check_fence()  # a run that lost its lock switches nothing more
        if a.effect is not None and not a.effect.removes_risk:
            self.effect(a.effect, subject)  # journaled before the change it names
        if a.http is not None:
            self.check(a)
        elif a.backend is not None:
            self.backend(a)
        else:
            self.remote(stage, a)
        if a.effect is not None and a.effect.removes_risk:
            self.effect(a.effect, subject)

    def backend(self, a: Action) -> None:
        """An operation of the state backend (e.g. a backup copied to S3): its result, if any, is a
        record to journal."""
        match a.backend:
            case P.UploadBackup(path=path, kind=kind):
                rec = self.s.state.upload_backup(a.host, path, state=self.st, kind=kind)
            case P.EnsureBackup(path=path, sha256=sha256, kind=kind):
                rec = self.s.state.ensure_backup(a.host, path, sha256, state=self.st, kind=kind)
            case P.PruneArtifacts(keep=keep):
                self.s.state.prune_artifacts(set(keep))
                rec = None
            case other:
                raise TypeError(f"unknown state backend operation {other!r}")
        if rec is not None:
            self.write(rec)

    def remote(self, stage: Stage, a: Action) -> None:
        deadline = time.monotonic() + a.retry_for
        while True:
            try:
                res = self.s.run_on(a.host, a.script, timeout=a.timeout,
                                    stdin=a.stdin.reveal() if a.stdin is not None else None)
                break
            except CommandFailed as exc:
                self._check_refusal(stage, a, exc)
                if time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                if a.records:  # what a failure records too (a test restore's verdict)
                    self._records(a, exc.stdout, failed=True)
                raise self._failed(stage, a, self._explain(a, exc)) from None
        if a.records:
            try:
                self._records(a, res.stdout)
            except CommandFailed as exc:  # what the host printed is wrong (another artifact)
                raise self._failed(stage, a, exc) from None
        self.rep.event("host", stage=a.what, host=a.host, state="done", detail=a.what)

    def _check_refusal(self, stage: Stage, a: Action, exc: CommandFailed) -> None:
        """A host refused the script by its fencing token: journaled, then the run ends as one
        that lost its lock (never retried)."""
        seen = FN.refusal(exc.exit_status, exc.stderr) if a.guard is not None else None
        if seen is None:
            return
        self._failed(stage, a, self._explain(a, exc))
        raise Fenced(a.host, seen[0], seen[1], FN.reset_hint(self.s.state.where(), self.s.cfg.fence_record))

    def _explain(self, a: Action, exc: CommandFailed) -> CommandFailed:
        """Name the failing step of a batched script and show that step's own stdout and stderr
        tails, masked by the run's redactor."""
        steps = a.command.display.split(" ;; ")
        idx = 0
        out_text, err = exc.stdout, exc.stderr
        if STEP_MARK in exc.stderr:
            per = step_outputs(exc.stderr)
            idx = max(k for k in per if k >= 0) if any(k >= 0 for k in per) else 0
            err = per.get(idx, "")
            out_text = step_outputs(exc.stdout).get(idx, "") if STEP_MARK in exc.stdout else exc.stdout
        step = steps[idx] if idx < len(steps) else a.command.display
        out = CommandFailed(a.host, self.redact(step), exc.exit_status, self.redact(out_text),
                            self.redact(err), timed_out=exc.timed_out, redact=self.redact)
        where = f"{a.what}: step {idx + 1}/{len(steps)}: " if len(steps) > 1 else f"{a.what}: "
        out.headline = where + out.headline
        out.message = where + out.message
        out.args = (out.message,)
        return out

    def _failed(self, stage: Stage, a: Action, exc: CommandFailed) -> CommandFailed:
        """Journal the failure with both streams' tails (already masked), tell the reporter (not
        for a best-effort stage: its notice says the failure is harmless), and give the error back
        to raise."""
        self.write(REC.StepFailed(stage=stage.label, wave=stage.wave, host=a.host, what=a.what,
                                  command=exc.command, exit_status=exc.exit_status,
                                  timed_out=exc.timed_out, stdout=exc.output.stdout,
                                  stderr=exc.output.stderr))
        if not stage.best_effort:
            self.rep.event("host", stage=a.what, host=a.host, state="failed", detail=a.what,
                           error=exc.headline, exit_status=exc.exit_status, stdout=exc.output.stdout,
                           stderr=exc.output.stderr)
        return exc

    def _records(self, a: Action, stdout: str, failed: bool = False) -> None:
        per = step_outputs(stdout) if STEP_MARK in stdout else {0: stdout}
        for entry in a.records:
            text = per.get(entry.step, "")
            match entry:
                case P.RecordProof(path=path, sha256=sha):
                    v = B.parse_proof(text)
                    if sha is None:
                        sha = self.st.backup.sha256 if self.st.backup and self.st.backup.path == path else ""
                    rec = REC.BackupProof(path=path, sha256=sha, ok=v.ok, tested=v.tested, tables=v.tables,
                                          rows=v.rows, error=self.redact(v.why)[:500])
                    self.write(rec)
                    with self._state_lock:
                        self.st.proofs.append(rec)
                case _ if failed:
                    continue
                case P.RecordFiles(path=path, paths=paths):
                    sha, size = F.parse(text.strip().splitlines()[-1] if text.strip() else "")
                    arc = REC.FilesBackup(host=a.host, path=path, sha256=sha, size=size, paths=list(paths))
                    self.write(arc)
                    with self._state_lock:
                        self.st.archives.append(arc)
                case P.RecordArtifact(release=release, built=built, sha256=expected):
                    sha, size, linked = A.parse(text.strip().splitlines()[-1] if text.strip() else "")
                    with self._state_lock:
                        want = expected or self.st.artifact
                        if built:
                            self.st.artifact = sha
                    self.write(REC.Artifact(release=release, host=a.host, sha256=sha, size=size, built=built,
                                            linked=linked))
                    if not built and sha != want:
                        raise CommandFailed(a.host, a.command.display, 4, "", (
                            f"artifact of {release}: {a.host} unpacked sha256 {sha}, the build host packed "
                            f"{want or 'nothing'}"), redact=self.redact)
                case P.RecordBackup(path=path):
                    sha, size = B.parse_dump(text.strip().splitlines()[-1] if text.strip() else "")
                    rec = REC.Backup(path=path, sha256=sha, size=size, host=a.host)
                    self.write(rec)
                    if self.st.backup is None:
                        self.st.record_backup(rec.ref())
                case P.RecordSchema(key=key):
                    with self._state_lock:
                        self.st.record_schema(key, parse_schema(text))
        if any(isinstance(r, P.RecordSchema) and r.key is P.SchemaKey.AFTER for r in a.records):
            self.write(REC.Migrated(before=self.st.schema_before, after=self.st.schema_after))

    def check(self, a: Action) -> None:
        hc = a.http

        def journal(host: str, sample) -> None:
            self.write(REC.HealthProbe(host=host, release=hc.release, ok=sample.ok, status=sample.status,
                                       ms=round(sample.ms, 1), detail=self.redact(sample.detail)[:300]))

        verdict = self.s.http_check(a.host, hc.url, timeout=hc.timeout, expect_status=hc.expect_status,
                                    expect_json=hc.expect_json, passes=hc.passes, max_attempts=hc.passes,
                                    interval=hc.interval, headers=hc.headers, budget=hc.budget,
                                    poll_interval=hc.interval, fail_after=hc.fail_after,
                                    opener=self.s.opener(a.host) if hc.via == "ssh" else None,
                                    on_sample=journal)
        self.rep.event("gate", host=a.host, passed=verdict.passed, detail=verdict.reason, release=hc.release)
        if not verdict.passed:
            raise GateFailed({a.host: verdict.reason})

    def bake(self, stage: Stage) -> None:
        from .. import bake as BK
        from ..shell import fill

        cfg = self.s.cfg
        web = [h for h in cfg.app_hosts if h.has("web")]
        new = [h for h in web if h.name in self.st.switched]
        old = [h for h in web if h.name not in self.st.switched and self.st.snapshot.get(h.name)]
        url = cfg.gate.probe_url or cfg.health.url

        def url_for(h) -> str:
            return fill(url, cfg.health_values(h, self.st.release), where="gate.probe_url")

        targets = [(h.name, "canary", url_for(h)) for h in new] + [(h.name, "baseline", url_for(h)) for h in old]
        probes = self.s.bake(targets, stage.bake, cfg.gate.probe_interval, cfg.gate.probe_timeout,
                             cfg.health.headers, opener=self.s.opener)
        result = BK.judge(BK.BakeResult(probes=probes), cfg.gate, has_baseline=bool(old))
        for p in probes:
            self.write(REC.GateSample(wave=stage.wave, host=p.host, role=p.role, t=p.t, ms=p.ms, ok=p.ok,
                                      release=self.st.release))
        self.write(REC.GateVerdict(wave=stage.wave, status=result.status, reasons=result.reasons,
                                   metrics=[v.metrics for v in result.verdicts]))
        summary = "; ".join(result.reasons) or "all within thresholds"
        self.rep.event("gate", host=f"wave {stage.wave}", passed=result.status != "fail",
                       detail=f"bake {stage.bake:g}s, {len(probes)} probes: {result.status}: {summary}")
        if result.status == "fail":
            raise GateFailed({f"wave {stage.wave}": summary})

    # -- the dead-man switch of maintenance mode, kept alive while we are --------------------
    def _start_keepalive(self, plan: Plan):
        if not plan.keepalive:
            return lambda: None
        ttl = self.s.cfg.maintenance_ttl
        every = max(1.0, ttl / 3)
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every):
                if not self.st.maintenance_on or (self.stage and self.stage.label == StageName.MIGRATE):
                    continue
                for host, cmd in plan.keepalive.items():
                    try:
                        self.s.run_on(host, cmd, timeout=30)
                    except DeployerError:
                        pass  # the next beat retries; the host-side expiry is the safety net

        t = threading.Thread(target=loop, name="maintenance-keepalive", daemon=True)
        t.start()
        return lambda: (stop.set(), t.join(timeout=2))
