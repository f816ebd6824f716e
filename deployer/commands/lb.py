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


def _refused(backend: str, server: str, missing_ok: bool = False) -> str:
    """Exit 3 naming the server and the backend when HAProxy refused the command in `$out`
    (missing_ok: a server HAProxy does not have is not out of rotation: say so, exit 0)."""
    then, end = (": nothing to put back", "exit 0") if missing_ok else ("", "exit 3")
    return (f"case \"$out\" in *[Nn]o\\ such*|*[Uu]nknown*) printf 'haproxy: no server %s in backend %s "
            f"(it answered: %s){then}\\n' {q(server)} {q(backend)} \"$out\" >&2; {end};; esac")


def drain_and_wait(socket: str, backend: str, server: str, wait: float = 15) -> Command:
    """Drain one server and wait (bounded) for its sessions to end, in one round trip. An
    unknown server is an error (HAProxy answers "No such server." with exit 0)."""
    sock = q("UNIX-CONNECT:" + socket)
    return raw(
        f"out=$(echo {q(f'set server {backend}/{server} state drain')} | socat stdio {sock}) || exit 1; "
        f"{_refused(backend, server)}; "
        f"i=0; while [ $i -lt {int(wait * 10)} ]; do "
        f"n=$(echo 'show stat' | socat stdio {sock} | awk -F, -v b={q(backend)} -v s={q(server)} "
        f"'$1==b && $2==s {{print $5}}'); "
        f"if [ -z \"$n\" ] || [ \"$n\" = 0 ]; then exit 0; fi; sleep 0.1; i=$((i+1)); done; true"
    )


def ready_and_wait_up(socket: str, backend: str, server: str, wait: float,
                      missing_ok: bool = False) -> Command:
    """Put one server back and wait (bounded) until the load balancer itself sees it UP: a host
    HAProxy's own health check marks DOWN is not back, whatever a direct check said. wait=0:
    do not wait (in maintenance mode the load balancer's checks fail by design). missing_ok:
    a server HAProxy does not have (its drain was refused) has nothing to put back."""
    sock = q("UNIX-CONNECT:" + socket)
    ready = (f"out=$(echo {q(f'set server {backend}/{server} state ready')} | socat stdio {sock}) || exit 1; "
             f"{_refused(backend, server, missing_ok)}")
    if not wait:
        return raw(ready)
    return raw(
        f"{ready}; i=0; while [ $i -lt {int(wait * 10)} ]; do "
        f"st=$(echo {q(f'show servers state {backend}')} | socat stdio {sock} | "
        f"awk -v s={q(server)} '$4==s {{print $6}}'); "
        f"[ \"$st\" = 2 ] && exit 0; sleep 0.1; i=$((i+1)); done; "
        f"printf '%s is not UP at the load balancer after %ss (operational state %s; lb.up_timeout sets the wait)\\n' {q(server)} "
        f"{q(f'{wait:g}')} \"$st\" >&2; exit 1"
    )


def wait_all_up(socket: str, backend: str, servers: list[str], wait: float) -> Command:
    """Wait (bounded) until the load balancer sees every one of `servers` UP (its own health
    checks: what users get), in one round trip; exit 1 naming those still not UP."""
    sock = q("UNIX-CONNECT:" + socket)
    names = " ".join(q(s) for s in servers)
    return raw(
        f"i=0; while :; do st=$(echo {q(f'show servers state {backend}')} | socat stdio {sock}) || exit 1; "
        f"down=''; for s in {names}; do "
        f"printf '%s\\n' \"$st\" | awk -v s=\"$s\" '$4==s && $6==2 {{f=1}} END {{exit !f}}' || down=\"$down $s\"; "
        f"done; [ -z \"$down\" ] && exit 0; [ $i -ge {int(wait * 10)} ] && break; sleep 0.1; i=$((i+1)); done; "
        f"printf 'not UP at the load balancer after %ss:%s (its own health check decides what users get, "
        f"in maintenance too: see docs/servers.md; lb.up_timeout sets the wait)\\n' {q(f'{wait:g}')} \"$down\" >&2; exit 1"
    )
