"""Configuration: inventories (hosts/<env>.yaml) and playbooks (playbooks/<name>.yaml).

Everything is validated before any connection. Every ConfigError message line reads
``<file relative to root>: <key path>: <problem>``.

Modules, each depending only on the ones before it:

- `types`: constants (ROLES, TEMPLATE_VALUES, ...), validators and small value types;
- `playbook`: the playbook models (Step, Stages, Hooks, Playbook) and step labelling;
- `inventory`: the inventory models (SSH, Health, HostEntry, windows, gate, ..., Inventory);
- `model`: the runtime `Host` and `Config`;
- `layers`: defaults < inventory < environment < overrides, merging and error messages;
- `loading`: YAML reading, `load_playbook`, `load_config` and the cross-file checks.
"""

from deployer.errors import ConfigError

from .inventory import (
    SSH,
    CronExpr,
    Database,
    FreezeModel,
    Gate,
    Health,
    HostEntry,
    Inventory,
    LoadBalancer,
    RetentionModel,
    RolloutWave,
    ScheduleModel,
    SecretFile,
    TimeZone,
    WindowModel,
)
from .loading import known_envs, known_playbooks, load_config, load_playbook
from .model import Config, Host
from .playbook import Hooks, HookStage, Maintenance, Migrate, Playbook, Stages, Step, StepIn
from .types import (
    DEFAULT_ROLES,
    ENV_VARS,
    HEALTH_VALUES,
    HOOK_STAGES,
    LB_VALUES,
    ROLES,
    TEMPLATE_VALUES,
    AbsPath,
    Bool,
    Float,
    Int,
    Name,
    Port,
    RelPath,
    Role,
    Roles,
    VarName,
    Vars,
    Wave,
    default_root,
)

__all__ = [
    "DEFAULT_ROLES", "ENV_VARS", "HEALTH_VALUES", "HOOK_STAGES", "LB_VALUES", "ROLES", "SSH",
    "TEMPLATE_VALUES", "AbsPath", "Bool", "Config", "ConfigError", "CronExpr", "Database",
    "Float", "FreezeModel", "Gate", "Health", "HookStage", "Hooks", "Host", "HostEntry", "Int",
    "Inventory", "LoadBalancer", "Maintenance", "Migrate", "Name", "Playbook", "Port", "RelPath",
    "RetentionModel", "Role", "Roles", "RolloutWave", "ScheduleModel", "SecretFile", "Stages",
    "Step", "StepIn", "TimeZone", "VarName", "Vars", "Wave", "WindowModel", "default_root",
    "known_envs", "known_playbooks", "load_config", "load_playbook",
]
