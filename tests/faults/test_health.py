"""The environment at fault, not the release: a web host's worker wedged behind a healed network
partition (`recover` must see its stale heartbeat and restart it, so the next deploy succeeds),
and the state filesystem full on the ledger host (the deploy is refused, exit 3, nothing changed)."""

from __future__ import annotations

import time

from e2e.conftest import serving

from .runner import baseline

WORKER_FILE = "/srv/app/shared/storage/worker-$(hostname).json"
STATE = "/srv/app/.deployer"


def worker_pid(fleet, name: str) -> str:
    return fleet.sh(name, f"sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p' {WORKER_FILE}").stdout.strip()


def heartbeat_age(fleet, name: str) -> int:
    return int(fleet.sh(name, f"echo $(( $(date +%s) - $(stat -c %Y {WORKER_FILE}) ))").stdout.strip())


def test_a_worker_wedged_by_a_healed_partition_is_restarted_by_recover(fleet, cli, fault_env):
    """web2 is cut off; its worker, stuck on a database connection that died meanwhile, stops
    writing heartbeats (SIGSTOP stands for the wait on a dead connection: the process lives, its
    heartbeat goes stale). The partition heals; `recover` must not call the env consistent: it
    restarts web2's worker and checks a fresh heartbeat. The next deploy then succeeds."""
    inv = ["--inventory", fault_env.inventory]
    baseline(fleet, cli, fault_env)
    pid = worker_pid(fleet, "web2")
    assert pid
    fleet.cut("web2")
    try:
        fleet.sh("web2", f"kill -STOP {pid}")
        time.sleep(5)
    finally:
        fleet.reconnect("web2")
    assert heartbeat_age(fleet, "web2") >= 4  # wedged: alive, heartbeat stale
    r = cli("recover", "--env", "local", *inv, env=fault_env.env(), check=0)
    said = r.stdout + r.stderr
    assert "restarted the wedged worker of web2" in said, said[-2000:]
    assert worker_pid(fleet, "web2") != pid and heartbeat_age(fleet, "web2") <= 2
    fleet.sh("web2", f"kill -CONT {pid} 2>/dev/null || true")
    again = cli("recover", "--env", "local", *inv, env=fault_env.env(), check=0)
    assert "nothing to recover" in again.stdout + again.stderr
    cli("deploy", "--env", "local", "--ref", "v3", *inv, env=fault_env.env(), check=0)
    rel = serving(fleet)["web2"]
    assert rel and fleet.sh("web2", f"grep -c {rel} {WORKER_FILE}").stdout.strip() == "1"


def test_a_full_state_filesystem_refuses_the_deploy_and_changes_nothing(fleet, cli, fault_env):
    """db1's state directory (lock, ledger) on a filesystem with no space left: the deploy is
    refused (exit 3) naming the host and the path, before any host changes."""
    inv = ["--inventory", fault_env.inventory]
    baseline(fleet, cli, fault_env)
    before = serving(fleet)
    on_disk = {h.name: fleet.sh(h.name, "ls /srv/app/releases").stdout for h in fleet.spec.web_hosts}
    ledger = fleet.sh("db1", f"cat {STATE}/ledger.jsonl").stdout
    # a small filesystem under the state directory, holding what it held (a ledger grown by
    # every earlier test: 1 MiB more than it), then filled
    fleet.sh("db1", f"tar -C {STATE} -cf /tmp/state.tar . && "
                    f"mount -t tmpfs -o size=$(( $(du -sk {STATE} | cut -f1) + 1024 ))k,mode=0755 deployer-small {STATE} && "
                    f"chown --reference=/srv/app {STATE} && tar -C {STATE} -xf /tmp/state.tar")
    try:
        fleet.fill_disk("db1", STATE)
        r = cli("deploy", "--env", "local", "--ref", "v3", *inv, env=fault_env.env())
        said = r.stdout + r.stderr
        assert r.returncode == 3, said[-3000:]
        assert f"db1: no space left on {STATE}: the lock cannot be taken" in said
        assert serving(fleet) == before
        assert fleet.sh("db1", f"cat {STATE}/ledger.jsonl").stdout == ledger
        # no lock, and no half-written one (the token counter, lock-token*, stays)
        assert fleet.sh("db1", f"ls -A {STATE} | grep -cE '^lock($|[.]new[.])' || true").stdout.strip() == "0"
        assert {h.name: fleet.sh(h.name, "ls /srv/app/releases").stdout for h in fleet.spec.web_hosts} == on_disk
    finally:
        fleet.sh("db1", f"rm -f {STATE}/.filler; tar -C {STATE} -cf /tmp/state.tar . && umount {STATE} && "
                        f"tar -C {STATE} -xf /tmp/state.tar", check=False)
