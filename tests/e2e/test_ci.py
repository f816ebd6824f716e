"""Deploying as CI does, the HTML report in a real browser, notifications, preflight: on the fleet."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from email import message_from_bytes
from pathlib import Path

import pytest

from deployer import events as EV
from deployer.fleet.receivers import dead_port, start_http, start_smtp, stop

from .conftest import serving
from .test_rollout import CANARY, _on_v2, variant


def ci_env(fleet, tmp_path) -> dict:
    summary = tmp_path / "summary.md"
    return {"CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary),
            "DEPLOYER_SSH_KEY_DATA": fleet.client_key.read_text(),
            "DEPLOYER_KNOWN_HOSTS_DATA": fleet.known_hosts.read_text()}


def ci_inventory(fleet, tmp_path, extra: str = "") -> str:
    """The fleet's inventory without any key or known_hosts path: CI gives them as secrets."""
    text = "\n".join(line for line in fleet.inventory_path.read_text().splitlines()
                     if not line.strip().startswith(("key:", "known_hosts:")))
    path = tmp_path / "ci.yaml"
    path.write_text(text + "\n" + extra)
    return str(path)


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_deploy_as_ci_does_json_events_exit_codes_and_summary(fleet, cli, tmp_path, consistent):
    _on_v2(fleet, cli)
    env = ci_env(fleet, tmp_path)
    inv = ci_inventory(fleet, tmp_path, CANARY)
    key = env["DEPLOYER_SSH_KEY_DATA"].strip().splitlines()[1]

    ok = cli("deploy", "--env", "local", "--ref", "v2", "--yes", "--output", "json", "--inventory", inv,
             env=env, check=0)
    bad = cli("deploy", "--env", "local", "--ref", "bad-health", "--yes", "--output", "json",
              "--inventory", inv, env=env, check=1)
    held = fleet.sh("db1", "mkdir /srv/app/.deployer/lock && echo '{\"holder\": \"ci-other\", "
                           "\"host\": \"runner-7\", \"pid\": 4242, \"run\": \"x\"}' > /srv/app/.deployer/lock/info.json")
    assert held.returncode == 0
    try:
        refused = cli("deploy", "--env", "local", "--ref", "v2", "--yes", "--output", "json",
                      "--inventory", inv, env=env, check=3)
    finally:
        fleet.sh("db1", "rm -rf /srv/app/.deployer/lock")
    for proc in (ok, bad, refused):
        events = json_lines(proc.stdout)
        assert events
        for e in events:
            assert EV.validate(e) == [], e
        assert key not in proc.stdout + proc.stderr
    assert json_lines(ok.stdout)[-1]["event"] == "outcome"
    assert [e for e in json_lines(bad.stdout) if e["event"] == "rollback"]
    error = json_lines(refused.stdout)[-1]
    assert error["event"] == "error" and error["exit_code"] == 3 and "ci-other@runner-7" in error["message"]
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert summary.count("### deployer deploy local") == 3
    assert "rolled back (exit 1)" in summary and "(exit 3)" in summary and key not in summary


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("Debian's chromium is not installed (./bootstrap installs it)")


def test_html_report_of_a_deploy_with_rollback_renders_in_headless_chromium(fleet, cli, tmp_path, consistent):
    _on_v2(fleet, cli)
    inv = variant(fleet, tmp_path, CANARY)
    cli("deploy", "--env", "local", "--ref", "bad-canary", "--inventory", inv, check=1)
    out = tmp_path / "report.html"
    cli("report", "--env", "local", "--inventory", inv, "--out", str(out), check=0)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([_chromium(), *flags, f"--user-data-dir={profile}", "--dump-dom",
                              out.as_uri()], capture_output=True, text=True, timeout=120)
        png = tmp_path / "report.png"
        subprocess.run([_chromium(), *flags, f"--user-data-dir={profile}", f"--screenshot={png}",
                        "--window-size=1400,2000", out.as_uri()], capture_output=True, timeout=120)
    html = dom.stdout
    assert 'id="timeline"' in html and 'id="latency-chart"' in html
    assert 'data-state="failed"' in html  # the failed gate is on the timeline
    assert html.count('class="point"') > 50  # gate samples, canary and baseline
    assert 'data-role="canary"' in html and 'data-role="baseline"' in html
    assert 'data-outcome="rolled_back"' in html
    assert png.exists() and png.stat().st_size > 20_000  # a real rendered page, not a blank one


