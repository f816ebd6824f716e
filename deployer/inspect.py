"""Reading the fleet: `status`, `releases`, and breaking a stale lock with `unlock --force`."""

from __future__ import annotations

import datetime as dt
import posixpath
import time

from . import records as REC
from .commands.releases import HostState
from .config import Config
from .errors import ConfigError, DeployerError, NeedsHuman, Refused
from .ledger import History, RunRecord
from .output import Reporter
from .session import Session


def _rows_table(title: str, columns: list[str], rows: list[list[str]], reporter: Reporter) -> None:
    from .output import JsonReporter

    if isinstance(getattr(reporter, "inner", reporter), JsonReporter):
        for row in rows:
            reporter.event("row", table=title, **dict(zip(columns, row, strict=False)))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c)
    for row in rows:
        table.add_row(*row)
    Console(file=reporter.stream, width=160).print(table)


def _maintenance_cell(st: HostState, mid_migration: bool) -> str:
    """A host's maintenance column: on (with its expiry and message) or off."""
    if not st.maintenance:
        return "off (expired flag)" if st.maintenance_expired else "off"
    if mid_migration:
        return "ON: DATABASE MID-MIGRATION (no expiry): `inv recover` says what to check"
    exp = (st.maintenance_info or {}).get("expires_at")
    if not isinstance(exp, (int, float)):
        maint = "ON (no expiry)"
    elif st.now is None:  # the host did not tell its time: its clock is the one that counts
        maint = f"ON (expires at {int(exp)} by the host's clock)"
    else:
        maint = f"ON (expires in {int(exp - st.now)}s)"
    message = str((st.maintenance_info or {}).get("message", ""))
    return maint + (f": {message[:70]}" if message else "")


#: How far a host's clock may be from the orchestrator's before `status` warns (seconds).
CLOCK_SKEW_LIMIT = 5.0


def clock_skew(host_now: int, before: float, after: float) -> float:
    """How far a host's clock is off the orchestrator's (seconds, signed; 0 within the reading):
    the host printed `host_now` (whole seconds, truncated) between our `before` and `after`."""
    if host_now + 1 < before:
        return host_now + 1 - before
    if host_now > after:
        return host_now - after
    return 0.0


def clock_lines(states: dict[str, HostState], before: float, after: float) -> list[str]:
    """A warning per host whose clock is more than CLOCK_SKEW_LIMIT off the orchestrator's.
    Nothing deployer decides rests on it (expiries are computed on the host, release order is
    the ledger's), but the app, its logs, cron and TLS do."""
    lines = []
    for name, st in sorted(states.items()):
        if st.now is None:
            continue
        off = clock_skew(st.now, before, after)
        if abs(off) > CLOCK_SKEW_LIMIT:
            lines.append(f"WARNING: {name}'s clock is {abs(off):.0f}s {'ahead of' if off > 0 else 'behind'} "
                         "this machine's: check NTP on both (deployer itself does not rely on them "
                         "agreeing)")
    return lines


def _last_stages(history: History) -> dict[str, tuple[RunRecord, REC.Stage | None]]:
    """The runs in flight by id, each with its last stage record (None: none yet)."""
    out: dict[str, tuple[RunRecord, REC.Stage | None]] = {}
    for run in history.in_flight:
        stages = [e for e in history.records_of(run.run) if isinstance(e, REC.Stage)]
        out[run.run] = (run, stages[-1] if stages else None)
    return out


def _in_flight_lines(in_flight: dict[str, tuple[RunRecord, REC.Stage | None]], holder: str | None) -> list[str]:
    """A line per run in flight: running (it holds the lock) or abandoned."""
    lines = []
    for run_id, (run, last) in in_flight.items():
        where = f"{last.stage} ({last.state})" if last is not None else "starting"
        if holder is not None and holder == run_id:
            lines.append(f"IN-FLIGHT {run.kind} {run_id} of {run.release}: stage {where}")
        else:
            lines.append(f"ABANDONED {run.kind} {run_id} of {run.release} (no end recorded, "
                         f"lock not held): last stage {where}; check hosts above")
    return lines


