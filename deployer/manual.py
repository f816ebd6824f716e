"""`deployer docs [TOPIC]`: the documentation installed with the package (docs/*.md, shipped as
package data through the deployer/docs link), readable wherever deployer is installed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

DOCS = Path(__file__).resolve().parent / "docs"


@dataclass(frozen=True)
class Topic:
    name: str  # the file's stem: `deployer docs <name>`
    title: str  # its first heading
    path: Path


def topics(directory: Path = DOCS) -> dict[str, Topic]:
    """The topics of `directory`, by name, in name order."""
    out = {}
    for path in sorted(directory.resolve().glob("*.md")):
        text = path.read_text(encoding="utf-8")
        title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), path.stem)
        out[path.stem] = Topic(path.stem, title, path)
    return out


def topic(name: str, directory: Path = DOCS) -> Topic:
    """One topic by name; ConfigError (exit 2) naming the topics when there is none."""
    known = topics(directory)
    if not known:
        raise ConfigError(f"docs: none installed in {directory} (reinstall deployer)")
    if name not in known:
        raise ConfigError(f"docs: no topic {name!r} (topics: {', '.join(known)})")
    return known[name]


def listing(directory: Path = DOCS) -> str:
    """What `deployer docs` prints: each topic and its title, then where the files are."""
    known = topics(directory)
    if not known:
        raise ConfigError(f"docs: none installed in {directory} (reinstall deployer)")
    width = max(len(name) for name in known)
    lines = [f"  {t.name:<{width}}  {t.title}" for t in known.values()]
    return ("Topics (`deployer docs TOPIC` prints one):\n" + "\n".join(lines)
            + f"\n\nFiles: {directory.resolve()}\n")
