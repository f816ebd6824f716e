"""The state of one run: what it changed so far, exactly what a rollback must undo.

Only the executor changes it (`apply`), after journaling the change; `from_events` rebuilds it
from a journal or the ledger (promote, abort, recover) with the same typed records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import records as REC
from .plan import Effect, SchemaKey

KNOWN = frozenset(e.value for e in Effect)  # journaled values (a record of any other is no change)


def _add(hosts: list[str], host: str) -> None:
    if host not in hosts:
        hosts.append(host)


def _remove(hosts: list[str], host: str) -> None:
    if host in hosts:
        hosts.remove(host)


@dataclass
class RunState:
    run: str
    release: str
    commit: str = ""
    ref: str = ""
    snapshot: dict[str, str | None] = field(default_factory=dict)
    schema_before: int | None = None
    schema_after: int | None = None
    backup: REC.BackupRef | None = None  # the first backup the run took (what a rollback restores)
    maintenance_on: bool = False
    proofs: list[REC.BackupProof] = field(default_factory=list)  # the run's test restores
    archives: list[REC.FilesBackup] = field(default_factory=list)  # the run's archives of the app's files
    secret_paths: list[str] = field(default_factory=list)  # the secret files the run wrote (paths only)
    artifact: str = ""  # the sha256 of the release's artifact, as its build host packed it
    migrated: bool = False
    pulled: list[str] = field(default_factory=list)
    switched: list[str] = field(default_factory=list)
    drained: list[str] = field(default_factory=list)
    workers_restarted: list[str] = field(default_factory=list)
    #: hosts whose worker passed its check before the switch (the snapshot stage's probe); a
    #: worker host not in it was unhealthy before the deploy changed anything
    workers_healthy: list[str] = field(default_factory=list)
    waves_done: int = 0

    def fenced(self) -> bool:
        """The run may have set the write fence: it took its backup, or was under maintenance
        (a run killed mid-backup may have set the fence before the backup was recorded)."""
        return self.backup is not None or self.maintenance_on

    def apply(self, effect: Effect, host: str) -> None:
        """One effect of one action on the subject host."""
        added = {Effect.PULLED: self.pulled, Effect.SWITCHED: self.switched,
                 Effect.DRAINED: self.drained, Effect.WORKERS_RESTARTED: self.workers_restarted,
                 Effect.WORKER_HEALTHY: self.workers_healthy}
        removed = {Effect.UNDRAINED: self.drained, Effect.UNSWITCHED: self.switched}
        if effect in added:
            _add(added[effect], host)
        elif effect in removed:
            _remove(removed[effect], host)
        elif effect in (Effect.MAINTENANCE_ON, Effect.MAINTENANCE_OFF):
            self.maintenance_on = effect is Effect.MAINTENANCE_ON
        elif effect in (Effect.MIGRATED, Effect.DB_RESTORED):
            self.migrated = effect is Effect.MIGRATED

    def record_schema(self, key: SchemaKey, value: int | None) -> None:
        match key:
            case SchemaKey.BEFORE:
                self.schema_before = value if self.schema_before is None else self.schema_before
            case SchemaKey.AFTER:
                self.schema_after = value
                if value is not None and value == self.schema_before:
                    self.migrated = False  # nothing pending: nothing to undo

    def record_backup(self, backup: REC.BackupRef) -> None:
        self.backup = backup

    def sha256_of(self, path: str) -> str | None:
        """The sha256 this run recorded for the backup or file archive at `path`."""
        if self.backup is not None and self.backup.path == path:
            return self.backup.sha256 or None
        return next((a.sha256 for a in self.archives if a.path == path), None)

    @classmethod
    def from_events(cls, events: list[REC.Record]) -> RunState | None:
        """The state of the run these typed records describe (None without its start)."""
        st: RunState | None = None
        for e in events:
            if isinstance(e, REC.RunStarted):
                st = cls(run=e.run, release=e.release, commit=e.commit, ref=e.ref)
            elif st is None:
                continue
            elif isinstance(e, REC.Snapshot):
                st.snapshot = dict(e.hosts)
                st.schema_before = e.schema
            elif isinstance(e, REC.Effect) and e.effect in KNOWN:
                st.apply(Effect(e.effect), e.host)
            elif isinstance(e, REC.Backup):
                st.backup = e.ref()
            elif isinstance(e, REC.FilesBackup):
                st.archives.append(e)
            elif isinstance(e, REC.Artifact) and e.built:
                st.artifact = e.sha256
            elif isinstance(e, REC.SecretFiles):
                st.secret_paths = list(e.paths)
            elif isinstance(e, REC.Migrated):
                st.schema_before = e.before if e.before is not None else st.schema_before
                st.schema_after = e.after
                st.migrated = e.after is None or e.after != e.before
            elif isinstance(e, REC.Paused):
                st.waves_done = e.waves_done
        return st