def _lb_states(cfg: Config, s: Session) -> dict[str, str]:
    """Each server's state at the load balancer (none without one; "?" when unreadable)."""
    if not (cfg.lb and cfg.lb_host):
        return {}
    from .commands import lb as LB

    try:
        out = s.run(cfg.lb_host, LB.states(cfg.lb.socket), timeout=30).stdout
        return LB.parse_states(out, cfg.lb.backend)
    except DeployerError as exc:
        return {"?": f"unreadable: {exc.message.splitlines()[0]}"}


def proof_line(history: History, now: float) -> str:
    """The last backup a test restore proved, and how old that proof is (by the ledger's record
    times); a backup whose last test restore failed is named too."""
    proof = history.last_proven()
    if proof is None:
        line = "backups: none proven by a test restore yet (the maintenance job proves them)"
    else:
        age = _age(proof.at, now)
        line = (f"backups: last proven {posixpath.basename(proof.path)} ({proof.tables} table(s), "
                f"{proof.rows} row(s)), tested {age}")
    bad = [p for p in history.proofs.values() if p.tested and not p.ok]
    if bad:
        line += "; FAILED its test restore: " + ", ".join(
            f"{posixpath.basename(p.path)} ({p.error[:120]})" for p in bad) + " (never restored by a rollback)"
    untested = [p for p in history.proofs.values() if not p.tested]
    if untested:
        line += "; could not test-restore: " + ", ".join(
            f"{posixpath.basename(p.path)} ({p.error[:120]})" for p in untested)
    return line


def files_line(history: History, now: float) -> str:
    """The newest archive of the app's files on each app host, and how old it is."""
    newest = history.newest_archives()
    if not newest:
        return "file backups: none yet (the maintenance job archives backup.files)"
    return "file backups: " + ", ".join(
        f"{host} {posixpath.basename(f.path)} ({f.size // 1024} KiB, {_age(f.at, now)})"
        for host, f in sorted(newest.items()))


