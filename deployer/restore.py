"""Going back: the automatic rollback of a failed deploy, and `rollback` by hand.

Both end with every app host on exactly one known release: code first (symlink flip + graceful
reload, in parallel), then the database when the deploy changed it, then workers, then the gate
on the old release.
"""

from __future__ import annotations

import time

from .commands import backup as B
from .commands import releases as R
from .config import Config, Host
from .errors import CommandFailed, ConfigError, DeployerError, NeedsHuman, Refused
from .ledger import History
from .output import Reporter
from .release_id import validate_release_id
from .session import Session, who


def _by_release(hosts: list[Host], target: dict[str, str | None]) -> dict[str | None, list[Host]]:
    groups: dict[str | None, list[Host]] = {}
    for h in hosts:
        groups.setdefault(target.get(h.name), []).append(h)
    return groups


def switch_back(deploy, hosts: list[Host], target: dict[str, str | None], deploy_state=None) -> None:
    """Point each host's `current` at its target release and reload its web server."""
    from .pipeline import DeployState

    cfg, s = deploy.cfg, deploy.s
    for release, group in _by_release(hosts, target).items():
        if release is None:
            # The host served nothing before this deploy: it serves nothing again.
            s.each(group, lambda h: s.run(h, R.remove_path(cfg.current_path))).raise_failures("rollback")
            continue
        old = DeployState(release=release, commit="", ref="")

        def one(h: Host, release=release, old=old) -> None:
            # A host still in rotation is drained first, checked, and put back: no request lost.
            drained = h.has("web") and h.name not in getattr(deploy_state, "drained", []) \
                and deploy.drain(h)
            s.run(h, R.switch(cfg.deploy_to, release))
            s.ledger.append({"type": "switch", "run": s.run_id, "host": h.name, "release": release,
                             "rollback": True})
            if h.has("web"):
                deploy.steps_on(cfg.playbook.steps("reload"), [h], old, "reload")
                if drained:
                    deploy.gate(old, [h], release=release)
                    deploy.undrain(h)

        deploy.each_unavailable(group, one).raise_failures("rollback switch")


def restart_workers(deploy, hosts: list[Host], target: dict[str, str | None]) -> None:
    from .pipeline import DeployState

    for release, group in _by_release([h for h in hosts if h.has("worker")], target).items():
        if release is None:
            continue
        old = DeployState(release=release, commit="", ref="")
        deploy.steps_on(deploy.cfg.playbook.steps("worker_restart"), group, old, "worker_restart")


def restore_database(deploy, st, reason: str) -> str:
    """Undo this deploy's migrations: restore the backup when that loses nothing, else run down
    migrations when all exist, else stop and say exactly what to do."""
    cfg, s = deploy.cfg, deploy.s
    before = st.snapshot.schema if st.snapshot else None
    if st.backup and st.maintenance_on:
        db = B.Database.of(cfg.database)
        s.run(cfg.db_host, B.verify(db, st.backup["path"], st.backup["sha256"]), timeout=300)
        s.run(cfg.db_host, B.restore(db, st.backup["path"]), timeout=cfg.ssh.command_timeout)
        s.ledger.append({"type": "db.restore", "run": s.run_id, "path": st.backup["path"],
                         "sha256": st.backup["sha256"]})
        return f"database restored from {st.backup['path']}"
    host = cfg.migrate_host
    down = cfg.playbook.steps("migrate", "down")
    can = cfg.playbook.steps("migrate", "can_down")
    if down and host is not None and before is not None:
        values = deploy.values(host, st, target_version=before)
        possible = True
        if can:
            possible = s.run(host, can[0].command(values), check=False, timeout=120).ok
        if possible:
            s.run(host, down[0].command(values))
            s.ledger.append({"type": "db.down", "run": s.run_id, "to": before})
            return f"down migrations run back to schema {before}"
    backup = st.backup["path"] if st.backup else "(no backup was taken)"
    raise NeedsHuman(
        f"the database was migrated ({before} -> {st.schema_after}) without maintenance mode and "
        f"the down migrations are missing, so restoring the backup could lose writes made since. "
        f"The code is back on the previous release. To finish: check the data written since the "
        f"deploy, then either write the down migrations, or restore {backup} on "
        f"{cfg.db_host.name if cfg.db_host else 'the db host'} with `inv rollback --env {cfg.env} "
        f"--restore-db` ({reason})")


