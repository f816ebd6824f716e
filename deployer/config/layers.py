"""Layering: playbook defaults < inventory < environment < overrides; merging, blaming the
layer that set a bad value, and turning pydantic errors into ``file: key path: problem`` lines."""

from __future__ import annotations

import difflib
import os
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from deployer.errors import ConfigError
from deployer.shell import Secret

from .reading import _yaml_value
from .types import ENV_VARS, _key_path

_SET_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


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
        if self.kind == "overrides":
            return f"--set {path}: {problem}"
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


def _errors(exc: ValidationError, layers: list[_Layer], model: type[BaseModel]) -> list[str]:
    """One line per error of validating `model`, blamed on the layer that set the value."""
    lines = []
    for error in exc.errors():
        loc = tuple(p for p in error["loc"] if p != "[key]")
        problem = _problem(error)
        if error["type"] == "extra_forbidden" and loc:
            problem = _unknown_key(str(loc[-1]), _known_keys(model, loc[:-1]))
        lines.append(_blame(layers, loc).message(loc, problem))
    return lines


def _unknown_key(key: str, known: Iterable[str]) -> str:
    """``unknown key``, with the closest known key when one is close enough."""
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"


def _known_keys(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The keys of the model found at `loc` under `model` (none when there is no model)."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field_info = tp.model_fields.get(str(part))
            if field_info is None:
                return []
            tp = field_info.annotation
        elif origin is list and isinstance(part, int):
            tp = typing.get_args(tp)[0]
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        else:
            return []
    tp = _unwrap(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _unwrap(tp: Any) -> Any:
    """The type inside Annotated[...] and X | None."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


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
    """Make ssh.key, ssh.known_hosts, ssh.config and a ./ or ../ repo absolute, relative to `base`."""
    data = dict(data)
    ssh = data.get("ssh")
    if isinstance(ssh, dict):
        ssh = dict(ssh)
        for key in ("key", "known_hosts", "config"):
            if isinstance(ssh.get(key), str) and ssh[key] and ssh[key].strip().lower() != "none":
                ssh[key] = os.path.normpath(base / os.path.expanduser(ssh[key]))
        data["ssh"] = ssh
    repo = data.get("repo")
    if isinstance(repo, str) and repo.startswith(("./", "../")):
        data["repo"] = os.path.normpath(base / repo)
    return data


def parse_set(items: Iterable[str]) -> dict[str, str]:
    """``--set key=value`` arguments as a mapping for `load_config(overrides=...)`."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item}: expected key=value, e.g. --set parallel=5")
        out[key.strip()] = value
    return out


def _dotted(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Nested data from dotted keys (``health.passes``); string values are read as YAML and
    None values (an option not given) are skipped."""
    out: dict[str, Any] = {}
    owner: dict[tuple[str, ...], str] = {}  # a key path set as a value -> the --set key
    for key, value in overrides.items():
        if value is None:
            continue
        parts = tuple(key.split("."))
        if not all(_SET_KEY_RE.match(p) for p in parts):
            raise ConfigError(f"--set {key}: invalid key (use names joined by dots, "
                              "e.g. health.passes)")
        for path, other in owner.items():
            if path[:len(parts)] == parts or parts[:len(path)] == path:
                raise ConfigError(f"--set {key}: conflicts with --set {other}")
        owner[parts] = key
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _yaml_value(value) if isinstance(value, str) else value
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

