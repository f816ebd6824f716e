"""The fixed, named stages of a deploy, in order (DESIGN.md): the one definition. Plans fill
them, hooks run before and after any of them, the live table shows them as columns; nothing
reorders them. Imports nothing of deployer: config and engine both read it."""

from enum import StrEnum


class StageName(StrEnum):
    """Every stage a plan can hold. The journal and the ledger store the value."""

    PREFLIGHT = "preflight"
    LOCK = "lock"
    SNAPSHOT = "snapshot"
    MAINTENANCE = "maintenance"
    BACKUP = "backup"
    PULL = "pull"
    MIGRATE = "migrate"
    CACHE_WARM = "cache_warm"
    SWITCH = "switch"
    WORKER_RESTART = "worker_restart"
    GATE = "gate"
    FINALIZE = "finalize"
    # not stages of a deploy (no hooks, no column): a rollback's and the maintenance job's own
    DATABASE = "database"
    RETENTION = "retention"
    FILES = "files"  # `restore --files`
    MAINTENANCE_TASKS = "maintenance_tasks"


S = StageName

#: a deploy's stages, in order
STAGES = (S.PREFLIGHT, S.LOCK, S.SNAPSHOT, S.MAINTENANCE, S.BACKUP, S.PULL, S.MIGRATE,
          S.CACHE_WARM, S.SWITCH, S.WORKER_RESTART, S.GATE, S.FINALIZE)

#: the stages run once per wave of a rollout (in this order within each wave)
PER_WAVE = (S.SWITCH, S.WORKER_RESTART, S.GATE)

#: the stages that change hosts (the live table's columns): those after the checks and facts
LIVE_STAGES = STAGES[STAGES.index(S.MAINTENANCE):]
