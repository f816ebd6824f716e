"""What packing a release's artifact costs on the build host: the pack program deployer runs
there (`deployer.commands.artifact.pack`), on a real tree of this machine, against the same
program from another git revision.

    .venv/bin/python benchmarks/pack.py [--tree .venv] [--runs 5] [--against REV]

No fleet and no root: the tree (default: this checkout's virtualenv, thousands of files like a
Django release's) is copied once into a scratch release directory; each run packs it with
`sh -c <the pack command>` into a fresh artifacts directory, as the build host does. Runs of
the two programs are interleaved. Prints, per program: the median and minimum wall seconds, the
CPU seconds (user + system, median), the tar's size, its members and how many of them carry an
extended (pax) header of their own, and the manifest's sha256 (the same for both when they read
the same files: the manifest lists each file's sha256 and mode).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deployer.commands import artifact as A  # noqa: E402
from deployer.layout import Layout  # noqa: E402
from deployer.shell import q  # noqa: E402

RELEASE = "20261207T000000Z-bench00"


def program_at(rev: str) -> str:
    """The pack program (`PACK_PY`) of `deployer/commands/artifact.py` at git revision `rev`."""
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:deployer/commands/artifact.py"],
                          capture_output=True, text=True, check=True).stdout
    scope: dict = {}
    start, end = text.index("PACK_PY = r'''"), text.index("'''", text.index("PACK_PY = r'''") + 14)
    exec(text[start:end + 3], scope)  # noqa: S102 - our own source, one string literal
    return scope["PACK_PY"]


def pack_once(program: str, deploy_to: Path) -> tuple[float, float]:
    """(wall s, cpu s) of one pack of RELEASE under deploy_to, with `program` as the pack."""
    art = Path(Layout(str(deploy_to)).artifacts)
    shutil.rmtree(art, ignore_errors=True)
    cmd = A.pack(str(deploy_to), RELEASE, [])
    if q(A.PACK_PY) not in cmd.script:  # both runs would be this checkout's program
        raise SystemExit("benchmarks/pack.py: the pack command no longer holds its program quoted as a whole")
    script = cmd.script.replace(q(A.PACK_PY), q(program), 1)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    res = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"pack failed: {res.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def describe(deploy_to: Path) -> tuple[int, int, int, str]:
    """(tar bytes, members, members with an extended header, manifest sha256) of the last pack."""
    lay = Layout(str(deploy_to))
    tar = Path(lay.artifact(RELEASE, ".tar"))
    members = pax = 0
    with tarfile.open(tar) as t:
        for m in t:
            members += 1
            pax += bool(m.pax_headers)
    man = hashlib.sha256(Path(lay.artifact(RELEASE, ".manifest")).read_bytes()).hexdigest()
    return tar.stat().st_size, members, pax, man


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, default=ROOT / ".venv", help="the release tree to pack (copied)")
    ap.add_argument("--runs", type=int, default=5, help="packs per program")
    ap.add_argument("--against", default="34b16bc", help="the git revision whose pack program to compare with")
    args = ap.parse_args()
    programs = {"this checkout": A.PACK_PY, args.against: program_at(args.against)}
    with tempfile.TemporaryDirectory(prefix="deployer-pack-") as scratch:
        deploy_to = Path(scratch) / "app"
        release = Path(Layout(str(deploy_to)).release(RELEASE))
        release.parent.mkdir(parents=True)
        shutil.copytree(args.tree, release, symlinks=True)
        files = sum(len(f) for _, _, f in os.walk(release))
        print(f"tree: {args.tree} ({files} files), {args.runs} packs per program, interleaved", flush=True)
        walls: dict[str, list[float]] = {k: [] for k in programs}
        cpus: dict[str, list[float]] = {k: [] for k in programs}
        shapes = {}
        for _ in range(args.runs):
            for name, program in programs.items():
                wall, cpu = pack_once(program, deploy_to)
                walls[name].append(wall)
                cpus[name].append(cpu)
                shapes[name] = describe(deploy_to)
        print(f"{'pack program':<16} {'wall s':>7} {'min s':>6} {'cpu s':>6} {'tar MB':>7} {'members':>8} "
              f"{'pax hdrs':>8}  manifest sha256")
        for name in programs:
            size, members, pax, man = shapes[name]
            print(f"{name:<16} {statistics.median(walls[name]):>7.2f} {min(walls[name]):>6.2f} "
                  f"{statistics.median(cpus[name]):>6.2f} {size / 1e6:>7.1f} {members:>8} {pax:>8}  {man[:16]}")


if __name__ == "__main__":
    main()