def _age(at: str, now: float) -> str:
    try:
        then = dt.datetime.strptime(at[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return f"at {at or '?'}"
    secs = max(0, now - then)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if secs >= size:
            return f"{secs / size:.0f} {unit} ago"
    return f"{secs:.0f} s ago"


def status(cfg: Config, reporter: Reporter) -> int:
    s = Session(cfg, reporter)
    try:
        app_hosts = cfg.app_hosts
        before = time.time()
        states = s.host_states(app_hosts)
        after = time.time()
        history = s.history()
        held = s.state.read_lock()
        lb_states = _lb_states(cfg, s)
    finally:
        s.close()
    in_flight = _last_stages(history)
    # A run that started migrating and recorded no end of it: the database may be half-migrated.
    mid_migration = any(last is not None and last.stage == "migrate" and last.state == "start"
                        for _, last in in_flight.values())
    rows = []
    served = set()
    for h in app_hosts:
        if h.name in states.failures:
            rows.append([h.name, h.address, "UNREACHABLE", str(states.failures[h.name])[:60], ""])
            continue
        st = states.results[h.name]
        served.add(st.current)
        rec = history.releases.get(st.current or "")
        ref = rec.ref if rec else ""
        rows.append([h.name, h.address, st.current or "(none)", ref, _maintenance_cell(st, mid_migration)])
    _rows_table(f"{cfg.env}: what each host serves", ["host", "address", "release", "ref", "maintenance"],
                rows, reporter)
    lines = [f"lock: held by {held.describe()}" if held else "lock: free"]
    if cfg.database:
        lines.append(proof_line(history, time.time()))
    if cfg.file_backups:
        lines.append(files_line(history, time.time()))
    lines += clock_lines(states.results, before, after)
    lines += _in_flight_lines(in_flight, held.run if held else None)
    paused = bool(held and held.paused)
    if len(served) > 1 and paused:
        lines.append("hosts serve two releases: a rollout is paused between waves "
                     f"(`inv promote --env {cfg.env}` or `inv abort --env {cfg.env}`)")
    elif len(served) > 1:
        lines.append(f"WARNING: hosts disagree ({', '.join(sorted(str(r) for r in served))}): "
                     f"run `inv rollback --env {cfg.env}` or redeploy to converge")
    not_ready = {k: v for k, v in lb_states.items() if v != "ready"}
    if not_ready:
        lines.append("load balancer: " + ", ".join(f"{k} {v.upper()}" for k, v in sorted(not_ready.items()))
                     + f" (out of rotation; `inv recover --env {cfg.env}` puts drained servers back)")
    for run_id in history.local_only:
        lines.append(f"run {run_id}: its record is still LOCAL ONLY (the ledger host did not answer); "
                     "it is shipped by the next command that reaches the ledger")
    for line in lines:
        reporter.event("notice", message=line)
    if states.failures or (len(served) > 1 and not paused):
        return 4
    return 0


ARCHIVE_NIGHTS = 14


def archive_rows(cfg: Config, history: History) -> list[list[str]]:
    """The ledger's archives of the app's files, one row per night (newest first)."""
    from .commands import files as F

    nights: dict[str, list] = {}
    for a in history.archives():
        read = F.read_name(cfg.env, posixpath.basename(a.path))
        nights.setdefault(read[1] if read else "?", []).append(a)
    rows = []
    for stamp in sorted(nights, reverse=True)[:ARCHIVE_NIGHTS]:
        arcs = nights[stamp]
        rows.append([stamp, ", ".join(sorted({a.host for a in arcs})), f"{sum(a.size for a in arcs) // 1024} KiB",
                     ", ".join(sorted({p for a in arcs for p in a.paths})),
                     f"inv restore --env {cfg.env} --files --at {stamp}"])
    return rows


def releases(cfg: Config, reporter: Reporter) -> int:
    s = Session(cfg, reporter)
    try:
        app_hosts = cfg.app_hosts
        states = s.host_states(app_hosts)
        history: History = s.history()
        in_bucket = s.state.artifact_releases() if cfg.artifact_bucket else set()
    finally:
        s.close()
    serving: dict[str, list[str]] = {}
    for name, st in states.results.items():
        if st.current:
            serving.setdefault(st.current, []).append(name)
    # with release artifacts: each release's sha256, and whether the build host (or the bucket)
    # still keeps it (what `rollback --to` a release no host has fetches)
    builder = cfg.build_host
    kept = set(states.results[builder.name].artifacts) if builder and builder.name in states.results else set()
    artifacts = builder is not None or any(r.artifact for r in history.releases.values())
    rows = []
    for rid in reversed(history.order):  # newest first, as the ledger has them
        rec = history.releases[rid]
        outcome = rec.outcome + (" (BAD)" if rec.bad else "")
        row = [rid, rec.ref, rec.commit[:7], rec.who, rec.at[:19], outcome, ", ".join(sorted(serving.get(rid, [])))]
        if artifacts:
            where = ([builder.name] if builder and rid in kept else []) + (["the bucket"] if rid in in_bucket else [])
            row.append(rec.artifact[:12] + (f" (on {' and '.join(where)})" if where else "") if rec.artifact else "")
        rows.append(row)
    _rows_table(f"{cfg.env}: releases", ["release", "ref", "commit", "who", "when", "outcome", "served by"]
                + (["artifact"] if artifacts else []), rows, reporter)
    if cfg.file_backups or history.archives():
        _rows_table(f"{cfg.env}: file archives (newest {ARCHIVE_NIGHTS} nights)",
                    ["taken", "hosts", "size", "paths", "restore with"], archive_rows(cfg, history), reporter)
    for run_id in history.local_only:
        reporter.event("notice", message=f"run {run_id}: record still local only (ledger not reachable)")
    return 0


def unlock(cfg: Config, reporter: Reporter, force: bool, reason: str = "") -> int:
    """`unlock --force`: break the lock, printing what it broke. A holder alive on this machine
    (its pid answers) is refused unless `reason` says why (`inv recover` is the usual way out:
    it converges what a dead run left, then frees its lock)."""
    from .engine.recover import alive_here

    if not force:
        raise ConfigError(f"unlock: breaking a lock needs --force (check `inv status --env {cfg.env}` "
                          f"first; `inv recover --env {cfg.env}` frees a dead run's lock)")
    s = Session(cfg, reporter)
    try:
        held = s.state.read_lock()
        if held is None:
            reporter.event("notice", message=f"{cfg.env}: lock is free; nothing to do")
            return 0
        if alive_here(held) and not reason.strip():
            raise Refused(f"{cfg.env}: the lock's holder is alive on this machine ({held.describe()}); "
                          f"not broken. Wait for it, or `inv recover --env {cfg.env}` once it is gone; "
                          "`--force --reason \"why\"` breaks it anyway")
        s.state.force_release()
        import json

        from .ledger import SCHEMA_VERSION, now_iso
        from .session import who

        s.ship(json.dumps({"v": SCHEMA_VERSION, "at": now_iso(), "type": "lock.broken", "run": s.run_id,
                           "who": who(), "holder": held.__dict__, "reason": reason},
                          sort_keys=True) + "\n")
        reporter.event("notice", message=f"{cfg.env}: broke the lock held by {held.describe()}"
                                         + (f"; reason: {reason}" if reason else ""))
        return 0
    finally:
        s.close()


__all__ = ["status", "releases", "unlock", "NeedsHuman"]


def preflight(cfg: Config, reporter: Reporter, *, expect_app_env: str | None = "production") -> int:
    """The go-live checklist as checks on the fleet: a PASS/FAIL table and exit 0 or 3."""
    from . import preflight as PF

    checks = PF.checks_for(cfg, expect_app_env=expect_app_env)
    by_name = {h.name: h for h in cfg.hosts}
    results = []
    s = Session(cfg, reporter)
    try:
        for check in checks:
            if check.local:
                results += check.run_local()
                continue
            hosts = [by_name[n] for n in check.hosts if n in by_name]

            def one(h, check=check):
                try:
                    out = s.run(h, check.command, check=False, timeout=60)
                except Exception as exc:  # noqa: BLE001 - an unreachable host is a failed check
                    return [check.error(h.name, str(exc))]
                return check.results(h.name, out.stdout, out.exited)

            group = s.each(hosts, one)
            results += [r for h in hosts for r in group.results.get(h.name, [])]
    finally:
        s.close()
    _rows_table(f"{cfg.env}: preflight", ["host", "check", "result", "detail"], PF.table(results),
                reporter)
    code = PF.exit_code(results)
    failed = [r for r in results if r.status == "FAIL"]
    reporter.event("notice", message=f"preflight: {len(results) - len(failed)} passed, {len(failed)} failed")
    if code:
        from .errors import Refused

        raise Refused("preflight failed: " + "; ".join(f"{r.host} {r.check}: {r.detail}" for r in failed))
    return 0


def report(cfg: Config, reporter: Reporter, *, release: str | None = None, out: str | None = None) -> int:
    """Write the self-contained HTML report of a deploy (default: the newest)."""
    from pathlib import Path

    from . import report as RP

    s = Session(cfg, reporter)
    try:
        events = s.ledger_events()  # the ledger as written: the report renders its own format
    finally:
        s.close()
    history = History.fold(events)
    if release:
        rec = history.resolve(release)
        if rec is None:
            raise ConfigError(f"--release {release!r}: no such release in the ledger")
        release = rec.release
    elif history.order:
        release = history.order[-1]
    else:
        raise ConfigError(f"{cfg.env}: the ledger has no deploy to report on")
    html = RP.render(events, env=cfg.env, release=release)
    path = Path(out) if out else cfg.root / "reports" / f"{cfg.env}-{release}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html)
    reporter.event("notice", message=f"report: {path}")
    return 0
