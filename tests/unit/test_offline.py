"""`--dry-run --offline`: the plan of a deploy or a rollback from assumed facts, with nothing
contacted. The inventories name TEST-NET addresses (192.0.2.0/24, never routed) with a 1 s
connect timeout: a connection attempt would take a second per host and fail (exit 3); in this
process, any socket connection fails the test outright."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from recording import unguarded

from deployer import verbs
from deployer.commands import fence as FN
from deployer.config import load_config
from deployer.engine.deploy import OFFLINE_HEADER, DeployRun
from deployer.facts import UNRESOLVED_COMMIT, Facts
from deployer.output import JsonReporter

ROOT = Path(__file__).resolve().parents[2]
RELEASE = "20261101T000000Z-abcdef1"


def inventory(root: Path, repo: str = "https://git.example.com/app.git") -> Path:
    (root / "hosts").mkdir(parents=True, exist_ok=True)
    (root / "hosts" / "known_hosts").write_text("")
    (root / "hosts" / "prod.yaml").write_text(f"""\
playbook: django
repo: {repo}
ssh: {{known_hosts: known_hosts, connect_timeout: 1}}
database: {{name: app}}
hosts:
  - {{name: web1, address: 192.0.2.10, roles: [web, worker, migrate]}}
  - {{name: web2, address: 192.0.2.11, roles: [web, worker]}}
  - {{name: db1, address: 192.0.2.12, roles: [db, ledger]}}
""")
    return root


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Any connection from this process fails the test."""
    def refuse(self, address, *a, **kw):
        raise AssertionError(f"connection attempted to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("DEPLOYER_STATE_DIR", str(tmp_path / "state"))


def events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def run_json(capsys, fn, *args, **kw) -> tuple[int, list[dict], str]:
    capsys.readouterr()
    code = fn(*args, output="json", **kw)
    out, err = capsys.readouterr()
    return code, events(out), err


def git_repo(path: Path) -> str:
    def git(*argv):
        return subprocess.run(["git", "-C", str(path), *argv], check=True, capture_output=True,
                              text=True).stdout.strip()

    path.mkdir()
    git("init", "-q", "-b", "main")
    (path / "app.py").write_text("print('v1')\n")
    git("add", "app.py")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "v1")
    git("tag", "v1")
    return git("rev-parse", "HEAD")


def test_offline_deploy_plan_is_the_plan_of_the_assumed_facts_every_stage_host_and_command(tmp_path, capsys):
    root = inventory(tmp_path / "proj")
    code, evs, err = run_json(capsys, verbs.deploy, "prod", "main", dry_run=True, offline=True,
                              root=str(root))
    assert (code, err) == (0, "")
    notices = [e["message"] for e in evs if e["event"] == "notice"]
    assert notices[0] == OFFLINE_HEADER
    assert any(n.startswith("  - commit: main unresolved (shown as 0000000)") for n in notices)
    assert any("the ledger on db1 and the hosts were not read" in n for n in notices)
    assert all("assumed" in n or "unresolved" in n for n in notices[1:])
    planned = [(e["stage"], e["host"], e["command"]) for e in evs if e["event"] == "plan"]
    release = next(c for s, _, c in planned if s == "switch w1").split("/releases/")[1].split()[0]
    assert release.endswith("-0000000")
    # exactly the rows of the plan built from Facts.assumed (the same planner as a real dry run)
    cfg = load_config("prod", root=root, environ={})
    facts = Facts.assumed(cfg, "main")
    expected = DeployRun(cfg, JsonReporter(), ref="main").plan(facts, None, release, False, FN.DRY_RUN).rows()
    assert planned == expected
    assert {h for _, h, _ in planned} == {"web1", "web2", "db1"}
    assert [s for s in dict.fromkeys(s for s, _, _ in planned)] == [
        "backup", "pull", "migrate", "switch w1", "worker_restart w1"]  # (no gate check, no cleanup)


def test_offline_facts_take_the_commit_from_a_repository_on_this_machine(tmp_path):
    sha = git_repo(tmp_path / "repo")
    root = inventory(tmp_path / "proj", repo=str(tmp_path / "repo"))
    cfg = load_config("prod", root=root, environ={})
    facts = Facts.assumed(cfg, "v1")
    assert facts.commit == sha and facts.is_assumed
    assert f"commit: v1 is {sha[:12]} in the local repository {tmp_path / 'repo'}" in facts.assumptions
    assert all(st.current is None and st.releases == [] and not st.maintenance for st in facts.hosts.values())
    assert set(facts.hosts) == {"web1", "web2", "db1"} and facts.schema is None
    missing = Facts.assumed(cfg, "nosuch")
    assert missing.commit == UNRESOLVED_COMMIT
    assert f"not found in the local repository {tmp_path / 'repo'}" in missing.assumptions[2]