def rollback_deploy(deploy, st, cause: DeployerError) -> None:
    """The automatic rollback of a failed deploy to its snapshot."""
    cfg, s = deploy.cfg, deploy.s
    snap = st.snapshot
    s.ledger.append({"type": "rollback.start", "run": s.run_id, "auto": True,
                     "from": st.release, "to": snap.hosts, "cause": cause.message[:500]})
    t0 = time.monotonic()
    switched = [h for h in deploy.app_hosts if h.name in st.switched]
    switch_back(deploy, switched, snap.hosts, st)
    if st.migrated:
        deploy.rep.event("rollback", message=restore_database(deploy, st, cause.message[:200]))
    restarted = [h for h in deploy.app_hosts if h.name in st.workers_restarted]
    if st.migrated:
        restarted = [h for h in deploy.app_hosts if h.has("worker")]
    restart_workers(deploy, restarted, snap.hosts)
    for release, group in _by_release([h for h in switched if h.has("web")], snap.hosts).items():
        if release is not None:
            deploy.gate(st, group, release=release)
    for h in [h for h in deploy.app_hosts if h.name in st.drained]:
        deploy.undrain(h)  # healthy again on the old release: back into rotation
    if st.maintenance_on:
        deploy.maintenance(st, on=False)
    s.ledger.append({"type": "release.bad", "run": s.run_id, "release": st.release,
                     "reason": cause.message[:500]})
    # The failed release is not served anywhere: remove it so nothing can pick it by accident.
    leftovers = [h for h in deploy.app_hosts if h.name in st.pulled]
    s.each(leftovers, lambda h: s.run(h, R.remove(cfg.deploy_to, [st.release]), check=False))
    took = time.monotonic() - t0
    s.ledger.append({"type": "rollback.end", "run": s.run_id, "outcome": "success",
                     "seconds": round(took, 3)})
    deploy.rep.event("rollback", message=f"rolled back {len(switched)} switched host(s) in {took:.1f}s; "
                                         f"{st.release} marked bad")


