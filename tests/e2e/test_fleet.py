"""The local fleet itself: real sshd hosts, strict host keys, PostgreSQL, HAProxy, faults."""

from __future__ import annotations

import collections
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from deployer.errors import CommandFailed, ConnectError
from deployer.fleet import spec as S
from deployer.fleet.harness import Fleet
from deployer.shell import raw
from deployer.transport import Endpoint, SSHSettings, Transport

from .conftest import serving


def endpoint(fleet: Fleet, name: str) -> Endpoint:
    return Endpoint(name, fleet.spec.host(name).address, 22, "root")


def transport(fleet: Fleet, **kw) -> Transport:
    settings = SSHSettings(known_hosts=str(fleet.known_hosts), key_filename=str(fleet.client_key),
                           connect_timeout=kw.pop("connect_timeout", 3.0), **kw)
    return Transport(settings)


def test_every_host_answers_with_its_own_name_address_and_srv(fleet):
    with transport(fleet) as t:
        seen = {}
        for h in fleet.spec.hosts:
            ep = endpoint(fleet, h.name)
            t.run(ep, raw(f"echo {h.name}-marker > /srv/marker"))
            out = t.run(ep, raw("hostname; cat /srv/marker; ip -4 -o addr show eth0 | awk '{print $4}'"))
            seen[h.name] = out.stdout.split()
        for name, (hostname, marker, cidr) in seen.items():
            assert hostname == name
            assert marker == f"{name}-marker"  # each host has its own /srv
            assert cidr.split("/")[0] == fleet.spec.host(name).address
        assert len({v[2] for v in seen.values()}) == len(seen)
        # one connection per host, reused by both commands
        assert all(n == 1 for n in t.opened.values())


