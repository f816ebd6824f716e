"""A plan is a value: stages of lanes of actions, built by pure functions, printed by `--dry-run`
and run, unchanged, by the executor.

- An **Action** is one thing done to one host: a remote script (the commands of one stage on
  one host go as one script where the playbook allows), or an HTTP check made from the
  orchestrator. It says what it changes (`effect`) and what its output records (`records`),
  so the executor updates the run's state in one place without knowing any stage.
- A **Lane** is the actions about one subject host, run in order (drain at the load balancer,
  switch, reload, check, put back). Lanes of a stage run in parallel, at most `limit` at once.
- A **Stage** is one of the named stages of DESIGN.md (or a hook around one).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from ..commands import fence as FN
from ..shell import Command, Secret
from ..stages import StageName
from ..state.backups import Kind


class Effect(enum.Enum):
    """What an action changes in the run's state, on its subject host (the value is journaled)."""

    PULLED = "pulled"
    SWITCHED = "switched"
    UNSWITCHED = "unswitched"
    DRAINED = "drained"
    UNDRAINED = "undrained"
    MAINTENANCE_ON = "maintenance_on"
    MAINTENANCE_OFF = "maintenance_off"
    MIGRATED = "migrated"
    WORKERS_RESTARTED = "workers_restarted"
    DB_RESTORED = "db_restored"
    #: a probe, not a change: the host's worker proved itself alive before the switch
    WORKER_HEALTHY = "worker_healthy"

    @property
    def removes_risk(self) -> bool:
        """Journaled after the change (it takes risk away), not before it."""
        return self in (Effect.UNDRAINED, Effect.UNSWITCHED, Effect.MAINTENANCE_OFF, Effect.DB_RESTORED,
                        Effect.WORKER_HEALTHY)


# -- operations of the state backend, done by the orchestrator itself ------------------------
@dataclass(frozen=True)
class UploadBackup:
    """Copy the verified backup `path` from the host to the state backend (after the step that
    made it: the dump, or the archive of the app's files)."""

    path: str
    kind: Kind = Kind.DATABASE

    def display(self) -> str:
        return f"upload_{_VERB[self.kind]} {self.path}"


@dataclass(frozen=True)
class EnsureBackup:
    """Before a restore: the host's backup if it has `sha256`, else the backend's copy put back."""

    path: str
    sha256: str
    kind: Kind = Kind.DATABASE

    def display(self) -> str:
        return f"ensure_{_VERB[self.kind]} {self.path} {self.sha256}"


_VERB = {Kind.DATABASE: "backup", Kind.FILES: "files"}


@dataclass(frozen=True)
class PruneArtifacts:
    """Delete the bucket's release artifacts (`artifact.store: bucket`) of every release but
    `keep`."""

    keep: tuple[str, ...]

    def display(self) -> str:
        return f"prune_artifacts keeping {' '.join(self.keep)}"


BackendOp = UploadBackup | EnsureBackup | PruneArtifacts


# -- what an action's output records (by step of its batched script) -------------------------
class SchemaKey(enum.Enum):
    """The schema version fields of the run's state a step's output sets."""

    BEFORE = "schema_before"
    AFTER = "schema_after"


@dataclass(frozen=True)
class RecordSchema:
    step: int  # index of the step in the action's batch
    key: SchemaKey


@dataclass(frozen=True)
class RecordBackup:
    step: int  # the dump step: its last line is the dump's sha256 and size
    path: str


@dataclass(frozen=True)
class RecordProof:
    step: int  # the test restore: its verdict line (recorded when it failed too)
    path: str
    sha256: str | None  # None: the backup the same run took (its sha256 recorded by then)


@dataclass(frozen=True)
class RecordFiles:
    step: int  # the archive step: its last line is the archive's sha256 and size
    path: str
    paths: tuple[str, ...]  # what it holds (relative to shared/)


@dataclass(frozen=True)
class RecordArtifact:
    """A release's artifact: packed by the build host (`built`: its sha256 is the release's),
    or fetched and unpacked by another app host (its sha256 must be the same)."""

    step: int  # the pack or fetch step: its last line is `<sha256> <size>[ <files linked>]`
    release: str
    built: bool
    sha256: str = ""  # a fetch's expected sha256 ("": the one this run's build host packed)


Recorded = RecordSchema | RecordBackup | RecordProof | RecordFiles | RecordArtifact


@dataclass(frozen=True)
class HttpCheck:
    """The health gate on one host: N consecutive passes within a time budget."""

    url: str
    release: str
    expect_status: int
    expect_json: dict | None
    passes: int
    interval: float
    budget: float
    timeout: float
    headers: dict = field(default_factory=dict)
    via: str = "ssh"  # through the host's SSH connection, or "direct" from the orchestrator
    fail_after: int = 0  # consecutive definitive failures that fail the host at once (0: off)

    def display(self) -> str:
        return (f"GET {self.url}" + (" through SSH" if self.via == "ssh" else "")
                + f" (expect {self.expect_status}"
                + (f" and {self.expect_json}" if self.expect_json else "")
                + f", {self.passes} consecutive passes within {self.budget:g}s"
                + (f", failed after {self.fail_after} wrong answers in a row" if self.fail_after else "")
                + ")")


