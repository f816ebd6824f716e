"""Loading an environment: the inventory, its playbook, the layers, groups and the checks
that span several keys or files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from deployer.errors import ConfigError
from deployer.shell import placeholders
from deployer.sshconfig import Defaults, Resolver, SSHConfigError, read_config

from .inventory import _NOTIFY_REFUSED, NOTIFY_KEYS, Inventory
from .layers import (
    _blame,
    _dotted,
    _environment_layer,
    _errors,
    _inventory_layer,
    _Layer,
    _merge,
    _resolve_paths,
    _unknown_key,
)
from .model import Config, Host
from .playbook import Playbook
from .project import _loc, _playbook_path, known_envs, load_playbook, project_root
from .reading import _interpolate, _read_yaml
from .types import _ENV_RE, _HOST_RE, HEALTH_VALUES, LB_VALUES, _is_path, _label


@dataclass(frozen=True)
class Loaded:
    """A loaded environment with where its values came from: the runtime `config`, the merged
    and validated `settings` (groups applied) and the `layers` they were merged from."""

    config: Config
    settings: Inventory
    layers: tuple[_Layer, ...]


def load_config(env: str, *, root: Path | None = None, inventory: Path | None = None,
                overrides: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] = os.environ) -> Config:
    """Load, layer and validate the configuration of environment `env`.

    `root` defaults to `project_root()`; `overrides` maps dotted keys to values (``--set``),
    string values being read as YAML."""
    return load_layered(env, root=root, inventory=inventory, overrides=overrides,
                        environ=environ).config


def load_layered(env: str, *, root: Path | None = None, inventory: Path | None = None,
                 overrides: Mapping[str, Any] | None = None,
                 environ: Mapping[str, str] = os.environ) -> Loaded:
    """`load_config`, keeping the settings and their layers (for `config show`)."""
    if not isinstance(env, str) or not _ENV_RE.match(env):
        raise ConfigError(f"environment {env!r}: expected lowercase letters, digits, _ and -, "
                          "starting with a letter")
    root = project_root(root, environ)
    inv_path = Path(inventory) if inventory is not None else root / "hosts" / f"{env}.yaml"
    inv_label = _label(inv_path, root)
    if not inv_path.is_file():
        if inventory is not None:
            raise ConfigError(f"{inv_label}: no such inventory file")
        if not (root / "hosts").is_dir():
            raise ConfigError(f"{inv_label}: no such inventory: no hosts/ in {root} or above "
                              "(`deployer init` writes one; or --root DIR, $DEPLOYER_ROOT)")
        raise ConfigError(f"{inv_label}: no such inventory (known envs: "
                          f"{', '.join(known_envs(root)) or 'none'})")
    inv_data = _interpolate(_read_yaml(inv_path, inv_label), environ, inv_label)
    inv_dir = inv_path.parent.absolute()

    cli = _resolve_paths(_dotted(overrides or {}), Path.cwd())

    playbook: Playbook | None = None
    pb_path = root / "playbooks" / "unknown.yaml"
    layers: list[_Layer] = []
    ref, base, where = inv_data.get("playbook"), inv_dir, f"{inv_label}: playbook"
    if "playbook" in cli:
        ref, base, where = cli["playbook"], Path.cwd(), "--set playbook"
    if isinstance(ref, str) and (_is_path(ref) or _HOST_RE.match(ref)):
        pb_path = _playbook_path(ref, root, base, where)
        playbook = load_playbook(pb_path, root=root)
        for label, data, directory in playbook._sources:
            defaults = data.get("defaults")
            if isinstance(defaults, dict):
                layers.append(_Layer("defaults", label, _resolve_paths(defaults, directory),
                                     "defaults."))
    layers.append(_Layer("inventory", inv_label, _resolve_paths(inv_data, inv_dir)))
    layers.append(_environment_layer(environ))
    layers.append(_Layer("overrides", "--set", cli))

    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _merge(merged, layer.data)
    try:
        settings = Inventory.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError("\n".join(_errors(exc, layers, Inventory))) from None
    assert playbook is not None  # a valid inventory names an existing playbook

    errors = _apply_groups(settings, layers)
    errors += _cross_check(settings, playbook, layers)
    if settings.notify:
        from deployer.notify import NotifyConfigError, notifiers_from_config

        try:
            notifiers_from_config(settings.notify, environ)
        except NotifyConfigError as exc:
            errors.append(f"{_label(inv_path, root)}: {exc}")
    hosts = _resolve_hosts(settings, layers, errors)
    if errors:
        raise ConfigError("\n".join(errors))
    return Loaded(config=Config(
        env=env, root=root, inventory_path=inv_path, playbook_path=pb_path, playbook=playbook,
        repo=settings.repo, deploy_to=settings.deploy_to, keep_releases=settings.keep_releases,
        parallel=settings.parallel, ssh=settings.ssh, database=settings.database,
        health=settings.health, lb=settings.lb, waves=list(settings.waves),
        lock_timeout=settings.lock_timeout, vars=dict(settings.vars), hosts=hosts,
        windows=[w.to_window() for w in settings.windows],
        freezes=[f.to_freeze() for f in settings.freezes],
        schedules=[s.to_schedule() for s in settings.schedules],
        retention=settings.retention.to_policy(), maintenance_ttl=settings.maintenance_ttl,
        file_backups=tuple(settings.backup.files), file_backup_exclude=tuple(settings.backup.exclude),
        rollout=settings.rollout_waves(), max_unavailable=settings.max_unavailable,
        gate=settings.gate, notify=settings.notify, secret_files=list(settings.secret_files),
        state=settings.state, artifact=settings.artifact,
    ), settings=settings, layers=tuple(layers))


def _resolve_hosts(settings: Inventory, layers: list[_Layer], errors: list[str]) -> list[Host]:
    """The runtime hosts, with the ssh config applied (deployer.sshconfig: aliases, HostName,
    User, Port, ProxyJump, IdentityFile, HostKeyAlias); problems are added to `errors`."""
    ssh = settings.ssh
    given = ssh.model_fields_set
    try:
        config = read_config(str(ssh.config) if ssh.config is not None else None)
    except SSHConfigError as exc:
        loc = ("ssh", "config")
        errors.append(_blame(layers, loc).message(loc, str(exc)) if ssh.config is not None else str(exc))
        config = None
    known_given = ssh.known_hosts is not None or ssh.known_hosts_data is not None
    resolver = Resolver(config, Defaults(user=ssh.user, user_given="user" in given, port=ssh.port,
                                         port_given="port" in given, jump=ssh.jump,
                                         known_hosts_given=known_given))
    hosts: list[Host] = []
    missing_known: list[str] | None = None
    for i, h in enumerate(settings.hosts):
        try:
            ep = resolver.host(h.name, h.address, port=h.port, user=h.user, jump=h.jump)
        except SSHConfigError as exc:
            loc = ("hosts", i, "jump") if h.jump is not None else ("hosts", i, "address")
            errors.append(_blame(layers, loc).message(loc, str(exc)))
            continue
        for hop in (*ep.jumps, ep):
            if not known_given and missing_known is None and not any(os.path.isfile(f) for f in hop.known_hosts):
                missing_known = list(hop.known_hosts)
        hosts.append(Host(name=h.name, address=ep.address, port=ep.port, user=ep.user,
                          roles=tuple(h.roles or ()), vars=dict(h.vars), endpoint=ep))
    if missing_known is not None:
        loc = ("ssh", "known_hosts")
        errors.append(_blame(layers, loc).message(loc, (
            f"not set, and no default file exists ({', '.join(missing_known)}); host keys are always "
            "checked: set it, or DEPLOYER_KNOWN_HOSTS_DATA")))
    return hosts


def _apply_groups(settings: Inventory, layers: list[_Layer]) -> list[str]:
    """Add each group's roles to its hosts and put its vars below theirs (groups in the
    order written; a later group wins a var two groups set); returns error lines."""
    errors: list[str] = []

    def err(loc: tuple[str | int, ...], problem: str) -> None:
        errors.append(_blame(layers, loc).message(loc, problem))

    index: dict[str, int] = {}
    for i, h in enumerate(settings.hosts):
        index.setdefault(h.name, i)
    roles: dict[int, list[str]] = {i: [] for i in range(len(settings.hosts))}
    group_vars: dict[int, dict[str, str]] = {i: {} for i in range(len(settings.hosts))}
    for name, group in settings.groups.items():
        for j, host in enumerate(group.hosts):
            if host not in index:
                err(("groups", name, "hosts", j), f"unknown host {host!r} (hosts: "
                    f"{', '.join(h.name for h in settings.hosts)})")
                continue
            roles[index[host]] += group.roles
            group_vars[index[host]].update(group.vars)
    for i, h in enumerate(settings.hosts):
        combined = list(h.roles or [])
        combined += [r for r in dict.fromkeys(roles[i]) if r not in combined]
        if not combined:
            err(("hosts", i, "roles"), "required key is missing (or put the host in a group "
                "that has roles)")
        h.roles = combined
        h.vars = {**group_vars[i], **h.vars}
    return errors


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
        return [i for i, h in enumerate(settings.hosts) if role in (h.roles or ())]

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

    build = settings.artifact.build
    if build not in ("each", "first"):
        app = [h.name for h in settings.hosts if {"web", "worker"} & set(h.roles or ())]
        if build not in app:
            err(("artifact", "build"), f"expected each, first or the name of an app host (one with "
                f"role web or worker: {', '.join(app) or 'none'}), not {build!r}")

    if settings.artifact.store == "bucket" and settings.state.backend != "s3":
        err(("artifact", "store"), "bucket needs the S3 state backend (state.backend: s3); "
            "without it, artifacts go host to host (store: host)")

    for key in ("key", "known_hosts"):
        path = getattr(settings.ssh, key)
        if path is not None and not path.is_file():
            err(("ssh", key), f"file not found: {path}")

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

    for section, conf in (settings.notify or {}).items():
        if section in NOTIFY_KEYS and isinstance(conf, Mapping):
            for key in conf:
                if key not in NOTIFY_KEYS[section] and key not in _NOTIFY_REFUSED.get(section, ()):
                    err(("notify", section, key), _unknown_key(str(key), NOTIFY_KEYS[section]))

    shared = set.intersection(*(set(h.vars) for h in settings.hosts))
    errors += playbook.check_templates(set(settings.vars) | shared)
    return errors


def _check_plain(template: str, known: set[str], where: str, layers: list[_Layer],
                 errors: list[str]) -> None:
    """Check placeholders of a non-shell template (quotes allowed)."""
    loc = _loc(where)
    try:
        unknown = sorted(placeholders(template) - known)
    except ConfigError as exc:
        errors.append(_blame(layers, loc).message(loc, exc.message))
        return
    if unknown:
        errors.append(_blame(layers, loc).message(
            loc, f"unknown placeholder {{{unknown[0]}}}; known: {', '.join(sorted(known))}"))
