"""The fault suite: real faults on the real fleet, each followed by `recover`, then one invariant
checker that looks at the hosts. A table of what held, scenario by scenario, ends the run."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .driver import psql

RESULTS: list[tuple[str, str, str, bool, str]] = []
CANARY_ROWS = 50


@dataclass
class FaultEnv:
    inventory: str
    secret: str
    state_dir: Path
    failing_gate: str = ""  # the inventory whose deploys fail at the gate, after their migration

    def env(self) -> dict:
        return {"FAULT_CANARY_SECRET": self.secret, "DEPLOYER_STATE_DIR": str(self.state_dir)}


@pytest.fixture(scope="session")
def fault_env(fleet, tmp_path_factory) -> FaultEnv:
    d = tmp_path_factory.mktemp("faults")
    data = yaml.safe_load(fleet.inventory_path.read_text())
    data["ssh"].update({"connect_timeout": 3, "keepalive": 3, "command_timeout": 40})
    data["maintenance_ttl"] = 60
    data["rollout"] = [{"size": 1}, {"size": "100%"}]  # a canary, then the rest
    data["secret_files"] = [{"path": "fault-canary.secret", "from_env": "FAULT_CANARY_SECRET"}]
    # finalize always has a command (a SIGKILL "at finalize" then lands while it runs, not after
    # the run ended: with no old release to clean up, an online deploy's finalize had none)
    (d / "faults-playbook.yaml").write_text(
        "extends: demo\nname: faults-playbook\nstages:\n  finalize:\n    - \"true\"\n")
    inv = d / "faults.yaml"
    inv.write_text(yaml.safe_dump({**data, "playbook": str(d / "faults-playbook.yaml")}, sort_keys=False))
    # The same, with a gate check that fails on every host: v3 migrates (under maintenance),
    # then its gate fails, so the automatic rollback restores the backup. (bad-migration's
    # migration rolls itself back: the schema never moves, and nothing is restored.)
    (d / "failing-gate.yaml").write_text(
        "extends: demo\nname: failing-gate\nstages:\n  gate_checks:\n"
        "    - run: \"echo 'gate check: orders queue stalled' >&2; exit 1\"\n")
    inv_fail = d / "faults-failing-gate.yaml"
    inv_fail.write_text(yaml.safe_dump({**data, "playbook": "failing-gate.yaml"}, sort_keys=False))
    env = FaultEnv(str(inv), "canary-" + secrets.token_hex(12), d / "state", str(inv_fail))
    # the app's table, as the app's role owns its tables (the backups dump as that role)
    psql(fleet, "CREATE TABLE IF NOT EXISTS fault_canary (id int primary key); "
                "ALTER TABLE fault_canary OWNER TO demo; "
                f"INSERT INTO fault_canary SELECT g FROM generate_series(1, {CANARY_ROWS}) g ON CONFLICT DO NOTHING")
    return env


def record(name: str, exit_code: object, recover: str, held: bool, detail: str = "") -> None:
    RESULTS.append((name, str(exit_code), recover, held, detail))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("fault suite: what held, scenario by scenario")
    tr.write_line(f"{'scenario':<52} {'exit':>5} {'recover':<10} invariants")
    for name, code, rec, held, detail in RESULTS:
        tr.write_line(f"{name:<52} {code:>5} {rec:<10} {'held' if held else 'BROKEN: ' + detail}")
    held = sum(1 for r in RESULTS if r[3])
    tr.write_line(f"{len(RESULTS)} scenarios, invariants held in {held}, broken in {len(RESULTS) - held}")
