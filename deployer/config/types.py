"""Value types shared by playbooks and inventories: constants, validators, annotated types.

Every validator raises through `_fail`, whose message becomes the problem part of a
``<file>: <key path>: <problem>`` line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
)
from pydantic_core import PydanticCustomError

from deployer.shell import Secret
from deployer.stages import STAGES

ROLES = ("cron", "db", "lb", "ledger", "migrate", "web", "worker")
HOOK_STAGES = STAGES  # hooks run before and after any stage
#: Values the engine provides to playbook templates (besides vars).
TEMPLATE_VALUES = (
    "env", "host", "address", "deploy_to", "shared_path", "current_path", "releases_path",
    "release", "release_path", "previous_release", "previous_path", "commit", "ref",
    "message", "retry", "expires_at", "target_version", "sudo",
)
#: Template values that change from one run to the next: a command run through `{sudo}` may not
#: use them (a sudo rule allows fixed commands only).
RUN_VALUES = (
    "release", "release_path", "previous_release", "previous_path", "commit", "ref",
    "message", "retry", "expires_at", "target_version",
)
HEALTH_VALUES = ("address", "host", "release", "port")
LB_VALUES = ("address", "host")
DEFAULT_ROLES = {
    "build": ["web"], "cache_warm": ["web"], "reload": ["web"], "finalize": ["web"],
    "worker_restart": ["worker"], "worker_verify": ["worker"], "maintenance": ["web"],
    "maintenance_tasks": ["web"], "migrate": ["migrate"], "gate_checks": ["web", "worker"],
}
ENV_VARS = {
    "DEPLOYER_SSH_KEY": ("ssh", "key"),
    "DEPLOYER_SSH_KEY_DATA": ("ssh", "key_data"),
    "DEPLOYER_KNOWN_HOSTS": ("ssh", "known_hosts"),
    "DEPLOYER_KNOWN_HOSTS_DATA": ("ssh", "known_hosts_data"),
    "DEPLOYER_PARALLEL": ("parallel",),
    "DEPLOYER_SSH_USER": ("ssh", "user"),
}
_ENV_RE = re.compile(r"[a-z][a-z0-9_-]*\Z")
_HOST_RE = re.compile(r"[a-z0-9][a-z0-9-]*\Z")
_ADDRESS_RE = re.compile(r"[A-Za-z0-9.:_-]+\Z")
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\Z")
_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_WAVE_RE = re.compile(r"(\d{1,3})%\Z")
#: custom role and group names: the same shape as environment names
_ROLE_RE = _ENV_RE


def default_root() -> Path:
    """The repository root: the parent of the `deployer` package."""
    return Path(__file__).resolve().parent.parent.parent


def _label(path: Path, root: Path) -> str:
    """`path` relative to root when inside it, else absolute."""
    try:
        return path.absolute().relative_to(root.absolute()).as_posix()
    except ValueError:
        return str(path.absolute())


def _key_path(loc: Iterable[str | int]) -> str:
    """A pydantic location as a key path: ``hosts[1].address``."""
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _is_path(ref: str) -> bool:
    """Whether a playbook reference is a file path (else a playbook name)."""
    return "/" in ref or ref.endswith((".yaml", ".yml"))


# ---------------------------------------------------------------- field types


def _fail(message: str) -> PydanticCustomError:
    return PydanticCustomError("deployer", "{message}", {"message": message})


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise _fail("expected a number, not true/false")
    return value


def _role(value: Any) -> str:
    """A built-in role (ROLES) or a custom one: lowercase letters, digits, _ and -."""
    if not isinstance(value, str):
        raise _fail("expected a string")
    if not _ROLE_RE.match(value):
        raise _fail(f"invalid role {value!r} (use lowercase letters, digits, _ and -, starting "
                    f"with a letter; built-in: {', '.join(ROLES)})")
    return value


def _group_name(value: str) -> str:
    if not _ROLE_RE.match(value):
        raise _fail(f"invalid group name {value!r} (use lowercase letters, digits, _ and -, "
                    "starting with a letter)")
    return value


def _playbook_ref(value: str) -> str:
    """A playbook name (playbooks/<name>.yaml) or a path to a playbook file."""
    if _is_path(value):
        if not value.strip():
            raise _fail("must not be empty")
        return value
    return _slug("playbook name")(value)


def _slug(kind: str) -> Any:
    def check(value: str) -> str:
        if not _HOST_RE.match(value):
            raise _fail(f"invalid {kind} {value!r} (use lowercase letters, digits and -)")
        return value
    return check


def _address(value: str) -> str:
    if not _ADDRESS_RE.match(value):
        raise _fail(f"invalid address {value!r}")
    return value


def _user(value: str) -> str:
    if not _USER_RE.match(value):
        raise _fail(f"invalid user name {value!r}")
    return value


def _var_name(value: str) -> str:
    if not _VAR_RE.match(value):
        raise _fail(f"invalid variable name {value!r} (use letters, digits and _)")
    if value in TEMPLATE_VALUES:
        raise _fail(f"variable name {value!r} is reserved")
    return value


def _var_value(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def _abs_path(value: str) -> str:
    path = PurePosixPath(value)
    if not path.is_absolute() or ".." in path.parts or str(path) == "/":
        raise _fail(f"expected an absolute path other than / and without '..', got {value!r}")
    return str(path)


def _rel_path(value: str) -> str:
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or str(path) == ".":
        raise _fail(f"expected a relative path without '..', got {value!r}")
    return str(path)


def _wave(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str):
        match = _WAVE_RE.match(value)
        if match and 1 <= int(match.group(1)) <= 100:
            return f"{int(match.group(1))}%"
    raise _fail('expected a host count >= 1 or a percentage like "50%"')


def _env_only(var: str) -> Any:
    def check(value: Any) -> Any:
        if value is None or isinstance(value, Secret):
            return value
        raise _fail(f"cannot be set in a file; use the {var} environment variable")
    return check


Int = Annotated[int, Strict()]
Float = Annotated[float, BeforeValidator(_no_bool), Strict()]
Bool = Annotated[bool, Strict()]
Name = Annotated[str, Strict(), Field(min_length=1)]
Role = Annotated[str, PlainValidator(_role)]
Roles = Annotated[list[Role], Field(min_length=1)]
VarName = Annotated[str, AfterValidator(_var_name)]
Vars = dict[VarName, Annotated[str, BeforeValidator(_var_value)]]
AbsPath = Annotated[str, AfterValidator(_abs_path)]
RelPath = Annotated[str, AfterValidator(_rel_path)]
Wave = Annotated[int | str, PlainValidator(_wave)]
Port = Annotated[int, Strict(), Field(ge=1, le=65535)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
