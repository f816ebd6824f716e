"""The deploy pipeline: fixed, named stages in DESIGN.md's order, with a guaranteed failure path.

preflight, lock, snapshot, maintenance, backup, pull, migrate, cache_warm, then per wave
switch, worker_restart, gate; finalize. Every stage transition is journaled in the ledger before
it is acted on. Any failure after the snapshot rolls back to it (`restore.py`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from . import gate as G
from .commands import backup as B
from .commands import git as GIT
from .commands import lb as LB
from .commands import releases as R
from .config import Config, Host
from .errors import CommandFailed, ConfigError, DeployerError, DeployFailed, NeedsHuman, Refused
from .output import Reporter
from .release_id import new_release_id, validate_ref
from .session import Session, who
from .shell import Command, argv, chain
from .transport import GroupResult

STAGES = ("preflight", "lock", "snapshot", "maintenance", "backup", "pull", "migrate",
          "cache_warm", "switch", "worker_restart", "gate", "finalize")
MIN_FREE_KB = 100 * 1024


@dataclass
class Snapshot:
    hosts: dict[str, str | None]
    schema: int | None = None
    maintenance: bool = False
    backup: dict | None = None

    def as_event(self) -> dict:
        return {"type": "snapshot", "hosts": self.hosts, "schema": self.schema,
                "maintenance": self.maintenance, "backup": self.backup}


@dataclass
class DeployState:
    """What this deploy changed so far: exactly what a rollback must undo."""

    release: str
    commit: str
    ref: str
    snapshot: Snapshot | None = None
    maintenance_on: bool = False
    backup: dict | None = None
    pulled: list[str] = field(default_factory=list)
    migrated: bool = False
    schema_after: int | None = None
    switched: list[str] = field(default_factory=list)
    drained: list[str] = field(default_factory=list)
    log_offsets: dict[str, int] = field(default_factory=dict)
    maintenance_refreshed: float = 0.0
    workers_restarted: list[str] = field(default_factory=list)


def max_unavailable(value: int | str, total: int) -> int:
    """How many web hosts may be out of rotation at once (at least 1)."""
    if isinstance(value, str):
        return max(1, math.floor(total * int(value.rstrip("%")) / 100))
    return max(1, int(value))


def plan_waves(hosts: list[Host], waves: list[int | str]) -> list[list[Host]]:
    """Split hosts into waves: ints are host counts, 'N%' cumulative percentages (ceil)."""
    result: list[list[Host]] = []
    done = 0
    total = len(hosts)
    for w in waves:
        if isinstance(w, str):
            upto = math.ceil(total * int(w.rstrip("%")) / 100)
        else:
            upto = done + int(w)
        upto = min(max(upto, done + 1 if done < total else done), total)
        if upto > done:
            result.append(hosts[done:upto])
            done = upto
    if done < total:
        result.append(hosts[done:])
    return result


class Deploy:
    def __init__(self, cfg: Config, reporter: Reporter, *, ref: str, maintenance: bool | None = None,
                 lock_wait: float = 0.0, reason: str = "", force: bool = False):
        from .maintenance import check_window

        self.ref = validate_ref(ref)
        self._setup(cfg, reporter, Session(cfg, reporter, reason=reason or f"deploy {ref}"))
        self.force_maintenance = maintenance
        self.forced = check_window(cfg, force=force, reason=reason)  # exit 3 outside a window
        # Read before anything is touched: a missing secret is bad input (exit 2).
        self.secret_files = [(f.path, f.read(os.environ)) for f in cfg.secret_files]
        self.lock_wait = lock_wait or cfg.lock_timeout

    def _setup(self, cfg: Config, reporter: Reporter, session: Session) -> None:
        self.cfg, self.rep, self.s = cfg, reporter, session
        self.secret_files = []
        self.force_maintenance, self.forced, self.lock_wait = None, None, 0.0
        self.app_hosts = cfg.app_hosts
        self.t0 = time.monotonic()

    @classmethod
    def helpers(cls, cfg: Config, reporter: Reporter, session: Session) -> Deploy:
        """The pipeline's stage helpers (steps, maintenance, gate, drain) for a command that is
        not a deploy of a ref: rollback, promote/abort, maintenance."""
        d = cls.__new__(cls)
        d.ref = ""
        d._setup(cfg, reporter, session)
        return d

    # -- values and steps ----------------------------------------------------------------
    def values(self, host: Host, st: DeployState, **extra) -> dict:
        p = R.paths(self.cfg.deploy_to, st.release)
        prev = (st.snapshot.hosts.get(host.name) if st.snapshot else None) or ""
        values = dict(release=st.release, release_path=p["release_path"], commit=st.commit,
                      ref=st.ref, previous_release=prev,
                      previous_path=R.paths(self.cfg.deploy_to, prev or "none")["release_path"])
        values.update(extra)
        return self.cfg.template_values(host, **values)

    def steps_on(self, steps, hosts: list[Host], st: DeployState, stage: str, cwd: str | None = None,
                 **extra) -> None:
        """Run playbook steps on the hosts having their roles, in parallel; raise once."""
        for step in steps:
            targets = [h for h in hosts if any(h.has(r) for r in (step.roles or []))]
            if step.once:
                targets = targets[:1]
            if not targets:
                continue
            group = self.s.each(targets, lambda h, step=step: self.s.run(
                h, in_dir(cwd, step.command(self.values(h, st, **extra)))))
            for name in group.results:
                self.rep.event("host", stage=stage, host=name, state="done", detail=step.run)
            group.raise_failures(f"{stage}: `{step.run}`")

    def hooks(self, when: str, stage: str, st: DeployState, hosts: list[Host]) -> None:
        self.steps_on(self.cfg.playbook.hooks_for(when, stage), hosts, st, f"{when}_{stage}")

    def journal(self, stage: str, state: str, **fields) -> None:
        self.s.ledger.append({"type": "stage", "run": self.s.run_id, "stage": stage, "state": state,
                              **fields})
        self.rep.event("stage", stage=stage, state=state, **fields)

    @contextmanager
    def stage(self, name: str, st: DeployState, hosts: list[Host] | None = None, detail: str = ""):
        """Journal the start, run the hooks before and after, journal done or failed."""
        self.journal(name, "start", detail=detail)
        self.refresh_maintenance(st)
        self.hooks("before", name, st, hosts or self.app_hosts)
        t0 = time.monotonic()
        try:
            yield
        except BaseException as exc:
            try:
                self.journal(name, "failed", error=str(exc)[:2000])
            except Exception:  # noqa: BLE001 - the ledger host may be the one failing
                pass
            raise
        self.hooks("after", name, st, hosts or self.app_hosts)
        self.journal(name, "done", seconds=round(time.monotonic() - t0, 3))

    # -- the pipeline ----------------------------------------------------------------------
    def run(self) -> int:
        try:
            commit, states = self.preflight()
            release = new_release_id(dt.datetime.now(dt.UTC), commit)
            st = DeployState(release=release, commit=commit, ref=self.ref)
            self.s.acquire_lock(self.lock_wait)
            try:
                return self.locked_pipeline(st, states)
            finally:
                self.s.release_lock()
        finally:
            self.s.close()

    def preflight(self):
        cfg = self.cfg
        self.rep.event("stage", stage="preflight", state="start",
                       detail=f"{len(cfg.hosts)} hosts, ref {self.ref}")
        states = self.s.host_states(cfg.hosts)
        if states.failures:
            lines = [f"  {h}: {e}" for h, e in sorted(states.failures.items())]
            raise Refused("preflight: hosts not reachable or not trusted:\n" + "\n".join(lines))
        low = [f"{h} ({s.disk_kb // 1024} MiB free)" for h, s in states.results.items()
               if s.disk_kb is not None and s.disk_kb < MIN_FREE_KB]
        if low:
            raise Refused(f"preflight: not enough disk under {cfg.deploy_to} on: {', '.join(low)}")
        first = self.app_hosts[0]
        if GIT.SHA_RE.match(self.ref) and len(self.ref) == 40:
            commit = self.ref
        else:
            out = self.s.run(first, GIT.ls_remote(cfg.repo, self.ref), timeout=60).stdout
            commit = GIT.parse_ls_remote(out, self.ref)
            if commit is None:
                raise ConfigError(f"--ref {self.ref!r}: not found in {cfg.repo}")
        self.rep.event("run", message=f"deploying {self.ref} ({commit[:7]}) to {cfg.env}: "
                                      f"{len(self.app_hosts)} app hosts")
        return commit, states.results

    def locked_pipeline(self, st: DeployState, states: dict) -> int:
        cfg, s = self.cfg, self.s
        history = s.ledger.history()
        s.ledger.append({"type": "deploy.start", "run": s.run_id, "env": cfg.env, "release": st.release,
                         "ref": st.ref, "commit": st.commit, "who": who(), "reason": s.reason,
                         "forced": getattr(self, "forced", None)})
        try:
            with self.stage("snapshot", st):
                st.snapshot = Snapshot(hosts={h.name: states[h.name].current for h in self.app_hosts},
                                       maintenance=any(states[h.name].maintenance for h in self.app_hosts))
                st.snapshot.schema = self.schema_version(st, current=True)
                s.ledger.append({**st.snapshot.as_event(), "run": s.run_id})
            self.pipeline(st, history)
            if self.s.keep_lock:
                return 0  # paused: the ledger and the lock carry the rollout on
        except KeyboardInterrupt:
            self.fail(st, DeployerError("interrupted (Ctrl-C)"), interrupted=True)
            return 130
        except Exception as exc:  # noqa: BLE001 - a bug must still take the failure path
            if not isinstance(exc, DeployerError):
                exc = DeployerError(f"internal error: {type(exc).__name__}: {exc}")
            if st.snapshot is None:
                s.ledger.append({"type": "deploy.end", "run": s.run_id, "outcome": "failed",
                                 "error": exc.message[:2000]})
                raise
            return self.fail(st, exc)
        took = time.monotonic() - self.t0
        s.ledger.append({"type": "deploy.end", "run": s.run_id, "outcome": "success",
                         "seconds": round(took, 3), "hosts": {h.name: st.release for h in self.app_hosts}})
        self.rep.event("outcome", outcome="success", release=st.release,
                       message=f"deployed {st.release} ({st.ref}) to {len(self.app_hosts)} hosts "
                               f"in {took:.1f}s")
        return 0

    def pipeline(self, st: DeployState, history) -> None:
        cfg, s = self.cfg, self.s
        need_maint = self.needs_maintenance(st)
        with self.stage("maintenance", st, detail="on" if need_maint else "not needed"):
            if need_maint:
                self.maintenance(st, on=True)
        with self.stage("backup", st):
            if cfg.database and cfg.db_host:
                db = B.Database.of(cfg.database)
                path = B.backup_path(db, cfg.env, st.release)
                out = s.run(cfg.db_host, B.dump(db, path), timeout=cfg.ssh.command_timeout).stdout
                sha, size = B.parse_dump(out)
                st.backup = {"path": path, "sha256": sha, "size": size, "host": cfg.db_host.name}
                s.ledger.append({"type": "backup", "run": s.run_id, **st.backup})
        with self.stage("pull", st):
            self.pull(st)
        with self.stage("migrate", st):
            self.migrate(st)
        with self.stage("cache_warm", st):
            self.steps_on(cfg.playbook.steps("cache_warm"), self.app_hosts, st, "cache_warm")
        if self.rollout(st, start=0):
            return
        self.finalize(st, history)

    def waves(self) -> list[list[Host]]:
        return plan_waves(self.app_hosts, [w.size for w in self.cfg.rollout])

    def rollout(self, st: DeployState, start: int) -> bool:
        """Waves from `start` on: switch, workers, gate (+ bake). True when paused after one."""
        cfg = self.cfg
        waves = self.waves()
        for i in range(start, len(waves)):
            wave, spec = waves[i], cfg.rollout[i]
            label = f"wave {i + 1}/{len(waves)}"
            names = ", ".join(h.name for h in wave)
            with self.stage("switch", st, wave, detail=f"{label}: {names}"):
                self.switch_wave(st, wave)
            with self.stage("worker_restart", st, wave, detail=label):
                workers = [h for h in wave if h.has("worker")]
                self.steps_on(cfg.playbook.steps("worker_restart"), workers, st, "worker_restart")
                st.workers_restarted += [h.name for h in workers]
                self.verify_workers(st, workers)
            with self.stage("gate", st, wave, detail=label + (f", bake {spec.bake:g}s" if spec.bake else "")):
                self.gate(st, [h for h in wave if h.has("web")])
                self.gate_checks(st, wave)
                if spec.bake:
                    self.bake(st, i + 1, spec.bake)
            if spec.pause and i + 1 < len(waves):
                if st.maintenance_on:
                    self.rep.event("notice", message=f"not pausing after {label}: maintenance mode is on")
                    continue
                self.pause(st, i + 1, len(waves))
                return True
        return False

    def pause(self, st: DeployState, done: int, total: int) -> None:
        from .commands import lock as LK

        self.s.ledger.append({"type": "deploy.paused", "run": self.s.run_id, "release": st.release,
                              "waves_done": done, "waves": total})
        self.s.run(self.cfg.ledger_host, LK.mark_paused(self.s.state_path, self.s.run_id))
        self.s.keep_lock = True  # the lock stays with the paused rollout
        self.rep.event("outcome", outcome="paused", release=st.release,
                       message=f"paused after wave {done}/{total} ({', '.join(st.switched)} on "
                               f"{st.release}); continue with `inv promote --env {self.cfg.env}` or "
                               f"roll back with `inv abort --env {self.cfg.env}`, from any machine")

    def finalize(self, st: DeployState, history) -> None:
        cfg = self.cfg
        with self.stage("finalize", st):
            if st.maintenance_on:
                self.maintenance(st, on=False)
            self.steps_on(cfg.playbook.steps("finalize"), self.app_hosts, st, "finalize")
            self.cleanup(st, history)

    # -- stages ---------------------------------------------------------------------------
    def schema_version(self, st: DeployState, current: bool) -> int | None:
        steps = self.cfg.playbook.steps("migrate", "version")
        host = self.cfg.migrate_host
        if not steps or host is None:
            return None
        if current and not (st.snapshot and st.snapshot.hosts.get(host.name)):
            return None  # nothing deployed yet: no code to ask
        path = self.cfg.current_path if current else R.paths(self.cfg.deploy_to, st.release)["release_path"]
        out = self.s.run(host, steps[0].command(self.values(host, st, release_path=path)), timeout=120)
        text = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
        return int(text) if text.lstrip("-").isdigit() else None

    def pending_migrations(self, st: DeployState) -> list[dict] | None:
        """Pending migrations of the new code, read from a scratch export (nothing deployed)."""
        steps = self.cfg.playbook.steps("migrate", "pending")
        host = self.cfg.migrate_host
        if not steps or host is None:
            return None
        p = R.paths(self.cfg.deploy_to)
        mirror = p["deploy_to"] + "/repo"
        probe = p["state_path"] + f"/probe-{self.s.run_id}"
        self.s.run(host, GIT.fetch(self.cfg.repo, mirror), timeout=self.cfg.ssh.command_timeout)
        self.s.run(host, GIT.export(mirror, st.commit, probe))
        self.s.run(host, R.prepare(self.cfg.deploy_to, st.release, self.cfg.playbook.shared_files,
                                   self.cfg.playbook.shared_dirs, release_path=probe))
        try:
            out = self.s.run(host, steps[0].command(self.values(host, st, release_path=probe)),
                             timeout=120).stdout
        finally:
            self.s.run(host, R.remove_path(probe), check=False)
        try:
            return json.loads(out.strip().splitlines()[-1]) if out.strip() else []
        except ValueError as exc:
            raise DeployFailed(f"migrate.pending: output is not a JSON list: {out[-200:]!r}") from exc

    def needs_maintenance(self, st: DeployState) -> bool:
        if self.force_maintenance is not None:
            return self.force_maintenance
        when = self.cfg.playbook.stages.maintenance.when
        if when != "auto":
            return when == "always"
        pending = self.pending_migrations(st) or []
        st_breaking = [m for m in pending if not m.get("online_safe")]
        if st_breaking:
            self.rep.event("notice", message="maintenance needed: migrations not online-safe: "
                           + ", ".join(str(m.get("name", m.get("version"))) for m in st_breaking))
        return bool(st_breaking)

    def maintenance(self, st: DeployState, on: bool, message: str = "Deploying, back shortly",
                    retry: int = 60, ttl: float | None | str = "default") -> None:
        """Maintenance mode on the web hosts. A deploy's has a dead-man expiry (maintenance_ttl):
        if the orchestrator dies, the site comes back by itself. ttl=None: no expiry (by hand,
        or while the database is mid-migration)."""
        steps = self.cfg.playbook.steps("maintenance", "on" if on else "off")
        if ttl == "default":
            ttl = self.cfg.maintenance_ttl
        expires = f"{time.time() + float(ttl):.0f}" if ttl else ""
        hosts = [h for h in self.app_hosts if h.has("web")]
        if on:
            st.maintenance_on = True  # set first: a partial 'on' is undone by the failure path
            st.maintenance_refreshed = time.monotonic()
        else:
            self.watchdog(st, hosts, None)
        self.steps_on(steps, hosts, st, "maintenance", message=message, retry=retry,
                      expires_at=expires)
        if on:
            self.watchdog(st, hosts, float(ttl) if ttl else None)
        else:
            st.maintenance_on = False

    def watchdog(self, st: DeployState, hosts: list[Host], ttl: float | None) -> None:
        """Arm (ttl) or disarm (None) the host-side dead-man switch of maintenance mode."""
        off = self.cfg.playbook.steps("maintenance", "off")
        state_path = R.paths(self.cfg.deploy_to)["state_path"]

        def one(h: Host) -> None:
            if ttl is None or not off:
                self.s.run(h, R.watchdog_stop(state_path), timeout=30)
                return
            vals = self.values(h, st, message="", retry=0, expires_at="")
            script = chain(*[in_dir(None, step.command(vals)) for step in off], op=";")
            self.s.run(h, R.watchdog_start(state_path, ttl, script), timeout=30)

        self.s.each(hosts, one).raise_failures("maintenance watchdog")

    def refresh_maintenance(self, st: DeployState) -> None:
        """Push the dead-man expiry forward while the deploy is alive and well."""
        if st.maintenance_on and time.monotonic() - st.maintenance_refreshed > self.cfg.maintenance_ttl / 3:
            self.maintenance(st, on=True)

    def pull(self, st: DeployState) -> None:
        cfg = self.cfg
        p = R.paths(cfg.deploy_to, st.release)
        mirror = p["deploy_to"] + "/repo"

        def one(h: Host) -> None:
            self.s.run(h, GIT.fetch(cfg.repo, mirror), timeout=cfg.ssh.command_timeout)
            st.pulled.append(h.name)
            self.s.run(h, GIT.export(mirror, st.commit, p["release_path"]))
            self.s.run(h, R.prepare(cfg.deploy_to, st.release, cfg.playbook.shared_files,
                                    cfg.playbook.shared_dirs))
            for rel, secret in self.secret_files:
                self.s.run(h, R.write_secret(cfg.shared_path, rel), stdin=secret.reveal(), timeout=60)

        self.s.each(self.app_hosts, one).raise_failures("pull")
        if self.secret_files:
            self.s.ledger.append({"type": "secret_files", "run": self.s.run_id,
                                  "paths": [rel for rel, _ in self.secret_files]})
        self.steps_on(cfg.playbook.steps("build"), self.app_hosts, st, "build", cwd=p["release_path"])

    def migrate(self, st: DeployState) -> None:
        cfg = self.cfg
        steps = cfg.playbook.steps("migrate", "run")
        host = cfg.migrate_host
        if not steps or host is None:
            return
        # Read with the new code (the database's version does not depend on which code asks):
        # on a first deploy there is no current release to ask.
        before = self.schema_version(st, current=False)
        if st.snapshot is not None and st.snapshot.schema is None:
            st.snapshot.schema = before
        st.migrated = True  # a failing migration may still have applied earlier ones
        if st.maintenance_on:
            # Mid-migration the site must not come back by itself on the old code: no expiry.
            self.maintenance(st, on=True, message="Upgrading the database, back shortly", ttl=None)
        try:
            self.s.run(host, steps[0].command(self.values(host, st)))
        finally:
            st.schema_after = self.schema_version(st, current=False)
            self.s.ledger.append({"type": "migrate", "run": self.s.run_id, "before": before,
                                  "after": st.schema_after})
        if st.schema_after == before:
            st.migrated = False
        if st.maintenance_on:
            self.maintenance(st, on=True)  # migrated: the dead-man expiry again

    def switch_wave(self, st: DeployState, wave: list[Host]) -> None:
        """Per host: drain it at the load balancer, switch, reload, check it directly, put it back.

        A host that fails its direct check stays drained (no user traffic reaches the bad
        release) and fails the wave; the rollback puts it back once it is healthy again.
        """
        cfg = self.cfg

        def one(h: Host) -> None:
            if h.has("web") and self.drain(h):
                st.drained.append(h.name)
            if h.has("web") and cfg.playbook.log_file:
                log = R.paths(cfg.deploy_to, st.release)["release_path"] + "/" + cfg.playbook.log_file
                size = self.s.run(h, R.file_size(log), timeout=30).stdout.strip()
                st.log_offsets[h.name] = int(size) if size.isdigit() else 0
            self.s.run(h, R.switch(cfg.deploy_to, st.release))
            st.switched.append(h.name)
            self.s.ledger.append({"type": "switch", "run": self.s.run_id, "host": h.name,
                                  "release": st.release})
            if h.has("web"):
                self.steps_on(cfg.playbook.steps("reload"), [h], st, "reload")
                if h.name in st.drained:
                    self.gate(st, [h])
                    self.undrain(h)
                    st.drained.remove(h.name)

        self.each_unavailable(wave, one).raise_failures("switch")

    def each_unavailable(self, hosts: list[Host], fn) -> GroupResult:
        """Run fn on hosts taken out of rotation, never more than max_unavailable at once."""
        if not (self.cfg.lb and self.cfg.lb_host):
            return self.s.each(hosts, fn)
        web_total = len([h for h in self.app_hosts if h.has("web")])
        return self.s.each(hosts, fn, limit=max_unavailable(self.cfg.max_unavailable, web_total))

    def drain(self, h: Host) -> bool:
        cfg = self.cfg
        if not (cfg.lb and cfg.lb_host):
            return False
        name = cfg.lb_server_name(h)
        self.s.run(cfg.lb_host, LB.drain(cfg.lb.socket, cfg.lb.backend, name), timeout=15)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            out = self.s.run(cfg.lb_host, LB.sessions(cfg.lb.socket, cfg.lb.backend, name), timeout=15)
            if out.stdout.strip() in ("", "0"):
                break
            time.sleep(0.1)
        return True

    def undrain(self, h: Host) -> None:
        cfg = self.cfg
        self.s.run(cfg.lb_host, LB.ready(cfg.lb.socket, cfg.lb.backend, cfg.lb_server_name(h)), timeout=15)

    def verify_workers(self, st: DeployState, workers: list[Host]) -> None:
        steps = self.cfg.playbook.steps("worker_verify")
        if not steps or not workers:
            return
        deadline = time.monotonic() + 20
        while True:
            try:
                self.steps_on(steps, workers, st, "worker_verify")
                return
            except CommandFailed:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def gate(self, st: DeployState, hosts: list[Host], release: str | None = None) -> None:
        cfg = self.cfg
        hc = cfg.health
        release = release or st.release

        def one(h: Host) -> G.Verdict:
            values = cfg.health_values(h, release)
            return G.wait_passes(h.name, hc.url_for(values), timeout=hc.timeout,
                                 expect_status=hc.expect_status, expect_json=hc.expected_json(values),
                                 passes=hc.passes, max_attempts=hc.max_attempts, interval=hc.interval,
                                 headers=hc.headers)

        group = self.s.each(hosts, one)
        failed = {h: v.reason for h, v in group.results.items() if not v.passed}
        failed.update({h: str(e) for h, e in group.failures.items()})
        for h, v in group.results.items():
            self.rep.event("gate", host=h, passed=v.passed, detail=v.reason, release=release)
        if failed:
            raise GateFailed(failed)

    def gate_checks(self, st: DeployState, wave: list[Host]) -> None:
        """Remote checks of the playbook, and error lines in the app's log since the switch."""
        cfg = self.cfg
        self.steps_on(cfg.playbook.steps("gate_checks"), wave, st, "gate")
        log = cfg.playbook.log_file
        if not log:
            return
        path = R.paths(cfg.deploy_to, st.release)["release_path"] + "/" + log

        def count(h: Host) -> None:
            offset = st.log_offsets.get(h.name, 0)
            out = self.s.run(h, R.log_errors(path, offset, cfg.gate.log_pattern), timeout=30).stdout
            lines = [line for line in out.splitlines() if line.strip()]
            if lines:
                raise DeployFailed(f"{h.name}: {len(lines)} new line(s) matching "
                                   f"{cfg.gate.log_pattern!r} in {log} since the switch, e.g. "
                                   f"{lines[0][:200]}")

        self.s.each([h for h in wave if h.has("web")], count).raise_failures("gate: log errors")

    def bake(self, st: DeployState, wave_no: int, seconds: float) -> None:
        """Bounded probes of every new-release web host against the old-release ones."""
        from . import bake as BK

        cfg = self.cfg
        web = [h for h in self.app_hosts if h.has("web")]
        new = [h for h in web if h.name in st.switched]
        # The baseline: hosts still serving the release of the snapshot (none on a first deploy).
        old = [h for h in web if h.name not in st.switched
               and st.snapshot and st.snapshot.hosts.get(h.name)]
        url = cfg.gate.probe_url or cfg.health.url

        def url_for(h: Host) -> str:
            from .shell import fill

            return fill(url, cfg.health_values(h, st.release), where="gate.probe_url")

        targets = [(h.name, "canary", url_for(h)) for h in new] + \
                  [(h.name, "baseline", url_for(h)) for h in old]
        probes = BK.run_bake(targets, seconds, cfg.gate.probe_interval, cfg.gate.probe_timeout,
                             cfg.health.headers)
        result = BK.judge(BK.BakeResult(probes=probes), cfg.gate, has_baseline=bool(old))
        events = [{"type": "gate.sample", "run": self.s.run_id, "wave": wave_no, "host": p.host,
                   "role": p.role, "t": p.t, "ms": p.ms, "ok": p.ok, "release": st.release}
                  for p in probes]
        events.append({"type": "gate.verdict", "run": self.s.run_id, "wave": wave_no,
                        "status": result.status, "reasons": result.reasons,
                        "metrics": [v.metrics for v in result.verdicts]})
        self.s.ledger.append(*events)
        summary = "; ".join(result.reasons) or "all within thresholds"
        self.rep.event("gate", host=f"wave {wave_no}", passed=result.status != "fail",
                       detail=f"bake {seconds:g}s, {len(probes)} probes: {result.status}: {summary}")
        if result.status == "fail":
            raise GateFailed({f"wave {wave_no}": summary})

    def cleanup(self, st: DeployState, history) -> None:
        cfg = self.cfg
        bad = {r for r, rec in history.releases.items() if rec.bad}
        protected = history.snapshot_releases() | {st.release}

        def one(h: Host) -> list[str]:
            state = R.parse_state(self.s.run(h, R.read_state(cfg.deploy_to, cfg.playbook.stages.maintenance.flag)).stdout)
            prev = st.snapshot.hosts.get(h.name) if st.snapshot else None
            keep_set = protected | ({prev} if prev else set()) | ({state.current} if state.current else set())
            good = [r for r in state.releases if r not in bad and not r.endswith(".partial")]
            doomed = R.to_remove(good, cfg.keep_releases, keep_set)
            doomed += [r for r in state.releases if (r in bad or r.endswith(".partial")) and r not in keep_set]
            if doomed:
                self.s.run(h, R.remove(cfg.deploy_to, doomed))
            return doomed

        group = self.s.each(self.app_hosts, one)
        removed = sorted({r for rs in group.results.values() for r in rs})
        if removed:
            self.rep.event("notice", message=f"cleanup: removed {len(removed)} old release(s)")

    # -- failure path ----------------------------------------------------------------------
    def fail(self, st: DeployState, exc: DeployerError, interrupted: bool = False) -> int:
        from .restore import rollback_deploy

        self.rep.event("rollback", message=f"deploy failed: {exc.message}\nrolling back to the snapshot")
        try:
            rollback_deploy(self, st, exc)
        except DeployerError as rb_exc:
            self.s.ledger.append({"type": "deploy.end", "run": self.s.run_id, "outcome": "needs_human",
                                  "error": exc.message[:2000], "rollback_error": rb_exc.message[:2000]})
            raise NeedsHuman(
                f"deploy of {st.release} failed ({exc.message}) AND its rollback failed: "
                f"{rb_exc.message}", hint=f"run `inv status --env {self.cfg.env}`") from rb_exc
        outcome = "interrupted" if interrupted else "rolled_back"
        self.s.ledger.append({"type": "deploy.end", "run": self.s.run_id, "outcome": outcome,
                              "error": exc.message[:2000],
                              "hosts": dict(st.snapshot.hosts) if st.snapshot else {}})
        if interrupted:
            return 130
        raise DeployFailed(f"deploy of {st.release} ({st.ref}) failed and was rolled back: "
                           f"{exc.message}")


def in_dir(cwd: str | None, cmd: Command) -> Command:
    if cwd is None:
        return cmd
    return chain(argv("cd", cwd), cmd)


class GateFailed(DeployFailed):
    def __init__(self, failed: dict[str, str]):
        lines = "; ".join(f"{h}: {r}" for h, r in sorted(failed.items()))
        super().__init__(f"health gate failed on {len(failed)} host(s): {lines}")
        self.failed = failed


def dry_run(cfg: Config, ref: str, reporter: Reporter) -> int:
    """Print every stage x host x command of a deploy; connect to nothing, change nothing."""
    from .plan import deploy_plan

    ref = validate_ref(ref)
    for step in deploy_plan(cfg, ref):
        reporter.event("plan", stage=step.stage, host=step.host, command=step.command)
    return 0


__all__ = ["Deploy", "GateFailed", "STAGES", "dry_run", "plan_waves", "Refused"]
