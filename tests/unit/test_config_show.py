"""`config show` (every merged setting with its layer, secrets masked) and `config check`
(validation, nothing contacted: any connection from this process fails the test)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from deployer.cli import cli
from deployer.config.loading import load_layered
from deployer.config.provenance import Setting, settings

INVENTORY = """\
playbook: demo
repo: https://git.example.com/app.git
parallel: 4
ssh: {known_hosts: known_hosts, connect_timeout: 1}
database: {name: app, password_file: /etc/deployer/pgpass}
notify:
  webhook: {url: "https://hooks.example.com/T0/B0/s3cr3t-hook", headers: {Authorization: "Bearer abc123xyz"}}
  slack: {url_env: SLACK_URL}
vars: {app_key: "base64:c2VjcmV0c2VjcmV0", region: eu-west-1, dsn: "postgres://app:hunter22@db/app"}
secret_files:
  - {path: .env, from_env: APP_DOTENV}
hosts:
  - {name: web1, address: 192.0.2.10, roles: [web, worker, migrate]}
  - {name: db1, address: 192.0.2.12, roles: [db, ledger]}
"""
SLACK = {"SLACK_URL": "https://hooks.slack.com/services/T0/B0/slacksecret"}
SECRETS = ("s3cr3t-hook", "abc123xyz", "c2VjcmV0c2VjcmV0", "hunter22", "PRIVATE KEY DATA", "slacksecret")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "hosts").mkdir()
    (tmp_path / "hosts" / "known_hosts").write_text("")
    (tmp_path / "hosts" / "prod.yaml").write_text(INVENTORY)
    return tmp_path


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    monkeypatch.setenv("SLACK_URL", SLACK["SLACK_URL"])
    def refuse(self, address, *a, **kw):
        raise AssertionError(f"connection attempted to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def shown(root: Path, **kw) -> dict[str, Setting]:
    loaded = load_layered("prod", root=root, **kw)
    return {s.key: s for s in settings(loaded)}


def test_each_value_names_the_layer_that_set_it(root):
    env = {"DEPLOYER_PARALLEL": "6", **SLACK}
    got = shown(root, environ=env, overrides={"health.passes": "5"})
    assert got["repo"] == Setting("repo", "https://git.example.com/app.git", "hosts/prod.yaml")
    assert got["parallel"] == Setting("parallel", "6", "DEPLOYER_PARALLEL")
    assert got["health.passes"] == Setting("health.passes", "5", "--set health.passes")
    assert got["health.url"].source.endswith("playbooks/demo.yaml (defaults)")
    assert got["ssh.command_timeout"] == Setting("ssh.command_timeout", "600.0", "default")
    assert got["hosts[0].roles"] == Setting("hosts[0].roles", '["web", "worker", "migrate"]', "hosts/prod.yaml")
    assert shown(root, environ=SLACK)["parallel"].source == "hosts/prod.yaml"


def test_secrets_are_masked_and_only_their_names_and_paths_shown(root):
    got = shown(root, environ={"DEPLOYER_SSH_KEY_DATA": "PRIVATE KEY DATA", **SLACK})
    assert got["ssh.key_data"] == Setting("ssh.key_data", "***", "DEPLOYER_SSH_KEY_DATA")
    assert got["notify.webhook.url"].value == "***"
    assert got["notify.webhook.headers.Authorization"].value == "***"
    assert got["notify.slack.url_env"].value == "SLACK_URL"
    assert got["vars.app_key"].value == "***"
    assert got["vars.dsn"].value == "***"
    assert got["vars.region"].value == "eu-west-1"
    assert got["database.password_file"].value == "/etc/deployer/pgpass"
    assert got["secret_files[0].from_env"].value == "APP_DOTENV"
    text = json.dumps([s.__dict__ for s in got.values()])
    assert not [s for s in SECRETS if s in text]


def test_config_show_prints_every_setting_as_json_rows(root, monkeypatch):
    monkeypatch.setenv("DEPLOYER_SSH_KEY_DATA", "PRIVATE KEY DATA")
    result = CliRunner().invoke(cli, ["config", "show", "-e", "prod", "--root", str(root), "--output", "json"])
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["event"] for r in rows} == {"row"} and {r["table"] for r in rows} == {"prod: configuration"}
    assert {"key": "parallel", "value": "4", "source": "hosts/prod.yaml"}.items() <= rows[
        [r["key"] for r in rows].index("parallel")].items()
    assert not [s for s in SECRETS if s in result.stdout + result.stderr]


def test_config_check_says_what_it_checked_in_one_line(root):
    result = CliRunner().invoke(cli, ["config", "check", "-e", "prod", "--root", str(root)])
    assert result.exit_code == 0
    (line,) = result.stdout.splitlines()
    assert line.endswith("prod: OK: hosts/prod.yaml with playbook demo (" + str(
        Path(__file__).resolve().parents[2] / "playbooks" / "demo.yaml")
        + "): 2 hosts (1 app), 0 schedules; nothing contacted")


def test_config_check_names_the_file_and_key_of_each_error(root):
    bad = INVENTORY.replace("roles: [db, ledger]", "roles: db").replace("parallel: 4", "parallel: 0")
    (root / "hosts" / "prod.yaml").write_text(bad)
    result = CliRunner().invoke(cli, ["config", "check", "-e", "prod", "--root", str(root)])
    assert result.exit_code == 2
    assert result.stderr == ("error: hosts/prod.yaml: parallel: must be >= 1\n"
                             "hosts/prod.yaml: hosts[1].roles: expected a list\n")
