"""Reading YAML (duplicate keys refused, YAML 1.2 booleans), `${VAR}` interpolation of
inventory values and the YAML reading of `--set` values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from deployer.errors import ConfigError

from .types import _key_path


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate mapping keys (PyYAML silently keeps the last).

    Merge keys (``<<: *base``, ``<<: [*a, *b]``) work as in YAML 1.1: the mapping's own keys
    win over merged ones; only a key written twice in the mapping itself is a duplicate."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        merges = sum(1 for key_node, _ in node.value if key_node.tag == "tag:yaml.org,2002:merge")
        own = len(node.value) - merges
        self.flatten_mapping(node)  # merged pairs first, then the mapping's own
        seen: set[Any] = set()
        for key_node, _ in node.value[len(node.value) - own:]:
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
    return _without_anchor_holders(data)


def _without_anchor_holders(data: dict[str, Any]) -> dict[str, Any]:
    """The top-level keys that only hold anchors for merge keys (``x-web: &web {...}`` as in
    Compose and Kamal, ``.base: &base {...}`` as in GitLab CI) are left out of the settings."""
    return {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith(("x-", ".")))}


def _yaml_value(text: str) -> Any:
    """A `--set` value read as YAML (``5`` -> 5, ``[1, "50%"]`` -> a list, ``null`` -> None);
    an empty value, or one that is not valid YAML, stays the string given."""
    if not text.strip():
        return text
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError:
        return text


# `$${` (a literal `${`), `${NAME}` / `${NAME:-default}`, or any other `${` (an error)
_REF_RE = re.compile(
    r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^}$]|\$(?!\{))*))?\}|\$\{"
)
_INT_RE = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")
_FLOAT_RE = re.compile(r"-?(?:0|[1-9][0-9]*)\.[0-9]+\Z")


def _typed(text: str) -> Any:
    """The value of a string that was exactly one reference: an integer, a number or
    true/false when it reads as one, else the string."""
    if text in ("true", "false"):
        return text == "true"
    if _INT_RE.match(text):
        return int(text)
    if _FLOAT_RE.match(text):
        return float(text)
    return text


def _interpolate(data: dict[str, Any], environ: Mapping[str, str], label: str) -> dict[str, Any]:
    """`data` with ``${VAR}`` / ``${VAR:-default}`` in string values replaced from `environ`.

    ``$${`` is a literal ``${``. ``:-`` uses the default when the variable is unset or empty.
    A value that is exactly one reference outside any ``vars`` is typed (``port: ${P}`` with
    P=2222 gives 2222); ``vars`` values always stay strings.  Keys are left as they are.
    """
    errors: list[str] = []

    def fill(text: str, loc: tuple[str | int, ...]) -> Any:
        if "${" not in text:
            return text

        def one(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name, default = match.group(1), match.group(2)
            if name is None:
                errors.append(f"{label}: {_key_path(loc)}: invalid ${{...}} reference (use "
                              "${VAR} or ${VAR:-default}; $${ for a literal ${)")
                return match.group(0)
            value = environ.get(name)
            if default is not None and not value:
                return default
            if value is None:
                errors.append(f"{label}: {_key_path(loc)}: environment variable {name} is not set")
                return match.group(0)
            return value

        out = _REF_RE.sub(one, text)
        whole = _REF_RE.fullmatch(text)
        if whole and whole.group(1) and "vars" not in loc:
            return _typed(out)
        return out

    def walk(value: Any, loc: tuple[str | int, ...]) -> Any:
        if isinstance(value, str):
            return fill(value, loc)
        if isinstance(value, dict):
            return {k: walk(v, (*loc, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*loc, i)) for i, v in enumerate(value)]
        return value

    out = walk(data, ())
    if errors:
        raise ConfigError("\n".join(errors))
    return out