def test_strict_host_keys_refuse_unknown_and_changed_keys(fleet, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    t = Transport(SSHSettings(known_hosts=str(empty), key_filename=str(fleet.client_key),
                              connect_timeout=3))
    with pytest.raises(ConnectError, match=r"web1 \(10\.77\.0\.101\): host key unknown"):
        t.run(endpoint(fleet, "web1"), raw("true"))

    fleet.rekey("web2")
    try:
        with transport(fleet) as t2, pytest.raises(ConnectError, match="host key CHANGED"):
            t2.run(endpoint(fleet, "web2"), raw("true"))
    finally:
        fleet.trust()
    with transport(fleet) as t3:
        assert t3.run(endpoint(fleet, "web2"), raw("hostname")).stdout.strip() == "web2"


def test_postgres_on_db_host_is_reachable_from_web_hosts(fleet):
    password = (fleet.dir / "db_password").read_text().strip()
    with transport(fleet) as t:
        for name in ("web1", "web3"):
            out = t.run(endpoint(fleet, name), raw(
                f"PGPASSWORD={password} psql -h {S.DB_ADDRESS} -U demo -d demo -XAtc "
                "'select inet_server_addr()'"))
            assert out.stdout.strip() == S.DB_ADDRESS


def _backends(lb: str, n: int) -> collections.Counter:
    seen = collections.Counter()
    for _ in range(n):
        with urllib.request.urlopen(f"http://{lb}/", timeout=5) as resp:
            seen[resp.headers["X-Backend"]] += 1
    return seen


def test_load_balancer_spreads_requests_and_skips_a_drained_host(fleet, cli, consistent):
    if not all(serving(fleet).values()):
        cli("deploy", "--env", "local", "--ref", "v1", check=0)
    lb = fleet.spec.host("lb1").address
    assert set(_backends(lb, 30)) == {"web1", "web2", "web3"}
    sock = "UNIX-CONNECT:/srv/haproxy/admin.sock"
    fleet.sh("lb1", f"echo 'set server web/web2 state drain' | socat stdio {sock}")
    try:
        seen = _backends(lb, 30)
        assert "web2" not in seen and set(seen) == {"web1", "web3"}
    finally:
        fleet.sh("lb1", f"echo 'set server web/web2 state ready' | socat stdio {sock}")
    assert "web2" in _backends(lb, 30)


def test_cut_host_fails_to_connect_then_comes_back(fleet):
    fleet.cut("web3")
    try:
        with transport(fleet, connect_timeout=1.5) as t, pytest.raises(ConnectError, match="web3"):
            t.run(endpoint(fleet, "web3"), raw("true"))
    finally:
        fleet.reconnect("web3")
    with transport(fleet) as t:
        assert t.run(endpoint(fleet, "web3"), raw("hostname")).stdout.strip() == "web3"


def test_cut_host_mid_session_is_detected_by_keepalive_or_timeout(fleet):
    with transport(fleet, keepalive=1) as t:
        ep = endpoint(fleet, "web3")
        t.run(ep, raw("true"))
        fleet.cut("web3")
        try:
            with pytest.raises((CommandFailed, ConnectError)):
                t.run(ep, raw("echo late"), timeout=2)
        finally:
            fleet.reconnect("web3")


def test_killed_sshd_refuses_and_restarts(fleet):
    fleet.kill_sshd("web2")
    try:
        with transport(fleet) as t, pytest.raises(ConnectError, match="web2.*(refused|Connection)"):
            t.run(endpoint(fleet, "web2"), raw("true"))
    finally:
        fleet.start_sshd("web2")
    with transport(fleet) as t:
        assert t.run(endpoint(fleet, "web2"), raw("hostname")).stdout.strip() == "web2"


def test_frozen_sshd_times_out_instead_of_hanging(fleet):
    fleet.freeze_sshd("web1")
    t0 = time.monotonic()
    try:
        with transport(fleet, connect_timeout=2) as t, pytest.raises(ConnectError, match="web1"):
            t.run(endpoint(fleet, "web1"), raw("true"))
    finally:
        fleet.thaw_sshd("web1")
    assert time.monotonic() - t0 < 20


def test_small_disk_fills_up(fleet):
    fleet.small_disk("db1", "/srv/scratch", "1m")
    try:
        fleet.fill_disk("db1", "/srv/scratch")
        with transport(fleet) as t:
            out = t.run(endpoint(fleet, "db1"), raw("df -Pk /srv/scratch | awk 'NR==2{print $4}'"))
            assert int(out.stdout.strip()) == 0
            with pytest.raises(CommandFailed, match="No space left|I/O error"):
                t.run(endpoint(fleet, "db1"), raw("echo more > /srv/scratch/more"))
    finally:
        fleet.free_disk("db1", "/srv/scratch")


def test_hung_command_is_stopped_on_the_host_by_its_timeout(fleet):
    fleet.hang("web1", "git")
    try:
        with transport(fleet) as t:
            with pytest.raises(CommandFailed, match="timed out"):
                t.run(endpoint(fleet, "web1"), raw("git --version"), timeout=2)
            time.sleep(6)  # timeout -k 5: TERM at 2 s, KILL at 7 s at the latest
            left = t.run(endpoint(fleet, "web1"), raw("pgrep -f 'sleep [3]600' || true")).stdout.strip()
            assert left == ""
    finally:
        fleet.unhang("web1", "git")


def _leftovers(fleet: Fleet) -> list[str]:
    found = []
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [line for line in ns.splitlines() if line.startswith(S.NETNS_PREFIX)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [line.split(":")[1].strip() for line in links.splitlines()
              if f" {S.VETH_PREFIX}" in line or S.BRIDGE in line]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                stat = (proc / "stat").read_text().split()[2]
            except OSError:
                continue
            if stat != "Z" and (str(fleet.dir) in cmd or "/srv/bin/" in cmd or "haproxy.cfg" in cmd):
                found.append(f"pid {proc.name}: {cmd[:80]}")
    mounts = Path("/proc/self/mounts").read_text()
    found += [m for m in mounts.splitlines() if str(fleet.dir) in m]
    return found


def test_down_leaves_nothing_and_up_clears_a_crashed_fleet(fleet):
    fleet.down()
    assert _leftovers(fleet) == []
    # A crash: a fleet half torn down (processes killed, namespace and links left behind).
    fleet.up(3)
    subprocess.run(["kill", "-9", str(fleet.holder_pid("web2"))], check=True)
    fleet.state_file.unlink()  # and the state file lost
    subprocess.run(["ip", "netns", "add", "dpl-stale"], check=True)
    fleet.up(3)
    assert subprocess.run(["ip", "netns", "pids", "dpl-stale"], capture_output=True).returncode != 0
    up = [r["name"] for r in fleet.status() if r["alive"] and r["ssh"]]
    assert [n for n in up if n != "s3"] == [h.name for h in fleet.spec.hosts]  # (s3: the S3 server)
