"""preflight checks the rights a deploy user needs, on the hosts themselves: each missing one
(a sudo rule, the load balancer's socket, the database's ownership) is named with its fix, exit
3, and nothing is changed on any host."""

from __future__ import annotations

import json

from .conftest import psql, serving

SOCK = "/srv/haproxy/admin.sock"


def _rows(proc) -> list[dict]:
    return [e for e in map(json.loads, (x for x in proc.stdout.splitlines() if x.startswith("{")))
            if e.get("event") == "row"]


def test_preflight_names_each_missing_right_and_its_fix(fleet, cli):
    rules = fleet.sh("web2", "cat /etc/sudoers.d/deployer").stdout
    assert "supervisorctl" in rules
    before = serving(fleet)
    clean = cli("preflight", "--env", "local", "--output", "json", check=0)
    assert not [r for r in _rows(clean) if r["result"] == "FAIL"]
    try:
        fleet.sh("web2", "rm /etc/sudoers.d/deployer")
        fleet.sh("lb1", f"chmod 600 {SOCK}")
        psql(fleet, "ALTER DATABASE demo OWNER TO postgres")
        proc = cli("preflight", "--env", "local", "--output", "json", check=3)
        failed = {(r["host"], r["check"]): r["detail"] for r in _rows(proc) if r["result"] == "FAIL"}
        sudo = failed.get(("web2", "sudo"), "")
        assert "supervisorctl" in sudo and "NOPASSWD" in sudo, failed
        assert not any(h in ("web1", "web3") and c == "sudo" for h, c in failed), failed
        assert SOCK in failed.get(("lb1", "lb_socket"), "") and "mode 660" in failed[("lb1", "lb_socket")], failed
        db = failed.get(("db1", "database"), "")
        assert "does not own it" in db and "ALTER DATABASE demo OWNER TO demo" in db, failed
        assert serving(fleet) == before  # preflight changed nothing
    finally:
        fleet.sh("web2", "cat > /etc/sudoers.d/deployer && chmod 0440 /etc/sudoers.d/deployer", input=rules)
        fleet.sh("lb1", f"chmod 660 {SOCK}")
        psql(fleet, "ALTER DATABASE demo OWNER TO demo")
    cli("preflight", "--env", "local", check=0)
