"""How long a command waiting on a host that was cut off takes to fail, through the bastion.

    sudo .venv/bin/python benchmarks/cutoff.py [--keepalive 1 2 5] [--rounds 3]

Brings up a fresh fleet (no S3), then for each `ssh.keepalive` value and round: connects to
web3 through bastion1 as deployer does, starts `sleep 60` there (command timeout 90 s), cuts
web3 off the network 1 s later (its links down), and times how long the command takes to fail,
then reconnects web3. Every round is bounded by the command timeout. Prints, per keepalive,
the seconds to fail (median, max) and what the error said. Before connections through a jump
host were watched, the command failed only at its timeout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployer.errors import DeployerError  # noqa: E402
from deployer.fleet import spec as S  # noqa: E402
from deployer.fleet.harness import Fleet  # noqa: E402
from deployer.shell import raw  # noqa: E402
from deployer.transport import Endpoint, SSHSettings, Transport  # noqa: E402

HOST = "web3"
TIMEOUT = 90.0


def one_round(fleet: Fleet, keepalive: int) -> tuple[float, str]:
    settings = SSHSettings(known_hosts=str(fleet.known_hosts), key_filename=str(fleet.client_key),
                           jump=Endpoint("bastion1", S.BASTION_PUBLIC, 22, S.DEPLOY_USER),
                           connect_timeout=3.0, keepalive=keepalive)
    ep = Endpoint(HOST, fleet.spec.host(HOST).address, 22, S.DEPLOY_USER)
    with Transport(settings) as t:
        t.run(ep, raw("true"))
        cutter = threading.Timer(1.0, fleet.cut, args=(HOST,))
        cutter.start()
        t0 = time.monotonic()
        try:
            t.run(ep, raw("sleep 60"), timeout=TIMEOUT)
            said = "the command ended (the cut was not seen)"
        except DeployerError as exc:
            said = exc.message.splitlines()[0]
        took = time.monotonic() - t0 - 1.0  # from the cut
        cutter.join()
        fleet.reconnect(HOST)
    return took, said


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keepalive", type=int, nargs="+", default=[1, 2, 5])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    fleet = Fleet()
    fleet.up(3, s3=False, log=lambda *_: None)
    try:
        print(f"{'keepalive s':>11} {'median s':>9} {'max s':>6}   error (command timeout {TIMEOUT:g} s)")
        for every in args.keepalive:
            runs = [one_round(fleet, every) for _ in range(args.rounds)]
            took = [t for t, _ in runs]
            print(f"{every:11d} {statistics.median(took):9.1f} {max(took):6.1f}   {runs[-1][1]}")
    finally:
        fleet.down(quiet=True)


if __name__ == "__main__":
    main()
