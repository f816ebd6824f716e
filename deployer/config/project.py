"""The project: its root, its environments and its playbooks (the project's own or the ones
shipped with deployer), and loading a playbook with the playbooks it `extends`."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from deployer.errors import ConfigError

from .layers import _blame, _errors, _Layer, _merge
from .playbook import Playbook, _label_steps
from .reading import _read_yaml
from .types import _ENV_RE, _HOST_RE, _is_path, _label, default_root


def project_root(root: Path | None = None, environ: Mapping[str, str] = os.environ) -> Path:
    """The project root: `root`, else $DEPLOYER_ROOT, else the nearest of the current directory
    and its parents that has a hosts/ directory (as Invoke finds tasks.py: `inv deploy` works from
    a subdirectory of the project), else the repository deployer runs from when it is a checkout
    with hosts/ (`default_root()`), else the current directory."""
    if root is not None:
        return Path(root)
    if environ.get("DEPLOYER_ROOT"):
        return Path(environ["DEPLOYER_ROOT"])
    cwd = Path.cwd()
    for directory in (cwd, *cwd.parents):
        if (directory / "hosts").is_dir():
            return directory
    checkout = default_root()
    return checkout if (checkout / "hosts").is_dir() else cwd


def shipped_playbooks() -> Path:
    """The directory of the playbooks shipped with deployer (usable by name from any root):
    deployer/playbooks (installed with the package; in the repository, a link to playbooks/)."""
    installed = Path(__file__).resolve().parent.parent / "playbooks"
    return installed.resolve() if installed.is_dir() else default_root() / "playbooks"


def known_envs(root: Path | None = None) -> list[str]:
    """Environment names that have an inventory in <root>/hosts."""
    hosts = (root or project_root()) / "hosts"
    return sorted(p.stem for p in hosts.glob("*.yaml") if _ENV_RE.match(p.stem))


def known_playbooks(root: Path | None = None) -> list[str]:
    """Playbook names usable from `root`: those in <root>/playbooks and the shipped ones."""
    dirs = {(root or project_root()) / "playbooks", shipped_playbooks()}
    return sorted({p.stem for d in dirs for p in d.glob("*.yaml")})


def find_playbook(name: str, root: Path, *, exclude: Path | None = None) -> Path | None:
    """<root>/playbooks/<name>.yaml, else the shipped one; never `exclude` (a playbook that
    extends the shipped playbook of its own name)."""
    for directory in (root / "playbooks", shipped_playbooks()):
        path = directory / f"{name}.yaml"
        if path.is_file() and (exclude is None or path.resolve() != exclude.resolve()):
            return path
    return None


def _playbook_path(ref: str, root: Path, base: Path, where: str,
                   exclude: Path | None = None) -> Path:
    """The file a playbook reference names: a path (relative to `base`) or a name; errors
    start with `where` (``hosts/prod.yaml: playbook``)."""
    if _is_path(ref):
        path = Path(os.path.normpath(base / os.path.expanduser(ref)))
        if not path.is_file():
            raise ConfigError(f"{where}: no such playbook file {_label(path, root)}")
        return path
    if not _HOST_RE.match(ref):
        raise ConfigError(f"{where}: invalid playbook name {ref!r} (use lowercase "
                          "letters, digits and -, or a path ending in .yaml)")
    path = find_playbook(ref, root, exclude=exclude)
    if path is None:
        raise ConfigError(f"{where}: no such playbook {ref!r} (known: "
                          f"{', '.join(known_playbooks(root)) or 'none'})")
    return path


def _chain(path: Path, root: Path,
           stack: list[tuple[Path, str]]) -> list[tuple[Path, str, dict[str, Any]]]:
    """(path, label, data without `extends`) of `path` and every playbook it extends, the
    most basic first."""
    label = _label(path, root)
    key = path.resolve()
    seen = [k for k, _ in stack]
    if key in seen:
        files = [lab for _, lab in stack[seen.index(key):]] + [label]
        raise ConfigError(f"{stack[-1][1]}: extends: cycle: {' -> '.join(files)}")
    data = dict(_read_yaml(path, label))
    ref = data.pop("extends", None)
    if ref is None:
        return [(path, label, data)]
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"{label}: extends: expected a playbook name or a path")
    base = _playbook_path(ref, root, path.parent, f"{label}: extends", exclude=path)
    parents = _chain(base, root, [*stack, (key, label)])
    base_name = parents[-1][2].get("name")
    if isinstance(base_name, str) and base_name != base.stem:
        raise ConfigError(f"{parents[-1][1]}: name: {base_name!r} does not match the file name "
                          f"{base.stem!r}")
    return [*parents, (path, label, data)]


def _loc(where: str) -> tuple[str | int, ...]:
    """``stages.build[0]`` -> ("stages", "build", 0)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"\.|\[|\]\.?", where) if p)


def load_playbook(path: Path, *, root: Path | None = None,
                  extra_vars: Iterable[str] | None = None) -> Playbook:
    """Load and validate one playbook file (and the ones it extends, deep-merged below it);
    with `extra_vars`, also check every placeholder."""
    root = root or project_root()
    chain = _chain(Path(path), root, [])
    label = chain[-1][1]
    data: dict[str, Any] = {}
    for i, (_, _, file_data) in enumerate(chain):
        if i < len(chain) - 1:
            file_data = {k: v for k, v in file_data.items() if k != "name"}
        data = _merge(data, file_data)
    data.setdefault("name", path.stem)
    layers = [_Layer("defaults", lab, d) for _, lab, d in chain[:-1]]
    layers.append(_Layer("inventory", label, data if len(chain) == 1 else chain[-1][2]))
    try:
        playbook = Playbook.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_errors(exc, layers, Playbook))) from None
    if playbook.name != path.stem:
        raise ConfigError(f"{label}: name: {playbook.name!r} does not match the file name "
                          f"{path.stem!r}")
    playbook._raw = data
    playbook._sources = [(lab, d, p.parent.absolute()) for p, lab, d in chain]
    if len(chain) == 1:
        _label_steps(playbook, label)
    else:
        _label_steps(playbook, lambda where: _blame(layers, _loc(where)).source)
    if extra_vars is not None:
        errors = playbook.check_templates(extra_vars)
        if errors:
            raise ConfigError("\n".join(errors))
    return playbook