def test_offline_rollback_plan_switches_every_app_host_to_the_named_release(tmp_path, capsys):
    root = inventory(tmp_path / "proj")
    code, evs, err = run_json(capsys, verbs.rollback, "prod", to=RELEASE, dry_run=True, offline=True,
                              root=str(root))
    assert (code, err) == (0, "")
    assert [e["message"] for e in evs if e["event"] == "notice"][0] == OFFLINE_HEADER
    switches = [(e["host"], unguarded(e["command"])) for e in evs if e["event"] == "plan" and e["stage"] == "switch"]
    assert [h for h, c in switches if c.startswith("test -d")] == ["web1", "web2"]
    assert all(f"/var/www/app/releases/{RELEASE}" in c for h, c in switches if c.startswith("test -d"))


@pytest.mark.parametrize(("args", "message"), [
    ({"to": None}, "error: --offline: name the release with --to (the previous good one is known only "
                   "to the ledger on db1)\n"),
    ({"to": "v1"}, "error: --to 'v1' --offline: expected a full release id (a prefix or a ref is "
                   "resolved by the ledger on db1, which an offline plan does not read)\n"),
    ({"to": RELEASE, "restore_db": True}, "error: --restore-db --offline: the backup to restore is "
                                          "recorded in the ledger on db1, which an offline plan does not read\n"),
])
def test_offline_rollback_needs_what_only_the_ledger_knows_given(args, message, tmp_path, capsys):
    root = inventory(tmp_path / "proj")
    capsys.readouterr()
    assert verbs.rollback("prod", dry_run=True, offline=True, root=str(root), **args) == 2
    assert capsys.readouterr().err == message


@pytest.mark.parametrize("verb", [verbs.deploy, verbs.rollback])
def test_offline_without_dry_run_is_bad_input(verb, tmp_path, capsys):
    root = inventory(tmp_path / "proj")
    capsys.readouterr()
    assert verb("prod", offline=True, yes=True, root=str(root)) == 2
    assert capsys.readouterr().err == "error: --offline needs --dry-run: only a plan can be shown without the hosts\n"


def test_the_program_prints_the_offline_plan_at_once(tmp_path):
    """The real program, as in a pull request's CI job: exit 0 in well under a connect timeout."""
    root = inventory(tmp_path / "proj")
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "deployer", "deploy", "-e", "prod", "--root", str(root),
                        "--dry-run", "--offline"], capture_output=True, text=True, timeout=60,
                       cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path),
                                      "DEPLOYER_STATE_DIR": str(tmp_path / "state")})
    took = time.monotonic() - t0
    assert (p.returncode, p.stderr) == (0, "")
    assert OFFLINE_HEADER in p.stdout and "assumed" in p.stdout
    assert took < 5, f"took {took:.1f}s"
    for stage, host in (("backup", "db1"), ("pull", "web1"), ("pull", "web2"), ("migrate", "web1"),
                        ("switch w1", "web1"), ("switch w1", "web2")):
        assert any(line.startswith(stage) and line[15:].startswith(host) for line in p.stdout.splitlines())


def test_an_offline_plan_reads_no_secret_but_a_dry_run_needs_them_before_connecting(tmp_path, capsys):
    root = inventory(tmp_path / "proj")
    path = root / "hosts" / "prod.yaml"
    path.write_text(path.read_text() + "secret_files:\n  - {path: .env, from_env: APP_DOTENV_UNSET}\n")
    code, evs, err = run_json(capsys, verbs.deploy, "prod", "main", dry_run=True, offline=True,
                              root=str(root))
    assert (code, err) == (0, "")
    assert "  - secret files: contents not read (only their paths are planned)" in [
        e["message"] for e in evs if e["event"] == "notice"]
    secret = [e for e in evs if e["event"] == "plan" and unguarded(e["command"]).startswith("umask 077")
              and "/shared/.env.tmp." in e["command"]]
    assert {e["host"] for e in secret} == {"web1", "web2"}
    # without --offline the secret is read first: bad input, before any connection (no_network)
    capsys.readouterr()
    assert verbs.deploy("prod", "main", dry_run=True, root=str(root)) == 2
    assert capsys.readouterr().err == ("error: secret_files: .env: environment variable APP_DOTENV_UNSET "
                                       "is not set\n")
