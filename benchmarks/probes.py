"""What a health probe costs through each host's SSH connection (through the bastion).

    sudo .venv/bin/python benchmarks/probes.py [--seconds 4] [--interval 0.05]

Brings up a fresh fleet, deploys v2, then runs the bake's probes (every `interval` s for
`seconds` s, bounded in count and time) at every web host through deployer's SSH connections,
as a gate does. Prints, per host, probes sent and answered, and the latency median and p95.
The app hosts sit on a private network: there is no direct path to compare with from here
(the figure without SSH, measured on a flat network, was a 2 ms median).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployer.bake import run_bake  # noqa: E402
from deployer.config import load_config  # noqa: E402
from deployer.engine.deploy import DeployRun as Deploy  # noqa: E402
from deployer.fleet.harness import Fleet  # noqa: E402
from deployer.output import JsonReporter  # noqa: E402
from deployer.session import Session  # noqa: E402
from deployer.stats import percentile  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--web", type=int, default=3)
    args = ap.parse_args()
    fleet = Fleet()
    fleet.up(args.web, s3=False, log=lambda *_: None)
    try:
        cfg = load_config("local", inventory=fleet.inventory_path)
        Deploy(cfg, JsonReporter(io.StringIO()), ref="v2").run()
        session = Session(cfg, JsonReporter(io.StringIO()))
        try:
            targets = [(h.name, "probe", f"http://{h.address}:8000/health") for h in fleet.spec.web_hosts]
            session.warm([cfg.host(h.name) for h in fleet.spec.web_hosts])
            probes = run_bake(targets, args.seconds, args.interval, 5.0, {"X-Deployer-Gate": "1"},
                              opener=session.opener)
        finally:
            session.close()
        print(f"{'host':8} {'sent':>5} {'answered':>8} {'median ms':>10} {'p95 ms':>8}   "
              f"(through bastion1 and the host's SSH connection)")
        for h in fleet.spec.web_hosts:
            mine = [p for p in probes if p.host == h.name]
            ms = [p.ms for p in mine if p.ms is not None]
            print(f"{h.name:8} {len(mine):5d} {len(ms):8d} {statistics.median(ms):10.1f} "
                  f"{percentile(ms, 95):8.1f}")
    finally:
        fleet.down(quiet=True)


if __name__ == "__main__":
    main()