@dataclass(frozen=True)
class Action:
    host: str  # the host it runs on (or is checked over HTTP)
    command: Command | None = None
    http: HttpCheck | None = None
    stdin: Secret | None = None  # secret content, never in argv or output
    timeout: float | None = None
    retry_for: float = 0.0  # re-run until it succeeds, for at most this many seconds
    effect: Effect | None = None  # applied to the subject host
    records: tuple[Recorded, ...] = ()  # what the output of its steps records
    what: str = ""  # short name for messages: "pull", "switch", "drain", ...
    backend: BackendOp | None = None  # an operation of the state backend, done by the orchestrator
    guard: Command | None = None  # the fencing token check the host script starts with (`fenced`)

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.command, self.http, self.backend)) != 1:
            raise ValueError("an action is a remote command, an HTTP check or a state backend operation")
        if self.effect is not None and not isinstance(self.effect, Effect):
            raise ValueError(f"unknown effect {self.effect!r}")

    @property
    def script(self) -> Command | None:
        """What runs on the host: the command, after the token check when there is one."""
        if self.command is None or self.guard is None:
            return self.command
        return FN.fenced(self.command, self.guard)

    def display(self) -> str:
        if self.backend is not None:
            return self.backend.display()
        return self.script.display if self.command is not None else self.http.display()


@dataclass(frozen=True)
class Lane:
    subject: str  # the host this lane is about
    actions: tuple[Action, ...]


class Hook(enum.StrEnum):
    BEFORE = "before"
    AFTER = "after"


@dataclass(frozen=True)
class Stage:
    name: StageName
    detail: str = ""
    lanes: tuple[Lane, ...] = ()
    limit: int | None = None  # lanes at once (max_unavailable for switches)
    stop_on_failure: bool = False  # a wave schedules no new lane after its first failed host
    wave: int = 0  # 1-based wave number for the per-wave stages
    pause_after: bool = False  # a progressive rollout pauses here (promote/abort from anywhere)
    bake: float = 0.0  # seconds of canary-against-baseline probes after this stage
    refuse: str = ""  # reaching this stage stops the run: a human must act (the message says how)
    refuse_on: tuple = ()  # (exit status, message): an action exiting so needs a human
    best_effort: bool = False  # failures are reported, not raised (cleanup of what nothing uses)
    best_effort_note: str = "harmless"  # what a best-effort failure means, in its notice
    hook: Hook | None = None  # the playbook's hook run before or after stage `name`

    @property
    def label(self) -> str:
        """What the journal, the ledger and the output call it: `switch`, `before:switch`."""
        return f"{self.hook}:{self.name}" if self.hook else str(self.name)

    def actions(self) -> list[Action]:
        return [a for lane in self.lanes for a in lane.actions]


@dataclass(frozen=True)
class Plan:
    kind: str  # deploy | rollback | promote | abort | maintenance | recover
    release: str
    stages: tuple[Stage, ...]
    keepalive: dict[str, Command] = field(default_factory=dict)  # host -> re-arm the dead-man
    notes: tuple[str, ...] = ()
    token: int | None = None  # the fencing token every host script checks first (None: none)

    def rows(self) -> list[tuple[str, str, str]]:
        """(stage, host, command) in execution order, as `--dry-run` prints them."""
        rows = []
        for st in self.stages:
            label = f"{st.label} w{st.wave}" if st.wave else st.label
            for a in st.actions():
                rows.append((label, a.host, a.display()))
        return rows

    def per_host(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for _, host, cmd in self.rows():
            out.setdefault(host, []).append(cmd)
        return out


def fenced(plan: Plan, record: str, token: int | None) -> Plan:
    """The plan whose every host script (each action's command, each dead-man re-arming) starts
    with the check of fencing token `token` (`commands.fence.guard`; `record`: the hosts' fence
    record, `Config.fence_record`): a host that has seen a larger token refuses it, else records it. Every script,
    not only those that change something: each host a run touches learns its token. None: the
    plan as it is (a run without the lock: maintenance by hand). `FN.DRY_RUN`: the plan of a
    dry run, which shows the check and is never run."""
    if token is None:
        return plan
    check = FN.guard(record, token)

    def one(a: Action) -> Action:
        return replace(a, guard=check) if a.command is not None else a

    stages = tuple(replace(st, lanes=tuple(replace(lane, actions=tuple(one(a) for a in lane.actions))
                                           for lane in st.lanes)) for st in plan.stages)
    keepalive = {h: FN.fenced(cmd, check) for h, cmd in plan.keepalive.items()}
    return replace(plan, stages=stages, keepalive=keepalive, token=token)
