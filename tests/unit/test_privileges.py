"""deployer.privileges: what each host runs as root, and the sudoers snippet that allows exactly
that (checked with visudo, and matched as sudo matches, where this machine has sudo's tools)."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deployer import privileges as P
from deployer.config import load_config
from deployer.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CTL = "/srv/bin/supervisorctl -c /srv/supervisor/supervisord.conf"


def project(tmp_path: Path, playbook: dict | None = None, **inventory) -> Path:
    """A project with the shipped playbooks, hosts/prod.yaml (the demo app, user deploy) and,
    with `playbook`, playbooks/app.yaml extending demo."""
    shutil.copytree(REPO / "playbooks", tmp_path / "playbooks")
    (tmp_path / "hosts").mkdir()
    (tmp_path / "hosts" / "known_hosts").write_text("")
    data = {
        "playbook": "app" if playbook is not None else "demo", "repo": "/srv/repo.git",
        "ssh": {"user": "deploy", "known_hosts": "known_hosts"},
        "database": {"name": "demo", "socket_dir": "/srv/pg/run", "backup_dir": "/srv/backups"},
        "lb": {"backend": "web", "socket": "/srv/haproxy/admin.sock"},
        "hosts": [
            {"name": "web1", "address": "10.77.0.11", "roles": ["web", "worker", "migrate"]},
            {"name": "web2", "address": "10.77.0.12", "roles": ["web"]},
            {"name": "db1", "address": "10.77.0.21", "roles": ["db", "ledger"]},
            {"name": "lb1", "address": "10.77.0.31", "roles": ["lb"]},
        ],
        **inventory,
    }
    (tmp_path / "hosts" / "prod.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    if playbook is not None:
        (tmp_path / "playbooks" / "app.yaml").write_text(
            yaml.safe_dump({"extends": "demo", **playbook}, sort_keys=False))
    return tmp_path


def config(tmp_path: Path, playbook: dict | None = None, **inventory):
    return load_config("prod", root=project(tmp_path, playbook, **inventory), environ={})


def test_commands_per_host_follow_the_steps_roles(tmp_path):
    cfg = config(tmp_path)
    web1 = P.commands(cfg, cfg.host("web1"))
    assert [(c.text, c.steps) for c in web1] == [
        (f"{CTL} stop worker", ("playbooks/demo.yaml: stages.maintenance.on[1].run",
                                "playbooks/demo.yaml: stages.worker_restart[0]")),
        (f"{CTL} start worker", ("playbooks/demo.yaml: stages.maintenance.off[1].run",
                                 "playbooks/demo.yaml: stages.worker_restart[0]")),
        (f"{CTL} status worker", ("playbooks/demo.yaml: stages.maintenance.off[1].run",
                                  "playbooks/demo.yaml: stages.worker_restart[0]")),
        (f"{CTL} signal HUP web", ("playbooks/demo.yaml: stages.reload[0]",)),
        (f"{CTL} start web", ("playbooks/demo.yaml: stages.reload[0]",)),
    ]
    assert web1[0].argv == ("/srv/bin/supervisorctl", "-c", "/srv/supervisor/supervisord.conf",
                            "stop", "worker")
    # web2 has no worker role: only the reload; db1 and lb1 run no playbook step
    assert [c.text for c in P.commands(cfg, cfg.host("web2"))] == [
        f"{CTL} signal HUP web", f"{CTL} start web"]
    assert P.commands(cfg, cfg.host("db1")) == [] and P.commands(cfg, cfg.host("lb1")) == []


def test_sudoers_of_the_demo_playbook(tmp_path):
    cfg = config(tmp_path)
    assert P.sudoers(cfg, "deploy") == f"""\
# What the demo playbook runs as root ({{sudo}} in these steps), and nothing else:
#   playbooks/demo.yaml: stages.maintenance.on[1].run
#   playbooks/demo.yaml: stages.worker_restart[0]
#   playbooks/demo.yaml: stages.maintenance.off[1].run
#   playbooks/demo.yaml: stages.reload[0]
Cmnd_Alias DEPLOYER_DEMO = \\
    {CTL} stop worker, \\
    {CTL} start worker, \\
    {CTL} status worker, \\
    {CTL} signal HUP web, \\
    {CTL} start web
