"""Races and hard cases: two deploys with --lock-wait, promote and abort at once, a corrupted
backup at restore, a frozen orchestrator, a recover killed halfway."""

from __future__ import annotations

import signal
import threading

import yaml
from e2e.conftest import serving

from .conftest import CANARY_ROWS, record
from .driver import Orchestrator, at_stage, check_invariants, psql
from .runner import baseline, releases_of, run


def test_two_deploys_racing_with_lock_wait(fleet, cli, fault_env):
    """The second waits for the first, then reads the hosts again: its snapshot is the first's
    release, so a rollback of it would return there (not to what was live before both)."""
    name = "two deploys racing with --lock-wait"
    try:
        baseline(fleet, cli, fault_env)
        inv = ["--inventory", fault_env.inventory]
        procs = []

        def go():
            procs.append(cli("deploy", "--env", "local", "--ref", "v2", "--lock-wait", "120", *inv,
                             env=fault_env.env(), timeout=300))

        threads = [threading.Thread(target=go) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(p.returncode for p in procs) == [0, 0], [p.stderr[-1500:] for p in procs]
        ledger = [yaml.safe_load(x) for x in fleet.sh("db1", "cat /srv/app/.deployer/ledger.jsonl").stdout.splitlines()
                  if x.strip()]
        first, second = [e for e in ledger if e.get("type") == "deploy.start"][-2:]
        snap2 = next(e for e in ledger if e.get("type") == "snapshot" and e.get("run") == second["run"])
        assert set(snap2["hosts"].values()) == {first["release"]}, (first, snap2)
        assert second["release"] > first["release"]  # release ids still sort by time
        obs = check_invariants(fleet, cli, fault_env.inventory, allowed=releases_of(cli, fault_env, "v2"),
                               canary_rows=CANARY_ROWS, secret=fault_env.secret,
                               texts=[p.stdout + p.stderr for p in procs], state_dir=fault_env.state_dir)
        assert obs.ok, obs.problems
        record(name, "0,0", "-", True)
    except BaseException as exc:
        record(name, "?", "-", False, str(exc).splitlines()[0][:120])
        raise


def test_promote_and_abort_at_once(fleet, cli, fault_env, tmp_path):
    """Exactly one of them takes the paused rollout; the fleet ends on one release."""
    name = "promote and abort at once"
    try:
        snap = baseline(fleet, cli, fault_env)
        data = yaml.safe_load(open(fault_env.inventory).read())
        data["rollout"] = [{"size": 1, "pause": True}, {"size": "100%"}]
        inv = tmp_path / "paused.yaml"
        inv.write_text(yaml.safe_dump(data))
        args = ["--env", "local", "--inventory", str(inv)]
        p = cli("deploy", "--ref", "v2", *args, env=fault_env.env())
        assert p.returncode == 0 and "paused" in p.stdout, p.stderr[-1500:]
        results = {}

        def go(verb):
            results[verb] = cli(verb, *args, env=fault_env.env(), timeout=300)

        threads = [threading.Thread(target=go, args=(v,)) for v in ("promote", "abort")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.returncode for r in results.values())
        assert codes == [0, 3], {v: (r.returncode, r.stderr[-800:]) for v, r in results.items()}
        obs = check_invariants(fleet, cli, str(inv), allowed={snap} | releases_of(cli, fault_env, "v2"),
                               canary_rows=CANARY_ROWS, secret=fault_env.secret,
                               texts=[r.stdout + r.stderr for r in results.values()], state_dir=fault_env.state_dir)
        assert len(set(serving(fleet).values())) == 1
        assert obs.ok, obs.problems
        record(name, ",".join(map(str, codes)), "-", True)
    except BaseException as exc:
        record(name, "?", "-", False, str(exc).splitlines()[0][:120])
        raise


def test_corrupted_backup_at_restore_stops_and_keeps_the_site_closed(fleet, cli, fault_env):
    """v3 migrates under maintenance, its gate fails, and the rollback finds the backup corrupt:
    exit 4, hosts on the snapshot, maintenance ON with the reason, the dead-man switch disarmed
    (the site must not reopen by itself over an unknown database), `recover` says what to do; a
    human then decides."""
    corrupt = ("f=$(ls -t /srv/backups/local-predeploy-*.dump | head -1); "
               "printf 'garbage' | dd of=$f bs=1 seek=100 conv=notrunc 2>/dev/null")
    inv = ["--inventory", fault_env.inventory]

    def human():
        r = cli("recover", "--env", "local", *inv, env=fault_env.env())
        assert r.returncode == 4, r.stdout[-1500:] + r.stderr[-1500:]
        for h in fleet.spec.web_hosts:
            assert fleet.sh(h.name, "test -e /srv/app/.deployer/maintenance-watchdog.pid",
                            check=False).returncode == 1, f"{h.name}: dead-man switch still armed"
        st = cli("status", "--env", "local", *inv, env=fault_env.env())
        assert "ON" in st.stdout, st.stdout
        # the human checks the database (schema 3, nothing else wrote), runs v3's down migration
        # by hand and keeps the data; the site reopens on the snapshot's release
        assert psql(fleet, "select max(version) from schema_migrations") == "3"
        psql(fleet, "ALTER TABLE items RENAME COLUMN kind TO category; DELETE FROM schema_migrations WHERE version = 3")
        cli("rollback", "--env", "local", "--to", "v2", "--keep-db", *inv, env=fault_env.env(), check=0)
        cli("maintenance", "off", "--env", "local", *inv, env=fault_env.env(), check=0)

    run("corrupted backup at restore", fleet, cli, fault_env, ref="v3", inventory=fault_env.failing_gate,
        trigger=at_stage("migrate", command=False), action=lambda o: fleet.sh("db1", corrupt),
        heal=human, expect=(4,))


def test_a_frozen_orchestrator_is_alive_until_forced(fleet, cli, fault_env):
    inv = ["--inventory", fault_env.inventory]

    def freeze(o):
        o.signal(signal.SIGSTOP)
        r = cli("recover", "--env", "local", *inv, env=fault_env.env())
        assert r.returncode == 3 and "alive" in r.stderr, r.stderr[-1000:]
        cli("recover", "--env", "local", "--force", "--reason", "fault test", *inv, env=fault_env.env(), check=0)
        o.kill()

    run("frozen orchestrator, recover --force", fleet, cli, fault_env, ref="v2",
        trigger=at_stage("switch"), action=freeze)


def test_recover_killed_halfway_converges_when_run_again(fleet, cli, fault_env):
    def kill_recover():
        r = Orchestrator(["recover", "--env", "local"], fault_env.inventory, fault_env.env())
        r.wait_for(lambda e: e.get("event") == "command" and ".current." in e.get("command", ""), 120)
        r.kill()
        r.finish(30)

    run("SIGKILL during recover, then recover", fleet, cli, fault_env, ref="v2",
        trigger=at_stage("gate"), action=lambda o: o.kill(), heal=kill_recover)
