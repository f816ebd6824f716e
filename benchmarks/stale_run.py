"""A run frozen past its lock's staleness while another run breaks the lock and deploys: how many
host changes does the frozen run make when it wakes up?

    sudo .venv/bin/python benchmarks/stale_run.py [--trials 50] [--lease 4] [--frozen 6]
        [--budget 3600]

Brings up a fresh fleet (no S3), deploys v1, then for each trial:

1. run A (`deployer deploy`, a child process) deploys v2 in two waves, the first with a bake
   (A sits between its canary and the rest);
2. once A's canary is switched, A gets SIGSTOP and stays frozen `--frozen` seconds, past the
   lock's staleness (`state.lease`, `--lease` seconds in the benchmark's inventory: the
   default 60 s would make 50 trials last over an hour; the fence does not depend on it);
3. run B breaks the lock (`unlock --force --reason`: A's pid is alive on this machine) and
   deploys v3 to every host;
4. A gets SIGCONT and is waited for (bounded); then each app host's `current` and fence file
   are read: a host whose `current` is no longer B's release was changed by A.

Every trial is bounded (A and B each get `--run-timeout` seconds, then are killed), and so is
the whole (`--budget` seconds: the trials not started by then are skipped). Prints, per trial,
A's exit code, the hosts it changed and what stopped it (a host refusing its token, or its own
lock check), then the total of host changes made by A (0 expected: the hosts refuse A's token
once B has touched them), A's exit codes (4 expected) and what stopped it, counted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployer.commands import fence as FN  # noqa: E402
from deployer.fleet import spec as S  # noqa: E402
from deployer.fleet.harness import Fleet  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WAVES = """
rollout:
  - {size: 1, bake: 10}
  - {size: "100%", bake: 0}
state:
  lease: {lease}
"""


def deployer(inv: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "deployer", *args, "--env", "local", "--inventory", str(inv),
            "--output", "json"]


def wait_for_canary(proc: subprocess.Popen, timeout: float) -> bool:
    """Read A's events until its first wave's switch is done (then it bakes): True; False when
    it ended or the time ran out first."""
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        if time.monotonic() > deadline:
            return False
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "stage" and event.get("stage") == "switch" and event.get("state") == "done":
            return True
        if event.get("event") == "gate":  # the canary's health check: its switch is done
            return True
    return False


def host_state(fleet: Fleet, hosts: list[str]) -> dict[str, tuple[str, str]]:
    """Each host's (release `current` points to, largest fencing token seen)."""
    out = {}
    for h in hosts:
        res = fleet.sh(h, f"readlink {S.DEPLOY_TO}/current; cat ~{S.DEPLOY_USER}/.deployer/{FN.SEEN}-local-???????? "
                          "2>/dev/null; true", timeout=30)
        lines = (res.stdout.splitlines() + ["", ""])[:2]
        out[h] = (lines[0].rsplit("/", 1)[-1], lines[1].strip())
    return out


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
    return proc.wait()


def how_stopped(stderr: str) -> str:
    """What stopped A: a host refused its token ("fenced"), or its own lock check ("lock lost")."""
    if "fenced:" in stderr:
        return "a host refused its token"
    if "lock" in stderr:
        return "its own lock check"
    return "other: " + (stderr.strip().splitlines() or ["(nothing said)"])[-1][:100]


def trial(fleet: Fleet, inv: Path, ref: str, args) -> tuple[int | None, list[str], str]:
    """One trial: A's exit code (None: it never reached its canary), the hosts A changed, and
    what stopped A."""
    hosts = [h.name for h in fleet.spec.web_hosts]
    err = tempfile.TemporaryFile(mode="w+")
    a = subprocess.Popen(deployer(inv, "deploy", "--ref", ref, "--yes"), cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=err, text=True)
    try:
        if not wait_for_canary(a, args.run_timeout):
            return None, [], "never reached its canary"
        threading.Thread(target=a.stdout.read, daemon=True).start()  # A never blocks on its output
        os.kill(a.pid, signal.SIGSTOP)
        time.sleep(args.frozen)
        subprocess.run(deployer(inv, "unlock", "--force", "--reason", "benchmark: A is frozen"), cwd=ROOT,
                       capture_output=True, timeout=120)
        b = subprocess.run(deployer(inv, "deploy", "--ref", "v3", "--yes"), cwd=ROOT, capture_output=True,
                           text=True, timeout=args.run_timeout)
        after_b = host_state(fleet, hosts)
        if b.returncode != 0 or len({rel for rel, _ in after_b.values()}) != 1:
            raise SystemExit(f"B's deploy of v3 did not end on one release (exit {b.returncode}): "
                             f"{after_b}\n{b.stderr[-2000:]}")
        os.kill(a.pid, signal.SIGCONT)
        try:
            code = a.wait(timeout=args.run_timeout)
        except subprocess.TimeoutExpired:
            code = stop(a)
        after_a = host_state(fleet, hosts)
        changed = [h for h in hosts if after_a[h][0] != after_b[h][0]]
        err.seek(0)
        return code, changed, how_stopped(err.read())
    finally:
        stop(a)
        err.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--web", type=int, default=3)
    ap.add_argument("--lease", type=float, default=4.0, help="the lock's staleness (state.lease), seconds")
    ap.add_argument("--frozen", type=float, default=6.0, help="seconds A stays stopped (> --lease)")
    ap.add_argument("--run-timeout", type=float, default=300.0, help="seconds each run gets")
    ap.add_argument("--budget", type=float, default=3600.0, help="seconds for all trials")
    args = ap.parse_args()
    fleet = Fleet()
    fleet.up(args.web, s3=False, log=lambda *_: None)
    try:
        inv = fleet.dir / "stale-run-bench.yaml"
        inv.write_text(fleet.inventory_path.read_text() + WAVES.replace("{lease}", f"{args.lease:g}"))
        subprocess.run(deployer(inv, "deploy", "--ref", "v1", "--yes"), cwd=ROOT, capture_output=True,
                       timeout=args.run_timeout, check=True)
        t0 = time.monotonic()
        changes, codes, stopped, done = 0, Counter(), Counter(), 0
        for n in range(args.trials):
            if time.monotonic() - t0 > args.budget:
                print(f"budget of {args.budget:g}s spent: {args.trials - n} trial(s) skipped", file=sys.stderr)
                break
            code, changed, why = trial(fleet, inv, "v2", args)
            codes[code] += 1
            stopped[why] += 1
            changes += len(changed)
            done += 1
            print(f"trial {n + 1}: A exited {code}, changed {', '.join(changed) or 'no host'}; stopped by {why}",
                  file=sys.stderr)
        print(f"{'trials':>6} {'host changes by A':>17}   A's exit codes")
        print(f"{done:6d} {changes:17d}   " + ", ".join(f"{c}: {k}" for c, k in sorted(codes.items(), key=str)))
        print("A stopped by: " + ", ".join(f"{why} ({k})" for why, k in stopped.most_common()))
    finally:
        fleet.down(quiet=True)


if __name__ == "__main__":
    main()
