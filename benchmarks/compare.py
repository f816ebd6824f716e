"""deployer against a plain Fabric script: the same nine steps on the local fleet.

    .venv/bin/python benchmarks/compare.py [--sizes 10,30] [--runs 5]

(root; the fleet is shared: run it under the lock.) For each size: a fresh fleet of N web hosts;
the demo app v1 deployed once with the fleet's own inventory (so that each web host serves a
health URL: the demo app's /health on port 8000); a git repository of a 2 MiB app of 300 files
(benchmarks/compare/app_repo.py, deterministic). Then, on the web hosts only (no database, no
load balancer, one wave, a health check on each host), the nine steps (R the release id):

    mkdir the release and shared dirs; fetch the app (a bare git mirror per host); unpack it into
    the release (git archive | tar -x); link the shared .env; `sleep 0.2` (build); `sleep 0.1`
    (migrate, once); `true` (cache warm); atomic switch; `echo R > restarted` (restart)

run by
- fabric: benchmarks/compare/plain_fabric.py, a ThreadingGroup, one `group.run` per step, one
  connection per host, strict host keys, then one GET of each host's health URL;
- deployer: `python -m deployer deploy --env cmp --inventory <generated> --ref bench
  --output json` with the playbook benchmarks/compare/compare.yaml: preflight facts, the lock
  and the snapshot in the ledger (on web1, the migrate host, as there is no ledger host), the
  local journal shipped to the ledger, health check (1 pass) per host right after its switch.

The fleet runs with production intervals (HAProxy's default 2 s check interval, the demo worker
polling for jobs every second), as in benchmarks/scale.py, unless `--test-intervals` (the tests'
500 ms and 0.2 s): the idle fleet's own load is not what either tool costs.

Both run byte-compiled, as installed (deployer's package is compiled first, as a wheel install
does: a checkout run under PYTHONDONTWRITEBYTECODE would compile its sources on every run).
Each tool deploys to its own directory (/srv/cmp-fabric, /srv/cmp-deployer). One unmeasured run
of each first (it clones the mirrors: cold); then `--runs` rounds, fabric and deployer
interleaved, the order alternating each round. Each run is a child process: wall seconds from
spawn to exit (interpreter start and imports included), CPU = user + sys of the child
(os.wait4), peak memory = the child's maximum RSS. Prints the medians and deployer/fabric.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks" / "compare"
sys.path.insert(0, str(HERE))

import app_repo  # noqa: E402  (stdlib only)

HEALTH_URL = "http://{address}:8000/health"
DIRS = {"fabric": "/srv/cmp-fabric", "deployer": "/srv/cmp-deployer"}

# Peak memory is the child's ru_maxrss from wait4(2). On Linux a child's maxrss starts at the RSS
# its parent had when it forked (exec keeps the high-water mark of the mm it replaces), so the
# measuring process stays small: standard library only. Everything that needs deployer (the
# fleet, the demo app, checks on the hosts) runs in helper children (`--helper ...` below).


EVENTS: Path | None = None
ARTIFACT: str | None = None  # deployer with artifact.build=ARTIFACT (--artifact)
INTERVALS = "production"  # the fleet's HAProxy check and demo worker poll intervals (--test-intervals)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measure(argv: list[str], env: dict[str, str]) -> dict:
    """Run argv as a child; wall, CPU (user+sys) and peak RSS of that child alone."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=ROOT)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss": ru.ru_maxrss / 1024,
                "rc": proc.returncode, "stdout": out.read().decode(), "stderr": err.read().decode()}


