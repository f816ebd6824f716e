"""`--hosts` / `--roles`: Config.select and Config.narrow, pure functions of a loaded config."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.config import load_config
from deployer.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prod():
    # web1 [web, migrate], web2..web4 [web], worker1 [worker, cron], db1 [db, ledger], lb1 [lb]
    return load_config("prod", root=ROOT)


def roles(cfg) -> dict[str, tuple[str, ...]]:
    return {h.name: h.roles for h in cfg.hosts}


def test_select_by_hosts_by_roles_and_both(prod):
    assert [h.name for h in prod.select(hosts=["web3", "web2"])] == ["web2", "web3"]
    assert [h.name for h in prod.select(roles=["worker", "lb"])] == ["worker1", "lb1"]
    assert [h.name for h in prod.select(hosts=["web1", "worker1"], roles=["web"])] == ["web1"]
    assert prod.select() == prod.hosts


def test_narrow_to_hosts_keeps_infrastructure_and_drops_other_app_hosts(prod):
    cfg = prod.narrow(hosts=["web3"])
    assert roles(cfg) == {"web3": ("web",), "db1": ("db", "ledger"), "lb1": ("lb",)}
    assert [h.name for h in cfg.app_hosts] == ["web3"]
    assert cfg.ledger_host.name == "db1" and cfg.lb_host.name == "lb1" and cfg.db_host.name == "db1"
    # web1 (the migrate host) is not an app host of this run: no migration runs
    assert cfg.migrate_host is None
    # everything else is the same environment
    assert (cfg.env, cfg.deploy_to, cfg.playbook, cfg.health) == (prod.env, prod.deploy_to, prod.playbook,
                                                                 prod.health)
    assert prod.hosts[0].name == "web1" and len(prod.hosts) == 7  # the original is unchanged


def test_narrow_keeps_the_migrate_role_on_a_selected_app_host(prod):
    cfg = prod.narrow(hosts=["web1", "web2"])
    assert [h.name for h in cfg.app_hosts] == ["web1", "web2"]
    assert cfg.migrate_host.name == "web1"


def test_narrow_by_role(prod):
    cfg = prod.narrow(roles=["worker"])
    assert [h.name for h in cfg.app_hosts] == ["worker1"]
    assert roles(cfg)["worker1"] == ("worker", "cron")
    assert set(roles(cfg)) == {"worker1", "db1", "lb1"}


def test_narrow_keeps_the_ledger_where_it_was_by_default(tmp_path):
    # no host has role ledger: the ledger is the migrate host (web1); narrowing to web2 must not
    # move the lock and the history to another host
    (tmp_path / "hosts").mkdir()
    (tmp_path / "hosts" / "known_hosts").write_text("")
    (tmp_path / "hosts" / "x.yaml").write_text(
        "playbook: demo\nrepo: https://git.example.com/app.git\nhealth: {url: 'http://{address}/'}\n"
        "ssh: {known_hosts: known_hosts}\n"
        "hosts:\n  - {name: web1, address: 203.0.113.1, roles: [web, migrate]}\n"
        "  - {name: web2, address: 203.0.113.2, roles: [web]}\n")
    full = load_config("x", root=tmp_path)
    assert full.ledger_host.name == "web1"
    cfg = full.narrow(hosts=["web2"])
    assert roles(cfg) == {"web1": ("ledger",), "web2": ("web",)}
    assert cfg.ledger_host.name == "web1" and [h.name for h in cfg.app_hosts] == ["web2"]


def test_no_selection_is_the_same_config(prod):
    assert prod.narrow() is prod
    assert prod.narrow(hosts=[], roles=[]) is prod


def test_unknown_hosts_and_roles_are_named(prod):
    with pytest.raises(ConfigError) as exc:
        prod.narrow(hosts=["cache9", "web2", "wbe3"])
    assert exc.value.message == (
        "--hosts: unknown hosts 'cache9', 'wbe3' in hosts/prod.yaml (hosts: web1, web2, web3, web4, "
        "worker1, db1, lb1); did you mean 'web3'?")
    assert exc.value.exit_code == 2
    with pytest.raises(ConfigError) as exc:
        prod.narrow(roles=["search"])
    assert exc.value.message == ("--roles: unknown role 'search' in hosts/prod.yaml "
                                 "(roles: cron, db, lb, ledger, migrate, web, worker)")
    with pytest.raises(ConfigError) as exc:
        prod.narrow(hosts=["zzz"], roles=["qqq"])
    assert exc.value.message.splitlines() == [
        "--hosts: unknown host 'zzz' in hosts/prod.yaml (hosts: web1, web2, web3, web4, worker1, db1, lb1)",
        "--roles: unknown role 'qqq' in hosts/prod.yaml (roles: cron, db, lb, ledger, migrate, web, worker)"]


def test_an_empty_selection_is_an_error(prod):
    with pytest.raises(ConfigError, match=r"^--hosts web2 --roles worker: no host of hosts/prod.yaml "):
        prod.narrow(hosts=["web2"], roles=["worker"])


class Notes:
    def __init__(self):
        self.messages = []

    def event(self, kind, **f):
        self.messages.append(f["message"])


def test_verbs_config_applies_set_and_narrowing_and_says_what_it_left_out():
    from deployer import verbs

    notes = Notes()
    cfg = verbs.config("prod", root=str(ROOT), sets=["parallel=3"], hosts="web2, web3", rep=notes,
                       migrates=True)
    assert cfg.parallel == 3 and [h.name for h in cfg.app_hosts] == ["web2", "web3"]
    assert notes.messages == ["prod: narrowed to app hosts web2, web3",
                              "prod: the migrate host web1 is not selected: this run runs no migration"]
    notes = Notes()
    verbs.config("prod", root=str(ROOT), roles="web", rep=notes)  # a read-only command: no migration
    assert notes.messages == ["prod: narrowed to app hosts web1, web2, web3, web4"]
    with pytest.raises(ConfigError, match=r"^--hosts 'web1,,web2': expected names separated by commas"):
        verbs.config("prod", root=str(ROOT), hosts="web1,,web2")
