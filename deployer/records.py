"""Typed ledger records: one dataclass per kind, written and read back by the same code.

On disk (journal and ledger) a record is a JSON object: {"v", "at", "type", "run", "seq", ...}.
`parse` turns such an object back into its dataclass; an unknown kind (a newer writer) is kept
as `Unknown`, never guessed at.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, ClassVar

SCHEMA_VERSION = 1


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_KINDS: dict[str, type[Record]] = {}


@dataclass
class Record:
    type: ClassVar[str] = ""
    run: str = ""
    at: str = ""
    seq: int = 0

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.type:
            _KINDS[cls.type] = cls

    def to_dict(self) -> dict:
        d = {"v": SCHEMA_VERSION, "type": self.type}
        d.update(dataclasses.asdict(self))
        return d


@dataclass
class RunStarted(Record):
    """A run began: a deploy (kind deploy), a rollback by hand, a maintenance job."""

    type: ClassVar[str] = "deploy.start"
    env: str = ""
    release: str = ""
    ref: str = ""
    commit: str = ""
    who: str = ""
    reason: str = ""
    forced: str | None = None
    ledger: str = ""  # where this run's records belong (journal shipping checks it)


@dataclass
class RollbackStarted(Record):
    type: ClassVar[str] = "rollback.start"
    auto: bool = False
    to: Any = None  # a release id (by hand) or host -> release (automatic)
    who: str = ""
    cause: str = ""
    restore_db: bool = False
    keep_db: bool = False
    ledger: str = ""
    restore_files: bool = False


@dataclass
class MaintenanceStarted(Record):
    """A maintenance run began: the scheduled job, or an operator's `restore --files`."""
    type: ClassVar[str] = "maintenance.start"
    forced: str | None = None
    ledger: str = ""
    task: str = "nightly"  # or "restore files"


@dataclass
class Stage(Record):
    type: ClassVar[str] = "stage"
    stage: str = ""
    state: str = ""  # start | done | failed
    detail: str = ""
    wave: int = 0
    seconds: float | None = None
    error: str = ""


@dataclass
class StepFailed(Record):
    """A command of the plan failed on a host: how it ended and the tails of what it printed on
    both streams (deployer.errors.OutputTail: bounded, secrets masked)."""

    type: ClassVar[str] = "step.failed"
    stage: str = ""
    wave: int = 0
    host: str = ""
    what: str = ""  # the action: pull, build, migrate, a hook...
    command: str = ""  # the failing step's display form (masked)
    exit_status: int | None = None
    timed_out: bool = False
    stdout: str = ""
    stderr: str = ""


@dataclass
class Snapshot(Record):
    type: ClassVar[str] = "snapshot"
    hosts: dict = field(default_factory=dict)
    schema: int | None = None
    maintenance: bool = False


@dataclass
class Effect(Record):
    """Written BEFORE a change that adds risk (switch, drain, pull...), after one that removes it."""

    type: ClassVar[str] = "effect"
    host: str = ""
    effect: str = ""
    release: str = ""


@dataclass(frozen=True)
class BackupRef:
    """A verified database dump: where it is (`host`, `path`), what it must hash to, its size.
    What a restore needs, kept by the run that took it and by the ledger's history."""

    path: str
    sha256: str
    size: int
    host: str


@dataclass
class Backup(Record):
    type: ClassVar[str] = "backup"
    path: str = ""
    sha256: str = ""
    size: int = 0
    host: str = ""
    kind: str = "predeploy"

    def ref(self) -> BackupRef:
        return BackupRef(path=self.path, sha256=self.sha256, size=self.size, host=self.host)


@dataclass
class BackupProof(Record):
    """A test restore of a backup (the maintenance job's): restored into a scratch database,
    read, dropped. A backup whose last test restore failed is never restored by a rollback."""
    type: ClassVar[str] = "backup.proof"
    path: str = ""
    sha256: str = ""
    ok: bool = False
    tested: bool = True  # False: it could not run (no scratch database): the backup is not condemned
    tables: int = 0
    rows: int = 0
    error: str = ""


@dataclass
class FilesBackup(Record):
    """An archive of the app's own files (`backup.files`) on one app host."""
    type: ClassVar[str] = "backup.files"
    host: str = ""
    path: str = ""
    sha256: str = ""
    size: int = 0
    paths: list = field(default_factory=list)


