"""The ledger on the fleet: what happened, readable from any machine with SSH access.

Events are JSON objects appended (never rewritten) to `<deploy_to>/.deployer/ledger.jsonl` on the
ledger host. `History.fold` turns them into releases, outcomes and in-flight runs (pure), all
typed: `RunRecord`s of typed start and end records, `ReleaseRecord`s with their `REC.Snapshot` and
`REC.BackupRef`, the records themselves (`History.records`). The JSON as written is read only by
renderers (`Session.ledger_events`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from . import records as REC
from .commands import ledger as L
from .commands.releases import in_order
from .records import SCHEMA_VERSION, now_iso  # noqa: F401 - one definition, the records'


class RunKind(StrEnum):
    """What a run of the ledger does: the prefix of its start and end records' types."""

    DEPLOY = "deploy"
    ROLLBACK = "rollback"
    MAINTENANCE = "maintenance"

    @classmethod
    def of(cls, record: RunStart | RunEnd) -> RunKind:
        return cls(record.type.split(".")[0])


#: the records that start a run, and those that end one (a rollback's end is a RunEnded)
RunStart = REC.RunStarted | REC.RollbackStarted | REC.MaintenanceStarted
RunEnd = REC.RunEnded | REC.MaintenanceEnded


@dataclass
class RunRecord:
    """One run of the ledger: its kind, the record that started it, the release it deploys (a
    rollback by hand: the release it returns to; else None) and the record of its end (None: no
    end recorded, it is in flight or died)."""

    kind: RunKind
    start: RunStart
    release: str | None = None
    end: RunEnd | None = None

    @property
    def run(self) -> str:
        return self.start.run

    @property
    def outcome(self) -> str | None:
        """How it ended (None: no end recorded)."""
        return self.end.outcome if self.end is not None else None


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
    snapshot: REC.Snapshot | None = None  # the snapshot taken before this release's deploy
    backup: REC.BackupRef | None = None  # the backup taken before this release's deploy
    artifact: str = ""  # the sha256 of its artifact, as the build host packed it (`artifact.build`)

    @property
    def snapshot_hosts(self) -> dict[str, str | None]:
        """host -> the release it served before this release's deploy (empty: no snapshot)."""
        return (self.snapshot.hosts or {}) if self.snapshot is not None else {}

    def add(self, e: REC.Record) -> None:
        """One record of the run that deployed this release (those about the release itself)."""
        if isinstance(e, REC.Snapshot):
            self.snapshot = e
            self.schema_before = e.schema
        elif isinstance(e, REC.Backup):
            if e.kind == "predeploy" and self.backup is None:
                self.backup = e.ref()
        elif isinstance(e, REC.Artifact) and e.built and e.release == self.release:
            self.artifact = e.sha256
        elif isinstance(e, REC.Migrated):
            self.schema_after = e.after
            if self.schema_before is None:
                self.schema_before = e.before
        elif isinstance(e, REC.Paused):
            self.outcome = f"paused after wave {e.waves_done}/{e.waves}"
        elif isinstance(e, REC.Resumed):
            self.outcome = "in-flight"
        elif isinstance(e, REC.RunEnded) and e.type == REC.RunEnded.type:
            self.outcome = e.outcome or "?"


