"""`promote` and `abort`: continue or end a paused progressive rollout, from any machine.

The paused deploy's whole state is in the ledger on the fleet (snapshot, backup, migration,
which hosts switched); the lock stays with it, marked paused. Whoever resumes adopts the lock,
rebuilds the state from the ledger and carries on with the pipeline's own code.
"""

from __future__ import annotations

import json

from .commands import lock as LK
from .config import Config
from .errors import DeployerError, NeedsHuman, Refused
from .ledger import History
from .output import Reporter
from .pipeline import Deploy, DeployState, Snapshot


def paused_run(history: History) -> tuple[str, list[dict]] | None:
    """The run id and events of a paused, unfinished deploy, if any."""
    for run in reversed(history.in_flight):
        run_id = run["start"].get("run")
        events = [e for e in history.events if e.get("run") == run_id]
        kinds = [e.get("type") for e in events]
        if "deploy.paused" in kinds:
            return run_id, events
    return None


def rebuild(events: list[dict]) -> DeployState:
    start = next(e for e in events if e["type"] == "deploy.start")
    st = DeployState(release=start["release"], commit=start["commit"], ref=start["ref"])
    for e in events:
        kind = e.get("type")
        if kind == "snapshot":
            st.snapshot = Snapshot(hosts=e["hosts"], schema=e.get("schema"),
                                   maintenance=e.get("maintenance", False), backup=e.get("backup"))
        elif kind == "backup":
            st.backup = {k: e.get(k) for k in ("path", "sha256", "size", "host")}
        elif kind == "migrate":
            st.schema_after = e.get("after")
            st.migrated = e.get("after") != e.get("before")
        elif kind == "switch" and not e.get("rollback"):
            st.switched.append(e["host"])
        elif kind == "stage" and e.get("stage") == "pull" and e.get("state") == "done":
            st.pulled = list((st.snapshot.hosts if st.snapshot else {}).keys())
    st.workers_restarted = list(st.switched)
    return st


class Resume:
    def __init__(self, cfg: Config, reporter: Reporter, action: str):
        self.cfg, self.rep, self.action = cfg, reporter, action
        from .session import Session

        # The ref, commit and everything else come from the ledger.
        self.deploy = Deploy.helpers(cfg, reporter, Session(cfg, reporter, reason=f"{action} paused rollout"))

    def run(self) -> int:
        d, s = self.deploy, self.deploy.s
        try:
            history = s.ledger.history()
            found = paused_run(history)
            if found is None:
                raise Refused(f"{self.cfg.env}: no paused rollout to {self.action}")
            run_id, events = found
            s.run_id = run_id  # the resumed run keeps its id: one story in the ledger
            info = dict(d.s.lock_info(), run=run_id)
            out = s.run(self.cfg.ledger_host, LK.adopt(s.state_path, run_id),
                        stdin=json.dumps(info) + "\n", check=False, timeout=30)
            if not out.ok:
                held = LK.parse_held(s.run(self.cfg.ledger_host, LK.read(s.state_path)).stdout)
                raise Refused(f"{self.cfg.env}: cannot take over the paused rollout's lock "
                              f"(held by {held.describe() if held else 'nobody'})")
            s.locked = True
            s._start_heartbeat()
            st = rebuild(events)
            done = max(e.get("waves_done", 0) for e in events if e["type"] == "deploy.paused")
            s.ledger.append({"type": f"deploy.{self.action}", "run": run_id, "who": info["holder"],
                             "from_host": info["host"]})
            self.rep.event("run", message=f"{self.action}: {st.release} ({st.ref}), "
                                          f"{len(st.switched)} host(s) switched, {done} wave(s) done")
            try:
                return self.promote(st, history, done) if self.action == "promote" else self.abort(st)
            finally:
                s.release_lock()
        finally:
            s.close()

    def promote(self, st: DeployState, history: History, done: int) -> int:
        d = self.deploy
        try:
            if d.rollout(st, start=done):
                return 0  # paused again after a later wave
            d.finalize(st, history)
        except Exception as exc:  # noqa: BLE001 - same failure path as a deploy
            if not isinstance(exc, DeployerError):
                exc = DeployerError(f"internal error: {type(exc).__name__}: {exc}")
            return d.fail(st, exc)
        d.s.ledger.append({"type": "deploy.end", "run": d.s.run_id, "outcome": "success",
                           "hosts": {h.name: st.release for h in d.app_hosts}})
        self.rep.event("outcome", outcome="success", release=st.release,
                       message=f"promoted {st.release} to every host")
        return 0

    def abort(self, st: DeployState) -> int:
        from .restore import rollback_deploy

        d = self.deploy
        try:
            rollback_deploy(d, st, DeployerError("aborted by hand"))
        except DeployerError as exc:
            d.s.ledger.append({"type": "deploy.end", "run": d.s.run_id, "outcome": "needs_human",
                               "error": exc.message[:2000]})
            raise NeedsHuman(f"abort of {st.release}: rollback failed: {exc.message}",
                             hint=f"run `inv status --env {self.cfg.env}`") from exc
        d.s.ledger.append({"type": "deploy.end", "run": d.s.run_id, "outcome": "aborted",
                           "hosts": dict(st.snapshot.hosts)})
        self.rep.event("outcome", outcome="aborted", release=st.release,
                       message=f"aborted {st.release}: every host back on the snapshot")
        return 0
