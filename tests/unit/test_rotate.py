"""Secret files in releases and `secrets set`: what the plan writes where, and the input checks
(the fleet test, tests/e2e/test_secrets.py, rotates one through a real gate)."""

from __future__ import annotations

import io

import pytest
from test_engine_pure import REL, ROOT, canned_facts

from deployer.config import load_config
from deployer.engine import rotate
from deployer.engine.deploy_plan import DeployInputs, deploy_plan
from deployer.errors import ConfigError
from deployer.shell import Secret


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _scripts(plan, stage: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for st in plan.stages:
        if st.name == stage:
            for lane in st.lanes:
                out.setdefault(lane.subject, []).extend(a.script.script for a in lane.actions if a.command is not None)
    return out


def test_a_linked_secret_goes_into_the_release_and_to_shared_only_at_finalize():
    cfg = load_config("prod", root=ROOT)  # the laravel playbook: shared_files [.env], shared_dirs [storage]
    facts = canned_facts(cfg)
    secrets = ((".env", Secret("APP_KEY=s3cr3t\n")), ("storage/oauth.key", Secret("k")), ("tls.pem", Secret("c")))
    plan = deploy_plan(cfg, facts, DeployInputs(release=REL, commit=facts.commit, ref="v2", maintenance=False,
                                                secret_files=secrets, token=7))
    rel = f"{cfg.deploy_to}/releases/{REL}"
    pull = _scripts(plan, "pull")
    for host in (h.name for h in cfg.app_hosts):
        writes = [s for s in pull[host] if "cat > " in s]
        assert any(f"{rel}/.env.tmp." in s for s in writes)  # its own copy, in place of the link
        assert any(f"{cfg.deploy_to}/shared/storage/oauth.key.tmp." in s for s in writes)  # a shared dir
        assert any(f"{cfg.deploy_to}/shared/tls.pem.tmp." in s for s in writes)  # not linked: shared/
        final = " ".join(_scripts(plan, "finalize")[host])
        assert f"cp -- {rel}/.env" in final and f"{cfg.deploy_to}/shared/.env" in final
        assert "oauth.key" not in final and "tls.pem" not in final
    for row in plan.rows():
        assert "s3cr3t" not in " ".join(row)


def test_what_secrets_set_accepts(monkeypatch):
    cfg = load_config("prod", root=ROOT)
    assert rotate.names(cfg) == [".env"]
    rotate.check_name(cfg, ".env")
    with pytest.raises(ConfigError, match=r"secrets set nope: not a secret file of env 'prod'.*shared_files: \.env"):
        rotate.check_name(cfg, "nope")
    with pytest.raises(ConfigError, match="shared dir 'storage'"):
        rotate.check_name(cfg, "storage/oauth.key")
    assert rotate.read_value(".env", None, {}, io.StringIO("A=1\n")).reveal() == "A=1\n"
    assert rotate.read_value(".env", "NEW", {"NEW": "B=2"}, Tty()).reveal() == "B=2"
    with pytest.raises(ConfigError, match="--from-env NEW: the variable is not set"):
        rotate.read_value(".env", "NEW", {}, io.StringIO())
    with pytest.raises(ConfigError, match="not typed at a terminal"):
        rotate.read_value(".env", None, {}, Tty("A=1"))
    with pytest.raises(ConfigError, match="the new content is empty"):
        rotate.read_value(".env", None, {}, io.StringIO(" \n"))
    with pytest.raises(ConfigError, match="over 1024 KiB"):
        rotate.read_value(".env", None, {}, io.StringIO("x" * (rotate.MAX_BYTES + 1)))


def test_a_rotation_plans_no_migration_and_goes_out_only_on_the_code_served():
    from deployer.commands import releases as R
    from deployer.engine.deploy import same_code, served
    from deployer.errors import Refused
    from deployer.ledger import History

    cfg = load_config("prod", root=ROOT)
    facts = canned_facts(cfg)
    plan = deploy_plan(cfg, facts, DeployInputs(release=REL, commit=facts.commit, ref=facts.commit, maintenance=False,
                                                secret_files=((".env", Secret("A=1\n")),), token=7, migrate=False))
    [mig] = [st for st in plan.stages if st.name == "migrate"]
    assert mig.lanes == () and mig.detail == "the code the hosts run: nothing to migrate"

    old = "20261101T000000Z-" + facts.commit[:7]
    history = History.fold([{"type": "deploy.start", "run": "r1", "release": old, "commit": facts.commit},
                            {"type": "deploy.end", "run": "r1", "outcome": "success"}])
    for h in cfg.app_hosts:
        facts.hosts[h.name] = R.HostState(current=old, releases=[old], hostname=h.name)
    assert {c for _, c in served(cfg, facts, history).values()} == {facts.commit}
    same_code(cfg, facts, history)  # every host on it: goes out
    first = cfg.app_hosts[0].name
    facts.hosts[first] = R.HostState(current="20261102T000000Z-fffffff", releases=[], hostname=first)
    with pytest.raises(Refused, match=f"secret rotation: {first} serves 20261102T000000Z-fffffff, not commit "
                                      f"{facts.commit[:7]}; nothing changed"):
        same_code(cfg, facts, history)