@dataclass
class History:
    releases: dict[str, ReleaseRecord] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # releases in first-deploy order
    runs: dict[str, RunRecord] = field(default_factory=dict)  # by run id, in order of start
    in_flight: list[RunRecord] = field(default_factory=list)  # runs started, never ended
    records: list[REC.Record] = field(default_factory=list)  # the ledger's records, typed, in order

    local_only: list[str] = field(default_factory=list)  # runs whose record is not shipped yet
    unfinished: list[RunRecord] = field(default_factory=list)  # ended needing a human, not superseded
    proofs: dict[str, REC.BackupProof] = field(default_factory=dict)  # backup path -> its last test restore

    @classmethod
    def fold(cls, events: list[dict]) -> History:
        """Releases, outcomes and unfinished runs, from the typed records of the ledger."""
        h = cls(records=REC.parse_all(events))
        for e in h.records:
            h._fold(e)
        h.in_flight = [r for r in h.runs.values() if r.end is None]
        # Runs that ended needing a human (their rollback failed), unless a later run succeeded.
        ordered = list(h.runs.values())
        h.unfinished = [r for i, r in enumerate(ordered) if r.outcome == "needs_human"
                        and not any(later.outcome == "success" for later in ordered[i + 1:])]
        return h

    def _fold(self, e: REC.Record) -> None:
        known = self.runs.get(e.run)
        rec = self.releases.get(known.release) if known is not None and known.release else None
        if isinstance(e, REC.BackupProof):
            self.proofs.pop(e.path, None)  # in the order of their last test restore
            self.proofs[e.path] = e
        elif isinstance(e, REC.RunStarted):
            self._deploy_started(e)
        elif isinstance(e, (REC.RollbackStarted, REC.MaintenanceStarted)):
            if known is None:  # an automatic rollback belongs to its deploy's run
                to = e.to if isinstance(e, REC.RollbackStarted) else None
                self.runs[e.run] = RunRecord(RunKind.of(e), e, release=to if isinstance(to, str) else None)
        elif isinstance(e, REC.ReleaseBad):
            target = self.releases.get(e.release)
            if target is not None:
                target.bad, target.bad_reason = True, e.reason
        elif isinstance(e, (REC.RunEnded, REC.MaintenanceEnded)):
            if known is not None and RunKind.of(e) == known.kind:
                known.end = e
            if rec is not None:
                rec.add(e)
        elif rec is not None:
            rec.add(e)

    def _deploy_started(self, e: REC.RunStarted) -> None:
        rec = self.releases.get(e.release) or ReleaseRecord(release=e.release)
        rec.run, rec.ref, rec.commit = e.run, e.ref, e.commit
        rec.who, rec.at, rec.outcome = e.who, e.at, "in-flight"
        self.releases[e.release] = rec
        if e.release not in self.order:
            self.order.append(e.release)
        self.runs[e.run] = RunRecord(RunKind.DEPLOY, e, release=e.release)

    def last_proven(self) -> REC.BackupProof | None:
        """The newest backup whose last test restore passed."""
        return next((p for p in reversed(self.proofs.values()) if p.ok), None)

    def failed_proof(self, path: str) -> REC.BackupProof | None:
        """The failed test restore of `path`, when its last one found it bad."""
        proof = self.proofs.get(path)
        return proof if proof is not None and proof.tested and not proof.ok else None

    def to_prove(self) -> REC.BackupRef | None:
        """The backup the newest deploy's rollback would restore, unless a test restore passed."""
        newest = self.releases[self.order[-1]].backup if self.order else None
        if newest is None or (newest.path in self.proofs and self.proofs[newest.path].ok):
            return None
        return newest

    def records_of(self, run: str) -> list[REC.Record]:
        """The typed records of one run, in ledger order."""
        return [e for e in self.records if e.run == run]

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
        """The releases deployed from a git ref (or a commit, 7+ hex digits), newest first (in
        the ledger's order)."""
        return [r for r in reversed(self.order)
                if self.releases[r].ref == ref or len(ref) >= 7 and self.releases[r].commit.startswith(ref)]

    def schema_of(self, release: str) -> int | None:
        """The schema version a release runs with (after its own migrations)."""
        rec = self.releases.get(release)
        if rec is None:
            return None
        return rec.schema_after if rec.schema_after is not None else rec.schema_before

    def previous_good(self, current: str | None) -> ReleaseRecord | None:
        """The newest good release deployed before `current`, in the ledger's order (first
        deploys, as appended): never by release id, whose timestamp is the clock of the machine
        that made it. A `current` the ledger does not know: the newest good one of all."""
        before = self.order[:self.order.index(current)] if current in self.releases else self.order
        for rid in reversed(before):
            rec = self.releases[rid]
            if not rec.bad and rec.outcome in ("success",):
                return rec
        return None

    def newest(self, releases) -> str | None:
        """The newest of `releases` in the ledger's order (ones it does not know count as older,
        by id among themselves); None for none."""
        ordered = in_order(releases, self.order)
        return ordered[-1] if ordered else None

    def snapshot_releases(self) -> set[str]:
        """Releases the snapshot of an unfinished run refers to (paused, crashed or running).

        A rollback (promote/abort, or a rerun after a crash) can still return to those; their
        releases are never cleaned up. The running deploy adds its own snapshot.
        """
        keep: set[str] = set()
        live = [self.releases[r.release] for r in self.in_flight if r.release in self.releases]
        for rec in live:
            keep |= {rel for rel in rec.snapshot_hosts.values() if rel}
        return keep

    def archives(self) -> list[REC.FilesBackup]:
        """Every archive of the app's files the ledger records, oldest first."""
        return [e for e in self.records if isinstance(e, REC.FilesBackup)]

    def newest_archives(self) -> dict[str, REC.FilesBackup]:
        """App host -> its newest archive of the app's files."""
        return {a.host: a for a in self.archives()}

    def files_before_leaving(self, release: str) -> dict[str, REC.FilesBackup]:
        """Per app host, its newest file archive taken before the fleet last left `release` (the
        files as they were while it served); the newest of all when no deploy left it."""
        left = next((self.releases[rid].run for rid in reversed(self.order)
                     if release in self.releases[rid].snapshot_hosts.values()), None)
        found: dict[str, REC.FilesBackup] = {}
        for e in self.records:
            if left is not None and e.run == left:
                break
            if isinstance(e, REC.FilesBackup):
                found[e.host] = e
        return found

    def backup_before_leaving(self, release: str) -> REC.BackupRef | None:
        """The newest backup taken while the fleet was on `release` (restores its data)."""
        for rid in reversed(self.order):
            rec = self.releases[rid]
            if rec.backup is not None and release in rec.snapshot_hosts.values():
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
