"""The release engine on the fleet: deploy, record, lock, back up, roll back."""

from __future__ import annotations

import json
import re
import signal
import time

import pytest

from .conftest import health, psql, release_of_ref, serving


def _lb_versions(fleet, n: int = 12) -> set[str]:
    import urllib.request

    lb = fleet.spec.host("lb1").public
    seen = set()
    for _ in range(n):
        with urllib.request.urlopen(f"http://{lb}/", timeout=5) as resp:
            seen.add(json.loads(resp.read())["version"])
    return seen


def _post_item(fleet, name: str) -> None:
    import urllib.request

    lb = fleet.spec.host("lb1").public
    req = urllib.request.Request(f"http://{lb}/items", data=json.dumps({"name": name}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 201


def _ledger(fleet) -> list[dict]:
    text = fleet.sh("db1", "cat /srv/app/.deployer/ledger.jsonl 2>/dev/null || true").stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _fresh_v1(fleet, cli):
    """Start from v1 with an empty database (as a brand-new app would be)."""
    psql(fleet, "DROP SCHEMA public CASCADE; CREATE SCHEMA public; "
                "ALTER SCHEMA public OWNER TO pg_database_owner; GRANT ALL ON SCHEMA public TO PUBLIC")
    cli("deploy", "--env", "local", "--ref", "v1", check=0)


def test_deploy_v1_then_v2_migrates_and_every_host_serves_v2(fleet, cli, consistent):
    _fresh_v1(fleet, cli)
    v1 = set(serving(fleet).values())
    assert len(v1) == 1 and next(iter(v1)).endswith(fleet.state["tags"]["v1"][:7])
    assert psql(fleet, "select max(version) from schema_migrations") == "1"
    assert _lb_versions(fleet) == {"v1"}

    proc = cli("deploy", "--env", "local", "--ref", "v2", check=0)
    assert "deployed" in proc.stdout
    rel = set(serving(fleet).values())
    assert len(rel) == 1
    v2 = next(iter(rel))
    assert v2.endswith(fleet.state["tags"]["v2"][:7])
    for h in fleet.spec.web_hosts:
        assert health(fleet, h)["release"] == v2
    assert psql(fleet, "select max(version) from schema_migrations") == "2"
    assert psql(fleet, "select to_regclass('public.notes') is not null") == "t"
    assert _lb_versions(fleet) == {"v2"}
    # the ledger on the fleet tells what happened: both deploys succeeded, with the backup
    ends = [e for e in _ledger(fleet) if e["type"] == "deploy.end"]
    assert ends[-1]["outcome"] == "success" and ends[-2]["outcome"] == "success"
    backups = [e for e in _ledger(fleet) if e["type"] == "backup"]
    assert backups[-1]["path"].startswith("/srv/backups/local-predeploy-") and len(backups[-1]["sha256"]) == 64


def test_rollback_to_v1_restores_code_schema_and_the_rows_of_the_snapshot(fleet, cli, consistent):
    _fresh_v1(fleet, cli)
    _post_item(fleet, "before-v2-a")
    _post_item(fleet, "before-v2-b")
    cli("deploy", "--env", "local", "--ref", "v2", check=0)
    _post_item(fleet, "after-v2")
    before = serving(fleet)

    refused = cli("rollback", "--env", "local", "--to", "v1", check=3)
    assert "schema version is 1 but the database is at 2" in refused.stderr
    assert "--restore-db" in refused.stderr and "--keep-db" in refused.stderr
    assert serving(fleet) == before  # nothing changed

    cli("rollback", "--env", "local", "--to", "v1", "--restore-db", check=0)
    v1 = release_of_ref(cli, "v1")[0]
    assert set(serving(fleet).values()) == {v1}
    assert psql(fleet, "select max(version) from schema_migrations") == "1"
    assert psql(fleet, "select to_regclass('public.notes') is null") == "t"
    assert psql(fleet, "select string_agg(name, ',' order by name) from items") == "before-v2-a,before-v2-b"
    assert _lb_versions(fleet) == {"v1"}
    # a safety dump of the state we left was taken first
    assert "prerollback" in fleet.sh("db1", "ls /srv/backups").stdout


def test_rollback_refused_when_target_release_is_on_no_host_and_unknown_to_the_ledger(fleet, cli, consistent):
    """A release some hosts lost is built again from its commit (tests/e2e/test_rebuild.py); one
    that no host has and the ledger never recorded cannot be: refused, nothing changed."""
    cli("deploy", "--env", "local", "--ref", "v2", check=0)
    before = serving(fleet)
    never = "20200101T000000Z-0000000"
    proc = cli("rollback", "--env", "local", "--to", never, "--keep-db", check=3)
    assert (f"rollback to {never}: release missing on web1, web2, web3 and its commit is not in the ledger, "
            "so it cannot be built again; nothing changed") in proc.stderr
    assert serving(fleet) == before
    assert all(fleet.sh(h.name, f"test -e /srv/app/releases/{never}", check=False).returncode == 1
               for h in fleet.spec.web_hosts)


def _wait_for_lock(fleet, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = fleet.sh("db1", "cat /srv/app/.deployer/lock/info.json 2>/dev/null || true").stdout
        if out.strip():
            return json.loads(out)
        time.sleep(0.05)
    raise AssertionError("the first deploy never took the lock")


def test_second_concurrent_deploy_is_refused_naming_the_holder(fleet, cli, consistent):
    first = cli.popen("deploy", "--env", "local", "--ref", "v2", "--reason", "first-deploy")
    try:
        info = _wait_for_lock(fleet)
        second = cli("deploy", "--env", "local", "--ref", "v1", check=3)
        assert f"locked by {info['holder']}@{info['host']} pid {first.pid}" in second.stderr
        assert "first-deploy" in second.stderr
    finally:
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert fleet.sh("db1", "test -d /srv/app/.deployer/lock", check=False).returncode == 1


def test_lock_of_a_killed_deploy_is_reported_and_broken_only_with_force(fleet, cli, consistent):
    cli("deploy", "--env", "local", "--ref", "v1", check=0)
    before = serving(fleet)
    victim = cli.popen("deploy", "--env", "local", "--ref", "v2", "--reason", "will-be-killed")
    _wait_for_lock(fleet)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    after_kill = serving(fleet)
    assert len(set(after_kill.values())) == 1 or after_kill == before

    refused = cli("deploy", "--env", "local", "--ref", "v2", check=3)
    assert f"pid {victim.pid}" in refused.stderr and "will-be-killed" in refused.stderr
    status = cli("status", "--env", "local")
    assert f"pid {victim.pid}" in status.stdout
    no_force = cli("unlock", "--env", "local", check=2)
    assert "needs --force" in no_force.stderr
    broken = cli("unlock", "--env", "local", "--force", check=0)
    assert "broke the lock held by" in broken.stdout and f"pid {victim.pid}" in broken.stdout
    cli("deploy", "--env", "local", "--ref", "v2", check=0)  # converges


@pytest.mark.parametrize("ref", ["$(touch /tmp/pwned)", "v1;touch /tmp/pwned", "--upload-pack=touch /tmp/pwned"])
def test_malicious_ref_never_executes(fleet, cli, ref, consistent):
    before = serving(fleet)
    n = len(_ledger(fleet))
    proc = cli("deploy", "--env", "local", "--ref", ref, check=2)
    assert "not a valid git ref" in proc.stderr
    for h in fleet.spec.hosts:
        assert fleet.sh(h.name, "test -e /tmp/pwned", check=False).returncode == 1
    assert serving(fleet) == before and len(_ledger(fleet)) == n


def test_full_disk_during_backup_aborts_with_nothing_switched_and_no_partial_dump(fleet, cli, consistent):
    _fresh_v1(fleet, cli)
    before = serving(fleet)
    fleet.small_disk("db1", "/srv/backups", "256k")
    try:
        fleet.fill_disk("db1", "/srv/backups")
        proc = cli("deploy", "--env", "local", "--ref", "v2", check=1)
        assert "backup" in proc.stdout + proc.stderr
        assert re.search("No space left|I/O error|could not write", proc.stderr), proc.stderr
        listing = fleet.sh("db1", "ls -a /srv/backups").stdout.split()
        assert not [f for f in listing if f.endswith(".partial")]
        assert serving(fleet) == before
        assert psql(fleet, "select max(version) from schema_migrations") == "1"
        assert _ledger(fleet)[-1]["type"] == "deploy.end"
        assert _ledger(fleet)[-1]["outcome"] == "rolled_back"
    finally:
        fleet.free_disk("db1", "/srv/backups")


def test_cleanup_keeps_the_right_releases(fleet, cli, tmp_path, consistent):
    text = fleet.inventory_path.read_text().replace("keep_releases: 5", "keep_releases: 2")
    inv = tmp_path / "keep2.yaml"
    inv.write_text(text)
    for ref in ("v1", "v2", "v1", "v2"):
        cli("deploy", "--env", "local", "--ref", ref, "--inventory", str(inv), check=0)
    deployed = [e["release"] for e in _ledger(fleet) if e["type"] == "deploy.start"][-4:]
    for h in fleet.spec.web_hosts:
        kept = fleet.sh(h.name, "ls /srv/app/releases").stdout.split()
        # the current one and the previous good one (also the last snapshot's), nothing older
        assert kept == sorted(deployed[-2:]), (h.name, kept, deployed)


def test_secret_files_are_written_0600_and_never_shown(fleet, cli, tmp_path, consistent):
    secret = "s3cr3t-token-Zq81"
    inv = tmp_path / "secrets.yaml"
    inv.write_text(fleet.inventory_path.read_text()
                   + "\nsecret_files:\n  - {path: keys/api.token, from_env: TEST_API_TOKEN}\n")
    missing = cli("deploy", "--env", "local", "--ref", "v2", "--inventory", str(inv), check=2)
    assert "environment variable TEST_API_TOKEN is not set" in missing.stderr
    proc = cli("deploy", "--env", "local", "--ref", "v2", "--inventory", str(inv),
               env={"TEST_API_TOKEN": secret}, check=0)
    for h in fleet.spec.web_hosts:
        out = fleet.sh(h.name, "stat -c '%a %U' /srv/app/shared/keys/api.token; "
                               "cat /srv/app/shared/keys/api.token").stdout
        assert out == f"600 deploy\n{secret}"
    assert secret not in proc.stdout + proc.stderr
    assert secret not in fleet.sh("db1", "cat /srv/app/.deployer/ledger.jsonl").stdout
    assert [e for e in _ledger(fleet) if e["type"] == "secret_files"][-1]["paths"] == ["keys/api.token"]


def test_deployer_runs_as_deploy_and_as_root_only_what_the_playbook_declares(fleet, cli, cfg, consistent):
    """deployer logs in as the deploy user; what it runs as root goes through sudo, and is, on
    every web host, one of the commands the playbook marks {sudo} (the fleet's sudo rules are
    derived from them; sudo logs each command). The app's processes and every file of the deploy
    tree and of the backups are the deploy user's."""
    from deployer.privileges import commands

    for h in fleet.spec.web_hosts:
        fleet.sh(h.name, ": > /srv/log/sudo.log")
    cli("deploy", "--env", "local", "--ref", "v1", check=0)
    cli("deploy", "--env", "local", "--ref", "v2", check=0)
    cli("deploy", "--env", "local", "--ref", "bad-health", check=1)  # and its rollback
    for h in fleet.spec.web_hosts:
        log = fleet.sh(h.name, "cat /srv/log/sudo.log").stdout
        assert "COMMAND=" in log, f"{h.name}: nothing ran through sudo"
        declared = {" ".join(c.argv) for c in commands(cfg, cfg.host(h.name))}
        for line in log.splitlines():
            assert " : deploy : " in line and " ; USER=root ; " in line, line
            assert "COMMAND=" in line and line.split("COMMAND=", 1)[1] in declared, line
        owners = fleet.sh(h.name, "find /srv/app ! -user deploy -printf '%u %p\\n' | head -5").stdout
        assert owners == "", f"{h.name}: not the deploy user's: {owners}"
        assert fleet.sh(h.name, "stat -c '%U %a' /srv/app/shared/.env").stdout.split() == ["deploy", "600"]
    procs = fleet.sh("web1", "ps -eo user:16,args | grep -E '[g]unicorn|[w]orker.py'").stdout.splitlines()
    assert procs and all(p.split()[0] == "deploy" for p in procs), procs
    owners = fleet.sh("db1", "find /srv/app /srv/backups ! -user deploy -printf '%u %p\\n' | head -5").stdout
    assert owners == "", f"db1: not the deploy user's: {owners}"
    assert fleet.sh("db1", "stat -c '%U %a' /srv/backups").stdout.split() == ["deploy", "700"]
