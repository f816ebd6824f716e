"""`config show`: every merged setting of an environment with the layer that set it (pure).

A value's source is the highest layer holding that exact key: a playbook's `defaults:`, the
inventory, an environment variable, a `--set`; a value no layer holds is the built-in default.
Secrets never show: a `Secret` (the *_DATA environment variables), a key naming a secret
(password, token, secret, ...: except the `*_env` and `*_file` keys, which only name where the
secret is), an inline webhook URL and its headers are masked, and the rest goes through the
redactor (credentials in URLs, ``KEY=value`` pairs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import PurePath
from typing import Any

from deployer.redact import MASK, SECRET_KEY_WORDS, redact
from deployer.shell import Secret

from .layers import _Layer
from .loading import Loaded
from .types import _key_path

DEFAULT = "default"
#: keys whose whole value is masked wherever it is (webhook URLs and headers carry tokens)
_MASKED_KEYS = ("url", "headers")
_MASKED_UNDER = "notify"


@dataclass(frozen=True)
class Setting:
    key: str  # the key path, e.g. hosts[0].port
    value: str  # as shown, secrets masked
    source: str  # the file, environment variable or --set that set it, or "default"


def settings(loaded: Loaded) -> list[Setting]:
    """Every leaf of the merged settings, in the inventory's key order."""
    data = loaded.settings.model_dump(mode="python", exclude_none=False)
    return [Setting(_key_path(loc), _shown(loc, value), source(loaded.layers, loc))
            for loc, value in _leaves(data, ())]


def source(layers: tuple[_Layer, ...], loc: tuple[str | int, ...]) -> str:
    """Who set the value at `loc`: the highest layer holding it, else the built-in default."""
    for layer in reversed(layers):
        if layer.has(loc):
            return _describe(layer, loc)
    return DEFAULT


def _describe(layer: _Layer, loc: tuple[str | int, ...]) -> str:
    if layer.kind == "environment":
        return layer.env_names.get(tuple(str(p) for p in loc), "environment")
    if layer.kind == "overrides":
        return f"--set {_key_path(loc)}"
    if layer.kind == "defaults":
        return f"{layer.source} (defaults)"
    return layer.source


def _leaves(value: Any, loc: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """(key path, value) of each leaf: mappings are walked, lists of mappings too; any other
    list is one value."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _leaves(v, (*loc, k))
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            yield from _leaves(v, (*loc, i))
    else:
        yield loc, value


def _secret_key(loc: tuple[str | int, ...]) -> bool:
    names = [p for p in loc if isinstance(p, str)]
    if not names:
        return False
    last = names[-1]
    if names[0] == _MASKED_UNDER and any(n in _MASKED_KEYS for n in names[1:]):
        return True
    if last.endswith(("_env", "_file")) or last in ("from_env", "from_file"):
        return False
    return any(word in last.upper() for word in SECRET_KEY_WORDS if word != "KEY") or \
        last.lower().endswith(("_key", "key_data"))


def _shown(loc: tuple[str | int, ...], value: Any) -> str:
    if isinstance(value, Secret) or (value not in (None, "", [], {}) and _secret_key(loc)):
        return MASK
    return redact(_text(value))


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (str, PurePath, int, float)):
        return str(value)
    return json.dumps(value, default=str)
