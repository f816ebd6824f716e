"""Maintenance mode, windows, the scheduled job and cron, on the fleet."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import croniter
import pytest

from deployer import cron as CR
from deployer.fleet.load import Load

from .conftest import ROOT, health, http, psql, serving
from .test_rollout import _last_run, _on_v2, variant


def _lb_status(fleet) -> int:
    try:
        with urllib.request.urlopen(f"http://{fleet.spec.host('lb1').public}/", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait(pred, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


def test_deploy_without_breaking_migrations_never_enters_maintenance(fleet, cli, consistent):
    _on_v2(fleet, cli)
    load = Load(f"http://{fleet.spec.host('lb1').public}/", rate=50, seconds=90).start()
    try:
        cli("deploy", "--env", "local", "--ref", "v2", check=0)
    finally:
        result = load.stop()
    assert result.failed == 0 and not [f for f in result.failures if "503" in f]
    stages = [e for e in _last_run(fleet) if e["type"] == "stage" and e["stage"] == "maintenance"]
    assert stages[0]["detail"] == "not needed"


def test_deploy_with_a_breaking_migration_enters_maintenance_and_leaves_it(fleet, cli, consistent):
    _on_v2(fleet, cli)
    seen = []
    proc = cli.popen("deploy", "--env", "local", "--ref", "v3")
    while proc.poll() is None:
        seen.append(_lb_status(fleet))
        time.sleep(0.1)
    assert proc.returncode == 0, proc.stderr.read()
    assert 503 in seen  # users saw the maintenance page while the schema changed
    _wait(lambda: _lb_status(fleet) == 200, 10, 0.1)
    assert psql(fleet, "select max(version) from schema_migrations") == "3"
    for h in fleet.spec.web_hosts:
        assert fleet.sh(h.name, "test -e /srv/app/shared/storage/maintenance.json",
                        check=False).returncode == 1
    stages = [e for e in _last_run(fleet) if e["type"] == "stage" and e["stage"] == "maintenance"]
    assert stages[0]["detail"] == "on"
    # back to v2's schema for the next tests: v3's down migration, through a rollback
    cli("rollback", "--env", "local", "--to", "v2", "--restore-db", check=0)


def test_crashed_deploy_in_maintenance_lets_the_site_serve_after_the_expiry(fleet, cli, tmp_path, consistent):
    _on_v2(fleet, cli)
    inv = variant(fleet, tmp_path, "\nmaintenance_ttl: 6\n")
    proc = cli.popen("deploy", "--env", "local", "--ref", "v3", "--inventory", inv)
    try:
        # in maintenance on every web host, its dead-man switch armed
        _wait(lambda: all(fleet.sh(h.name, "test -e /srv/app/shared/storage/maintenance.json && "
                                           "test -s /srv/app/.deployer/maintenance-watchdog.pid",
                                   check=False).returncode == 0 for h in fleet.spec.web_hosts), 60, 0.01)
        proc.send_signal(signal.SIGSTOP)  # the orchestrator is frozen: no cleanup will run
        _wait(lambda: _lb_status(fleet) == 503, 3, 0.05)
        t0 = time.monotonic()
        try:
            _wait(lambda: _lb_status(fleet) == 200, 30, 0.2)
        except AssertionError:
            flags = [fleet.sh(h.name, "cat /srv/app/shared/storage/maintenance.json; date +%s",
                              check=False).stdout for h in fleet.spec.web_hosts]
            stages = [(e.get("stage"), e.get("state")) for e in _last_run(fleet) if e["type"] == "stage"]
            raise AssertionError(f"site still down: flags {flags}, stages {stages}") from None
        assert time.monotonic() - t0 < 15
        # the host-side dead-man switch ran the playbook's 'off' too: no flag left anywhere
        _wait(lambda: all(fleet.sh(h.name, "test -e /srv/app/shared/storage/maintenance.json",
                                   check=False).returncode == 1 for h in fleet.spec.web_hosts), 20, 0.2)
        status = cli("status", "--env", "local", "--inventory", inv)
        assert "expired flag" in status.stdout or "off" in status.stdout
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        cli("unlock", "--env", "local", "--force", "--inventory", inv, check=0)
    # converge: whatever the killed run left, a new deploy of v2 brings one release back
    cli("deploy", "--env", "local", "--ref", "v2", check=0)


def test_deploy_outside_every_window_is_refused_with_the_next_start(fleet, cli, tmp_path, consistent):
    now = dt.datetime.now(dt.UTC)
    start = (now + dt.timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    inv = variant(fleet, tmp_path, f"""
windows:
  - {{name: later, cron: "0 {start.hour} * * *", duration: 30m, timezone: UTC}}
