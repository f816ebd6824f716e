"""What a deploy puts under ``shared/`` and who creates it: the `shared` check.

Every release links the playbook's ``shared_files`` and ``shared_dirs`` from ``shared/``
(deployer.commands.releases.link_shared). The deploy creates some of them itself: a shared dir
(``mkdir -p`` before the link) and a file the inventory's ``secret_files`` writes (before the
build reads it). A shared file nobody writes must already be on the host, else every release
gets a dangling link. So a missing entry is reported as created by the next deploy when the
deploy makes it, and as a FAIL naming its path when nothing does.

`entries` says what is shared and who makes it (pure), `command` asks the host what exists
(every path quoted), `parse` decides: `verdict` per entry, one row for all of them.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import PurePosixPath

from ..shell import Command, q, raw
from .model import Parse

MARK = "@@shared"


class Kind(Enum):
    FILE = "file"
    DIR = "dir"


class Maker(Enum):
    """Who creates a shared entry that is not on the host yet."""

    NOBODY = "nobody"
    SECRET_FILES = "secret_files writes it"
    SHARED_DIRS = "shared_dirs: mkdir -p"


@dataclass(frozen=True)
class Entry:
    """One path under shared/ that every release links."""

    rel: str
    kind: Kind
    made_by: Maker


def _norm(rel: str) -> str:
    return str(PurePosixPath(rel))


def made_by(rel: str, kind: Kind, secret_paths: Iterable[str]) -> Maker:
    """Who creates shared/<rel> when it is missing: a shared dir is made by the deploy itself,
    a shared file only when a secret_files entry writes it."""
    if kind is Kind.DIR:
        return Maker.SHARED_DIRS
    return Maker.SECRET_FILES if _norm(rel) in {_norm(p) for p in secret_paths} else Maker.NOBODY


def entries(shared_files: Sequence[str], shared_dirs: Sequence[str], secret_paths: Iterable[str],
            skip: Iterable[str] = ()) -> tuple[Entry, ...]:
    """The shared files then dirs of the playbook, each with who makes it; `skip`: paths another
    check inspects (the .env of `app_env`)."""
    secret = [_norm(p) for p in secret_paths]
    skipped = {_norm(p) for p in skip}
    out = [Entry(_norm(f), Kind.FILE, made_by(f, Kind.FILE, secret)) for f in shared_files]
    out += [Entry(_norm(d), Kind.DIR, Maker.SHARED_DIRS) for d in shared_dirs]
    return tuple(e for e in out if e.rel not in skipped)


def command(shared_path: str, found: Sequence[Entry]) -> Command:
    """One ``@@shared <index> dir|file|missing`` line per entry (a dangling link is missing)."""
    parts = []
    for i, e in enumerate(found):
        x = q(posixpath.join(shared_path, e.rel))
        parts.append(f"if [ -d {x} ]; then echo '{MARK} {i} dir'; elif [ -e {x} ]; then "
                     f"echo '{MARK} {i} file'; else echo '{MARK} {i} missing'; fi")
    return raw("; ".join(parts))


def states(stdout: str) -> dict[int, str]:
    """index -> dir|file|missing, from `command`'s output."""
    out: dict[int, str] = {}
    for line in stdout.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == MARK and words[1].isdigit():
            out[int(words[1])] = words[2]
    return out


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detail: str
    #: the entry is missing and the next deploy creates it
    created: bool = False


def verdict(entry: Entry, path: str, state: str | None) -> Verdict:
    """The decision for one entry given what the host has at `path` (None: not reported)."""
    if state == entry.kind.value:
        return Verdict(True, entry.rel)
    if state == "missing":
        if entry.made_by is Maker.NOBODY:
            return Verdict(False, f"{path} is missing and nothing creates it (every release links "
                                  "it): put it on the host, or give it in the inventory's secret_files")
        return Verdict(True, f"{entry.rel} ({entry.made_by.value})", created=True)
    if state in (Kind.FILE.value, Kind.DIR.value):
        return Verdict(False, f"{path} is a {state}, the playbook shares it as a {entry.kind.value}")
    return Verdict(False, f"cannot inspect {path}")


def parse(shared_path: str, found: Sequence[Entry]) -> Parse:
    def run(stdout: str, exit_status: int | None) -> tuple[bool, str]:
        if exit_status != 0:
            return False, f"cannot inspect {shared_path} (exit {exit_status})"
        seen = states(stdout)
        verdicts = [verdict(e, posixpath.join(shared_path, e.rel), seen.get(i)) for i, e in enumerate(found)]
        problems = [v.detail for v in verdicts if not v.ok]
        if problems:
            return False, "; ".join(problems)
        present = [v.detail for v in verdicts if not v.created]
        created = [v.detail for v in verdicts if v.created]
        notes = (["present: " + ", ".join(present)] if present else [])
        if created:
            notes.append("will be created by the next deploy: " + ", ".join(created))
        return True, "; ".join(notes)

    return run
