"""The Django example app's deploys on the local fleet: each host building its release against
one host building it and shipping it (release artifacts).

    .venv/bin/python benchmarks/django.py [--web 3] [--rounds 3]

(root; the fleet is shared: run it under the lock.) A fresh fleet of `--web` web hosts; the
Django example app (examples/django-app: gunicorn, Celery, PostgreSQL, HAProxy) on all of them
(deployer.fleet.django, the shipped `django` playbook). For each of `artifact.build: each` and
`artifact.build: first`: v1 (cold: a virtualenv from pip), then `--rounds` deploys of v2 (warm:
requirements.txt unchanged, so the playbook reuses the previous release's virtualenv), each in
its own process (`python -m deployer deploy ... --set artifact.build=B`): wall seconds from spawn
to exit. Then a check that every web host answers /health with the last release. Prints the
medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deployer.fleet import django as DJ  # noqa: E402
from deployer.fleet.harness import Fleet  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


EVENTS: Path | None = None  # keep each run's JSON events here (--events)


def deploy(inventory: Path, ref: str, build: str, env: dict, name: str = "") -> tuple[float, str]:
    argv = [sys.executable, "-m", "deployer", "deploy", "--env", "django", "--inventory", str(inventory),
            "--ref", ref, "--output", "json", "--yes", "--set", f"artifact.build={build}"]
    t0 = time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    wall = time.monotonic() - t0
    events = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    if EVENTS and name:
        (EVENTS / f"{name}.jsonl").write_text(res.stdout)
    outcome = [e for e in events if e.get("event") == "outcome"]
    if res.returncode != 0 or not outcome or outcome[-1].get("outcome") != "success":
        raise SystemExit(f"deploy {ref} ({build}) failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    return wall, outcome[-1]["release"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--web", type=int, default=3, help="web hosts running the app")
    ap.add_argument("--rounds", type=int, default=3, help="warm deploys of v2 per mode")
    ap.add_argument("--events", type=Path, help="keep each deploy's JSON events in this directory")
    args = ap.parse_args()
    global EVENTS
    EVENTS = args.events
    if EVENTS:
        EVENTS.mkdir(parents=True, exist_ok=True)
    DJ.WEB_HOSTS = args.web
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "deployer")], check=True,
                   stdout=subprocess.DEVNULL)
    state = tempfile.TemporaryDirectory(prefix="deployer-django-")
    env = dict(os.environ, DEPLOYER_STATE_DIR=state.name)
    fleet = Fleet()
    rows = []
    try:
        fleet.up(args.web, log=log)
        site = DJ.DjangoSite(fleet)
        site.install(log=log)
        for build in ("each", "first"):
            cold, _ = deploy(site.inventory_path, "v1", build, env, f"{build}-v1")
            log(f"  {build}: v1 (cold) {cold:.1f}s")
            warm = []
            for i in range(args.rounds):
                wall, release = deploy(site.inventory_path, "v2", build, env, f"{build}-v2-{i + 1}")
                warm.append(wall)
                log(f"  {build}: v2 (warm) round {i + 1}/{args.rounds} {wall:.1f}s")
            for h in DJ.web_hosts(fleet.spec):
                out = fleet.sh(h.name, f"curl -fsS http://{h.address}:{DJ.PORT}/health").stdout
                if json.loads(out).get("release") != release:
                    raise SystemExit(f"{h.name} does not answer {release}: {out[:300]}")
            rows.append((build, cold, statistics.median(warm), min(warm), max(warm)))
        site.remove()
    finally:
        fleet.down(quiet=True)
        state.cleanup()
    print(f"Django example app, {args.web} web hosts; v2 deployed {args.rounds} times after v1 (medians)")
    print(f"{'artifact.build':>14} {'v1 cold s':>10} {'v2 warm s':>10} {'min':>6} {'max':>6}")
    for build, cold, med, lo, hi in rows:
        print(f"{build:>14} {cold:>10.1f} {med:>10.1f} {lo:>6.1f} {hi:>6.1f}")


if __name__ == "__main__":
    main()
