"""Deploy and rollback on the local fleet, measured from the orchestrator's side.

    sudo .venv/bin/python benchmarks/deploy.py [--sizes 3,30]

For each fleet size: a fresh fleet, v1 deployed (cold: first clone), then measured:
- deploy v2 (warm: the hosts' git mirrors exist): wall seconds, orchestrator CPU seconds
  (user+sys of this process, all threads), SSH connections opened per host;
- rollback to v1 by hand (--keep-db): wall seconds;
- automatic rollback of bad-health: seconds from the failing gate to the last host back.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployer.config import load_config  # noqa: E402
from deployer.errors import DeployFailed  # noqa: E402
from deployer.fleet.harness import Fleet  # noqa: E402
from deployer.output import JsonReporter  # noqa: E402
from deployer.engine.deploy import DeployRun as Deploy  # noqa: E402
from deployer.engine.rollback import Rollback  # noqa: E402


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="3,30")
    args = ap.parse_args()
    fleet = Fleet()
    rows = []
    print(f"{'web hosts':>9} {'deploy s':>9} {'cpu s':>6} {'conns/host':>10} {'rollback s':>10} "
          f"{'auto-rollback s':>15}", flush=True)
    try:
        for n in [int(x) for x in args.sizes.split(",")]:
            fleet.up(n, log=lambda *_: None)
            cfg = load_config("local", inventory=fleet.inventory_path,
                              overrides={"parallel": min(n, 30)})
            Deploy(cfg, JsonReporter(io.StringIO()), ref="v1").run()

            c0, t0 = cpu(), time.monotonic()
            d = Deploy(cfg, JsonReporter(io.StringIO()), ref="v2")
            d.run()
            wall, cpus = time.monotonic() - t0, cpu() - c0
            conns = d.s.transport.opened
            app = [h.name for h in d.app_hosts]
            per_host = sorted({conns.get(h, 0) for h in app})

            t0 = time.monotonic()
            Rollback(cfg, JsonReporter(io.StringIO()), to="v1", keep_db=True).run()
            rb_wall = time.monotonic() - t0

            Deploy(cfg, JsonReporter(io.StringIO()), ref="v2").run()
            stream = io.StringIO()
            try:
                Deploy(cfg, JsonReporter(stream), ref="bad-health").run()
            except DeployFailed:
                pass
            events = [json.loads(line) for line in stream.getvalue().splitlines()]
            failed_at = next(e["at"] for e in events if e.get("event") == "stage"
                             and e.get("state") == "failed")
            back_at = [e["at"] for e in events if e.get("event") == "rollback"][-1]
            import datetime as dt

            def ts(s: str) -> float:
                return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()

            auto = ts(back_at) - ts(failed_at)
            rows.append((n, wall, cpus, per_host, rb_wall, auto))
            print(f"{n:>9} {wall:>9.1f} {cpus:>6.2f} {','.join(map(str, per_host)):>10} {rb_wall:>10.1f} "
                  f"{auto:>15.1f}", flush=True)
            fleet.down(quiet=True)
    finally:
        fleet.down(quiet=True)


if __name__ == "__main__":
    main()