@dataclass
class Artifact(Record):
    """A release's artifact on one app host: packed there (`built`), or fetched from the build
    host and unpacked (`linked`: files hard-linked from the previous release)."""
    type: ClassVar[str] = "artifact"
    release: str = ""
    host: str = ""
    sha256: str = ""
    size: int = 0
    built: bool = False
    linked: int = 0


@dataclass
class Migrated(Record):
    type: ClassVar[str] = "migrate"
    before: int | None = None
    after: int | None = None


@dataclass
class GateSample(Record):
    type: ClassVar[str] = "gate.sample"
    wave: int = 0
    host: str = ""
    role: str = ""
    t: float = 0.0
    ms: float = 0.0
    ok: bool = False
    release: str = ""


@dataclass
class HealthProbe(Record):
    """One probe of a host's health check (its time is `at`)."""

    type: ClassVar[str] = "gate.probe"
    host: str = ""
    release: str = ""
    ok: bool = False
    status: int | None = None
    ms: float = 0.0
    detail: str = ""


@dataclass
class GateVerdict(Record):
    type: ClassVar[str] = "gate.verdict"
    wave: int = 0
    status: str = ""
    reasons: list = field(default_factory=list)
    metrics: list = field(default_factory=list)


@dataclass
class Paused(Record):
    type: ClassVar[str] = "deploy.paused"
    release: str = ""
    waves_done: int = 0
    waves: int = 0


@dataclass
class Resumed(Record):
    type: ClassVar[str] = "deploy.promote"
    who: str = ""
    from_host: str = ""


@dataclass
class Aborted(Record):
    type: ClassVar[str] = "deploy.abort"
    who: str = ""
    from_host: str = ""


@dataclass
class ReleaseBad(Record):
    type: ClassVar[str] = "release.bad"
    release: str = ""
    reason: str = ""


@dataclass
class DbRestored(Record):
    type: ClassVar[str] = "db.restore"
    path: str = ""
    sha256: str = ""
    safety_backup: str = ""


@dataclass
class FilesRestored(Record):
    """The app's files on one app host put back from its archive (`restore --files`,
    `rollback --restore-files`)."""
    type: ClassVar[str] = "files.restore"
    host: str = ""
    path: str = ""
    sha256: str = ""


@dataclass
class SecretFiles(Record):
    type: ClassVar[str] = "secret_files"
    paths: list = field(default_factory=list)


@dataclass
class Retention(Record):
    type: ClassVar[str] = "retention"
    kept: list = field(default_factory=list)
    removed: list = field(default_factory=list)
    unknown: list = field(default_factory=list)
    protected: list = field(default_factory=list)


@dataclass
class MaintenanceManual(Record):
    type: ClassVar[str] = "maintenance.manual"
    on: bool = False
    who: str = ""
    message: str = ""
    ttl: float | None = None


@dataclass
class RunEnded(Record):
    type: ClassVar[str] = "deploy.end"
    outcome: str = ""  # success | rolled_back | interrupted | needs_human | failed | aborted
    error: str = ""
    rollback_error: str = ""
    seconds: float | None = None
    hosts: dict = field(default_factory=dict)


@dataclass
class RollbackEnded(RunEnded):
    type: ClassVar[str] = "rollback.end"


@dataclass
class MaintenanceEnded(Record):
    type: ClassVar[str] = "maintenance.end"
    outcome: str = ""
    error: str = ""
    done: list = field(default_factory=list)


@dataclass
class Unknown(Record):
    data: dict = field(default_factory=dict)


def parse(d: dict) -> Record:
    """The typed record of one JSON object (unknown fields of a known kind are ignored)."""
    cls = _KINDS.get(d.get("type", ""))
    if cls is None:
        return Unknown(run=str(d.get("run", "")), at=str(d.get("at", "")), data=d)
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in d.items() if k in names})
    except TypeError:
        return Unknown(run=str(d.get("run", "")), at=str(d.get("at", "")), data=d)


def parse_all(dicts: list[dict]) -> list[Record]:
    return [parse(d) for d in dicts]


def dedupe(dicts: list[dict]) -> list[dict]:
    """Drop records shipped twice (same run, seq and time): shipping is at-least-once."""
    seen: set[tuple] = set()
    out = []
    for d in dicts:
        key = (d.get("run"), d.get("seq"), d.get("at"))
        if d.get("seq") and key in seen:
            continue
        seen.add(key)
        out.append(d)
    return out
