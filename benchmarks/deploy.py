"""Deploy, rollback and a bad release on the local fleet, measured from the orchestrator's side.

    .venv/bin/python benchmarks/deploy.py [--sizes 10] [--rate 100]

(root; the fleet is shared: run it under the lock.) For each fleet size: a fresh fleet (N web
hosts, db1, lb1), the fleet's own inventory (playbook demo, database, HAProxy), then:
(a) deploy v1 (cold: every host clones its git mirror), then v2 (warm): wall seconds,
    orchestrator CPU seconds (user+sys of this process, all threads: the deploy runs in-process
    through the Python API), SSH connections opened per app host (the transport's count);
(b) rollback by hand to v1 with --keep-db: wall seconds;
(c) v2 deployed again (not measured), then the bad-health release (its /health answers 500) in
    one wave (`rollout: [{size: "100%"}]`, at most `max_unavailable` 34% of the web hosts out of
    the load balancer at once) under a bounded load through HAProxy (`--rate` requests/s, stops
    by itself): how many hosts ever served the bad release (hosts whose `switched` effect was
    journaled), the seconds from the first failed health check (the first `gate` event with
    passed=false) to the last host back in rotation (the last `undrained` effect of the run's
    journal, in DEPLOYER_STATE_DIR), the requests sent and failed through the load balancer; and
    a check that every web host serves v2 again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployer import journal as J  # noqa: E402
from deployer.config import load_config  # noqa: E402
from deployer.engine.deploy import DeployRun  # noqa: E402
from deployer.engine.rollback import Rollback  # noqa: E402
from deployer.errors import DeployFailed  # noqa: E402
from deployer.fleet.harness import Fleet  # noqa: E402
from deployer.fleet.load import Load  # noqa: E402
from deployer.output import JsonReporter  # noqa: E402

ONE_WAVE = '\nrollout:\n  - {size: "100%"}\n'


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def ts(s: str) -> float:
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


def events(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def released(stream: io.StringIO) -> str:
    return next(e["release"] for e in reversed(events(stream)) if e.get("event") == "outcome")


def deploy(cfg, ref: str) -> dict:
    """One deploy in-process: wall, CPU, connections per app host, the release."""
    stream = io.StringIO()
    c0, t0 = cpu(), time.monotonic()
    d = DeployRun(cfg, JsonReporter(stream), ref=ref)
    d.run()
    wall, cpus = time.monotonic() - t0, cpu() - c0
    opened = d.s.transport.opened
    per_host = sorted({opened.get(h.name, 0) for h in cfg.app_hosts})
    return {"wall": wall, "cpu": cpus, "conns": ",".join(map(str, per_host)), "release": released(stream)}


def bad_release(fleet: Fleet, n: int, rate: float) -> dict:
    inv = Path(os.environ["DEPLOYER_STATE_DIR"]) / "one-wave.yaml"  # the fleet's, plus one wave
    inv.write_text(fleet.inventory_path.read_text() + ONE_WAVE)
    cfg = load_config("local", inventory=inv, overrides={"parallel": min(n, 30)})
    load = Load(f"http://{fleet.spec.host('lb1').public}/", rate=rate, seconds=300).start()
    stream = io.StringIO()
    d = DeployRun(cfg, JsonReporter(stream), ref="bad-health")
    t0 = time.monotonic()
    try:
        d.run()
        raise SystemExit("bad-health was deployed: the health gate did not catch it")
    except DeployFailed:
        pass
    finally:
        result = load.stop()
    wall = time.monotonic() - t0
    evs = events(stream)
    failed = [e["at"] for e in evs if e.get("event") == "gate" and e.get("passed") is False]
    if not failed:  # no failed health check reported: the first failed stage
        failed = [e["at"] for e in evs if e.get("event") == "stage" and e.get("state") == "failed"]
    journal = J.read_records(J.state_dir() / cfg.env / f"{d.s.run_id}.jsonl")
    effects = [r for r in journal if r.get("type") == "effect"]
    served = {r["host"] for r in effects if r["effect"] == "switched"}
    back = [r["at"] for r in effects if r["effect"] == "undrained"]
    return {"served": len(served), "fail_to_back": ts(back[-1]) - ts(failed[0]), "sent": result.sent,
            "failed": result.failed, "wall": wall, "failures": sorted(set(result.failures))[:3]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10", help="web hosts, comma-separated")
    ap.add_argument("--rate", type=float, default=100.0, help="requests/s through the load balancer in (c)")
    args = ap.parse_args()
    state = tempfile.TemporaryDirectory(prefix="deployer-bench-")  # the runs' local journals
    os.environ["DEPLOYER_STATE_DIR"] = state.name
    fleet = Fleet()
    rows = []
    try:
        for n in [int(x) for x in args.sizes.split(",")]:
            fleet.up(n, log=lambda msg: print(msg, file=sys.stderr, flush=True))
            cfg = load_config("local", inventory=fleet.inventory_path, overrides={"parallel": min(n, 30)})
            v1 = deploy(cfg, "v1")
            v2 = deploy(cfg, "v2")

            t0 = time.monotonic()
            Rollback(cfg, JsonReporter(io.StringIO()), to="v1", keep_db=True).run()
            rb_wall = time.monotonic() - t0

            good = deploy(cfg, "v2")["release"]
            bad = bad_release(fleet, n, args.rate)
            web = fleet.spec.web_hosts
            on_v2 = sum(fleet.sh(h.name, "readlink /srv/app/current").stdout.strip().endswith("/" + good)
                        for h in web)
            if on_v2 != len(web):
                raise SystemExit(f"after the automatic rollback only {on_v2}/{len(web)} web hosts serve {good}")
            print(f"{n} web hosts: bad-health deploy + automatic rollback {bad['wall']:.1f}s; every web "
                  f"host serves v2 ({good}) again" + (f"; load failures: {bad['failures']}" if bad["failed"] else ""),
                  file=sys.stderr, flush=True)
            rows.append((n, v1, v2, rb_wall, bad))
            fleet.down(quiet=True)
    finally:
        fleet.down(quiet=True)
        state.cleanup()
    print(f"{'':>9} {'deploy v1 (cold)':^24} {'deploy v2 (warm)':^24} {'rollback':>9} "
          f"{'bad-health, one wave, ' + format(args.rate, 'g') + ' req/s via the LB':^46}")
    print(f"{'web hosts':>9} {'wall s':>7} {'cpu s':>6} {'conns/host':>10} {'wall s':>7} {'cpu s':>6} "
          f"{'conns/host':>10} {'wall s':>9} {'hosts served':>12} {'fail->back s':>12} {'sent':>9} {'failed':>10}")
    for n, v1, v2, rb, bad in rows:
        print(f"{n:>9} {v1['wall']:>7.1f} {v1['cpu']:>6.2f} {v1['conns']:>10} {v2['wall']:>7.1f} {v2['cpu']:>6.2f} "
              f"{v2['conns']:>10} {rb:>9.1f} {bad['served']:>12} {bad['fail_to_back']:>12.2f} {bad['sent']:>9} "
              f"{bad['failed']:>10}")


if __name__ == "__main__":
    main()
