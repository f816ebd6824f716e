"""Scale: one orchestrator process deploying to a large fleet, with its state in S3.

    sudo .venv/bin/python benchmarks/scale.py --probe 30   # memory first
    sudo .venv/bin/python benchmarks/scale.py --web 100

`--probe N` brings up N web hosts, reads `free -m` before and after, and prints the memory per
web host and the largest fleet that fits in what is available (keeping a margin), capped by the
harness's maximum. `--web N` (or the largest that fits, from a probe, when not given) brings up
that fleet with its S3 server, then deploys v1 (cold: every host clones the repository) and v2
(warm) with the real CLI, one process each, its state (lock, ledger, backup copy) in the
fleet's SeaweedFS through boto3, and prints for each: wall seconds, the orchestrator's CPU
seconds (user + sys, all its threads) and its peak RSS (from wait4), and the time `releases`
takes to read the ledger back from the bucket. The fleet is brought down at the end.
The fleet runs with production intervals (HAProxy's default 2 s check interval, the demo worker
polling for jobs every second) unless `--test-intervals` (the tests' 500 ms and 0.2 s): at the
tests' intervals 100 idle hosts take about one of this machine's two cores, which real hosts,
each on its own CPU, would not take from each other.
`--cpu` adds, for the warm deploy, where the machine's CPU went, by command (benchmarks/cpu.py),
and the same over `--idle` seconds after it with nothing deployed: the fleet's own load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cpu import CpuAccount  # noqa: E402
from deployer.fleet import spec as S  # noqa: E402
from deployer.fleet.harness import Fleet  # noqa: E402

MARGIN_MIB = 4096  # left free for the orchestrator, the page cache and the other engineers


def free_mib() -> dict[str, int]:
    out = subprocess.run(["free", "-m"], capture_output=True, text=True, check=True).stdout.splitlines()
    head, mem = out[0].split(), out[1].split()[1:]
    return dict(zip(head, map(int, mem), strict=False))


def probe(n: int) -> int:
    fleet = Fleet()
    fleet.down(quiet=True)
    time.sleep(1)
    before = free_mib()
    t0 = time.monotonic()
    fleet.up(n, log=lambda *_: None)
    up_s = time.monotonic() - t0
    time.sleep(3)  # let the hosts' services settle
    after = free_mib()
    fleet.down(quiet=True)
    used = before["available"] - after["available"]
    per_host = used / (n + 2)  # web hosts, plus db1, lb1 and the S3 server counted as two
    fits = int((after["available"] + used - MARGIN_MIB) / max(per_host, 1)) - 2
    best = max(1, min(S.MAX_WEB, fits))
    print(f"probe: {n} web hosts up in {up_s:.1f}s; available {before['available']} MiB -> "
          f"{after['available']} MiB: {used} MiB, {per_host:.1f} MiB per host; "
          f"with {MARGIN_MIB} MiB kept free, {fits} web hosts would fit (harness max {S.MAX_WEB}) -> {best}",
          flush=True)
    return best


EVENTS: Path | None = None  # keep each deploy's JSON events here (--events)


def measured(argv: list[str], env: dict, name: str = "") -> tuple[int, float, float, float, str]:
    """Run one CLI process; (exit code, wall s, cpu s, peak RSS MiB, stderr tail). With --events
    and a `name`, its JSON events go to EVENTS/<name>.jsonl."""
    out = subprocess.DEVNULL
    if EVENTS and name:
        argv = argv + ["--output", "json"]
        out = open(EVENTS / f"{name}.jsonl", "w")  # noqa: SIM115 - closed below
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    err = proc.stderr.read()
    if out is not subprocess.DEVNULL:
        out.close()
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    return proc.returncode, wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, err[-2000:]


def run(web: int, parallel: int, artifact: str | None = None, cpu_by_command: bool = False,
        idle: float = 20.0, production: bool = True) -> None:
    fleet = Fleet()
    try:
        t0 = time.monotonic()
        fleet.up(web, production=production, log=lambda *_: None)
        up_s = time.monotonic() - t0
        settle = time.monotonic()
        while os.getloadavg()[0] > 1.5 and time.monotonic() - settle < 90:  # the hosts' services start
            time.sleep(2)
        settle_s = time.monotonic() - settle
        mem = free_mib()
        prefix = f"bench/{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        inv = fleet.dir / "inventory-bench.yaml"
        # 2 cores serve 100+ sshd, the orchestrator and the apps: handshakes can take longer than 10 s
        inv.write_text(fleet.inventory_path.read_text().replace("parallel: 10", f"parallel: {parallel}")
                       .replace("ssh:\n", "ssh:\n  connect_timeout: 30\n", 1) + S.state_section(prefix=prefix))
        env = {**os.environ, **fleet.s3_env(), "AWS_EC2_METADATA_DISABLED": "true",
               "DEPLOYER_STATE_DIR": str(fleet.dir / "bench-journal")}
        cli = [sys.executable, "-m", "deployer.cli"]
        print(f"fleet: {web} web hosts + db1 + lb1 + S3 up in {up_s:.1f}s (then {settle_s:.0f}s for the load "
              f"to settle, load {os.getloadavg()[0]:.1f}); machine: {os.cpu_count()} cores, "
              f"{mem['total']} MiB, {mem['available']} MiB available with the fleet up; "
              f"state s3://{S.S3_BUCKET}/{prefix}/ at {fleet.s3_endpoint}; parallel {parallel}", flush=True)
        spec = fleet.spec
        print(f"intervals: {'production' if production else 'the tests'} (HAProxy checks every "
              f"{spec.check_inter}, the demo worker polls every {spec.worker_poll:g} s)", flush=True)
        extra = ["--set", f"artifact.build={artifact}"] if artifact else []
        print(f"artifact.build: {artifact or 'each'}", flush=True)
        print(f"{'phase':<22} {'web hosts':>9} {'exit':>4} {'wall s':>7} {'cpu s':>6} {'peak RSS MiB':>12} "
              f"{'cpu ms/host':>11} {'RSS MiB/host':>12}", flush=True)
        accounts = []
        for ref, what in (("v1", "deploy v1 (cold)"), ("v2", "deploy v2 (warm)")):
            argv = cli + ["deploy", "--env", "local", "--ref", ref, "--yes", "--inventory", str(inv), *extra]
            counted = cpu_by_command and ref == "v2"
            with CpuAccount() if counted else contextlib.nullcontext() as acct:
                code, wall, cpu, rss, err = measured(argv, env, ref)
            if counted:
                accounts.append((what, acct))
            print(f"{what:<22} {web:>9} {code:>4} {wall:>7.1f} {cpu:>6.2f} {rss:>12.1f} "
                  f"{cpu * 1000 / web:>11.1f} {rss / web:>12.2f}", flush=True)
            if code != 0:
                print(err, file=sys.stderr)
                raise SystemExit(f"{what}: exit {code}")
        if cpu_by_command and idle:
            with CpuAccount() as acct:
                time.sleep(idle)
            accounts.append((f"idle {idle:g} s after it", acct))
        for what, acct in accounts:
            print(f"{what}, the machine's CPU by command (all hosts, the orchestrator, the S3 server):\n"
                  f"{acct.table(per=web)}", flush=True)
        code, wall, cpu, rss, err = measured(cli + ["releases", "--env", "local", "--output", "json",
                                                    "--inventory", str(inv)], env)
        print(f"{'releases (from S3)':<22} {web:>9} {code:>4} {wall:>7.1f} {cpu:>6.2f} {rss:>12.1f}", flush=True)
        import boto3

        creds = fleet.s3_env()
        s3 = boto3.client("s3", endpoint_url=fleet.s3_endpoint, region_name="us-east-1",
                          aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])
        objs = s3.list_objects_v2(Bucket=S.S3_BUCKET, Prefix=f"{prefix}/local/").get("Contents", [])
        kinds: dict[str, int] = {}
        for o in objs:
            kind = o["Key"][len(prefix) + 7:].split("/", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        print(f"bucket: {json.dumps(kinds)} objects under {prefix}/local/", flush=True)
    finally:
        fleet.down(quiet=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--probe", type=int, default=0, help="measure memory with N web hosts first")
    ap.add_argument("--web", type=int, default=0, help="web hosts to deploy to (default: what a probe says fits)")
    ap.add_argument("--parallel", type=int, default=30)
    ap.add_argument("--events", type=Path, help="keep each deploy's JSON events in this directory")
    ap.add_argument("--artifact", metavar="BUILD", help="deploy with artifact.build=BUILD (first: the first web "
                                                         "host builds, the others fetch from it)")
    ap.add_argument("--cpu", action="store_true", help="the warm deploy's CPU by command, all processes")
    ap.add_argument("--test-intervals", action="store_true",
                    help="the tests' HAProxy check and worker poll intervals (500 ms, 0.2 s)")
    ap.add_argument("--idle", type=float, default=20.0, help="with --cpu: seconds of the idle fleet measured too")
    args = ap.parse_args()
    global EVENTS
    EVENTS = args.events
    if EVENTS:
        EVENTS.mkdir(parents=True, exist_ok=True)
    web = args.web
    if args.probe:
        fits = probe(args.probe)
        if not web:
            print("(run again with --web N to measure the deploys)")
            return
        web = min(web, fits)
    run(web or 100, args.parallel, args.artifact, args.cpu, args.idle, not args.test_intervals)


if __name__ == "__main__":
    main()
