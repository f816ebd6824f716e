"""The ledger on the fleet: what happened, readable from any machine with SSH access.

Events are JSON objects appended (never rewritten) to `<deploy_to>/.deployer/ledger.jsonl` on the
ledger host. `History.fold` turns them into releases, outcomes and in-flight runs (pure).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import records as REC
from .commands import ledger as L
from .records import SCHEMA_VERSION, now_iso  # noqa: F401 - one definition, the records'


@dataclass
class ReleaseRecord:
    release: str
    run: str = ""
    ref: str = ""
    commit: str = ""
    who: str = ""
    at: str = ""
    outcome: str = "in-flight"
    bad: bool = False
    bad_reason: str = ""
    schema_before: int | None = None
    schema_after: int | None = None
    snapshot: dict = field(default_factory=dict)  # the snapshot taken before this release's deploy
    backup: dict | None = None  # the backup taken before this release's deploy


@dataclass
class History:
    releases: dict[str, ReleaseRecord] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # releases in first-deploy order
    runs: dict[str, dict] = field(default_factory=dict)  # run id -> start event + end/outcome
    in_flight: list[dict] = field(default_factory=list)  # runs started, never ended
    events: list[dict] = field(default_factory=list)

    local_only: list[str] = field(default_factory=list)  # runs whose record is not shipped yet
    unfinished: list[dict] = field(default_factory=list)  # ended needing a human, not superseded

    @classmethod
    def fold(cls, events: list[dict]) -> History:
        """Releases, outcomes and unfinished runs, from the typed records of the ledger."""
        h = cls(events=events)
        for d in events:
            e = REC.parse(d)
            run = e.run
            rid = h.runs.get(run, {}).get("release")
            rec = h.releases.get(rid) if rid else None
            if isinstance(e, REC.RunStarted):
                rec = h.releases.get(e.release) or ReleaseRecord(release=e.release)
                rec.run, rec.ref, rec.commit = run, e.ref, e.commit
                rec.who, rec.at, rec.outcome = e.who, e.at, "in-flight"
                h.releases[e.release] = rec
                if e.release not in h.order:
                    h.order.append(e.release)
                h.runs[run] = {"kind": "deploy", "start": d, "release": e.release, "end": None}
            elif isinstance(e, (REC.RollbackStarted, REC.MaintenanceStarted)):
                if run not in h.runs:  # an automatic rollback belongs to its deploy's run
                    to = getattr(e, "to", None)
                    h.runs[run] = {"kind": e.type.split(".")[0], "start": d, "end": None,
                                   "release": to if isinstance(to, str) else None}
            elif rec is None:
                if isinstance(e, REC.ReleaseBad) and e.release in h.releases:
                    h.releases[e.release].bad, h.releases[e.release].bad_reason = True, e.reason
                elif isinstance(e, (REC.RunEnded, REC.MaintenanceEnded)) and run in h.runs \
                        and e.type.split(".")[0] == h.runs[run]["kind"]:
                    h.runs[run]["end"] = d
            elif isinstance(e, REC.Snapshot):
                rec.snapshot = d
                rec.schema_before = e.schema
            elif isinstance(e, REC.Backup):
                if e.kind == "predeploy" and rec.backup is None:
                    rec.backup = e.info()
            elif isinstance(e, REC.Migrated):
                rec.schema_after = e.after
                if rec.schema_before is None:
                    rec.schema_before = e.before
            elif isinstance(e, REC.Paused):
                rec.outcome = f"paused after wave {e.waves_done}/{e.waves}"
            elif isinstance(e, REC.Resumed):
                rec.outcome = "in-flight"
            elif isinstance(e, REC.ReleaseBad):
                target = h.releases.get(e.release)
                if target is not None:
                    target.bad, target.bad_reason = True, e.reason
            elif isinstance(e, (REC.RunEnded, REC.MaintenanceEnded)):
                if run in h.runs and e.type.split(".")[0] == h.runs[run]["kind"]:
                    h.runs[run]["end"] = d
                if isinstance(e, REC.RunEnded) and e.type == "deploy.end":
                    rec.outcome = e.outcome or "?"
        h.in_flight = [r for r in h.runs.values() if r["end"] is None]
        # Runs that ended needing a human (their rollback failed), unless a later run succeeded.
        ordered = list(h.runs.values())
        for i, r in enumerate(ordered):
            end = r["end"] or {}
            if end.get("outcome") == "needs_human" and not any(
                    (later["end"] or {}).get("outcome") == "success" for later in ordered[i + 1:]):
                h.unfinished.append(r)
        return h

    def resolve(self, target: str, present=None) -> ReleaseRecord | None:
        """A release by id, unique id prefix, or the git ref it was deployed from: of the
        releases of a ref, never one marked bad, the newest for which `present(release id)`
        holds (still on the hosts) when given, else the newest."""
        if target in self.releases:
            return self.releases[target]
        by_prefix = [r for r in self.releases if r.startswith(target)]
        if len(by_prefix) == 1:
            return self.releases[by_prefix[0]]
        good = [r for r in self.deployed_from(target) if not self.releases[r].bad]
        if present is not None:
            good = [r for r in good if present(r)] or good
        return self.releases[good[0]] if good else None

    def deployed_from(self, ref: str) -> list[str]:
        """The releases deployed from a git ref (or a commit, 7+ hex digits), newest first."""
        return [r for r in sorted(self.releases, reverse=True)
                if self.releases[r].ref == ref or len(ref) >= 7 and self.releases[r].commit.startswith(ref)]

    def schema_of(self, release: str) -> int | None:
        """The schema version a release runs with (after its own migrations)."""
        rec = self.releases.get(release)
        if rec is None:
            return None
        return rec.schema_after if rec.schema_after is not None else rec.schema_before

    def previous_good(self, current: str | None) -> ReleaseRecord | None:
        """The newest good release older than `current` (by release id: ids sort by time)."""
        for rid in sorted(self.releases, reverse=True):
            rec = self.releases[rid]
            if current is not None and rid >= current:
                continue
            if not rec.bad and rec.outcome in ("success",):
                return rec
        return None

    def snapshot_releases(self) -> set[str]:
        """Releases the snapshot of an unfinished run refers to (paused, crashed or running).

        A rollback (promote/abort, or a rerun after a crash) can still return to those; their
        releases are never cleaned up. The running deploy adds its own snapshot.
        """
        keep: set[str] = set()
        live = [self.releases[r["release"]] for r in self.in_flight
                if r.get("release") in self.releases]
        for rec in live:
            keep |= {rel for rel in (rec.snapshot.get("hosts") or {}).values() if rel}
        return keep

    def backup_before_leaving(self, release: str) -> dict | None:
        """The newest backup taken while the fleet was on `release` (restores its data)."""
        for rid in reversed(self.order):
            rec = self.releases[rid]
            hosts = (rec.snapshot.get("hosts") or {}).values()
            if rec.backup and release in hosts:
                return rec.backup
        return None


class Ledger:
    """Reads and appends the ledger through an open transport."""

    def __init__(self, transport, endpoint, state_path: str):
        self.transport = transport
        self.endpoint = endpoint
        self.state_path = state_path

    def append(self, *events: dict) -> None:
        stamped = [{"v": SCHEMA_VERSION, "at": now_iso(), **e} for e in events]
        self.transport.run(self.endpoint, L.append(self.state_path), stdin=L.encode(stamped), timeout=30)

    def read(self) -> list[dict]:
        out = self.transport.run(self.endpoint, L.read(self.state_path), timeout=60).stdout
        return L.decode(out)

    def history(self) -> History:
        return History.fold(self.read())
