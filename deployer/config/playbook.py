"""Playbooks (playbooks/<name>.yaml): how one kind of application is built, migrated, reloaded."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, PrivateAttr, Strict, model_validator

from deployer.errors import ConfigError
from deployer.shell import Command, chain, check_template, placeholders, privileged_commands, render

from .types import (
    DEFAULT_ROLES,
    HOOK_STAGES,
    RUN_VALUES,
    TEMPLATE_VALUES,
    Bool,
    Name,
    RelPath,
    Roles,
    Vars,
    _fail,
    _Model,
    _no_bool,
    _slug,
)


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

    def privileged(self) -> list[tuple[str, str]]:
        """(where, command template) of each command this step runs as root through `{sudo}`."""
        return [(where, cmd) for where, template in self.templates()
                for cmd in privileged_commands(template, where=where)]

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
    #: the 'on' steps stop the workers (writers fenced): a deploy restarts them only when
    #: maintenance ends, so a failed gate can still restore the backup without losing a write
    hold_workers: Bool = False

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


class Preflight(_Model):
    """What `preflight` checks of the app itself (besides SSH, disk, tools, lock, window)."""

    #: the shared .env's APP_DEBUG (not true) and APP_ENV (production): Laravel's and the demo's
    #: keys; its mode (0600) and that git does not track it are checked whenever `.env` is shared
    app_env: Bool = True
    #: the app's own checks (exit 0 passes; the last output line is the detail), roles `web`
    checks: list[StepIn] = []


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
    preflight: Preflight = Preflight()
    hooks: Hooks = Hooks()
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)
    #: (label, data, directory) of each file of the playbook, the extended ones first
    _sources: list[tuple[str, dict[str, Any], Path]] = PrivateAttr(default_factory=list)

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

    def in_shared_dir(self, rel: str) -> str | None:
        """The shared dir `rel` lies under (then every release sees the same file), else None."""
        return next((d for d in self.shared_dirs if rel == d or rel.startswith(d.rstrip("/") + "/")), None)

    def per_release(self, rel: str) -> bool:
        """A shared file each release links (`shared_files`), so a release may hold its own copy
        instead (a secret file): switching releases switches the copies."""
        return rel in self.shared_files and self.in_shared_dir(rel) is None

    def hooks_for(self, when: Literal["before", "after"], stage: str) -> list[Step]:
        """Hook steps run before/after an engine stage."""
        if stage not in HOOK_STAGES:
            raise ValueError(f"unknown hook stage {stage!r}")
        return list((self.hooks.before if when == "before" else self.hooks.after).get(stage, []))

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
        out += self.preflight.checks
        for hooks in (self.hooks.before, self.hooks.after):
            for steps in hooks.values():
                out += steps
        return out

    def privileged(self) -> list[tuple[Step, str]]:
        """(step, command template) of every command the playbook runs as root through
        `{sudo}`: what each host's sudo rules must allow (for the step's roles)."""
        return [(step, cmd) for step in self.all_steps() for _, cmd in step.privileged()]

    def check_templates(self, extra_vars: Iterable[str] = ()) -> list[str]:
        """Error lines for unknown placeholders (or quoted ones) in every template."""
        known = set(TEMPLATE_VALUES) | set(self.vars) | set(extra_vars)
        errors: list[str] = []
        for step in self.all_steps():
            for where, template in step.templates():
                try:
                    check_template(template, known, where=where)
                    _check_privileged(template, where)
                except ConfigError as exc:
                    errors.append(exc.message)
        return errors


def _check_privileged(template: str, where: str) -> None:
    """A command run through `{sudo}` must be the same at every run: a sudo rule allows exact
    commands, so it cannot use a value that changes per deploy (`{release}`, ...)."""
    for cmd in privileged_commands(template, where=where):
        varying = sorted(placeholders(cmd) & set(RUN_VALUES))
        if varying:
            raise ConfigError(
                f"{where}: {{sudo}} runs `{cmd}`, which uses "
                + ", ".join("{" + v + "}" for v in varying)
                + ": it changes at every deploy and no sudo rule can allow it; run as root only "
                "commands whose words are fixed (a path under {current_path}, a var)")


def _label_steps(playbook: Playbook, label: str | Callable[[str], str]) -> None:
    """Record where each step was defined and fill in default roles.

    `label` is the playbook file's label, or a function giving the label of the file that
    defined a key path (``stages.build[0]``) when the playbook extends others."""

    def mark(step: Step | None, path: str, default_roles: list[str], short: bool) -> None:
        if step is None:
            return
        step._where = f"{label if isinstance(label, str) else label(path)}: {path}"
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
    mark_list(playbook.preflight.checks, (raw.get("preflight") or {}).get("checks"),
              "preflight.checks", ["web"])
    for when in ("before", "after"):
        hooks_raw = (raw.get("hooks") or {}).get(when) or {}
        for stage, steps in getattr(playbook.hooks, when).items():
            mark_list(steps, hooks_raw.get(stage), f"hooks.{when}.{stage}", ["web"])
    for step in playbook.stages.build:
        if step.cwd is None:
            step.cwd = "{release_path}"

