"""The state of one run: what it changed so far, exactly what a rollback must undo.

Only the executor changes it (`apply`), after journaling the change; `from_events` rebuilds it
from a journal or the ledger (promote, abort, recover) with the same typed records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import records as REC

ADDS = ("pulled", "switched", "drained", "workers_restarted")


@dataclass
class RunState:
    run: str
    release: str
    commit: str = ""
    ref: str = ""
    snapshot: dict[str, str | None] = field(default_factory=dict)
    schema_before: int | None = None
    schema_after: int | None = None
    backup: dict | None = None
    maintenance_on: bool = False
    migrated: bool = False
    pulled: list[str] = field(default_factory=list)
    switched: list[str] = field(default_factory=list)
    drained: list[str] = field(default_factory=list)
    workers_restarted: list[str] = field(default_factory=list)
    waves_done: int = 0

    def apply(self, effect: str, host: str) -> None:
        """One effect of one action on the subject host (see plan.EFFECTS)."""
        if effect in ADDS:
            lst = getattr(self, effect)
            if host not in lst:
                lst.append(host)
        elif effect == "undrained":
            if host in self.drained:
                self.drained.remove(host)
        elif effect == "unswitched":
            if host in self.switched:
                self.switched.remove(host)
        elif effect == "maintenance_on":
            self.maintenance_on = True
        elif effect == "maintenance_off":
            self.maintenance_on = False
        elif effect == "migrated":
            self.migrated = True
        elif effect == "db_restored":
            self.migrated = False

    def record(self, key: str, value) -> None:
        if key == "schema_before":
            self.schema_before = value if self.schema_before is None else self.schema_before
        elif key == "schema_after":
            self.schema_after = value
            if value is not None and value == self.schema_before:
                self.migrated = False  # nothing pending: nothing to undo
        elif key == "backup":
            self.backup = value

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
            elif isinstance(e, REC.Effect):
                st.apply(e.effect, e.host)
            elif isinstance(e, REC.Backup):
                st.backup = e.info()
            elif isinstance(e, REC.Migrated):
                st.schema_before = e.before if e.before is not None else st.schema_before
                st.schema_after = e.after
                st.migrated = e.after is None or e.after != e.before
            elif isinstance(e, REC.Paused):
                st.waves_done = e.waves_done
        return st
