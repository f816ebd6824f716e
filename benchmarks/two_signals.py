"""Two signals during an automatic rollback, in a loop: how many rollbacks end whole.

    sudo .venv/bin/python benchmarks/two_signals.py [--trials 50]
        [--signals INT TERM] [--stages switch worker_restart database] [--timeout 240] [--budget 7200]

A cancelled CI job sends its signal twice. Brings up a fresh fleet (no S3) and deploys v2; then,
per signal and rollback stage, `--trials` times: a deploy that fails (bad-health at its gate; for
`database`, v3 migrated under maintenance with a gate that always fails, so the rollback restores
the backup) is watched through its JSON events; as the rollback's stage starts, the signal is
sent twice, 50 ms apart. A trial passes when the orchestrator exits by itself within `--timeout`
seconds with 1 or 130, every web host serves v2's release, the lock is free and no web host is
left in maintenance. A hung orchestrator is killed (counted as failed: its stacks are printed
with faulthandler first, SIGABRT), and the fleet is brought back to v2 before the next trial.
Prints, per signal and stage, passed/trials run and the slowest exit; the whole is bounded by
`--budget` seconds (a cell cut short by it says so).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deployer.fleet.harness import Fleet  # noqa: E402

FAILING_GATE = ("extends: demo\nname: failing-gate\nstages:\n  gate_checks:\n"
                "    - run: \"echo 'gate check: always failing' >&2; exit 1\"\n")


def cli(*args: str, inventory: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deployer.cli", *args, "--inventory", str(inventory)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def serving(fleet: Fleet) -> dict[str, str]:
    return {h.name: Path(fleet.sh(h.name, "readlink /srv/app/current || true").stdout.strip()).name
            for h in fleet.spec.web_hosts}


def trial(fleet: Fleet, sig: signal.Signals, stage: str, inv: Path, good: str, timeout: float) -> tuple[bool, float, str]:
    ref = "v3" if stage == "database" else "bad-health"
    argv = [sys.executable, "-X", "faulthandler", "-m", "deployer.cli", "deploy", "--env", "local",
            "--ref", ref, "--output", "json", "--inventory", str(inv)]
    # SIGINT as a terminal gives it, even when this script runs in a background job (which
    # inherits SIGINT ignored, and an ignored signal stays ignored across exec)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    rolling, sent = False, False
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()
    t0 = time.monotonic()
    for line in proc.stdout:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        rolling = rolling or e.get("event") == "rollback"
        if rolling and not sent and e.get("event") == "stage" and e.get("stage") == stage \
                and e.get("state") == "start":
            proc.send_signal(sig)
            time.sleep(0.05)
            proc.send_signal(sig)
            sent, t0 = True, time.monotonic()
            break
    try:
        proc.stdout.read()
        code = proc.wait(timeout=max(1.0, timeout - (time.monotonic() - t0)))
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
        time.sleep(1)
        proc.kill()
        proc.wait()
        print("".join(err)[-6000:], file=sys.stderr)
        return False, time.monotonic() - t0, "hung"
    took = time.monotonic() - t0
    if not sent:
        return False, took, f"the rollback's {stage} stage never started (exit {code})"
    problems = []
    if code not in (1, 130):
        problems.append(f"exit {code}")
    if set(serving(fleet).values()) != {good}:
        problems.append(f"serving {serving(fleet)}")
    if fleet.sh("db1", "test -d /srv/app/.deployer/lock", check=False).returncode == 0:
        problems.append("lock held")
    flags = [h.name for h in fleet.spec.web_hosts
             if fleet.sh(h.name, "test -e /srv/app/shared/storage/maintenance.json", check=False).returncode == 0]
    if flags:
        problems.append(f"maintenance left on {flags}")
    return not problems, took, "; ".join(problems)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--signals", nargs="+", default=["INT", "TERM"])
    ap.add_argument("--stages", nargs="+", default=["switch", "worker_restart", "database"])
    ap.add_argument("--timeout", type=float, default=240.0)
    ap.add_argument("--budget", type=float, default=7200.0,
                    help="seconds for all trials: a cell not finished by then says how far it got")
    args = ap.parse_args()
    t_start = time.monotonic()
    fleet = Fleet()
    fleet.up(3, s3=False, log=lambda *_: None)
    try:
        data = yaml.safe_load(fleet.inventory_path.read_text())
        inv = fleet.inventory_path.parent / "two-signals.yaml"
        inv.write_text(yaml.safe_dump({**data, "maintenance_ttl": 60}, sort_keys=False))
        (fleet.inventory_path.parent / "failing-gate.yaml").write_text(FAILING_GATE)
        inv_fail = fleet.inventory_path.parent / "two-signals-failing-gate.yaml"
        inv_fail.write_text(yaml.safe_dump({**data, "maintenance_ttl": 60, "playbook": "failing-gate.yaml"},
                                           sort_keys=False))
        os.environ.setdefault("DEPLOYER_STATE_DIR", str(fleet.inventory_path.parent / "two-signals-state"))
        assert cli("deploy", "--env", "local", "--ref", "v2", inventory=inv).returncode == 0, "baseline"
        (good,) = set(serving(fleet).values())
        print(f"{'signal':<8} {'stage':<15} {'passed':>9} {'slowest exit s':>15}   first failure")
        for name in args.signals:
            sig = signal.Signals[f"SIG{name}"]
            for stage in args.stages:
                passed, slowest, first, ran = 0, 0.0, "", 0
                for _ in range(args.trials):
                    if time.monotonic() - t_start > args.budget:
                        first = first or f"budget of {args.budget:g}s spent"
                        break
                    ran += 1
                    ok, took, why = trial(fleet, sig, stage, inv_fail if stage == "database" else inv,
                                          good, args.timeout)
                    passed += ok
                    slowest = max(slowest, took)
                    if not ok:  # back to one release of v2 for the next trial
                        first = first or why
                        cli("recover", "--env", "local", "--force", "--reason", "benchmark", inventory=inv)
                        cli("deploy", "--env", "local", "--ref", "v2", inventory=inv)
                        (good,) = set(serving(fleet).values())
                print(f"{name:<8} {stage:<15} {passed:>4}/{ran:<4} {slowest:>15.1f}   {first}", flush=True)
    finally:
        fleet.down(quiet=True)


if __name__ == "__main__":
    main()
