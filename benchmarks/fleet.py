"""Time to bring the local fleet up, and what each host costs in memory.

    sudo .venv/bin/python benchmarks/fleet.py [--sizes 3,30]

Prints, per fleet size: seconds for `fleet.up`, seconds for `fleet.down`, and the memory of
each kind of host (sum of the PSS of every process in its network namespace, idle, before any
deploy), plus leftovers after down (must be none).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployer.fleet.harness import Fleet  # noqa: E402


def pss_kb(pid: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def host_memory(fleet: Fleet) -> dict[str, int]:
    out = {}
    for h in fleet.spec.hosts:
        pids = subprocess.run(["ip", "netns", "pids", h.netns], capture_output=True,
                              text=True).stdout.split()
        out[h.name] = sum(pss_kb(p) for p in pids)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="3,30")
    args = ap.parse_args()
    fleet = Fleet()
    print(f"{'web hosts':>9} {'up s':>6} {'down s':>7} {'web MiB':>8} {'db MiB':>7} {'lb MiB':>7} "
          f"{'total MiB':>9}")
    for n in [int(x) for x in args.sizes.split(",")]:
        t0 = time.monotonic()
        fleet.up(n, log=lambda *_: None)
        up = time.monotonic() - t0
        time.sleep(3)  # let supervisord settle (programs fail to start: nothing deployed yet)
        mem = host_memory(fleet)
        web = [v for k, v in mem.items() if k.startswith("web")]
        t0 = time.monotonic()
        fleet.down(quiet=True)
        down = time.monotonic() - t0
        print(f"{n:>9} {up:>6.1f} {down:>7.1f} {sum(web) / len(web) / 1024:>8.1f} "
              f"{mem['db1'] / 1024:>7.1f} {mem['lb1'] / 1024:>7.1f} {sum(mem.values()) / 1024:>9.1f}")
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.strip()
    print(f"namespaces left after down: {left or 'none'}")


if __name__ == "__main__":
    main()
