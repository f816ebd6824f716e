"""An orchestrator whose clock is off (libfaketime: an hour behind, an hour ahead of the hosts'):
no decision may rest on it. The maintenance flag's expiry is the host's, so a maintenance deploy
whose gate fails keeps users out until its rollback ends; release order is the ledger's, so a
plain `rollback` after a deploy made an hour "in the past" returns to the release before it."""

from __future__ import annotations

import json
import secrets
import time

import pytest
from e2e.conftest import faketime, http, serving

from .conftest import CANARY_ROWS, record
from .driver import Orchestrator, check_invariants, psql
from .runner import baseline, run


def _maintenance_done(e: dict) -> bool:
    """The stage after maintenance started: the flag is on every web host."""
    return e.get("event") == "stage" and e.get("stage") == "backup" and e.get("state") == "start"


def _rollback_lifts_maintenance(o: Orchestrator) -> bool:
    """The rollback has started taking maintenance off (users may write from then on)."""
    rolling = False
    for e in list(o.events):
        rolling = rolling or e.get("event") == "rollback"
        if rolling and e.get("event") == "stage" and e.get("stage") == "maintenance" and e.get("state") == "start":
            return True
    return False


FLAG = "/srv/app/shared/storage/maintenance.json"
TTL = 60  # the fault inventories' maintenance_ttl


class WriteProbe:
    """Once maintenance is on: each web host's flag read with the host's own clock (how long it
    holds), then a user POSTing to every web host's app until the rollback starts taking
    maintenance off: every answer, per host. A write accepted by a host whose flag file is gone
    was answered after the rollback lifted maintenance there (the rollback is the only thing that
    removes the file; its stage event can reach the probe after its first host is done): that
    one is legitimate, kept apart, and ends the probe."""

    def __init__(self, fleet):
        self.fleet = fleet
        self.answers: list[tuple[str, int | str]] = []
        self.after_lift: list[str] = []  # names written once the rollback had removed the flag
        self.holds_for: dict[str, float] = {}  # host -> seconds its flag still holds, by its clock
        # this probe's own names: a write a previous scenario made after its lift stays legitimately
        self.prefix = f"clock-skew-probe-{secrets.token_hex(4)}-"

    def read_flags(self) -> None:
        for h in self.fleet.spec.web_hosts:
            flag, now = self.fleet.sh(h.name, f"cat {FLAG}; echo; date +%s").stdout.strip().rsplit("\n", 1)
            self.holds_for[h.name] = float(json.loads(flag)["expires_at"]) - float(now)

    def _lifted(self, host: str) -> bool:
        return self.fleet.sh(host, f"test -e {FLAG}", check=False).returncode != 0

    def __call__(self, o: Orchestrator) -> None:
        self.read_flags()
        n = 0
        while o.proc.poll() is None and not _rollback_lifts_maintenance(o):
            for h in self.fleet.spec.web_hosts:
                n += 1
                name = f"{self.prefix}{n}"
                try:
                    status = http(self.fleet, h, "/items", data=json.dumps({"name": name}),
                                  headers={"Content-Type": "application/json"}).status
                except ConnectionError as exc:
                    status = f"no answer: {exc}"
                # accepted, or no answer (the request may have been served as the rollback
                # reloaded the app), by a host whose flag is gone
                if status != 503 and not (isinstance(status, int) and status >= 300) and self._lifted(h.name):
                    self.after_lift.append(name)
                    return
                self.answers.append((h.name, status))
            time.sleep(0.1)

    @property
    def accepted(self) -> list[tuple[str, int | str]]:
        return [(h, s) for h, s in self.answers if isinstance(s, int) and 200 <= s < 300]


@pytest.mark.parametrize("offset", ["-1h", "+1h"])
def test_a_failed_maintenance_deploy_keeps_users_out_until_its_rollback_ends(offset, fleet, cli, fault_env):
    """v3 (a migration that is not online-safe: maintenance) fails its gate; the orchestrator's
    clock is `offset` off the hosts'. While the flag holds, the app accepts no write (an expiry
    computed by the orchestrator an hour behind was already past on the hosts: users wrote during
    the migration, and the restore would have thrown their writes away); the hosts end on the
    release they served before, the database restored."""
    before = baseline(fleet, cli, fault_env)
    probe = WriteProbe(fleet)
    run(f"orchestrator clock {offset}: maintenance deploy, gate fails", fleet, cli, fault_env, ref="v3",
        inventory=fault_env.failing_gate, prefix=faketime(offset), trigger=_maintenance_done, action=probe,
        expect=(1,), timeout=300)
    # the dead-man switch counts from the host's clock: it holds for the TTL, not an hour less
    # (already expired: users served during the migration) nor an hour more
    assert probe.holds_for and all(TTL - 30 < left <= TTL for left in probe.holds_for.values()), probe.holds_for
    assert all(s == 503 for _, s in probe.answers), (
        f"answers while maintenance held: {sorted(set(probe.answers))[:10]}")
    assert not probe.accepted
    lifted = ",".join(f"'{n}'" for n in probe.after_lift) or "''"
    assert psql(fleet, f"select count(*) from items where name like '{probe.prefix}%' "
                       f"and name not in ({lifted})") == "0"
    assert set(serving(fleet).values()) == {before}
    assert psql(fleet, "select max(version) from schema_migrations") == "2"


def test_a_plain_rollback_after_a_deploy_an_hour_behind_returns_to_the_previous_good_release(
        fleet, cli, fault_env):
    """Two good deploys of v2: the first by an orchestrator on time, the second by one an hour
    behind, so the second's release id sorts BEFORE the first's. A plain `rollback` (from either
    clock) goes back to the first, which the ledger recorded before the second."""
    name = "orchestrator clock -1h: plain rollback picks the previous good release"
    code: object = "?"
    try:
        baseline(fleet, cli, fault_env)
        inv = ["--env", "local", "--inventory", fault_env.inventory]
        cli("deploy", "--ref", "v2", *inv, env=fault_env.env(), check=0)
        first = set(serving(fleet).values())
        assert len(first) == 1, first
        (first_rel,) = first
        behind = cli.under(*faketime("-1h"))
        behind("deploy", "--ref", "v2", *inv, env=fault_env.env(), check=0)
        (second_rel,) = set(serving(fleet).values())
        assert second_rel != first_rel and second_rel < first_rel, (
            f"the second release's id should sort before the first's: {second_rel} vs {first_rel}")
        proc = behind("rollback", *inv, env=fault_env.env())
        code = proc.returncode
        assert code == 0, f"rollback: exit {code}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        assert set(serving(fleet).values()) == {first_rel}
        obs = check_invariants(fleet, cli, fault_env.inventory, allowed={first_rel}, canary_rows=CANARY_ROWS,
                               secret=fault_env.secret, texts=[proc.stdout, proc.stderr],
                               state_dir=fault_env.state_dir)
        assert obs.ok, obs.problems
        record(name, code, "-", True)
    except BaseException as exc:
        record(name, code, "-", False, str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__)
        raise


def test_status_warns_of_an_orchestrator_whose_clock_is_off(fleet, cli, fault_env):
    """`status` from a machine an hour ahead names every host's clock as off (and still works)."""
    baseline(fleet, cli, fault_env)
    proc = cli.under(*faketime("+1h"))("status", "--env", "local", "--inventory", fault_env.inventory,
                                       env=fault_env.env())
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said[-2000:]
    for h in fleet.spec.web_hosts:
        assert f"{h.name}'s clock is" in said and "behind this machine's" in said, said[-2000:]