deploy ALL=(root) NOPASSWD: DEPLOYER_DEMO
"""
    # one host's rules only (a fleet writing /etc/sudoers.d per host)
    assert P.sudoers(cfg, "deploy", [cfg.host("web2")]).splitlines()[-4:] == [
        "Cmnd_Alias DEPLOYER_DEMO = \\", f"    {CTL} signal HUP web, \\", f"    {CTL} start web",
        "deploy ALL=(root) NOPASSWD: DEPLOYER_DEMO"]
    assert P.sudoers(cfg, "deploy", [cfg.host("db1")]) == (
        "# The demo playbook runs no command as root: deploy needs no sudo rule.\n")


def test_rule_escapes_arguments_as_sudoers_reads_them(tmp_path):
    cmd = P.RootCommand(("/usr/bin/x", "a,b", "k=v", "h:m", "back\\slash", "two words", "#no",
                         "*", "?", "[ab]", "!", "^start", "mid^", "$HOME", "'q'"), ("s",))
    assert P.rule("deploy", cmd) == (
        "deploy ALL=(root) NOPASSWD: /usr/bin/x a\\,b k\\=v h\\:m back\\\\\\\\slash two\\ words "
        "\\#no \\* \\? \\[ab\\] \\! \\^start mid^ $HOME 'q'")
    # without arguments: "" (a Cmnd without any would allow every argument)
    assert P.rule("deploy", P.RootCommand(("/usr/sbin/nginx",), ("s",))) == (
        'deploy ALL=(root) NOPASSWD: /usr/sbin/nginx ""')
    with pytest.raises(ValueError, match="invalid user name"):
        P.rule("de ploy", cmd)


def test_a_relative_program_is_an_error_naming_the_step(tmp_path):
    cfg = config(tmp_path, {"stages": {"reload": ["{sudo} systemctl reload php8.2-fpm"]}})
    with pytest.raises(ConfigError) as exc:
        P.sudoers(cfg, "deploy")
    assert exc.value.message == (
        "playbooks/app.yaml: stages.reload[0]: {sudo} runs `systemctl reload php8.2-fpm`: a sudo "
        "rule needs the program's absolute path, not 'systemctl' (write the path, or a var "
        "holding it, e.g. /usr/bin/systemctl)")


def test_shell_expansions_cannot_be_a_rule(tmp_path):
    cfg = config(tmp_path, {"stages": {"reload": ["pid=$(cat /run/x.pid) && {sudo} /bin/kill -HUP $pid"]}})
    with pytest.raises(ConfigError, match=r"^playbooks/app.yaml: stages.reload\[0\]: \{sudo\} runs "
                                          r"`/bin/kill -HUP \$pid`, which the shell expands \(\$\): "
                                          r"a sudo rule needs the exact words$"):
        P.commands(cfg, cfg.host("web1"))
    cfg = config(tmp_path / "glob", {"stages": {"reload": ["{sudo} /bin/rm -f /run/app/*.pid"]}})
    with pytest.raises(ConfigError, match=r"expands \(\*\)"):
        P.commands(cfg, cfg.host("web1"))
    # quoted, the same characters are words like any other
    cfg = config(tmp_path / "quoted", {"stages": {"reload": ["{sudo} /bin/echo '$x *' \"a b\""]}})
    assert [c.argv for c in P.commands(cfg, cfg.host("web1")) if c.argv[0] == "/bin/echo"] == [
        ("/bin/echo", "$x *", "a b")]


def test_values_that_change_per_deploy_are_refused_at_load(tmp_path):
    project(tmp_path, {"stages": {"reload": [
        {"run": "{sudo} /usr/bin/install -d {release_path}/cache && {release_path}/bin/warm"}]}})
    with pytest.raises(ConfigError) as exc:
        load_config("prod", root=tmp_path, environ={})
    assert exc.value.message == (
        "playbooks/app.yaml: stages.reload[0].run: {sudo} runs `/usr/bin/install -d "
        "{release_path}/cache`, which uses {release_path}: it changes at every deploy and no sudo "
        "rule can allow it; run as root only commands whose words are fixed (a path under "
        "{current_path}, a var)")


def test_host_vars_make_host_rules(tmp_path):
    hosts = [{"name": "web1", "address": "10.77.0.11", "roles": ["web", "migrate"],
              "vars": {"supervisorctl": "/usr/bin/supervisorctl"}},
             {"name": "web2", "address": "10.77.0.12", "roles": ["web"]}]
    cfg = config(tmp_path, database=None, lb=None, hosts=hosts)
    assert [c.argv[0] for c in P.fleet_commands(cfg)] == [
        "/usr/bin/supervisorctl", "/usr/bin/supervisorctl", "/srv/bin/supervisorctl",
        "/srv/bin/supervisorctl"]


# ------------------------------------------------------------ as sudo reads and matches it

VISUDO = shutil.which("visudo") or ("/usr/sbin/visudo" if Path("/usr/sbin/visudo").exists() else None)
CVTSUDOERS = shutil.which("cvtsudoers")


@pytest.mark.skipif(VISUDO is None, reason="needs visudo (Debian: apt-get install sudo)")
def test_visudo_accepts_the_snippet(tmp_path):
    cfg = config(tmp_path / "p")
    odd = P.RootCommand(("/usr/bin/x", "a,b", "k=v", "h:m", "b\\s", "two words", "#", "*?[]", "^"),
                        ("s",))
    text = P.sudoers(cfg, "deploy") + P.rule("deploy", odd) + "\n"
    path = tmp_path / "sudoers"
    path.write_text(text)
    out = subprocess.run([VISUDO, "-cf", str(path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.skipif(CVTSUDOERS is None or not ctypes.util.find_library("c"),
                    reason="needs cvtsudoers (sudo) and the C library's fnmatch")
def test_each_rule_matches_exactly_its_command(tmp_path):
    """sudo reads a rule's arguments (cvtsudoers shows them as parsed), then matches the
    user's arguments, joined by spaces, with fnmatch(3): an odd argument matches itself only."""
    odd = ("a,b", "k=v", "h:m", "b\\s", "two words", "#x", "*", "?", "[ab]", "^s")
    path = tmp_path / "sudoers"
    path.write_text(P.rule("deploy", P.RootCommand(("/usr/bin/x", *odd), ("s",))) + "\n")
    parsed = json.loads(subprocess.run([CVTSUDOERS, "-f", "json", str(path)], capture_output=True,
                                       text=True, check=True).stdout)
    command = parsed["User_Specs"][0]["Cmnd_Specs"][0]["Commands"][0]["command"]
    program, _, pattern = command.partition(" ")
    fnmatch = ctypes.CDLL(ctypes.util.find_library("c")).fnmatch
    assert program == "/usr/bin/x"
    assert fnmatch(pattern.encode(), " ".join(odd).encode(), 0) == 0
    for other in ("a,b k=v h:m b\\s two words #x X ? [ab] ^s", "a,b k=v h:m bs two words #x * ? a ^s"):
        assert fnmatch(pattern.encode(), other.encode(), 0) != 0, other
