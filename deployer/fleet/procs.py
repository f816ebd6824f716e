"""Processes, namespaces and links on this machine, for the local fleet: running a command,
listing our network namespaces and links, finding, signalling and probing processes."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from ..errors import DeployerError


class FleetError(DeployerError):
    exit_code = 2


def _run(argv: list[str], *, check: bool = True, input: str | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise FleetError(f"fleet: `{' '.join(argv)}` exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def _netns_list() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _links() -> list[str]:
    out = _run(["ip", "-o", "link", "show"], check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            names.append(parts[1].strip().split("@")[0])
    return names


def _marked_pids(marker_dir: str) -> list[int]:
    """Processes started from a fleet init script of this fleet directory."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in cmdline if a]
        if len(args) >= 2 and args[-1].startswith(marker_dir + "/hosts/") and args[-1].endswith("init.sh"):
            pids.append(int(entry.name))
    return pids


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return status != "Z"


def _port_open(address: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


_PROBE = r"""
import json, select, socket, sys, time
targets, timeout = json.loads(sys.argv[1]), float(sys.argv[2])
socks = {}
for address, port in targets:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex((address, port))
    socks[s] = (address, port)
ok, deadline, pending = [], time.monotonic() + timeout, dict(socks)
while pending:
    left = deadline - time.monotonic()
    if left <= 0:
        break
    _, writable, _ = select.select([], list(pending), [], left)
    for s in writable:
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            ok.append(pending[s])
        del pending[s]
print(json.dumps(ok))
"""


def _probe(netns: str, targets: list[tuple[str, int]], timeout: float) -> set[tuple[str, int]]:
    """Which (address, port) targets accept a TCP connection from inside network namespace
    `netns` (all probed at once, within `timeout`)."""
    import json
    import sys

    if not targets:
        return set()
    proc = _run(["ip", "netns", "exec", netns, sys.executable, "-I", "-c", _PROBE,
                 json.dumps([list(t) for t in targets]), str(timeout)], check=False, timeout=timeout + 30)
    if proc.returncode != 0:
        return set()
    try:
        return {(a, int(p)) for a, p in json.loads(proc.stdout.strip().splitlines()[-1])}
    except (ValueError, IndexError):
        return set()
