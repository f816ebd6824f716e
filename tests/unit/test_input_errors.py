"""Bad input is refused before anything is contacted: one line naming what is wrong and where,
exit 2. The inventory's hosts are TEST-NET addresses (never routed) and any connection from this
process fails the test: an exit 2 here was decided before any host was tried."""

from __future__ import annotations

import socket
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from deployer.cli import cli
from deployer.config.schedule import SCHEDULABLE

INVENTORY = """\
playbook: demo
repo: https://git.example.com/app.git
ssh: {{known_hosts: known_hosts, connect_timeout: 1}}
database: {{name: app}}
schedules:
  - {{name: weekly, cron: "0 3 * * 0", command: {command}}}
hosts:
  - {{name: web1, address: 192.0.2.10, roles: [web, worker, migrate]}}
  - {{name: db1, address: 192.0.2.12, roles: [db, ledger]}}
"""


def project(root: Path, command: str = "maintenance.run") -> Path:
    (root / "hosts").mkdir(parents=True)
    (root / "hosts" / "known_hosts").write_text("")
    (root / "hosts" / "prod.yaml").write_text(INVENTORY.format(command=command))
    return root


@pytest.fixture(autouse=True)
def connections(monkeypatch, tmp_path) -> list:
    """Every connection attempted from this process (each one also fails)."""
    attempted: list = []

    def refuse(self, address, *a, **kw):
        attempted.append(address)
        raise OSError("no connection in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("DEPLOYER_STATE_DIR", str(tmp_path / "state"))
    return attempted


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stderr


REFUSED = [
    (["deploy", "--lock-wait", "-5", "--yes"], "error: --lock-wait -5: expected a number of seconds >= 0\n"),
    (["rollback", "--lock-wait", "-5", "--yes"], "error: --lock-wait -5: expected a number of seconds >= 0\n"),
    (["deploy", "--force", "--yes"], "error: --force (deploys outside a window or in a freeze): --reason is "
                            "required (it is recorded in the lock and the ledger)\n"),
    (["deploy", "--force", "--reason", "  ", "--yes"], "error: --force (deploys outside a window or in a freeze): "
                                              "--reason is required (it is recorded in the lock and the ledger)\n"),
    (["recover", "--force"], "error: --force (recovers past a live-looking lock holder or a database that "
                             "may be mid-migration): --reason is required (it is recorded in the lock and "
                             "the ledger)\n"),
    (["maintenance", "run", "--force"], "error: --force (runs outside a window): --reason is required (it "
                                        "is recorded in the lock and the ledger)\n"),
    (["rollback", "--to", "v1;id", "--yes"], "error: --to 'v1;id': not a release id (YYYYMMDDTHHMMSSZ-<7 hex "
                                    "digits>, e.g. 20261121T120501Z-3f8cb52), a prefix of one, or a git ref "
                                    "(allowed: letters, digits, . _ / -)\n"),
    (["rollback", "--to", "$(id)", "--dry-run"], "error: --to '$(id)': not a release id (YYYYMMDDTHHMMSSZ-<7 "
                                                 "hex digits>, e.g. 20261121T120501Z-3f8cb52), a prefix of "
                                                 "one, or a git ref (allowed: letters, digits, . _ / -)\n"),
    (["deploy", "--ref", "v1;id", "--dry-run"], "error: --ref 'v1;id': not a valid git ref (allowed: "
                                                "letters, digits, . _ / -)\n"),
]


@pytest.mark.parametrize(("args", "message"), REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_bad_input_is_refused_before_any_connection(args, message, tmp_path, connections):
    root = project(tmp_path / "proj")
    assert run(*args, "-e", "prod", "--root", str(root)) == (2, message)
    assert connections == []


def test_an_unknown_command_in_a_schedule_names_the_file_key_and_the_closest_command(tmp_path, connections):
    root = project(tmp_path / "proj", command="maintenance.runn")
    message = ("error: hosts/prod.yaml: schedules[0].command: unknown command 'maintenance.runn' "
               "(did you mean 'maintenance.run'?)\n")
    assert run("cron", "show", "-e", "prod", "--root", str(root)) == (2, message)
    assert run("status", "-e", "prod", "--root", str(root)) == (2, message)
    assert connections == []


def test_a_command_far_from_any_lists_the_known_ones(tmp_path):
    root = project(tmp_path / "proj", command="zzz")
    code, err = run("cron", "show", "-e", "prod", "--root", str(root))
    assert code == 2
    assert err == ("error: hosts/prod.yaml: schedules[0].command: unknown command 'zzz' (known: "
                   + ", ".join(SCHEDULABLE) + ")\n")


def test_the_schedulable_commands_are_the_cli_commands_that_need_only_an_env():
    def leaves(group: click.Group, prefix: str = ""):
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                yield from leaves(cmd, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}", cmd

    def env_only(cmd: click.Command) -> bool:
        required = {p.name for p in cmd.params if p.required}
        return required == {"env"}

    assert sorted(SCHEDULABLE) == sorted(name for name, cmd in leaves(cli) if env_only(cmd))


def test_valid_input_goes_on_to_the_hosts(tmp_path, connections):
    """The same commands with good values do reach for the hosts (here refused): the checks above
    are what stopped them."""
    root = project(tmp_path / "proj")
    code, _ = run("rollback", "--to", "v1", "--lock-wait", "0", "-e", "prod", "--root", str(root), "--yes")
    assert code == 3 and connections
