"""The local fleet's shape (deployer.fleet.spec, pure): a private network behind a bastion and a
load balancer, the deploy user, the sudo rules each host gets, HAProxy's and sshd's configs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deployer.fleet import spec as S
from deployer.fleet.harness import Fleet, fleet_config


def test_app_hosts_are_on_the_private_network_only():
    spec = S.FleetSpec.of(3)
    for h in spec.hosts:
        if h.name in ("lb1", "bastion1"):
            assert S.ipaddress.ip_address(h.public) in S.SUBNET
            assert h.bridges() == [(f"dv-{h.name}", S.BRIDGE), (f"dp-{h.name}", S.PRIVATE_BRIDGE)]
        else:
            assert h.public is None and h.private
            assert h.bridges() == [(f"dv-{h.name}", S.PRIVATE_BRIDGE)]
        assert S.ipaddress.ip_address(h.address) in S.PRIVATE_SUBNET
    assert (spec.host("lb1").public, spec.host("bastion1").public) == ("10.77.0.10", "10.77.0.5")
    assert [h.address for h in spec.web_hosts] == ["10.78.0.101", "10.78.0.102", "10.78.0.103"]


def test_haproxy_admin_socket_for_the_deploy_group_and_the_gate_header():
    cfg = S.haproxy_config(S.FleetSpec.of(2).web_hosts)
    assert "stats socket /srv/haproxy/admin.sock mode 660 group deploy level admin" in cfg
    assert "    bind 10.77.0.10:80\n" in cfg
    assert "    http-request del-header X-Deployer-Gate\n" in cfg
    assert "    option httpchk\n    http-check send meth GET uri /health hdr X-Deployer-Gate 1\n" in cfg
    assert "    server web1 10.78.0.101:8000 check" in cfg and "    server web2 10.78.0.102:8000 check" in cfg


def test_production_intervals_check_every_2s_and_poll_jobs_every_second():
    test, prod = S.FleetSpec.of(2), S.FleetSpec.of(2, production=True)
    assert "    server web1 10.78.0.101:8000 check inter 500ms fall 2" in S.haproxy_config(
        test.web_hosts, check_inter=test.check_inter)
    assert "    server web1 10.78.0.101:8000 check inter 2s fall 2" in S.haproxy_config(
        prod.web_hosts, check_inter=prod.check_inter)
    assert "current/worker.py --poll 0.2\n" in S.supervisord_config(test.worker_poll)
    assert "current/worker.py --poll 1\n" in S.supervisord_config(prod.worker_poll)


def test_sshd_root_only_on_the_bastion_and_app_hosts_on_their_private_address():
    app = S.sshd_config(Path("/h"), Path("/k"), listen="10.78.0.10")
    assert "PermitRootLogin no\n" in app and "ListenAddress 10.78.0.10\n" in app
    assert "PermitRootLogin prohibit-password\n" in S.sshd_config(Path("/h"), Path("/k"), root_login=True)


def test_the_app_programs_run_as_deploy():
    conf = S.supervisord_config()
    assert conf.count("user=deploy\n") == 2
    assert conf.count('environment=HOME="/home/deploy",USER="deploy",LOGNAME="deploy"\n') == 2


def test_inventory_logs_in_as_deploy_through_the_bastion(tmp_path: Path):
    data = yaml.safe_load(S.inventory(S.FleetSpec.of(3), tmp_path, tmp_path / "demo-app"))
    assert data["ssh"]["user"] == "deploy" and data["ssh"]["jump"] == "deploy@10.77.0.5"
    assert data["database"]["user"] == "demo" and "os_user" not in data["database"]
    assert {h["name"]: h["address"] for h in data["hosts"]} == {
        "lb1": "10.78.0.10", "db1": "10.78.0.20", "web1": "10.78.0.101", "web2": "10.78.0.102",
        "web3": "10.78.0.103"}


@pytest.mark.skipif(not shutil.which("visudo") and not Path("/usr/sbin/visudo").exists(), reason="no visudo")
def test_each_hosts_sudoers_file_is_valid_and_holds_the_playbooks_rules(tmp_path: Path):
    fleet = Fleet(tmp_path / "fleet")
    cfg = fleet_config(fleet, S.FleetSpec.of(3))
    for name in ("web1", "db1", "lb1"):
        from deployer.privileges import sudoers_rules

        path = tmp_path / f"{name}.sudoers"
        path.write_text("Defaults:deploy logfile=/srv/log/sudo.log, loglinelen=0\n" + sudoers_rules(cfg, name))
        visudo = shutil.which("visudo") or "/usr/sbin/visudo"
        check = subprocess.run([visudo, "-cf", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    assert "signal HUP web" in sudoers_rules(cfg, "web1") and "NOPASSWD" not in sudoers_rules(cfg, "db1")