class Rollback:
    """`rollback` by hand: to the previous good release, or `--to` a named one."""

    def __init__(self, cfg: Config, reporter: Reporter, *, to: str | None = None,
                 restore_db: bool = False, keep_db: bool = False, lock_wait: float = 0.0):
        if restore_db and keep_db:
            raise ConfigError("--restore-db and --keep-db: choose one")
        self.cfg, self.rep = cfg, reporter
        self.to, self.restore_db, self.keep_db = to, restore_db, keep_db
        self.lock_wait = lock_wait
        self.s = Session(cfg, reporter, reason=f"rollback {to or '(previous good)'}")

    def run(self) -> int:
        from .pipeline import Deploy, DeployState

        cfg, s = self.cfg, self.s
        try:
            app_hosts = cfg.app_hosts
            states = s.host_states(app_hosts)
            if states.failures:
                raise Refused("rollback: hosts not reachable: " + "; ".join(
                    f"{h}: {e}" for h, e in sorted(states.failures.items())))
            history = s.ledger.history()
            serving = [st.current for st in states.results.values() if st.current]
            current = max(serving) if serving else None
            target = self.pick(history, current, states.results)
            schema_now, schema_target = self.schemas(history, target)
            backup = None
            if schema_now != schema_target and not (self.restore_db or self.keep_db):
                raise Refused(
                    f"rollback to {target}: its schema version is {schema_target} but the database "
                    f"is at {schema_now}. Pass --restore-db to restore the backup taken before it was "
                    f"left (data written since is lost), or --keep-db to switch the code only.")
            if self.restore_db:
                backup = history.backup_before_leaving(target)
                if backup is None:
                    raise Refused(f"rollback to {target} --restore-db: no backup of that release's "
                                  "database is recorded in the ledger")
                db = B.Database.of(cfg.database)
                try:
                    s.run(cfg.db_host, B.verify(db, backup["path"], backup["sha256"]), timeout=300)
                except CommandFailed as exc:
                    raise Refused(f"rollback --restore-db: backup {backup['path']} on "
                                  f"{cfg.db_host.name} is missing or corrupt (sha256 mismatch)") from exc
            s.acquire_lock(self.lock_wait)
            try:
                return self.execute(target, current, backup, app_hosts, Deploy, DeployState)
            finally:
                s.release_lock()
        finally:
            s.close()

    def pick(self, history: History, current: str | None, states) -> str:
        if self.to:
            rec = history.resolve(self.to)
            target = rec.release if rec else None
            if target is None:
                try:
                    target = validate_release_id(self.to)
                except ConfigError:
                    raise ConfigError(f"--to {self.to!r}: no release, release prefix or deployed ref "
                                      "by that name in the ledger") from None
        else:
            rec = history.previous_good(current)
            if rec is None:
                raise Refused(f"rollback: no good release older than {current} in the ledger")
            target = rec.release
        missing = [h for h, st in states.items() if target not in st.releases]
        if missing:
            raise Refused(f"rollback to {target}: release missing on {', '.join(sorted(missing))}; "
                          "nothing changed")
        return target

    def schemas(self, history: History, target: str) -> tuple[int | None, int | None]:
        host = self.cfg.migrate_host
        steps = self.cfg.playbook.steps("migrate", "version")
        if not steps or host is None:
            return None, None
        values = self.cfg.template_values(host, release_path=self.cfg.current_path)
        out = self.s.run(host, steps[0].command(values), timeout=120).stdout.strip()
        now = int(out.splitlines()[-1]) if out and out.splitlines()[-1].isdigit() else None
        return now, history.schema_of(target)

    def execute(self, target, current, backup, app_hosts, Deploy, DeployState) -> int:
        cfg, s = self.cfg, self.s
        t0 = time.monotonic()
        s.ledger.append({"type": "rollback.start", "run": s.run_id, "auto": False, "from": current,
                         "to": target, "who": who(), "restore_db": self.restore_db,
                         "keep_db": self.keep_db})
        self.rep.event("rollback", message=f"rolling back {cfg.env}: {current} -> {target}")
        d = Deploy.helpers(cfg, self.rep, s)
        st = DeployState(release=target, commit="", ref="")
        targets = {h.name: target for h in app_hosts}
        try:
            if backup:
                d.maintenance(st, on=True, message="Restoring, back shortly")
                db = B.Database.of(cfg.database)
                safety = B.backup_path(db, cfg.env, s.run_id.split("-")[0], kind="prerollback")
                s.run(cfg.db_host, B.dump(db, safety), timeout=cfg.ssh.command_timeout)
                s.run(cfg.db_host, B.restore(db, backup["path"]), timeout=cfg.ssh.command_timeout)
                s.ledger.append({"type": "db.restore", "run": s.run_id, "path": backup["path"],
                                 "sha256": backup["sha256"], "safety_backup": safety})
            switch_back(d, app_hosts, targets)
            restart_workers(d, app_hosts, targets)
            d.gate(st, [h for h in app_hosts if h.has("web")], release=target)
            if st.maintenance_on:
                d.maintenance(st, on=False)
        except DeployerError as exc:
            s.ledger.append({"type": "rollback.end", "run": s.run_id, "outcome": "failed",
                             "error": exc.message[:2000]})
            raise NeedsHuman(f"rollback to {target} failed: {exc.message}",
                             hint=f"run `inv status --env {cfg.env}` and `inv rollback` again "
                                  "(it converges)") from exc
        took = time.monotonic() - t0
        s.ledger.append({"type": "rollback.end", "run": s.run_id, "outcome": "success",
                         "seconds": round(took, 3), "hosts": targets})
        self.rep.event("outcome", outcome="success", release=target,
                       message=f"rolled back {cfg.env} to {target} on {len(app_hosts)} hosts "
                               f"in {took:.1f}s")
        return 0
