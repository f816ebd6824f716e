"""Configuration: inventories (hosts/<env>.yaml) and playbooks (playbooks/<name>.yaml).

Everything is validated before any connection. Every ConfigError message line reads
``<file relative to root>: <key path>: <problem>``.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    Strict,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from deployer import cron as _cron
from deployer import retention as _retention
from deployer import windows as _windows
from deployer.errors import ConfigError
from deployer.shell import Command, Secret, chain, check_template, fill, placeholders, render

ROLES = ("cron", "db", "lb", "ledger", "migrate", "web", "worker")
HOOK_STAGES = (
    "preflight", "lock", "snapshot", "maintenance", "backup", "pull", "migrate",
    "cache_warm", "switch", "worker_restart", "gate", "finalize",
)
#: Values the engine provides to playbook templates (besides vars).
TEMPLATE_VALUES = (
    "env", "host", "address", "deploy_to", "shared_path", "current_path", "releases_path",
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
_JUMP_RE = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9._-]*@)?[A-Za-z0-9.:_-]+?(?::\d{1,5})?\Z")
_WAVE_RE = re.compile(r"(\d{1,3})%\Z")


def default_root() -> Path:
    """The repository root: the parent of the `deployer` package."""
    return Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- field types


def _fail(message: str) -> PydanticCustomError:
    return PydanticCustomError("deployer", "{message}", {"message": message})


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise _fail("expected a number, not true/false")
    return value


def _role(value: Any) -> str:
    if not isinstance(value, str):
        raise _fail("expected a string")
    if value not in ROLES:
        raise _fail(f"unknown role {value!r} (known: {', '.join(ROLES)})")
    return value


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


# ---------------------------------------------------------------- playbooks


def _step_input(value: Any) -> Any:
    if isinstance(value, str):
        return {"run": value}
    if not isinstance(value, dict):
        raise _fail("expected a command string or a mapping with run:")
    return value


class Step(_Model):
    """One command of a stage. `roles` is always filled after loading."""

    run: Name
    roles: Roles | None = None
    once: Bool = False
    timeout: Annotated[float, BeforeValidator(_no_bool), Strict(), Field(gt=0)] | None = None
    cwd: Name | None = None
    _where: str = PrivateAttr(default="")
    _short: bool = PrivateAttr(default=False)

    @property
    def where(self) -> str:
        """Where this step was defined, e.g. ``playbooks/demo.yaml: stages.build[0]``."""
        return self._where

    def templates(self) -> list[tuple[str, str]]:
        """(where, template) pairs of this step."""
        if self._short:
            return [(self._where, self.run)]
        out = [(f"{self._where}.run", self.run)]
        if self.cwd is not None:
            out.append((f"{self._where}.cwd", self.cwd))
        return out

    def command(self, values: Mapping[str, object]) -> Command:
        """The command to run, placeholders filled and quoted; prefixed by cd when cwd is set."""
        where = self._where if self._short else f"{self._where}.run"
        cmd = render(self.run, values, where=where)
        if self.cwd is not None:
            cd = render("cd " + self.cwd, values, where=f"{self._where}.cwd")
            cmd = chain(cd, cmd)
        return cmd.with_timeout(self.timeout)


StepIn = Annotated[Step, BeforeValidator(_step_input)]


class Maintenance(_Model):
    when: Literal["auto", "always", "never"] = "auto"
    on: list[StepIn] = []
    off: list[StepIn] = []
    #: the file whose presence means "in maintenance", relative to shared/ (status reads it)
    flag: RelPath | None = None

    @model_validator(mode="after")
    def _needs_off(self) -> Maintenance:
        if self.on and not self.off:
            raise _fail("'off' steps are required when 'on' steps are set")
        return self


class Migrate(_Model):
    run: StepIn
    version: StepIn
    pending: StepIn
    down: StepIn | None = None
    can_down: StepIn | None = None


class Stages(_Model):
    maintenance: Maintenance = Maintenance()
    build: list[StepIn] = []
    migrate: Migrate | None = None
    cache_warm: list[StepIn] = []
    reload: list[StepIn] = []
    worker_restart: list[StepIn] = []
    worker_verify: list[StepIn] = []
    finalize: list[StepIn] = []
    maintenance_tasks: list[StepIn] = []
    #: remote checks the gate runs on every host of a wave (exit 0 = pass)
    gate_checks: list[StepIn] = []


def _hook_stage(value: str) -> str:
    if value not in HOOK_STAGES:
        raise _fail(f"unknown stage {value!r} (valid: {', '.join(HOOK_STAGES)})")
    return value


HookStage = Annotated[str, AfterValidator(_hook_stage)]


class Hooks(_Model):
    before: dict[HookStage, list[StepIn]] = {}
    after: dict[HookStage, list[StepIn]] = {}


class Playbook(_Model):
    """A playbook: how one kind of application is built, migrated, reloaded."""

    name: Annotated[str, Strict(), AfterValidator(_slug("playbook name"))]
    description: str = ""
    defaults: dict[str, Any] = {}
    vars: Vars = {}
    shared_files: list[RelPath] = []
    shared_dirs: list[RelPath] = []
    #: the app's log, relative to the release; the gate counts error lines written since the switch
    log_file: RelPath | None = None
    stages: Stages = Stages()
    hooks: Hooks = Hooks()
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    def steps(self, stage: str, sub: str | None = None) -> list[Step]:
        """Steps of a stage: steps("build"), steps("maintenance", "on"), steps("migrate", "run")."""
        if stage == "maintenance":
            if sub not in ("on", "off"):
                raise ValueError("maintenance steps need sub='on' or sub='off'")
            return list(getattr(self.stages.maintenance, sub))
        if stage == "migrate":
            if sub not in Migrate.model_fields:
                subs = ", ".join(Migrate.model_fields)
                raise ValueError(f"migrate steps need sub= one of {subs}")
            step = getattr(self.stages.migrate, sub) if self.stages.migrate else None
            return [step] if step is not None else []
        if stage not in Stages.model_fields or sub is not None:
            raise ValueError(f"unknown stage {stage!r}")
        return list(getattr(self.stages, stage))

    def hooks_for(self, when: Literal["before", "after"], stage: str) -> list[Step]:
        """Hook steps run before/after an engine stage."""
        if stage not in HOOK_STAGES:
            raise ValueError(f"unknown hook stage {stage!r}")
        return list(getattr(self.hooks, when).get(stage, []))

    def all_steps(self) -> list[Step]:
        """Every step of the playbook (stages and hooks)."""
        out: list[Step] = []
        for name in Stages.model_fields:
            if name == "maintenance":
                out += self.stages.maintenance.on + self.stages.maintenance.off
            elif name == "migrate":
                if self.stages.migrate:
                    out += [s for sub in Migrate.model_fields
                            if (s := getattr(self.stages.migrate, sub)) is not None]
            else:
                out += getattr(self.stages, name)
        for hooks in (self.hooks.before, self.hooks.after):
            for steps in hooks.values():
                out += steps
        return out

    def check_templates(self, extra_vars: Iterable[str] = ()) -> list[str]:
        """Error lines for unknown placeholders (or quoted ones) in every template."""
        known = set(TEMPLATE_VALUES) | set(self.vars) | set(extra_vars)
        errors: list[str] = []
        for step in self.all_steps():
            for where, template in step.templates():
                try:
                    check_template(template, known, where=where)
                except ConfigError as exc:
                    errors.append(exc.message)
        return errors


def _label_steps(playbook: Playbook, label: str) -> None:
    """Record where each step was defined and fill in default roles."""

    def mark(step: Step | None, path: str, default_roles: list[str], short: bool) -> None:
        if step is None:
            return
        step._where = f"{label}: {path}"
        step._short = short
        if step.roles is None:
            step.roles = list(default_roles)

    def mark_list(steps: list[Step], raw: Any, path: str, roles: list[str]) -> None:
        for i, step in enumerate(steps):
            item = raw[i] if isinstance(raw, list) and i < len(raw) else None
            mark(step, f"{path}[{i}]", roles, isinstance(item, str))

    raw = playbook._raw
    stages_raw = raw.get("stages") or {}
    maint_raw = stages_raw.get("maintenance") or {}
    for sub in ("on", "off"):
        mark_list(getattr(playbook.stages.maintenance, sub), maint_raw.get(sub),
                  f"stages.maintenance.{sub}", DEFAULT_ROLES["maintenance"])
    if playbook.stages.migrate:
        mig_raw = stages_raw.get("migrate") or {}
        for sub in Migrate.model_fields:
            mark(getattr(playbook.stages.migrate, sub), f"stages.migrate.{sub}",
                 DEFAULT_ROLES["migrate"], isinstance(mig_raw.get(sub), str))
    for name in Stages.model_fields:
        if name not in ("maintenance", "migrate"):
            mark_list(getattr(playbook.stages, name), stages_raw.get(name), f"stages.{name}",
                      DEFAULT_ROLES[name])
    for when in ("before", "after"):
        hooks_raw = (raw.get("hooks") or {}).get(when) or {}
        for stage, steps in getattr(playbook.hooks, when).items():
            mark_list(steps, hooks_raw.get(stage), f"hooks.{when}.{stage}", ["web"])
    for step in playbook.stages.build:
        if step.cwd is None:
            step.cwd = "{release_path}"


# ---------------------------------------------------------------- inventories


class SSH(_Model):
    user: Annotated[str, AfterValidator(_user)] = "root"
    port: Port = 22
    key: Path | None = None
    key_data: Annotated[Any, PlainValidator(_env_only("DEPLOYER_SSH_KEY_DATA"))] = None
    known_hosts: Path | None = None
    known_hosts_data: Annotated[Any, PlainValidator(_env_only("DEPLOYER_KNOWN_HOSTS_DATA"))] = None
    jump: str | None = None
    connect_timeout: Annotated[Float, Field(gt=0)] = 10.0
    keepalive: Annotated[Float, Field(gt=0)] = 15.0
    command_timeout: Annotated[Float, Field(gt=0)] = 600.0

    @model_validator(mode="after")
    def _check(self) -> SSH:
        if self.jump is not None and not _JUMP_RE.match(self.jump):
            raise _fail(f"jump: expected user@host:port, got {self.jump!r}")
        return self


class Database(_Model):
    kind: Literal["postgresql"] = "postgresql"
    name: Name
    os_user: Annotated[str, AfterValidator(_user)] = "postgres"
    bin_dir: AbsPath | None = None
    socket_dir: AbsPath | None = None
    port: Port = 5432
    backup_dir: AbsPath = "/srv/backups"


class Health(_Model):
    url: Name
    timeout: Annotated[Float, Field(gt=0)] = 5.0
    interval: Annotated[Float, Field(ge=0)] = 1.0
    passes: Annotated[Int, Field(ge=1)] = 3
    max_attempts: Annotated[Int, Field(ge=1)] = 30
    expect_status: Annotated[Int, Field(ge=100, le=599)] = 200
    expect_json: dict[str, Any] | None = None
    headers: dict[str, str] = {}

    @model_validator(mode="after")
    def _check(self) -> Health:
        if self.max_attempts < self.passes:
            raise _fail(f"max_attempts ({self.max_attempts}) must be >= passes ({self.passes})")
        return self

    def templates(self) -> list[tuple[str, str]]:
        """(key path, template) pairs: the url and every string in expect_json."""
        out = [("health.url", self.url)]

        def walk(value: Any, path: str) -> None:
            if isinstance(value, str):
                out.append((path, value))
            elif isinstance(value, dict):
                for k, v in value.items():
                    walk(v, f"{path}.{k}")
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    walk(v, f"{path}[{i}]")

        walk(self.expect_json, "health.expect_json")
        return out

    def url_for(self, values: Mapping[str, object]) -> str:
        return fill(self.url, values, where="health.url")

    def expected_json(self, values: Mapping[str, object]) -> dict[str, Any] | None:
        """expect_json with its string values filled in (not shell-quoted)."""

        def walk(value: Any) -> Any:
            if isinstance(value, str):
                return fill(value, values, where="health.expect_json")
            if isinstance(value, dict):
                return {k: walk(v) for k, v in value.items()}
            if isinstance(value, list):
                return [walk(v) for v in value]
            return value

        return walk(self.expect_json) if self.expect_json is not None else None


class LoadBalancer(_Model):
    kind: Literal["haproxy"] = "haproxy"
    backend: Name
    socket: AbsPath
    server_name: Name = "{host}"


class HostEntry(_Model):
    name: Annotated[str, Strict(), AfterValidator(_slug("host name"))]
    address: Annotated[str, Strict(), AfterValidator(_address)]
    port: Port | None = None
    user: Annotated[str, AfterValidator(_user)] | None = None
    roles: Roles
    vars: Vars = {}


def _cron_expr(value: Any) -> str:
    try:
        return _cron.validate_expression(value)
    except (TypeError, ValueError) as exc:
        raise _fail(str(exc)) from None


def _duration(value: Any) -> Any:
    try:
        return _windows.parse_duration(value)
    except (TypeError, ValueError) as exc:
        raise _fail(str(exc)) from None


def _time_zone(value: Any) -> str:
    try:
        _windows.zone(value)
    except (TypeError, ValueError) as exc:
        raise _fail(str(exc)) from None
    return value


def _date_or_time(value: Any) -> date | datetime:
    if isinstance(value, (date, datetime)):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        except ValueError:
            pass
    raise _fail(f"expected a date (2026-12-20) or an ISO datetime, got {value!r}")


def _task(value: str) -> str:
    try:
        return _cron.validate_task(value)
    except ValueError as exc:
        raise _fail(str(exc)) from None


CronExpr = Annotated[str, PlainValidator(_cron_expr)]
TimeZone = Annotated[str, Strict(), AfterValidator(_time_zone)]


class WindowModel(_Model):
    """A deploy window: opens when `cron` fires in `timezone`, lasts `duration`."""

    name: Annotated[str, Strict(), AfterValidator(_slug("window name"))]
    cron: CronExpr
    duration: Annotated[Any, PlainValidator(_duration)]
    timezone: TimeZone = "UTC"

    def to_window(self) -> _windows.Window:
        return _windows.Window(self.name, self.cron, self.duration, self.timezone)


class FreezeModel(_Model):
    """No deploys from `start` to `end` (dates are whole days, both inclusive)."""

    start: Annotated[Any, PlainValidator(_date_or_time)]
    end: Annotated[Any, PlainValidator(_date_or_time)]
    reason: Annotated[str, Strict()] = ""
    timezone: TimeZone = "UTC"

    @model_validator(mode="after")
    def _check(self) -> FreezeModel:
        try:
            self.to_freeze()
        except ValueError as exc:
            raise _fail(str(exc)) from None
        return self

    def to_freeze(self) -> _windows.Freeze:
        return _windows.make_freeze(self.start, self.end, self.reason, self.timezone)


class ScheduleModel(_Model):
    """A job for cron: the Invoke task `command`, run with --env when `cron` fires."""

    name: Annotated[str, Strict(), AfterValidator(_slug("schedule name"))]
    cron: CronExpr
    command: Annotated[str, Strict(), AfterValidator(_task)]

    def to_schedule(self) -> _cron.Schedule:
        return _cron.Schedule(self.name, self.cron, self.command)


class RetentionModel(_Model):
    """Backup retention (see deployer.retention)."""

    all_days: Annotated[Int, Field(ge=0)] = 7
    daily_days: Annotated[Int, Field(ge=0)] = 16
    weekly_weeks: Annotated[Int, Field(ge=0)] = 8
    monthly_months: Annotated[Int, Field(ge=0)] = 4
    yearly_years: Annotated[Int, Field(ge=0)] = 2

    def to_policy(self) -> _retention.Policy:
        return _retention.Policy(**self.model_dump())


class Gate(_Model):
    """What a wave must pass beyond the health check: a bake with bounded probes, compared
    with absolute thresholds (seed 001) and, when old-release hosts remain, against them."""

    bake: Annotated[Float, Field(ge=0)] = 0.0
    probe_url: Name | None = None  # template; default: the health url
    probe_interval: Annotated[Float, Field(gt=0)] = 0.05
    probe_timeout: Annotated[Float, Field(gt=0)] = 5.0
    error_warn: Annotated[Float, Field(ge=0, le=1)] = 0.01
    error_fail: Annotated[Float, Field(ge=0, le=1)] = 0.05
    p95_warn_ms: Annotated[Float, Field(gt=0)] = 500.0
    p95_fail_ms: Annotated[Float, Field(gt=0)] = 2000.0
    min_samples: Annotated[Int, Field(ge=1)] = 20
    max_inconclusive: Annotated[Float, Field(ge=0, le=1)] = 0.2
    canary: Bool = True
    alpha: Annotated[Float, Field(gt=0, lt=1)] = 0.01
    min_effect_ms: Annotated[Float, Field(ge=0)] = 20.0
    min_effect_ratio: Annotated[Float, Field(ge=1)] = 1.2
    log_pattern: Name = "ERROR"


class SecretFile(_Model):
    """A secret file written into shared/ on every app host at each deploy, mode 0600 from
    creation; its content comes from an environment variable or a local file, never the YAML."""

    path: RelPath
    from_env: Name | None = None
    from_file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretFile:
        if (self.from_env is None) == (self.from_file is None):
            raise _fail("give exactly one of from_env, from_file")
        return self

    def read(self, environ: Mapping[str, str]) -> Secret:
        if self.from_env is not None:
            if self.from_env not in environ:
                raise ConfigError(f"secret_files: {self.path}: environment variable {self.from_env} is not set")
            return Secret(environ[self.from_env])
        try:
            return Secret(Path(self.from_file).read_text())
        except OSError as exc:
            raise ConfigError(f"secret_files: {self.path}: cannot read {self.from_file}: {exc.strerror}") from None


class RolloutWave(_Model):
    size: Wave
    bake: Annotated[Float, Field(ge=0)] | None = None  # default: gate.bake
    pause: Bool = False


class Inventory(_Model):
    """The merged settings of one environment (all layers), before cross-checks."""

    playbook: Annotated[str, Strict(), AfterValidator(_slug("playbook name"))]
    repo: Name
    deploy_to: AbsPath = "/srv/app"
    keep_releases: Annotated[Int, Field(ge=2)] = 5
    parallel: Annotated[Int, Field(ge=1, le=500)] = 10
    ssh: SSH = SSH()
    database: Database | None = None
    health: Health
    lb: LoadBalancer | None = None
    waves: Annotated[list[Wave], Field(min_length=1)] = ["100%"]
    rollout: list[RolloutWave] | None = None
    max_unavailable: Wave = "34%"
    notify: dict[str, Any] | None = None  # slack / webhook / email; secrets from env vars only
    secret_files: list[SecretFile] = []
    gate: Gate = Gate()
    lock_timeout: Annotated[Float, Field(ge=0)] = 0.0
    vars: Vars = {}
    hosts: Annotated[list[HostEntry], Field(min_length=1)]
    windows: list[WindowModel] = []
    freezes: list[FreezeModel] = []
    schedules: list[ScheduleModel] = []
    retention: RetentionModel = RetentionModel()
    maintenance_ttl: Annotated[Int, Field(ge=1)] = 900

    @model_validator(mode="after")
    def _last_wave(self) -> Inventory:
        if self.waves[-1] != "100%":
            raise _fail('waves: the last wave must be "100%"')
        if self.rollout is not None and (not self.rollout or self.rollout[-1].size != "100%"):
            raise _fail('rollout: the last wave must have size "100%"')
        return self

    def rollout_waves(self) -> list[RolloutWave]:
        if self.rollout is not None:
            return [RolloutWave(size=w.size, bake=self.gate.bake if w.bake is None else w.bake,
                                pause=w.pause) for w in self.rollout]
        return [RolloutWave(size=w, bake=self.gate.bake) for w in self.waves]


class Host(BaseModel):
    """A host of the fleet, with port and user resolved."""

    model_config = ConfigDict(frozen=True)

    name: str
    address: str
    port: int
    user: str
    roles: tuple[str, ...]
    vars: dict[str, str] = {}

    def has(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class Config:
    """A validated environment: inventory settings, hosts and playbook."""

    env: str
    root: Path
    inventory_path: Path
    playbook_path: Path
    playbook: Playbook
    repo: str
    deploy_to: str
    keep_releases: int
    parallel: int
    ssh: SSH
    database: Database | None
    health: Health
    lb: LoadBalancer | None
    waves: list[int | str]
    lock_timeout: float
    vars: dict[str, str]
    hosts: list[Host] = field(default_factory=list)
    windows: list[_windows.Window] = field(default_factory=list)
    freezes: list[_windows.Freeze] = field(default_factory=list)
    schedules: list[_cron.Schedule] = field(default_factory=list)
    retention: _retention.Policy = field(default_factory=_retention.Policy)
    #: seconds after which maintenance mode switches itself off (dead-man expiry)
    maintenance_ttl: int = 900
    rollout: list[RolloutWave] = field(default_factory=list)
    max_unavailable: int | str = "34%"
    gate: Gate = field(default_factory=Gate)
    notify: dict | None = None
    secret_files: list[SecretFile] = field(default_factory=list)

    @property
    def shared_path(self) -> str:
        return posixpath.join(self.deploy_to, "shared")

    @property
    def current_path(self) -> str:
        return posixpath.join(self.deploy_to, "current")

    @property
    def releases_path(self) -> str:
        return posixpath.join(self.deploy_to, "releases")

    def release_path(self, release: str) -> str:
        return posixpath.join(self.releases_path, release)

    def hosts_with(self, role: str) -> list[Host]:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        return [h for h in self.hosts if h.has(role)]

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise ConfigError(
            f"{_label(self.inventory_path, self.root)}: no host named {name!r} "
            f"(hosts: {', '.join(h.name for h in self.hosts)})"
        )

    @property
    def app_hosts(self) -> list[Host]:
        """Hosts that run the app's code: role web or worker."""
        return [h for h in self.hosts if h.has("web") or h.has("worker")]

    @property
    def web_hosts(self) -> list[Host]:
        return self.hosts_with("web")

    @property
    def migrate_host(self) -> Host | None:
        return next(iter(self.hosts_with("migrate")), None)

    @property
    def db_host(self) -> Host | None:
        return next(iter(self.hosts_with("db")), None)

    @property
    def lb_host(self) -> Host | None:
        return next(iter(self.hosts_with("lb")), None)

    @property
    def ledger_host(self) -> Host:
        """The first host with role ledger, else the migrate host, else the first host."""
        return next(iter(self.hosts_with("ledger")), None) or self.migrate_host or self.hosts[0]

    def template_values(self, host: Host | str, **extra: object) -> dict[str, object]:
        """Values for playbook templates on `host`; `extra` gives release, release_path, ..."""
        if isinstance(host, str):
            host = self.host(host)
        values: dict[str, object] = {
            "env": self.env,
            "host": host.name,
            "address": host.address,
            "deploy_to": self.deploy_to,
            "shared_path": self.shared_path,
            "current_path": self.current_path,
            "releases_path": self.releases_path,
        }
        values.update(self.playbook.vars)
        values.update(self.vars)
        values.update(host.vars)
        values.update(extra)
        return values

    def health_values(self, host: Host, release: str) -> dict[str, object]:
        """Values for health templates: address, host, release, port (the host's SSH port)."""
        return {"address": host.address, "host": host.name, "release": release, "port": host.port}

    def lb_server_name(self, host: Host) -> str:
        if self.lb is None:
            raise ValueError("no lb configured")
        return fill(self.lb.server_name, {"host": host.name, "address": host.address},
                    where="lb.server_name")


