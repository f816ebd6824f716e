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
