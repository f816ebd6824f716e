"""The local fleet itself: real sshd hosts on a private network behind a bastion, the deploy user
and its sudo rules, strict host keys, PostgreSQL, HAProxy, faults."""

from __future__ import annotations

import collections
import socket
import subprocess
import threading
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


def endpoint(fleet: Fleet, name: str, user: str = S.DEPLOY_USER) -> Endpoint:
    return Endpoint(name, fleet.spec.host(name).address, 22, user)


BASTION = Endpoint("bastion1", S.BASTION_PUBLIC, 22, S.DEPLOY_USER)


def transport(fleet: Fleet, known_hosts: Path | None = None, **kw) -> Transport:
    """A connection to the hosts as deployer makes it: the deploy user, through the bastion."""
    settings = SSHSettings(known_hosts=str(known_hosts or fleet.known_hosts), key_filename=str(fleet.client_key),
                           jump=BASTION, connect_timeout=kw.pop("connect_timeout", 3.0), **kw)
    return Transport(settings)


def test_every_host_answers_with_its_own_name_address_and_home(fleet):
    with transport(fleet) as t:
        seen = {}
        for h in fleet.spec.hosts:
            ep = endpoint(fleet, h.name)
            t.run(ep, raw(f"echo {h.name}-marker > ~/marker"))
            out = t.run(ep, raw("hostname; cat ~/marker; id -un; hostname -I"))
            seen[h.name] = out.stdout.split()
        for name, (hostname, marker, user, *addresses) in seen.items():
            assert hostname == name
            assert marker == f"{name}-marker"  # each host has its own /home/deploy
            assert user == S.DEPLOY_USER
            host = fleet.spec.host(name)
            assert sorted(addresses) == sorted(a for a in (host.address, host.public) if a)
        # one connection per host, reused by both commands
        assert all(n == 1 for n in t.opened.values())


def _connects(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1.5):
            return True
    except OSError:
        return False


def test_app_hosts_are_not_reachable_from_the_orchestrator(fleet):
    """Production-shaped: from this machine only the bastion's SSH and the load balancer's HTTP
    answer; every app host (its SSH, its app, its database) only through them."""
    for h in fleet.spec.hosts:
        if "web" in h.roles or "db" in h.roles:
            for port in (22, 8000, 5432):
                assert not _connects(h.address, port), f"{h.name} {h.address}:{port} answers from here"
    lb = fleet.spec.host("lb1")
    assert not _connects(lb.address, 22) and not _connects(lb.public, 22)  # sshd: private side only
    assert _connects(lb.public, 80) and _connects(S.BASTION_PUBLIC, 22)
    # ... while inside, the bastion reaches every host's sshd and the db host's PostgreSQL
    targets = [(h.address, 22) for h in fleet.spec.hosts] + [(S.DB_ADDRESS, 5432)]
    assert fleet.probe(targets, timeout=2) == set(targets)
    # and an app host has no route out of the private network
    out = fleet.sh("web1", "ip -4 route", check=False).stdout
    assert "default" not in out and str(S.SUBNET) not in out
    # but to the bucket's endpoint (S3_ADDRESS alone, as a gateway endpoint would)
    assert [ln.split()[0] for ln in out.splitlines() if " via " in ln] == [S.S3_ADDRESS], out


def test_root_cannot_log_in_to_app_hosts_and_deploy_sudo_is_the_playbooks(fleet):
    with transport(fleet) as t:
        for name in ("web1", "db1", "lb1"):
            with pytest.raises(ConnectError, match=name):
                t.run(endpoint(fleet, name, "root"), raw("true"))
        ep = endpoint(fleet, "web1")
        rules = t.run(ep, raw("sudo -n -l")).stdout
        assert "/srv/bin/supervisorctl -c /srv/supervisor/supervisord.conf signal HUP web" in rules
        with pytest.raises(CommandFailed, match="password is required"):
            t.run(ep, raw("sudo -n -- /usr/bin/id"))
        status = t.run(ep, raw("sudo -n -- /srv/bin/supervisorctl -c /srv/supervisor/supervisord.conf "
                               "status worker"), check=False)
        assert "worker" in status.stdout
    log = fleet.sh("web1", "cat /srv/log/sudo.log").stdout
    assert "COMMAND=/usr/bin/id" in log and "a password is required" in log


def test_strict_host_keys_refuse_unknown_and_changed_keys(fleet, tmp_path):
    only_bastion = tmp_path / "known_hosts"
    only_bastion.write_text("".join(line + "\n" for line in fleet.known_hosts.read_text().splitlines()
                                    if line.startswith(S.BASTION_PUBLIC + " ")))
    t = transport(fleet, known_hosts=only_bastion)
    with pytest.raises(ConnectError, match=r"web1 \(10\.78\.0\.101\): host key unknown"):
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
    lb = fleet.spec.host("lb1").public
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


def test_a_host_cut_off_mid_command_is_given_up_after_its_missed_keepalives(fleet):
    """Behind the bastion no TCP keepalive can see web3 (the bastion's connection to it stays
    quiet): the SSH keepalives that want a reply do. A command waiting on the cut host fails,
    saying why, long before its own timeout (60 s), and the host is reached again once back."""
    with transport(fleet, keepalive=1) as t:
        ep = endpoint(fleet, "web3")
        t.run(ep, raw("true"))
        cutter = threading.Timer(1.0, fleet.cut, args=("web3",))
        cutter.start()
        try:
            with pytest.raises(ConnectError, match=r"^web3 \(10\.78\.0\.\d+\): connection lost: no answer "
                                                   r"to 3 keepalives in 3s \(the host, or the network"):
                t.run(ep, raw("sleep 30; echo finished"), timeout=60)
        finally:
            cutter.join()
            fleet.reconnect("web3")
        assert t.run(ep, raw("hostname")).stdout.strip() == "web3"


def test_killed_sshd_refuses_and_restarts(fleet):
    fleet.kill_sshd("web2")
    try:
        with transport(fleet) as t, pytest.raises(ConnectError, match="web2.*(refused|Connect)"):
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
    fleet.small_disk("db1", "/srv/app/scratch", "1m")  # the deploy user's, as its parent
    try:
        fleet.fill_disk("db1", "/srv/app/scratch")
        with transport(fleet) as t:
            out = t.run(endpoint(fleet, "db1"), raw("df -Pk /srv/app/scratch | awk 'NR==2{print $4}'"))
            assert int(out.stdout.strip()) == 0
            with pytest.raises(CommandFailed, match="No space left|I/O error"):
                t.run(endpoint(fleet, "db1"), raw("echo more > /srv/app/scratch/more"))
    finally:
        fleet.free_disk("db1", "/srv/app/scratch")
        fleet.sh("db1", "rmdir /srv/app/scratch", check=False)


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
              if any(f" {p}" in line for p in (S.VETH_PREFIX, S.PRIVATE_VETH_PREFIX))
              or S.BRIDGE in line or S.PRIVATE_BRIDGE in line]
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    found += [line for line in routes.splitlines() if str(S.PRIVATE_SUBNET) in line]
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
