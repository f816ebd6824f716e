"""Reading YAML files and loading playbooks and environments (with cross-file checks)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from deployer.errors import ConfigError
from deployer.shell import placeholders

from .inventory import Inventory
from .layers import (
    _blame,
    _dotted,
    _environment_layer,
    _errors,
    _inventory_layer,
    _Layer,
    _merge,
    _resolve_paths,
)
from .model import Config, Host
from .playbook import Playbook, _label_steps
from .types import _ENV_RE, _HOST_RE, HEALTH_VALUES, LB_VALUES, _label, default_root


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
        from deployer.notify import NotifyConfigError, notifiers_from_config

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
