"""The fixed, named stages of a deploy, in order (DESIGN.md): the one definition. Plans fill
them, hooks run before and after any of them, the live table shows them as columns; nothing
reorders them. Imports nothing of deployer: config and engine both read it."""

STAGES = (
    "preflight", "lock", "snapshot", "maintenance", "backup", "pull", "migrate",
    "cache_warm", "switch", "worker_restart", "gate", "finalize",
)

#: the stages run once per wave of a rollout (in this order within each wave)
PER_WAVE = ("switch", "worker_restart", "gate")

#: the stages that change hosts (the live table's columns): those after the checks and facts
LIVE_STAGES = STAGES[STAGES.index("maintenance"):]
