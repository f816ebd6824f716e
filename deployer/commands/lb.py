"""HAProxy runtime API: drain and put back one server, read their states."""

from __future__ import annotations

from ..shell import Command, q, raw


def _api(socket: str, command: str) -> Command:
    return raw(f"echo {q(command)} | socat stdio {q('UNIX-CONNECT:' + socket)}")


def drain(socket: str, backend: str, server: str) -> Command:
    return _api(socket, f"set server {backend}/{server} state drain")


def ready(socket: str, backend: str, server: str) -> Command:
    return _api(socket, f"set server {backend}/{server} state ready")


def sessions(socket: str, backend: str, server: str) -> Command:
    """Current sessions of one server (waiting for it to reach 0 after a drain)."""
    return raw(
        f"echo 'show stat' | socat stdio {q('UNIX-CONNECT:' + socket)} | "
        f"awk -F, -v b={q(backend)} -v s={q(server)} '$1==b && $2==s {{print $5}}'"
    )


def states(socket: str) -> Command:
    return _api(socket, "show servers state")


def parse_states(output: str, backend: str) -> dict[str, str]:
    """server name -> 'ready' | 'drain' | 'maint' (from `show servers state`)."""
    result = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) > 6 and parts[1] == backend and parts[0].isdigit():
            adm = int(parts[6])
            result[parts[3]] = "drain" if adm & 8 else ("maint" if adm else "ready")
    return result
