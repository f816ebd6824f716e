"""Configuration: inventories (hosts/<env>.yaml) and playbooks (playbooks/<name>.yaml).

Everything is validated before any connection. Every ConfigError message line reads
``<file relative to root>: <key path>: <problem>``.

Modules, each depending only on the ones before it:

- `types`: constants (ROLES, TEMPLATE_VALUES, ...), validators and small value types;
- `playbook`: the playbook models (Step, Stages, Hooks, Playbook) and step labelling;
- `inventory`: the inventory models (SSH, Health, HostEntry, windows, gate, ..., Inventory);
- `model`: the runtime `Host` and `Config`;
- `reading`: YAML reading (unique keys, YAML 1.2 booleans), `${VAR}` interpolation;
- `layers`: defaults < inventory < environment < `--set`, merging and error messages;
- `project`: the project root, known environments and playbooks, `load_playbook` (extends);
- `loading`: `load_config`, groups and the cross-file checks.

Every key is described in docs/configuration.md.
"""

from deployer.errors import ConfigError

from .inventory import (
    SSH,
    Database,
    Gate,
    Group,
    Health,
    HostEntry,
    Inventory,
    LoadBalancer,
    RolloutWave,
    SecretFile,
)
from .layers import parse_set
from .loading import load_config
from .model import Config, Host
from .playbook import Hooks, HookStage, Maintenance, Migrate, Playbook, Stages, Step, StepIn
from .project import (
    find_playbook,
    known_envs,
    known_playbooks,
    load_playbook,
    project_root,
    shipped_playbooks,
)
from .schedule import CronExpr, FreezeModel, RetentionModel, ScheduleModel, TimeZone, WindowModel
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
    "Float", "FreezeModel", "Gate", "Group", "Health", "HookStage", "Hooks", "Host", "HostEntry", "Int",
    "Inventory", "LoadBalancer", "Maintenance", "Migrate", "Name", "Playbook", "Port", "RelPath",
    "RetentionModel", "Role", "Roles", "RolloutWave", "ScheduleModel", "SecretFile", "Stages",
    "Step", "StepIn", "TimeZone", "VarName", "Vars", "Wave", "WindowModel", "default_root",
    "find_playbook", "known_envs", "known_playbooks", "load_config", "load_playbook",
    "parse_set", "project_root", "shipped_playbooks",
]
