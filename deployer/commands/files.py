"""File backups: the app's own files under
`shared/` (user uploads: `storage/app/public`, `media`...) archived on each app host with the
nightly backup, and restored from such an archive.

- `archive`: `tar -czf` of the listed paths (relative to `shared/`, minus `exclude` patterns) to a
  temporary name, listed back (`tar -tzf`: a truncated archive fails), sha256, renamed; prints
  `sha256 size`. A path that does not exist (yet) is skipped, not an error.
- `restore`: the archive checked against its sha256, extracted into `shared/.restore-<stamp>`,
  then each listed path swapped in (the current one moved aside first, removed once every path
  is in place): a restore cut short leaves each path either old or new, never half-extracted.
"""

from __future__ import annotations

import posixpath
import re

from ..layout import Layout
from ..shell import Command, q, raw

SUFFIX = ".tar.gz"


def archive_dir(deploy_to: str) -> str:
    """Where each app host keeps its archives (beside `releases/` and `shared/`, outside both)."""
    return Layout(deploy_to).backups


def archive_name(env: str, host: str, stamp: str) -> str:
    """`files-<env>-<host>-<UTC stamp>.tar.gz`: retention reads the stamp, as for the database's."""
    if not re.fullmatch(r"\d{8}T\d{6}Z", stamp):
        raise ValueError(f"archive stamp {stamp!r} is not a UTC time like 20261207T020000Z")
    return f"files-{env}-{host}-{stamp}{SUFFIX}"


def read_name(env: str, name: str) -> tuple[str, str] | None:
    """(host, stamp) of the archive `name` (`archive_name` read back), None for another name."""
    m = re.fullmatch(rf"files-{re.escape(env)}-(.+)-(\d{{8}}T\d{{6}}Z){re.escape(SUFFIX)}", name)
    return (m.group(1), m.group(2)) if m else None


def owner(env: str, name: str) -> str | None:
    """The host whose archive `name` is, None for another name."""
    read = read_name(env, name)
    return read[0] if read else None


def archive(shared: str, paths: list[str], exclude: list[str], dest: str) -> Command:
    """The archive of `paths` (relative to `shared`) at `dest`; prints `sha256 size`."""
    tmp = dest + ".partial"
    excludes = " ".join(f"--exclude={q(p)}" for p in exclude)
    listed = " ".join(q(p) for p in paths)
    inner = (
        f"umask 077; mkdir -p -m 700 {q(posixpath.dirname(dest))} && cd {q(shared)} && rm -f {q(tmp)} && "
        f"set -- && for p in {listed}; do [ -e \"$p\" ] && set -- \"$@\" \"$p\"; done; "
        f"if tar -czf {q(tmp)} {excludes} -- \"$@\" && tar -tzf {q(tmp)} >/dev/null "
        f"&& sum=$(sha256sum {q(tmp)} | cut -d' ' -f1) && size=$(stat -c %s {q(tmp)}) "
        f"&& mv -T {q(tmp)} {q(dest)}; then echo \"$sum $size\"; else rc=$?; rm -f {q(tmp)}; exit $rc; fi")
    return raw(inner)


def restore(shared: str, path: str, sha256: str, paths: list[str], stamp: str) -> Command:
    """`paths` of `shared` replaced by the archive's (see the module's docstring)."""
    work = posixpath.join(shared, f".restore-{stamp}")
    swaps = []
    for p in paths:
        new, cur, old = posixpath.join(work, p), posixpath.join(shared, p), posixpath.join(work, ".old", p)
        swaps.append(f"if [ -e {q(new)} ]; then mkdir -p {q(posixpath.dirname(old))} {q(posixpath.dirname(cur))} && "
                     f"{{ [ ! -e {q(cur)} ] || mv -T {q(cur)} {q(old)}; }} && mv -T {q(new)} {q(cur)}; fi")
    inner = (
        f"echo {q(sha256)}' '{q(path)} | sha256sum -c --status - || {{ echo \"restore: {path} is missing or its "
        f"sha256 differs\" >&2; exit 1; }}; rm -rf {q(work)} && mkdir -p {q(work)} && tar -xzf {q(path)} -C {q(work)} && "
        + " && ".join(swaps) + f" && rm -rf {q(work)}")
    return raw(inner)


def parse(output: str) -> tuple[str, int]:
    parts = output.strip().split()
    if len(parts) != 2 or not re.fullmatch(r"[0-9a-f]{64}", parts[0]):
        raise ValueError(f"file backup: unexpected output {output.strip()!r}")
    return parts[0], int(parts[1])