# ---------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate mapping keys (PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                duplicate = key in seen
            except TypeError:
                duplicate = False
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            if not isinstance(key, list | dict):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 booleans: only true/false.  YAML 1.1 would read `on:`/`off:` (maintenance steps),
# `yes` and `no` as booleans.
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _label(path: Path, root: Path) -> str:
    """`path` relative to root when inside it, else absolute."""
    try:
        return path.absolute().relative_to(root.absolute()).as_posix()
    except ValueError:
        return str(path.absolute())


def _read_yaml(path: Path, label: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = exc.problem or exc.context or "unreadable"
        raise ConfigError(f"{label}: {line}invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping at top level")
    return data


def _key_path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_SIMPLE_PROBLEMS = {
    "missing": "required key is missing",
    "extra_forbidden": "unknown key",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "string_type": "expected a string",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "dict_type": "expected a mapping",
    "mapping_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "path_type": "expected a path",
}


def _problem(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind in _SIMPLE_PROBLEMS:
        return _SIMPLE_PROBLEMS[kind]
    if kind == "literal_error":
        return "expected one of: " + ", ".join(re.findall(r"'([^']*)'", str(ctx["expected"])))
    bounds = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
              "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}
    if kind in bounds:
        op, key = bounds[kind]
        return f"must be {op} {ctx[key]}"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty" if ctx.get("min_length") == 1 else error["msg"]
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    return str(error["msg"])


@dataclass
class _Layer:
    """One source of settings: where it came from and its (nested) data."""

    kind: Literal["defaults", "inventory", "environment", "overrides"]
    source: str  # label of the file, "environment" or "overrides"
    data: dict[str, Any]
    prefix: str = ""  # e.g. "defaults." for playbook defaults
    env_names: dict[tuple[str, ...], str] = field(default_factory=dict)

    def has(self, loc: tuple[str | int, ...]) -> bool:
        node: Any = self.data
        for part in loc:
            in_dict = isinstance(node, dict) and part in node
            in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
            if in_dict or in_list:
                node = node[part]
            else:
                return False
        return True

    def message(self, loc: tuple[str | int, ...], problem: str) -> str:
        if self.env_names:
            name = self.env_names.get(tuple(str(p) for p in loc))
            if name:
                return f"{self.source}: {name}: {problem}"
        path = _key_path(loc)
        return f"{self.source}: {self.prefix}{path}: {problem}" if path else \
            f"{self.source}: {problem}"


def _blame(layers: list[_Layer], loc: tuple[str | int, ...]) -> _Layer:
    """The highest layer that set `loc` (or its nearest parent); the inventory by default."""
    for depth in range(len(loc), 0, -1):
        for layer in reversed(layers):
            if layer.has(loc[:depth]):
                return layer
    return _inventory_layer(layers)


def _inventory_layer(layers: list[_Layer]) -> _Layer:
    return next(la for la in layers if la.kind == "inventory")


def _errors(exc: ValidationError, layers: list[_Layer]) -> list[str]:
    lines = []
    for error in exc.errors():
        loc = tuple(p for p in error["loc"] if p != "[key]")
        lines.append(_blame(layers, loc).message(loc, _problem(error)))
    return lines


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge mappings; any other value in `top` replaces the one in `base`."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make ssh.key, ssh.known_hosts and a ./ or ../ repo absolute, relative to `base`."""
    data = dict(data)
    ssh = data.get("ssh")
    if isinstance(ssh, dict):
        ssh = dict(ssh)
        for key in ("key", "known_hosts"):
            if isinstance(ssh.get(key), str) and ssh[key]:
                ssh[key] = os.path.normpath(base / os.path.expanduser(ssh[key]))
        data["ssh"] = ssh
    repo = data.get("repo")
    if isinstance(repo, str) and repo.startswith(("./", "../")):
        data["repo"] = os.path.normpath(base / repo)
    return data


def _dotted(overrides: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _environment_layer(environ: Mapping[str, str]) -> _Layer:
    data: dict[str, Any] = {}
    names: dict[tuple[str, ...], str] = {}
    for var, path in ENV_VARS.items():
        value = environ.get(var)
        if not value:
            continue
        if var in ("DEPLOYER_SSH_KEY_DATA", "DEPLOYER_KNOWN_HOSTS_DATA"):
            parsed: Any = Secret(value)
        elif var in ("DEPLOYER_SSH_KEY", "DEPLOYER_KNOWN_HOSTS"):
            parsed = os.path.abspath(os.path.expanduser(value))
        elif var == "DEPLOYER_PARALLEL":
            parsed = int(value) if value.strip().isdigit() else value
        else:
            parsed = value
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = parsed
        names[path] = var
    # the *_DATA variables win over the path variables
    if "DEPLOYER_SSH_KEY_DATA" in names.values():
        data["ssh"]["key"] = None
    if "DEPLOYER_KNOWN_HOSTS_DATA" in names.values():
        data["ssh"]["known_hosts"] = None
    return _Layer("environment", "environment", data, env_names=names)


def known_envs(root: Path | None = None) -> list[str]:
    """Environment names that have an inventory in <root>/hosts."""
    hosts = (root or default_root()) / "hosts"
    return sorted(p.stem for p in hosts.glob("*.yaml") if _ENV_RE.match(p.stem))


def known_playbooks(root: Path | None = None) -> list[str]:
    """Playbook names in <root>/playbooks."""
    return sorted(p.stem for p in ((root or default_root()) / "playbooks").glob("*.yaml"))


def load_playbook(path: Path, *, root: Path | None = None,
                  extra_vars: Iterable[str] | None = None) -> Playbook:
    """Load and validate one playbook file; with `extra_vars`, also check every placeholder."""
    root = root or default_root()
    label = _label(path, root)
    data = _read_yaml(path, label)
    data.setdefault("name", path.stem)
    try:
        playbook = Playbook.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_errors(exc, [_Layer("inventory", label, data)]))) from None
    if playbook.name != path.stem:
        raise ConfigError(f"{label}: name: {playbook.name!r} does not match the file name "
                          f"{path.stem!r}")
    playbook._raw = data
    _label_steps(playbook, label)
    if extra_vars is not None:
        errors = playbook.check_templates(extra_vars)
        if errors:
            raise ConfigError("\n".join(errors))
    return playbook


def _resolve_root(root: Path | None, environ: Mapping[str, str]) -> Path:
    if root is not None:
        return Path(root)
    if environ.get("DEPLOYER_ROOT"):
        return Path(environ["DEPLOYER_ROOT"])
    return default_root()


def load_config(env: str, *, root: Path | None = None, inventory: Path | None = None,
                overrides: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] = os.environ) -> Config:
    """Load, layer and validate the configuration of environment `env`."""
    if not isinstance(env, str) or not _ENV_RE.match(env):
        raise ConfigError(f"environment {env!r}: expected lowercase letters, digits, _ and -, "
                          "starting with a letter")
    root = _resolve_root(root, environ)
    inv_path = Path(inventory) if inventory is not None else root / "hosts" / f"{env}.yaml"
    inv_label = _label(inv_path, root)
    if not inv_path.is_file():
        if inventory is not None:
            raise ConfigError(f"{inv_label}: no such inventory file")
        raise ConfigError(f"{inv_label}: no such inventory (known envs: "
                          f"{', '.join(known_envs(root)) or 'none'})")
    inv_data = _read_yaml(inv_path, inv_label)

    playbook: Playbook | None = None
    pb_path = root / "playbooks" / "unknown.yaml"
    layers: list[_Layer] = []
    name = inv_data.get("playbook")
    if isinstance(name, str) and _HOST_RE.match(name):
        pb_path = root / "playbooks" / f"{name}.yaml"
        if not pb_path.is_file():
            raise ConfigError(f"{inv_label}: playbook: no such playbook {name!r} (known: "
                              f"{', '.join(known_playbooks(root)) or 'none'})")
        playbook = load_playbook(pb_path, root=root)
        layers.append(_Layer("defaults", _label(pb_path, root),
                             _resolve_paths(playbook.defaults, pb_path.parent), "defaults."))
    inv_dir = inv_path.parent.absolute()
    layers.append(_Layer("inventory", inv_label, _resolve_paths(inv_data, inv_dir)))
    layers.append(_environment_layer(environ))
    cli = _resolve_paths(_dotted(overrides or {}), Path.cwd())
    layers.append(_Layer("overrides", "overrides", cli))

    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _merge(merged, layer.data)
    try:
        settings = Inventory.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError("\n".join(_errors(exc, layers))) from None
    assert playbook is not None  # a valid inventory names an existing playbook

    errors = _cross_check(settings, playbook, layers)
    if settings.notify:
        from .notify import NotifyConfigError, notifiers_from_config

        try:
            notifiers_from_config(settings.notify, environ)
        except NotifyConfigError as exc:
            errors.append(f"{_label(inv_path, root)}: {exc}")
    if errors:
        raise ConfigError("\n".join(errors))
    hosts = [
        Host(name=h.name, address=h.address, port=h.port or settings.ssh.port,
             user=h.user or settings.ssh.user, roles=tuple(h.roles), vars=dict(h.vars))
        for h in settings.hosts
    ]
    return Config(
        env=env, root=root, inventory_path=inv_path, playbook_path=pb_path, playbook=playbook,
        repo=settings.repo, deploy_to=settings.deploy_to, keep_releases=settings.keep_releases,
        parallel=settings.parallel, ssh=settings.ssh, database=settings.database,
        health=settings.health, lb=settings.lb, waves=list(settings.waves),
        lock_timeout=settings.lock_timeout, vars=dict(settings.vars), hosts=hosts,
        windows=[w.to_window() for w in settings.windows],
        freezes=[f.to_freeze() for f in settings.freezes],
        schedules=[s.to_schedule() for s in settings.schedules],
        retention=settings.retention.to_policy(), maintenance_ttl=settings.maintenance_ttl,
        rollout=settings.rollout_waves(), max_unavailable=settings.max_unavailable,
        gate=settings.gate, notify=settings.notify, secret_files=list(settings.secret_files),
    )