def helper(*args: str) -> dict:
    """Run this script as a helper child (it imports deployer); its JSON answer."""
    proc = subprocess.run([sys.executable, __file__, "--helper", *args], cwd=ROOT, stdout=subprocess.PIPE,
                          text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"helper {' '.join(args)} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}


# -- helpers (children that import deployer) ---------------------------------------------------
def helper_main(args: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    from deployer.fleet.harness import Fleet

    fleet = Fleet()
    what = args[0]
    if what == "up":  # a fresh fleet of N web hosts, the demo app v1 on it, the shared .env
        import io

        from deployer.config import load_config
        from deployer.engine.deploy import DeployRun
        from deployer.output import JsonReporter

        n, production = int(args[1]), args[2] == "production"  # main's INTERVALS: "production" or "test"
        fleet.up(n, production=production, log=log)
        cfg = load_config("local", inventory=fleet.inventory_path, overrides={"parallel": n})
        t0 = time.monotonic()
        DeployRun(cfg, JsonReporter(io.StringIO()), ref="v1").run()
        log(f"  demo app v1 deployed (each web host serves its /health) in {time.monotonic() - t0:.1f}s")
        web = fleet.spec.web_hosts
        from deployer.fleet import spec as S

        for h in web:  # the deploy user's trees, as /srv/app is
            fleet.sh(h.name, " && ".join(f"mkdir -p {d}/shared && echo APP_ENV=bench > {d}/shared/.env && "
                                         f"chown -R {S.DEPLOY_USER}: {d}" for d in DIRS.values()))
        print(json.dumps({"dir": str(fleet.dir), "key": str(fleet.client_key),
                          "known_hosts": str(fleet.known_hosts), "user": S.DEPLOY_USER,
                          "jump": f"{S.DEPLOY_USER}@{S.BASTION_PUBLIC}",
                          "web": [[h.name, h.address] for h in web]}))
    elif what == "verify":  # every web host serves the release from the tool's directory
        d, release = DIRS[args[1]], args[2]
        for h in fleet.spec.web_hosts:
            out = fleet.sh(h.name, f"readlink {d}/current; cat {d}/current/restarted; "
                                   f"find {d}/current/ -type f | wc -l; "
                                   f"test -L {d}/current/.env && echo env-linked").stdout.split()
            if out[:2] != [f"{d}/releases/{release}", release] or int(out[2]) < 300 or out[-1] != "env-linked":
                raise SystemExit(f"{args[1]}: {h.name} is not on {release} as expected: {out}")
        print(json.dumps({"ok": True}))
    elif what == "down":
        fleet.down(quiet=True)
    else:
        raise SystemExit(f"unknown helper {what!r}")


# -- the comparison ----------------------------------------------------------------------------
def fabric_argv(fl: dict, repo: Path) -> list[str]:
    return [sys.executable, str(HERE / "plain_fabric.py"),
            "--hosts", ",".join(address for _, address in fl["web"]), "--key", fl["key"],
            "--user", fl["user"], "--jump", fl["jump"],
            "--known-hosts", fl["known_hosts"], "--repo", str(repo), "--ref", app_repo.TAG,
            "--deploy-to", DIRS["fabric"], "--health-url", HEALTH_URL]


def deployer_argv(inventory: Path) -> list[str]:
    return [sys.executable, "-m", "deployer", "deploy", "--env", "cmp", "--inventory", str(inventory),
            "--ref", app_repo.TAG, "--output", "json", "--yes"] + (["--set", f"artifact.build={ARTIFACT}"]
                                                                    if ARTIFACT else [])


def write_inventory(path: Path, fl: dict, repo: Path) -> None:
    hosts = []
    for i, (name, address) in enumerate(fl["web"]):
        roles = "[web, migrate]" if i == 0 else "[web]"
        hosts.append(f"  - {{name: {name}, address: {address}, roles: {roles}}}")
    text = string.Template((HERE / "inventory.template.yaml").read_text()).substitute(
        playbook=HERE / "compare.yaml", repo=repo, deploy_to=DIRS["deployer"], parallel=len(fl["web"]),
        key=fl["key"], known_hosts=fl["known_hosts"], user=fl["user"], jump=fl["jump"],
        hosts="\n".join(hosts))
    path.write_text(text)


def check_run(tool: str, res: dict) -> str:
    """The release the run deployed; raises when the run failed."""
    if res["rc"] != 0:
        raise SystemExit(f"{tool} run failed (exit {res['rc']}):\n{res['stderr'][-3000:]}\n{res['stdout'][-3000:]}")
    if tool == "fabric":
        return json.loads(res["stdout"].splitlines()[-1])["release"]
    events = [json.loads(line) for line in res["stdout"].splitlines() if line.startswith("{")]
    outcome = [e for e in events if e.get("event") == "outcome"]
    if not outcome or outcome[-1].get("outcome") != "success":
        raise SystemExit(f"deployer run did not succeed:\n{res['stdout'][-3000:]}")
    return outcome[-1]["release"]


def run_size(n: int, runs: int, repo: Path, tmp: Path) -> tuple[list[tuple], float]:
    log(f"{n} web hosts:")
    fl = helper("up", str(n), INTERVALS)
    inventory = tmp / f"cmp-{n}.yaml"
    write_inventory(inventory, fl, repo)
    env = dict(os.environ, DEPLOYER_STATE_DIR=str(tmp / f"state-{n}"))
    argv = {"fabric": fabric_argv(fl, repo), "deployer": deployer_argv(inventory)}
    results: dict[str, list[dict]] = {"fabric": [], "deployer": []}
    for tool in ("fabric", "deployer"):
        res = measure(argv[tool], env)
        check_run(tool, res)
        log(f"  cold (first clone, not counted) {tool:<8} wall {res['wall']:6.2f}s cpu {res['cpu']:5.2f}s "
            f"rss {res['rss']:6.1f} MiB")
    last = {}
    for i in range(runs):
        order = ("fabric", "deployer") if i % 2 == 0 else ("deployer", "fabric")
        for tool in order:
            res = measure(argv[tool], env)
            last[tool] = check_run(tool, res)
            results[tool].append(res)
            if EVENTS and tool == "deployer":
                (EVENTS / f"deployer-{n}-{i + 1}.jsonl").write_text(res["stdout"])
            extra = ""
            if tool == "fabric":
                extra = " steps " + json.dumps(json.loads(res["stdout"].splitlines()[-1])["steps"])
            log(f"  run {i + 1}/{runs} {tool:<8} wall {res['wall']:6.2f}s cpu {res['cpu']:5.2f}s "
                f"rss {res['rss']:6.1f} MiB{extra}")
    for tool in ("fabric", "deployer"):
        helper("verify", tool, last[tool])
    log("  verified: every web host serves each tool's last release (current, restarted, 300 files, .env link)")
    rows = []
    for tool in ("fabric", "deployer"):
        rs = results[tool]
        rows.append((n, tool, statistics.median(r["wall"] for r in rs), statistics.median(r["cpu"] for r in rs),
                     statistics.median(r["rss"] for r in rs)))
    return rows, min(r["rss"] for rs in results.values() for r in rs)


def main() -> None:
    if sys.argv[1:2] == ["--helper"]:
        helper_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,30", help="web hosts, comma-separated")
    ap.add_argument("--runs", type=int, default=5, help="measured runs of each tool per size")
    ap.add_argument("--events", type=Path, help="keep each deployer run's JSON events in this directory "
                                                "(timestamped: where its time goes)")
    ap.add_argument("--artifact", metavar="BUILD", help="deployer with artifact.build=BUILD (first: the first "
                                                         "web host builds, the others fetch from it)")
    ap.add_argument("--test-intervals", action="store_true",
                    help="the fleet at the tests' intervals (HAProxy checks every 500 ms, the demo worker polls "
                         "every 0.2 s) instead of production ones (2 s, 1 s)")
    args = ap.parse_args()
    global EVENTS, ARTIFACT, INTERVALS
    ARTIFACT = args.artifact
    INTERVALS = "test" if args.test_intervals else "production"
    EVENTS = args.events
    if EVENTS:
        EVENTS.mkdir(parents=True, exist_ok=True)
    sizes = [int(x) for x in args.sizes.split(",")]
    # Both tools run byte-compiled, as installed: Fabric and paramiko from site-packages, and
    # deployer's package compiled here (as a wheel install does), or an editable checkout under
    # PYTHONDONTWRITEBYTECODE would compile its sources again on every run.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "deployer")], check=True,
                   stdout=subprocess.DEVNULL)
    rows = []
    smallest = float("inf")
    with tempfile.TemporaryDirectory(prefix="deployer-compare-") as tmp:
        # The hosts see this machine's root filesystem except /srv, /tmp and /root: the app's
        # repository lives next to the fleet's demo app, which both tools clone from.
        repo = ROOT / ".fleet" / "compare-app"
        tag, commit = app_repo.build(repo)
        log(f"app repository {repo}: {app_repo.FILES} files, {app_repo.TOTAL_BYTES} bytes, {tag} = {commit[:12]}")
        try:
            for n in sizes:
                r, low = run_size(n, args.runs, repo, Path(tmp))
                rows += r
                smallest = min(smallest, low)
                helper("down")
        finally:
            helper("down")
            shutil.rmtree(repo, ignore_errors=True)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if own >= smallest:
        log(f"WARNING: this process peaked at {own:.1f} MiB, not below every child's peak ({smallest:.1f} "
            f"MiB): peak RSS figures are an upper bound")
    print(f"medians of {args.runs} runs each (fabric and deployer interleaved); one wave, no db, no lb; "
          f"{'deployer with artifact.build=' + ARTIFACT + '; ' if ARTIFACT else ''}the fleet at {INTERVALS} intervals")
    print(f"{'web hosts':>9}  {'tool':<8} {'wall s':>7} {'cpu s':>6} {'peak RSS MiB':>12} {'wall ratio':>10}")
    fabric = {}
    for n, tool, wall, cpu, rss in rows:
        if tool == "fabric":
            fabric[n] = (wall, cpu, rss)
            ratio = ""
        else:
            ratio = f"{wall / fabric[n][0]:.2f}"
        print(f"{n:>9}  {tool:<8} {wall:>7.2f} {cpu:>6.2f} {rss:>12.1f} {ratio:>10}")
    for n, (fw, fc, fr) in fabric.items():
        d = next(r for r in rows if r[0] == n and r[1] == "deployer")
        print(f"{n:>9}  deployer/fabric: wall {d[2] / fw:.2f}x, cpu {d[3] / fc:.2f}x, peak RSS {d[4] / fr:.2f}x")
    print(f"(peak RSS: ru_maxrss of each child; the measuring process itself peaked at {own:.1f} MiB)")


if __name__ == "__main__":
    main()