def test_notifications_reach_real_receivers_and_a_dead_one_changes_nothing(fleet, cli, tmp_path, consistent):
    _on_v2(fleet, cli)
    http, url = start_http()
    smtp, port = start_smtp()
    try:
        inv = variant(fleet, tmp_path, f"""
notify:
  slack: {{url_env: TEST_SLACK_URL}}
  webhook: {{url: "{url}/hook"}}
  email: {{host: 127.0.0.1, port: {port}, from: deployer@example.invalid, to: [oncall@example.invalid],
           starttls: false}}
""")
        # (plain SMTP to a loopback receiver, so no password: one is refused without TLS)
        env = {"TEST_SLACK_URL": f"{url}/slack/T000-secret-token"}
        cli("deploy", "--env", "local", "--ref", "v2", "--inventory", inv, env=env, check=0)
        bodies = [json.loads(r["body"]) for r in http.received]
        slack = [b for r, b in zip(http.received, bodies, strict=True) if r["path"].startswith("/slack")]
        hook = [b for r, b in zip(http.received, bodies, strict=True) if r["path"] == "/hook"]
        assert [b["event"] for b in hook] == ["start", "success"]
        assert all(b["env"] == "local" for b in hook) and "deployed" in hook[-1]["text"]
        assert len(slack) == 2 and "deployed" in slack[-1]["text"]
        mails = [message_from_bytes(m["data"]) for m in smtp.received]
        assert len(mails) == 2 and "success" in mails[-1]["Subject"].lower()
        everything = json.dumps(bodies) + "".join(m.as_string() for m in mails)
        assert "T000-secret-token" not in everything

        dead = variant(fleet, tmp_path, f"""
notify:
  webhook: {{url: "http://127.0.0.1:{dead_port()}/hook"}}
""", name="dead.yaml")
        proc = cli("deploy", "--env", "local", "--ref", "v2", "--inventory", dead, check=0)
        assert "notification via" in proc.stdout and "failed" in proc.stdout
    finally:
        stop(http)
        stop(smtp)


def _preflight(cli, check: int, inv: str | None = None):
    args = ["preflight", "--env", "local"] + (["--inventory", inv] if inv else [])
    return cli(*args, check=check)


def test_preflight_passes_on_a_healthy_fleet(fleet, cli, consistent):
    _on_v2(fleet, cli)
    proc = _preflight(cli, 0)
    assert "FAIL" not in proc.stdout and "PASS" in proc.stdout


@pytest.mark.parametrize("name,breaks,undo,expect", [
    ("app_debug", "sed -i 's/^APP_DEBUG=.*/APP_DEBUG=true/' /srv/app/shared/.env",
     "sed -i 's/^APP_DEBUG=.*/APP_DEBUG=false/' /srv/app/shared/.env", "APP_DEBUG"),
    ("app_env", "sed -i 's/^APP_ENV=.*/APP_ENV=local/' /srv/app/shared/.env",
     "sed -i 's/^APP_ENV=.*/APP_ENV=production/' /srv/app/shared/.env", "APP_ENV"),
    ("env_mode", "chmod 644 /srv/app/shared/.env", "chmod 600 /srv/app/shared/.env", "644"),
    ("binary", "touch /tmp/nosocat && mount --bind /tmp/nosocat /usr/bin/socat",
     "umount /usr/bin/socat", "socat"),
])
def test_preflight_catches_each_misconfiguration(fleet, cli, name, breaks, undo, expect, consistent):
    _on_v2(fleet, cli)
    host = "lb1" if name == "binary" else "web2"
    fleet.sh(host, breaks)
    try:
        proc = _preflight(cli, 3)
        rows = [line for line in proc.stdout.splitlines() if "FAIL" in line]
        assert rows and all(host in r for r in rows), proc.stdout
        assert expect in proc.stdout + proc.stderr
    finally:
        fleet.sh(host, undo)


def test_preflight_catches_low_disk_and_a_held_lock(fleet, cli, consistent):
    _on_v2(fleet, cli)
    fleet.small_disk("db1", "/srv/backups", "512k")
    fleet.fill_disk("db1", "/srv/backups")
    try:
        proc = _preflight(cli, 3)
        assert any("db1" in r and "disk" in r for r in proc.stdout.splitlines() if "FAIL" in r)
    finally:
        fleet.free_disk("db1", "/srv/backups")
    fleet.sh("db1", "mkdir /srv/app/.deployer/lock && echo '{\"holder\": \"ana\", \"pid\": 1}' "
                    "> /srv/app/.deployer/lock/info.json")
    try:
        proc = _preflight(cli, 3)
        assert any("lock" in r for r in proc.stdout.splitlines() if "FAIL" in r)
    finally:
        fleet.sh("db1", "rm -rf /srv/app/.deployer/lock")
    assert serving(fleet)


def _rows(out: str) -> list[dict]:
    return [e for e in json_lines(out) if e.get("event") == "row"]


def test_preflight_knows_the_env_that_secret_files_write(fleet, cli, tmp_path, consistent):
    """web2 lost its shared .env: with a secret_files entry for it the next deploy writes it, so
    preflight passes and says so; without one, nothing would create it: FAIL, naming host and path."""
    _on_v2(fleet, cli)
    env_file = "/srv/app/shared/.env"
    fleet.sh("web2", f"mv {env_file} {env_file}.preflight-test")
    try:
        inv = variant(fleet, tmp_path, "\nsecret_files:\n  - {path: .env, from_env: TEST_DOTENV}\n",
                      name="secret-env.yaml")
        proc = cli("preflight", "--env", "local", "--inventory", inv, "--output", "json", check=0)
        row = [r for r in _rows(proc.stdout) if r["host"] == "web2" and r["check"] == "app_env"]
        assert len(row) == 1 and row[0]["result"] == "PASS", proc.stdout
        assert f"{env_file} will be created by the next deploy (secret_files writes it)" in row[0]["detail"]

        proc = cli("preflight", "--env", "local", "--output", "json", check=3)
        failed = [r for r in _rows(proc.stdout) if r["result"] == "FAIL"]
        assert [(r["host"], r["check"]) for r in failed] == [("web2", "app_env")], proc.stdout
        assert failed[0]["detail"].startswith(f"{env_file} is missing")
        assert "nothing creates it" in failed[0]["detail"]
    finally:
        fleet.sh("web2", f"mv {env_file}.preflight-test {env_file}")