def _cross_check(settings: Inventory, playbook: Playbook, layers: list[_Layer]) -> list[str]:
    """Checks that span several keys or files; returns error lines."""
    inv = _inventory_layer(layers)
    errors: list[str] = []

    def err(loc: tuple[str | int, ...], problem: str) -> None:
        errors.append(_blame(layers, loc).message(loc, problem))

    names: dict[str, int] = {}
    endpoints: dict[tuple[str, int], int] = {}
    for i, h in enumerate(settings.hosts):
        if h.name in names:
            err(("hosts", i, "name"),
                f"duplicate host name {h.name!r} (also hosts[{names[h.name]}])")
        names.setdefault(h.name, i)
        endpoint = (h.address, h.port or settings.ssh.port)
        if endpoint in endpoints:
            err(("hosts", i, "address"), f"duplicate address {h.address}:{endpoint[1]} "
                f"(also hosts[{endpoints[endpoint]}])")
        endpoints.setdefault(endpoint, i)

    def role_hosts(role: str) -> list[int]:
        return [i for i, h in enumerate(settings.hosts) if role in h.roles]

    migrators = role_hosts("migrate")
    if playbook.stages.migrate is not None and not migrators:
        errors.append(f"{inv.source}: hosts: no host has role 'migrate' (playbook "
                      f"{playbook.name} has a migrate stage; exactly one host needs it)")
    for role, needed, why in (("db", settings.database is not None, "'database' is set"),
                              ("lb", settings.lb is not None, "'lb' is set")):
        if needed and not role_hosts(role):
            errors.append(f"{inv.source}: hosts: no host has role {role!r} (required because "
                          f"{why})")
    for role in ("migrate", "db", "lb"):
        found = role_hosts(role)
        for i in found[1:]:
            err(("hosts", i, "roles"), f"role {role!r} is already on hosts[{found[0]}]; "
                "at most one host may have it")

    for key in ("key", "known_hosts"):
        path = getattr(settings.ssh, key)
        if path is not None and not path.is_file():
            err(("ssh", key), f"file not found: {path}")
    if settings.ssh.known_hosts is None and settings.ssh.known_hosts_data is None:
        err(("ssh", "known_hosts"), "required key is missing (host keys are always checked; "
            "or set DEPLOYER_KNOWN_HOSTS_DATA)")

    for where, template in settings.health.templates():
        _check_plain(template, set(HEALTH_VALUES), where, layers, errors)
    if settings.lb is not None:
        _check_plain(settings.lb.server_name, set(LB_VALUES), "lb.server_name", layers, errors)

    for key in ("windows", "schedules"):
        seen: dict[str, int] = {}
        for i, item in enumerate(getattr(settings, key)):
            if item.name in seen:
                err((key, i, "name"),
                    f"duplicate name {item.name!r} (also {key}[{seen[item.name]}])")
            seen.setdefault(item.name, i)

    shared = set.intersection(*(set(h.vars) for h in settings.hosts))
    errors += playbook.check_templates(set(settings.vars) | shared)
    return errors


def _check_plain(template: str, known: set[str], where: str, layers: list[_Layer],
                 errors: list[str]) -> None:
    """Check placeholders of a non-shell template (quotes allowed)."""
    loc = tuple(int(p) if p.isdigit() else p for p in re.split(r"\.|\[|\]\.?", where) if p)
    try:
        unknown = sorted(placeholders(template) - known)
    except ConfigError as exc:
        errors.append(_blame(layers, loc).message(loc, exc.message))
        return
    if unknown:
        errors.append(_blame(layers, loc).message(
            loc, f"unknown placeholder {{{unknown[0]}}}; known: {', '.join(sorted(known))}"))