""")
    before = serving(fleet)
    proc = cli("deploy", "--env", "local", "--ref", "v2", "--inventory", inv, check=3)
    assert f"local: outside every deploy window; next window 'later' starts {start.isoformat()}" \
        in proc.stderr
    assert serving(fleet) == before
    missing = cli("deploy", "--env", "local", "--ref", "v2", "--inventory", inv, "--force", check=2)
    assert "--reason is required" in missing.stderr
    cli("deploy", "--env", "local", "--ref", "v2", "--inventory", inv, "--force", "--reason",
        "hotfix INC-42", check=0)
    start_event = [e for e in _last_run(fleet) if e["type"] == "deploy.start"][0]
    assert "hotfix INC-42" in start_event["forced"]


def test_scheduled_maintenance_backs_up_applies_retention_and_keeps_what_a_snapshot_needs(fleet, cli, consistent):
    _on_v2(fleet, cli)
    needed = [e for e in _last_run(fleet) if e["type"] == "backup"][-1]["path"].rsplit("/", 1)[1]
    # two years of nightly backups, already on the db host (tiny files, real names)
    now = dt.datetime.now(dt.UTC)
    names = [f"local-nightly-{(now - dt.timedelta(days=d)).strftime('%Y%m%dT020000Z')}.dump"
             for d in range(1, 731)]
    fleet.sh("db1", "cd /srv/backups && touch " + " ".join(names))
    before = fleet.sh("db1", "ls /srv/backups").stdout.split()
    proc = cli("maintenance", "run", "--env", "local", check=0)
    assert "scheduled maintenance done" in proc.stdout
    left = set(fleet.sh("db1", "ls /srv/backups").stdout.split())
    assert needed in left
    nightly = sorted(n for n in left if "-nightly-" in n)
    kept_fake = [n for n in nightly if n in set(names)]
    # GFS (unit-tested on its own in test_retention): applied on the host exactly as planned
    new = sorted(set(left) - set(before))
    assert len(new) == 1 and "-nightly-" in new[0]  # tonight's backup
    from deployer.retention import Policy, plan

    kept, removed, unknown = plan(before, now, Policy(), {needed})
    assert sorted(set(left) - set(new)) == sorted(kept + unknown) and not set(removed) & left
    assert 30 <= len(kept_fake) <= 7 + 17 + 9 + 5 + 3 and len(removed) > 650
    assert names[0] in left and names[-1] not in left
    ledger = [e for e in _ledger_all(fleet) if e["type"] == "retention"][-1]
    assert needed in ledger["protected"]


def test_the_nightly_job_proves_backups_by_restoring_them_and_catches_a_corrupt_one(fleet, cli, consistent):
    """The job restores the newest deploy's backup (until proven) and tonight's into a scratch
    database, reads them and drops it. A corrupt one fails the job (exit 4, nothing pruned), is
    shown by `status` and never restored by a rollback; mended, the next night proves it."""
    r1 = _on_v2(fleet, cli)
    cli("deploy", "--env", "local", "--ref", "v2", check=0)  # its backup: taken while on r1
    r2 = next(iter(serving(fleet).values()))
    backup = [e for e in _last_run(fleet) if e["type"] == "backup"][-1]["path"]
    name = backup.rsplit("/", 1)[1]
    fleet.sh("db1", f"cp -p {backup} {backup}.good && printf 'XXXXXXXXXXXXXXXX' | "
                    f"dd of={backup} bs=1 seek=2000 conv=notrunc status=none")
    try:
        before = set(fleet.sh("db1", "ls /srv/backups").stdout.split())
        proc = cli("maintenance", "run", "--env", "local", check=4)
        assert f"backup {backup} failed its test restore" in proc.stderr, proc.stderr[-2000:]
        assert "sha256 differs" in proc.stderr
        proof = [e for e in _ledger_all(fleet) if e["type"] == "backup.proof"][-1]
        assert proof["path"] == backup and proof["ok"] is False and "sha256" in proof["error"]
        left = set(fleet.sh("db1", "ls /srv/backups").stdout.split())
        assert before <= left  # retention removed nothing
        status = cli("status", "--env", "local")
        assert f"FAILED its test restore: {name}" in status.stdout
        refused = cli("rollback", "--env", "local", "--to", r1, "--restore-db", check=3)
        assert f"backup {backup} failed its test restore" in refused.stderr
        assert set(serving(fleet).values()) == {r2}
    finally:
        fleet.sh("db1", f"mv -f {backup}.good {backup}")
    proc = cli("maintenance", "run", "--env", "local", check=0)
    assert f"test restore of {name}" in proc.stdout and "test restore of local-nightly-" in proc.stdout
    run = [e for e in _ledger_all(fleet) if e["type"] == "maintenance.start"][-1]["run"]
    proofs = [e for e in _ledger_all(fleet) if e["type"] == "backup.proof" and e["run"] == run]
    assert [p["path"] for p in proofs][0] == backup and "-nightly-" in proofs[1]["path"]
    tables = int(psql(fleet, "select count(*) from information_schema.tables where table_schema = 'public' "
                             "and table_type = 'BASE TABLE'"))
    for p in proofs:
        assert p["ok"] and p["tables"] == tables and p["rows"] >= 1 and len(p["sha256"]) == 64, p
    assert psql(fleet, "select count(*) from pg_database where datname like '%deployer_check'", db="postgres") == "0"
    status = cli("status", "--env", "local")
    assert f"backups: last proven {proofs[1]['path'].rsplit('/', 1)[1]}" in status.stdout
    assert "FAILED" not in status.stdout


def test_scheduled_maintenance_still_backs_up_while_a_rollout_is_paused(fleet, cli, tmp_path, consistent):
    """A paused rollout holds the lock for days: the nightly backup must not stop meanwhile."""
    from .test_rollout import PAUSED

    old = _on_v2(fleet, cli)
    inv = variant(fleet, tmp_path, PAUSED)
    cli("deploy", "--env", "local", "--ref", "v2", "--inventory", inv, check=0)
    lock = fleet.sh("db1", "cat /srv/app/.deployer/lock/info.json").stdout
    before = set(fleet.sh("db1", "ls /srv/backups").stdout.split())
    try:
        proc = cli("maintenance", "run", "--env", "local", "--inventory", inv)
        assert proc.returncode == 0, proc.stdout + proc.stderr  # done (README: exit codes)
        assert "a rollout is paused" in proc.stdout and "scheduled maintenance done" in proc.stdout
        new = sorted(set(fleet.sh("db1", "ls /srv/backups").stdout.split()) - before)
        assert len(new) == 1 and new[0].startswith("local-nightly-"), new
        listing = fleet.sh("db1", "/usr/lib/postgresql/15/bin/pg_restore --list "
                                  f"/srv/backups/{new[0]}").stdout
        assert "TABLE public items" in listing
        # the rollout still holds its lock, still paused, and can be ended as usual
        assert fleet.sh("db1", "cat /srv/app/.deployer/lock/info.json").stdout == lock
        assert fleet.sh("db1", "test -e /srv/app/.deployer/lock/paused", check=False).returncode == 0
        assert "PAUSED" in cli("status", "--env", "local", "--inventory", inv).stdout
    finally:
        cli("abort", "--env", "local", "--inventory", inv, check=0)
    assert set(serving(fleet).values()) == {old}


def _ledger_all(fleet):
    text = fleet.sh("db1", "cat /srv/app/.deployer/ledger.jsonl").stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_maintenance_by_hand_on_and_off(fleet, cli, consistent):
    _on_v2(fleet, cli)
    cli("maintenance", "on", "--env", "local", "--message", "Back at 3", "--retry", "120", check=0)
    try:
        h = fleet.spec.web_hosts[0]
        resp = http(fleet, h, "/")
        assert resp.status == 503 and resp.headers["Retry-After"] == "120"
        assert resp.json()["message"] == "Back at 3"
        assert "ON (no expiry)" in cli("status", "--env", "local").stdout
    finally:
        cli("maintenance", "off", "--env", "local", check=0)
    assert health(fleet, fleet.spec.web_hosts[0])["status"] == "ok"


CRON_ENV = {"SHELL": "/bin/sh", "PATH": "/usr/bin:/bin", "HOME": "/root", "LOGNAME": "root"}


def test_every_cron_line_is_valid_and_runs_under_crons_bare_environment(fleet, cli, tmp_path, consistent):
    shown = cli("cron", "show", "--env", "local", check=0).stdout
    jobs = [line for line in shown.splitlines() if line and not line.startswith(("#", "PATH=", "SHELL="))]
    assert jobs
    for line in jobs:
        expr = " ".join(line.split()[:5])
        assert croniter.croniter.is_valid(expr), line
        command = line.split(None, 5)[5].replace("\\%", "%")
        log = command.rsplit(">>", 1)[1].split()[0]
        proc = subprocess.run(["env", "-i", *[f"{k}={v}" for k, v in CRON_ENV.items()], "/bin/sh", "-c",
                               command], cwd="/", capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (line, Path(log).read_text()[-2000:] if Path(log).exists() else "")


def test_real_cron_daemon_runs_an_installed_schedule(fleet, tmp_path, consistent):
    if not shutil.which("cron"):
        pytest.fail("Debian's cron is not installed (./bootstrap installs it)")
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = CR.cron_lines("local", [CR.Schedule("probe", "* * * * *", "status")], project_dir=ROOT,
                          deployer_path=ROOT / ".venv" / "bin" / "deployer", log_dir=logs, lock_dir=tmp_path)
    old = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    existing = old.stdout if old.returncode == 0 else ""
    subprocess.run(["crontab", "-"], input=CR.install_block(existing, "local", lines), text=True, check=True)
    daemon = subprocess.Popen(["cron", "-f", "-L", "15"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        log = logs / "deployer-local-probe.log"
        _wait(lambda: log.exists() and "what each host serves" in log.read_text(), 130, 1)
        assert "web1" in log.read_text()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=10)
        if existing:
            subprocess.run(["crontab", "-"], input=existing, text=True, check=True)
        else:
            subprocess.run(["crontab", "-r"], capture_output=True)
    assert os.path.exists(logs / "deployer-local-probe.log")
