"""Hosts that fail under a deploy: the ledger host, the load balancer, the database host and a
web host cut off mid-stage; a hung migration; a full disk at pull and at backup."""

from __future__ import annotations

import pytest

from .driver import STAGES, at_stage
from .runner import run


def sshd_up(fleet, name: str) -> None:
    if not fleet.port_open(name, 22, 0.3):
        fleet.start_sshd(name)


@pytest.mark.parametrize("stage", STAGES)
def test_ledger_host_stops_answering(stage, fleet, cli, fault_env):
    """sshd of db1 (ledger, lock, backups) dies mid-stage; PostgreSQL keeps serving the app."""
    run(f"ledger host sshd down at {stage}", fleet, cli, fault_env, ref="v3", trigger=at_stage(stage),
        action=lambda o: fleet.stop_ssh("db1"), heal=lambda: sshd_up(fleet, "db1"), expect=(0, 1, 3, 4))


@pytest.mark.parametrize("stage", ["switch", "gate", "finalize"])
def test_load_balancer_cut_off(stage, fleet, cli, fault_env):
    run(f"load balancer cut off at {stage}", fleet, cli, fault_env, ref="v2", trigger=at_stage(stage),
        action=lambda o: fleet.cut("lb1"), heal=lambda: fleet.reconnect("lb1"), expect=(0, 1, 4))


@pytest.mark.parametrize("stage", ["backup", "migrate", "switch"])
def test_database_host_cut_off(stage, fleet, cli, fault_env):
    run(f"database host cut off at {stage}", fleet, cli, fault_env, ref="v3", trigger=at_stage(stage),
        action=lambda o: fleet.cut("db1"), heal=lambda: fleet.reconnect("db1"), expect=(0, 1, 4))


@pytest.mark.parametrize("stage", ["pull", "switch", "worker_restart"])
def test_web_host_cut_off(stage, fleet, cli, fault_env):
    run(f"web2 cut off at {stage}", fleet, cli, fault_env, ref="v2", trigger=at_stage(stage),
        action=lambda o: fleet.cut("web2"), heal=lambda: fleet.reconnect("web2"), expect=(0, 1, 4))


def test_a_hung_migration_times_out_and_rolls_back(fleet, cli, fault_env):
    """A session holds a lock on the migrated table longer than the command timeout (15 s here)."""
    hold = ("nohup runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -h /srv/pg/run -d demo -Xq "
            "-c 'BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(19); COMMIT' "
            ">/dev/null 2>&1 &")
    run("hung migration (table locked past the timeout)", fleet, cli, fault_env, ref="v3",
        args=("--set", "ssh.command_timeout=15"), trigger=at_stage("migrate", command=False),
        action=lambda o: fleet.sh("db1", hold), expect=(1,), timeout=300)


def test_disk_full_at_pull(fleet, cli, fault_env):
    def fill(o):
        # a small disk under the releases, holding the ones there (the served one stays whole;
        # the one being pulled changes while tar reads it: tar's exit 1, "file changed")
        fleet.sh("web2", "{ tar -C /srv/app/releases -cf /tmp/releases.tar . || [ $? -eq 1 ]; } && "
                         "mount -t tmpfs -o size=8m,mode=0755 deployer-small /srv/app/releases && "
                         "chown --reference=/srv/app /srv/app/releases && "  # the deploy user's, as before
                         "tar -C /srv/app/releases -xf /tmp/releases.tar")
        fleet.fill_disk("web2", "/srv/app/releases")

    run("disk full at pull (web2)", fleet, cli, fault_env, ref="v3", trigger=at_stage("pull", command=False),
        action=fill, heal=lambda: fleet.free_disk("web2", "/srv/app/releases"), expect=(1,))


def test_disk_full_at_backup(fleet, cli, fault_env):
    def fill(o):
        fleet.small_disk("db1", "/srv/backups", "256k")
        fleet.fill_disk("db1", "/srv/backups")

    run("disk full at backup (db1)", fleet, cli, fault_env, ref="v3", trigger=at_stage("maintenance"),
        action=fill, heal=lambda: fleet.free_disk("db1", "/srv/backups"), expect=(1,))
