"""Bounded load through the load balancer during a 3-wave deploy and an automatic rollback.

    sudo .venv/bin/python benchmarks/rollout.py [--rate 100] [--web 3]

Brings up a fresh fleet, deploys v1, then under a steady load (fixed rate, fixed maximum
duration, stops by itself) deploys v2 in waves [1, 50%, 100%] and then bad-health (caught by the
canary gate, rolled back). Prints, for each phase: requests sent, failed, p95 latency, and for
the rollback the time from the failing gate to the last host back on the old release (from the
ledger on the fleet).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployer.config import load_config  # noqa: E402
from deployer.engine.deploy import DeployRun as Deploy  # noqa: E402
from deployer.errors import DeployFailed  # noqa: E402
from deployer.fleet.harness import Fleet  # noqa: E402
from deployer.fleet.load import Load  # noqa: E402
from deployer.output import JsonReporter  # noqa: E402

WAVES = """
rollout:
  - {size: 1, bake: 3}
  - {size: "50%", bake: 0}
  - {size: "100%", bake: 0}
"""


def ts(s: str) -> float:
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--web", type=int, default=3)
    args = ap.parse_args()
    fleet = Fleet()
    fleet.up(args.web, log=lambda *_: None)
    try:
        inv = fleet.dir / "rollout-bench.yaml"
        inv.write_text(fleet.inventory_path.read_text() + WAVES)
        cfg = load_config("local", inventory=inv)
        Deploy(cfg, JsonReporter(io.StringIO()), ref="v1").run()
        url = f"http://{fleet.spec.host('lb1').public}/"
        rows = []
        for phase, ref in (("3-wave deploy of v2", "v2"), ("automatic rollback of bad-health", "bad-health")):
            load = Load(url, rate=args.rate, seconds=300).start()
            d = Deploy(cfg, JsonReporter(io.StringIO()), ref=ref)
            try:
                d.run()
            except DeployFailed:
                pass
            result = load.stop()
            back = ""
            if ref == "bad-health":
                text = fleet.sh("db1", "cat /srv/app/.deployer/ledger.jsonl").stdout
                run = [json.loads(line) for line in text.splitlines() if d.s.run_id in line]
                failed = next(e["at"] for e in run if e["type"] == "stage" and e["state"] == "failed")
                last = [e["at"] for e in run if e["type"] == "effect" and e.get("effect") == "undrained"][-1]
                done = next(e["at"] for e in run if e["type"] == "rollback.end")
                back = f"{ts(last) - ts(failed):.2f} / {ts(done) - ts(failed):.2f}"
            rows.append((phase, result.sent, result.failed, result.p95_ms, back))
    finally:
        fleet.down(quiet=True)
    print(f"{'phase':<34} {'sent':>6} {'failed':>6} {'p95 ms':>7} {'gate fail -> last host back / healthy s':>40}")
    for phase, sent, failed, p95, back in rows:
        print(f"{phase:<34} {sent:>6} {failed:>6} {p95:>7.1f} {back:>40}")


if __name__ == "__main__":
    main()
