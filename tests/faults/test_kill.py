"""The orchestrator SIGKILLed at each of the 12 stages (with and without maintenance mode), and
during the automatic rollback; each followed by `recover`."""

from __future__ import annotations

import signal
import time

import pytest

from .driver import STAGES, at_stage, is_rollback, psql
from .runner import run


def kill(o) -> None:
    o.kill()


@pytest.mark.parametrize("stage", STAGES)
def test_sigkill_during_a_maintenance_deploy(stage, fleet, cli, fault_env):
    """v3 has a migration that is not online-safe: maintenance mode, backup, migration."""
    run(f"SIGKILL at {stage} (v3: maintenance, migration)", fleet, cli, fault_env, ref="v3",
        trigger=at_stage(stage), action=kill)


@pytest.mark.parametrize("stage", STAGES)
def test_sigkill_during_an_online_deploy(stage, fleet, cli, fault_env):
    """A new release of v2 over v2: no maintenance, no migration; a canary wave, then the rest."""
    run(f"SIGKILL at {stage} (v2: online)", fleet, cli, fault_env, ref="v2",
        trigger=at_stage(stage), action=kill)


def test_sigkill_when_the_first_host_has_switched(fleet, cli, fault_env):
    def first_switch(e):
        return e.get("event") == "command" and ".current." in e.get("command", "") and e.get("stage", "").startswith("switch")

    run("SIGKILL right after the first switch", fleet, cli, fault_env, ref="v2", trigger=first_switch,
        action=kill)


def test_sigkill_as_the_automatic_rollback_starts(fleet, cli, fault_env):
    run("SIGKILL as the automatic rollback starts", fleet, cli, fault_env, ref="bad-health",
        trigger=is_rollback, action=kill)


def test_sigkill_during_the_rollbacks_switch(fleet, cli, fault_env):
    seen = {"rb": False}

    def in_rollback_switch(e):
        seen["rb"] = seen["rb"] or is_rollback(e)
        return seen["rb"] and e.get("event") == "command" and ".current." in e.get("command", "")

    run("SIGKILL during the rollback's switch", fleet, cli, fault_env, ref="bad-health",
        trigger=in_rollback_switch, action=kill)


def test_sigkill_during_the_rollbacks_database_restore(fleet, cli, fault_env):
    """v3 migrates under maintenance, then its gate fails: the rollback restores the backup. The
    orchestrator dies after the restore has ended on db1 but before it recorded that (frozen
    while a session holds a lock the restore waits for, killed once the restore committed: an
    orchestrator whose machine vanished, its connection still open). The restore took the write
    fence with it: `recover` must see the database restored, neither refuse for a missing fence
    nor restore again."""
    hold = ("nohup runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -h /srv/pg/run -d demo -Xq "
            "-c 'BEGIN; LOCK TABLE items IN ACCESS SHARE MODE; SELECT pg_sleep(2); COMMIT' "
            ">/dev/null 2>&1 &")
    waiting = ("runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -h /srv/pg/run -d demo -XAtq -c "
               "\"select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
               "and query like '%pg_identify_object%'\"")

    def kill_once_restored(o):
        fleet.sh("db1", hold)
        deadline = time.monotonic() + 20
        while fleet.sh("db1", waiting, check=False).stdout.strip() in ("", "0"):
            assert time.monotonic() < deadline, "the restore never reached db1"
            time.sleep(0.05)
        o.signal(signal.SIGSTOP)  # it records nothing more; its connection stays open
        while psql(fleet, "select max(version) from schema_migrations") != "2":
            assert time.monotonic() < deadline + 20, "the restore never ended"
            time.sleep(0.1)
        o.kill()

    run("SIGKILL during the rollback's database restore", fleet, cli, fault_env, ref="v3",
        inventory=fault_env.failing_gate, trigger=is_rollback, action=kill_once_restored)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_two_signals_during_the_rollback_do_not_stop_it(sig, fleet, cli, fault_env):
    """A cancelled CI job sends its signal twice: the rollback still ends, every host back."""
    def twice(o):
        import time

        o.signal(sig)
        time.sleep(0.05)
        o.signal(sig)

    o = run(f"two {sig.name} during the automatic rollback", fleet, cli, fault_env, ref="bad-health",
            trigger=is_rollback, action=twice, expect=(1, 130))
    assert "Traceback" not in o.stderr


def test_ctrl_c_before_the_snapshot_is_clean(fleet, cli, fault_env):
    o = run("SIGINT at preflight", fleet, cli, fault_env, ref="v2", trigger=at_stage("preflight"),
            action=lambda o: o.signal(signal.SIGINT), expect=(130,))
    assert "Traceback" not in o.stderr


def test_sigterm_mid_switch_rolls_back_and_exits_130(fleet, cli, fault_env):
    run("SIGTERM during the switch", fleet, cli, fault_env, ref="v2", trigger=at_stage("switch"),
        action=lambda o: o.signal(signal.SIGTERM), expect=(130,))
