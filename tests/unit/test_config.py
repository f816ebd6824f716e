"""deployer.config: layering, validation messages, playbooks."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.config import (
    TEMPLATE_VALUES,
    known_envs,
    load_config,
    load_playbook,
)
from deployer.cron import Schedule
from deployer.errors import ConfigError
from deployer.retention import Policy
from deployer.shell import Privileged, Secret, render
from deployer.windows import Window

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = sorted(p.stem for p in (REPO / "playbooks").glob("*.yaml"))

LOCAL: dict[str, Any] = {
    "playbook": "demo",
    "repo": "../.fleet/demo-app",
    "ssh": {"key": "../.fleet/id_ed25519", "known_hosts": "../.fleet/known_hosts"},
    "database": {"name": "demo", "os_user": "postgres", "socket_dir": "/srv/pg/run",
                 "backup_dir": "/srv/backups"},
    "lb": {"backend": "web", "socket": "/srv/haproxy/admin.sock"},
    "hosts": [
        {"name": "web1", "address": "10.77.0.11", "roles": ["web", "worker", "migrate"]},
        {"name": "web2", "address": "10.77.0.12", "roles": ["web", "worker"]},
        {"name": "web3", "address": "10.77.0.13", "roles": ["web", "worker"]},
        {"name": "db1", "address": "10.77.0.21", "roles": ["db", "ledger"]},
        {"name": "lb1", "address": "10.77.0.31", "roles": ["lb"]},
    ],
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "playbooks", tmp_path / "playbooks")
    (tmp_path / "hosts").mkdir()
    fleet = tmp_path / ".fleet"
    fleet.mkdir()
    (fleet / "known_hosts").write_text("10.77.0.11 ssh-ed25519 AAAA\n")
    (fleet / "id_ed25519").write_text("key\n")
    return tmp_path


def write(root: Path, env: str, data: Any) -> Path:
    path = root / "hosts" / f"{env}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def local(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(LOCAL)
    data.update(changes)
    return data


def error_of(root: Path, env: str = "prod", **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(env, root=root, environ=kwargs.pop("environ", {}), **kwargs)
    assert exc.value.exit_code == 2
    return exc.value.message


# ------------------------------------------------------------------ loading


def test_local_inventory_loads(root: Path):
    write(root, "local", LOCAL)
    cfg = load_config("local", root=root, environ={})
    assert [h.name for h in cfg.hosts] == ["web1", "web2", "web3", "db1", "lb1"]
    assert [h.name for h in cfg.web_hosts] == ["web1", "web2", "web3"]
    assert cfg.migrate_host.name == "web1"
    assert cfg.db_host.name == "db1"
    assert cfg.lb_host.name == "lb1"
    assert cfg.ledger_host.name == "db1"
    assert cfg.host("web2").address == "10.77.0.12"
    assert cfg.host("web2").port == 22 and cfg.host("web2").user == "root"
    assert cfg.playbook.name == "demo"
    assert cfg.playbook_path == root / "playbooks" / "demo.yaml"
    assert cfg.inventory_path == root / "hosts" / "local.yaml"
    assert cfg.env == "local" and cfg.root == root
    assert cfg.deploy_to == "/srv/app" and cfg.keep_releases == 5 and cfg.parallel == 10
    assert cfg.waves == ["100%"]
    assert cfg.health.url == "http://{address}:8000/health"  # from the playbook's defaults
    assert cfg.lb.server_name == "{host}"
    assert cfg.lb_server_name(cfg.host("web1")) == "web1"
    # relative paths are resolved against the inventory's directory
    assert cfg.repo == str(root / ".fleet" / "demo-app")
    assert cfg.ssh.key == root / ".fleet" / "id_ed25519"
    assert cfg.ssh.known_hosts == root / ".fleet" / "known_hosts"


def test_ledger_falls_back_to_migrate_then_first(root: Path):
    data = local(database=None, lb=None)
    data["hosts"] = [h for h in data["hosts"] if h["name"].startswith("web")]
    write(root, "local", data)
    assert load_config("local", root=root, environ={}).ledger_host.name == "web1"


def test_template_values(root: Path):
    data = local(vars={"python": "/opt/py", "color": "blue"})
    data["hosts"][1]["vars"] = {"color": "green"}
    write(root, "local", data)
    cfg = load_config("local", root=root, environ={})
    values = cfg.template_values("web2", release="R", release_path="/srv/app/releases/R")
    assert values == {
        "env": "local", "host": "web2", "address": "10.77.0.12", "deploy_to": "/srv/app",
        "shared_path": "/srv/app/shared", "current_path": "/srv/app/current",
        "releases_path": "/srv/app/releases", "sudo": Privileged("root"),
        "python": "/opt/py", "supervisorctl": "/srv/bin/supervisorctl",
        "supervisor_conf": "/srv/supervisor/supervisord.conf", "color": "green",
        "release": "R", "release_path": "/srv/app/releases/R",
    }
    assert cfg.health.url_for(cfg.health_values(cfg.host("web1"), "R")) == \
        "http://10.77.0.11:8000/health"
    assert cfg.health.expected_json({"release": "R", "address": "a", "host": "h", "port": 22}) \
        == {"status": "ok", "release": "R"}


def test_layering(root: Path, tmp_path: Path):
    # playbook defaults (keep_releases 5, health.passes 3) < inventory < environ < overrides
    write(root, "local", local(keep_releases=7, parallel=3, health={"passes": 4}))
    cfg = load_config("local", root=root, environ={})
    assert (cfg.keep_releases, cfg.parallel, cfg.health.passes) == (7, 3, 4)
    assert cfg.health.url == "http://{address}:8000/health"  # deep-merged, not replaced
    assert cfg.health.max_attempts == 75

    env = {"DEPLOYER_PARALLEL": "5", "DEPLOYER_SSH_USER": "deploy"}
    cfg = load_config("local", root=root, environ=env)
    assert (cfg.parallel, cfg.ssh.user, cfg.host("web1").user) == (5, "deploy", "deploy")

    other_key = tmp_path / "other_key"
    other_key.write_text("k")
    cfg = load_config("local", root=root, environ=env,
                      overrides={"parallel": 2, "ssh.key": str(other_key), "keep_releases": None})
    assert (cfg.parallel, cfg.ssh.key, cfg.keep_releases) == (2, other_key, 7)


def test_ssh_key_data_is_a_secret(root: Path):
    write(root, "local", local())
    text = "-----BEGIN OPENSSH PRIVATE KEY-----\nsecretkeymaterial\n"
    cfg = load_config("local", root=root, environ={"DEPLOYER_SSH_KEY_DATA": text,
                                                   "DEPLOYER_KNOWN_HOSTS_DATA": "h k v"})
    assert isinstance(cfg.ssh.key_data, Secret)
    assert cfg.ssh.key_data.reveal() == text
    assert cfg.ssh.key is None  # the key text replaces the inventory's key path
    assert cfg.ssh.known_hosts is None
    assert cfg.ssh.known_hosts_data.reveal() == "h k v"
    assert "secretkeymaterial" not in repr(cfg)
    assert "secretkeymaterial" not in str(cfg.ssh)


def test_key_data_cannot_be_written_in_a_file(root: Path):
    write(root, "prod", local(ssh={"known_hosts": "../.fleet/known_hosts", "key_data": "x"}))
    assert error_of(root) == (
        "hosts/prod.yaml: ssh.key_data: cannot be set in a file; use the DEPLOYER_SSH_KEY_DATA "
        "environment variable"
    )


def test_env_path_variables(root: Path):
    write(root, "local", local())
    kh = root / "kh"
    kh.write_text("x")
    cfg = load_config("local", root=root, environ={"DEPLOYER_KNOWN_HOSTS": str(kh)})
    assert cfg.ssh.known_hosts == kh
    assert error_of(root, "local", environ={"DEPLOYER_SSH_KEY": str(root / "missing")}) == (
        f"environment: DEPLOYER_SSH_KEY: file not found: {root / 'missing'}"
    )
    assert error_of(root, "local", environ={"DEPLOYER_PARALLEL": "many"}) == (
        "environment: DEPLOYER_PARALLEL: expected an integer"
    )


def test_deployer_root_from_environ(root: Path):
    write(root, "local", local())
    cfg = load_config("local", environ={"DEPLOYER_ROOT": str(root)})
    assert cfg.root == root


def test_explicit_inventory_path(root: Path, tmp_path: Path):
    elsewhere = tmp_path / "gen"
    elsewhere.mkdir()
    (elsewhere / "kh").write_text("x")
    path = elsewhere / "fleet.yaml"
    data = local(repo="./repo", ssh={"known_hosts": "kh"})
    path.write_text(yaml.safe_dump(data))
    cfg = load_config("local", root=root, inventory=path, environ={})
    assert cfg.inventory_path == path
    assert cfg.repo == str(elsewhere / "repo")
    assert cfg.ssh.known_hosts == elsewhere / "kh"


def test_known_envs(root: Path):
    write(root, "prod", LOCAL)
    write(root, "staging", LOCAL)
    assert known_envs(root) == ["prod", "staging"]


# ------------------------------------------------------------------ error messages


def test_no_such_inventory(root: Path):
    for env in ("local", "prod", "staging"):
        write(root, env, LOCAL)
    assert error_of(root, "nope") == "hosts/nope.yaml: no such inventory (known envs: local, prod, staging)"


def test_bad_env_name(root: Path):
    assert error_of(root, "../etc") == (
        "environment '../etc': expected lowercase letters, digits, _ and -, starting with a letter"
    )


def test_invalid_yaml(root: Path):
    write(root, "prod", "playbook: demo\nrepo: x\nhosts:\n  - name: [\n")
    assert error_of(root).startswith("hosts/prod.yaml: line 5: invalid YAML: ")


def test_duplicate_yaml_key(root: Path):
    write(root, "prod", "playbook: demo\nrepo: x\nrepo: y\n")
    assert error_of(root) == "hosts/prod.yaml: line 3: invalid YAML: duplicate key 'repo'"


def test_top_level_not_a_mapping(root: Path):
    write(root, "prod", "- a\n- b\n")
    assert error_of(root) == "hosts/prod.yaml: expected a mapping at top level"


def test_roles_not_a_list(root: Path):
    data = local()
    data["hosts"][2]["roles"] = "web"
    write(root, "prod", data)
    assert error_of(root) == "hosts/prod.yaml: hosts[2].roles: expected a list"


def test_invalid_role(root: Path):
    data = local()
    data["hosts"][0]["roles"] = ["web", "Web!", "migrate"]
    write(root, "prod", data)
    assert error_of(root) == (
        "hosts/prod.yaml: hosts[0].roles[1]: invalid role 'Web!' (use lowercase letters, "
        "digits, _ and -, starting with a letter; built-in: cron, db, lb, ledger, migrate, web, "
        "worker)"
    )


def test_port_not_an_integer(root: Path):
    write(root, "prod", local(ssh={"port": "ssh", "known_hosts": "../.fleet/known_hosts"}))
    assert error_of(root) == "hosts/prod.yaml: ssh.port: expected an integer"


def test_missing_address(root: Path):
    data = local()
    del data["hosts"][1]["address"]
    write(root, "prod", data)
    assert error_of(root) == "hosts/prod.yaml: hosts[1].address: required key is missing"


def test_unknown_key(root: Path):
    write(root, "prod", local(sshh={"port": 22}))
    assert error_of(root) == "hosts/prod.yaml: sshh: unknown key (did you mean 'ssh'?)"


def test_database_role_host_and_password_file(root: Path):
    write(root, "prod", local(database={"name": "demo", "user": "demo", "host": "10.78.0.20",
                                        "password_file": "/home/deploy/.pgpass"}))
    db = load_config("prod", root=root, environ={}).database
    assert (db.user, db.host, db.password_file, db.os_user) == ("demo", "10.78.0.20", "/home/deploy/.pgpass", None)


def test_database_errors_name_the_key(root: Path):
    write(root, "prod", local(database={"name": "demo", "user": "no body"}))
    assert error_of(root) == "hosts/prod.yaml: database.user: invalid role name 'no body' (letters, digits, _, . and -)"
    write(root, "prod", local(database={"name": "demo", "user": 5}))
    assert error_of(root) == "hosts/prod.yaml: database.user: expected a string"
    write(root, "prod", local(database={"name": "demo", "password_file": ".pgpass"}))
    assert error_of(root).startswith("hosts/prod.yaml: database.password_file: ")
    write(root, "prod", local(database={"name": "demo", "host": "10.0.0.5", "socket_dir": "/run/postgresql"}))
    assert error_of(root) == ("hosts/prod.yaml: database: give host (TCP) or socket_dir (a Unix socket), "
                              "not both")
    write(root, "prod", local(database={"name": "demo", "os_user": "no body"}))
    assert error_of(root) == "hosts/prod.yaml: database.os_user: invalid user name 'no body'"


def test_duplicate_host_name(root: Path):
    data = local()
    data["hosts"][3]["name"] = "web1"
    write(root, "prod", data)
    assert error_of(root) == "hosts/prod.yaml: hosts[3].name: duplicate host name 'web1' (also hosts[0])"


def test_duplicate_address(root: Path):
    data = local()
    data["hosts"][2]["address"] = "10.77.0.11"
    write(root, "prod", data)
    assert error_of(root) == (
        "hosts/prod.yaml: hosts[2].address: duplicate address 10.77.0.11:22 (also hosts[0])"
    )
    data["hosts"][2]["port"] = 2222  # same address, other port: fine
    write(root, "prod", data)
    load_config("prod", root=root, environ={})


def test_known_hosts_file_not_found(root: Path):
    write(root, "prod", local(ssh={"known_hosts": "../.fleet/nope"}))
    assert error_of(root) == f"hosts/prod.yaml: ssh.known_hosts: file not found: {root / '.fleet' / 'nope'}"


def test_known_hosts_required(root: Path):
    """Without ssh.known_hosts, ~/.ssh/known_hosts (or /etc/ssh/ssh_known_hosts) must exist."""
    write(root, "prod", local(ssh={}))
    if Path("/etc/ssh/ssh_known_hosts").is_file():
        pytest.skip("this machine has /etc/ssh/ssh_known_hosts")
    home = Path.home()
    assert error_of(root) == (
        f"hosts/prod.yaml: ssh.known_hosts: not set, and no default file exists ({home}/.ssh/known_hosts, "
        "/etc/ssh/ssh_known_hosts); host keys are always checked: set it, or DEPLOYER_KNOWN_HOSTS_DATA"
    )
    (home / ".ssh").mkdir()
    (home / ".ssh" / "known_hosts").write_text("10.77.0.11 ssh-ed25519 AAAA\n")
    load_config("prod", root=root, environ={})


def test_several_errors_one_per_line(root: Path):
    data = local(keep_releases=1, parallel=0, waves=["50%"])
    data["hosts"][0]["name"] = "Web_1"
    data["hosts"][1]["roles"] = []
    write(root, "prod", data)
    assert error_of(root).splitlines() == [
        "hosts/prod.yaml: keep_releases: must be >= 2",
        "hosts/prod.yaml: parallel: must be >= 1",
        ("hosts/prod.yaml: hosts[0].name: invalid host name 'Web_1' (use lowercase letters, "
         "digits and -)"),
        "hosts/prod.yaml: hosts[1].roles: must not be empty",
    ]


def test_waves(root: Path):
    write(root, "prod", local(waves=[1, "50%"]))
    assert error_of(root) == 'hosts/prod.yaml: waves: the last wave must be "100%"'
    write(root, "prod", local(waves=[0, "150%", "100%"]))
    assert error_of(root).splitlines() == [
        'hosts/prod.yaml: waves[0]: expected a host count >= 1 or a percentage like "50%"',
        'hosts/prod.yaml: waves[1]: expected a host count >= 1 or a percentage like "50%"',
    ]
    write(root, "prod", local(waves=[1, "50%", "100%"]))
    assert load_config("prod", root=root, environ={}).waves == [1, "50%", "100%"]


def test_type_messages(root: Path):
    data = local(deploy_to="/", lock_timeout="soon", database={"name": "d", "kind": "oracle"})
    data["hosts"][0]["vars"] = ["x"]
    write(root, "prod", data)
    assert error_of(root).splitlines() == [
        ("hosts/prod.yaml: deploy_to: expected an absolute path other than / and without '..', "
         "got '/'"),
        "hosts/prod.yaml: database.kind: expected one of: postgresql, mariadb, mysql",
        "hosts/prod.yaml: lock_timeout: expected a number",
        "hosts/prod.yaml: hosts[0].vars: expected a mapping",
    ]


def test_database_settings_of_the_other_kind_are_named_with_what_to_use(root: Path):
    for kind, section, said in (
            ("mariadb", {"password_file": "/home/deploy/.pgpass"},
             "database: password_file is not a setting of kind mariadb: use option_file"),
            ("mysql", {"socket_dir": "/run/mysqld"},
             "database: socket_dir is not a setting of kind mysql: use socket (the socket file's path)"),
            ("postgresql", {"option_file": "/home/deploy/.my.cnf"},
             "database: option_file is not a setting of kind postgresql: use password_file"),
            ("mariadb", {"host": "10.0.0.5", "socket": "/run/mysqld/mysqld.sock"},
             "database: give host (TCP) or socket (a Unix socket), not both")):
        write(root, "prod", local(database={"name": "d", "kind": kind, **section}))
        assert said in error_of(root), (kind, error_of(root))
    write(root, "prod", local(database={"name": "shop", "kind": "mariadb", "option_file": "/home/deploy/shop.cnf",
                                        "socket": "/run/mysqld/mysqld.sock"}))
    db = load_config("prod", root=root, environ={}).database
    assert (db.kind, db.option_file, db.socket, db.port) == ("mariadb", "/home/deploy/shop.cnf",
                                                             "/run/mysqld/mysqld.sock", None)


def test_role_requirements(root: Path):
    data = local()
    data["hosts"] = [h for h in data["hosts"] if h["name"] not in ("db1", "lb1")]
    data["hosts"][0]["roles"] = ["web"]
    write(root, "prod", data)
    assert error_of(root).splitlines() == [
        ("hosts/prod.yaml: hosts: no host has role 'migrate' (playbook demo has a migrate stage; "
         "exactly one host needs it)"),
        "hosts/prod.yaml: hosts: no host has role 'db' (required because 'database' is set)",
        "hosts/prod.yaml: hosts: no host has role 'lb' (required because 'lb' is set)",
    ]
    data = local()
    data["hosts"][1]["roles"] = ["web", "migrate"]
    write(root, "prod", data)
    assert error_of(root) == (
        "hosts/prod.yaml: hosts[1].roles: role 'migrate' is already on hosts[0]; "
        "at most one host may have it"
    )


def test_unknown_playbook(root: Path):
    write(root, "prod", local(playbook="rails"))
    assert error_of(root) == (
        "hosts/prod.yaml: playbook: no such playbook 'rails' (known: demo, django, laravel, node)"
    )


def test_health_placeholder(root: Path):
    write(root, "prod", local(health={"url": "http://{adress}/"}))
    assert error_of(root) == (
        "hosts/prod.yaml: health.url: unknown placeholder {adress}; "
        "known: address, host, port, release"
    )


def test_error_in_playbook_defaults_names_the_playbook(root: Path):
    pb = root / "playbooks" / "demo.yaml"
    pb.write_text(pb.read_text().replace("    passes: 3\n", "    passes: 0\n"))
    write(root, "prod", local())
    assert error_of(root) == "playbooks/demo.yaml: defaults.health.passes: must be >= 1"


def test_playbook_unknown_placeholder(root: Path):
    pb = root / "playbooks" / "demo.yaml"
    pb.write_text(pb.read_text().replace(
        'run: "cd {release_path} && {python} manage.py migrate"',
        'run: "cd {relase_path} && {python} manage.py migrate"'))
    write(root, "prod", local())
    known = ", ".join(sorted({*TEMPLATE_VALUES, "python", "supervisorctl", "supervisor_conf"}))
    assert error_of(root) == (
        f"playbooks/demo.yaml: stages.migrate.run: unknown placeholder {{relase_path}}; "
        f"known: {known}"
    )


def test_inventory_vars_are_known_to_playbook_templates(root: Path):
    pb = root / "playbooks" / "demo.yaml"
    pb.write_text(pb.read_text().replace('    - "{python} -m compileall -q ."',
                                         '    - "{python} -m compileall -q {src}"'))
    write(root, "prod", local())
    assert "stages.build[0]: unknown placeholder {src}" in error_of(root)
    write(root, "prod", local(vars={"src": "app"}))
    cfg = load_config("prod", root=root, environ={})
    step = cfg.playbook.steps("build")[0]
    values = cfg.template_values("web1", release_path="/srv/app/releases/R")
    assert step.command(values).script == (
        "cd /srv/app/releases/R && /srv/bin/python -m compileall -q app"
    )


def playbook_error(root: Path, text: str) -> str:
    path = root / "playbooks" / "x.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_playbook(path, root=root, extra_vars=())
    return exc.value.message


def test_playbook_errors(root: Path):
    assert playbook_error(root, "hooks:\n  before:\n    deploy: [echo]\n") == (
        "playbooks/x.yaml: hooks.before.deploy: unknown stage 'deploy' (valid: preflight, lock, "
        "snapshot, maintenance, backup, pull, migrate, cache_warm, switch, worker_restart, "
        "gate, finalize)"
    )
    assert playbook_error(root, "stages:\n  biuld: [echo]\n") == (
        "playbooks/x.yaml: stages.biuld: unknown key (did you mean 'build'?)"
    )
    assert playbook_error(root, "stages:\n  build: [{run: echo, roles: [WWW]}]\n") == (
        "playbooks/x.yaml: stages.build[0].roles[0]: invalid role 'WWW' (use lowercase "
        "letters, digits, _ and -, starting with a letter; built-in: cron, db, lb, ledger, "
        "migrate, web, worker)"
    )
    assert playbook_error(root, "stages:\n  build: [3]\n") == (
        "playbooks/x.yaml: stages.build[0]: expected a command string or a mapping with run:"
    )
    assert playbook_error(root, "stages:\n  maintenance: {when: sometimes}\n") == (
        "playbooks/x.yaml: stages.maintenance.when: expected one of: auto, always, never"
    )
    assert playbook_error(root, "stages:\n  maintenance: {on: [a]}\n") == (
        "playbooks/x.yaml: stages.maintenance: 'off' steps are required when 'on' steps are set"
    )
    assert playbook_error(root, "shared_dirs: [../etc]\n") == (
        "playbooks/x.yaml: shared_dirs[0]: expected a relative path without '..', got '../etc'"
    )
    assert playbook_error(root, "stages:\n  build: [\"echo '{release}'\"]\n") == (
        "playbooks/x.yaml: stages.build[0]: placeholder {release} is inside quotes or after a "
        "backslash; values are quoted for you, remove the quoting"
    )
    assert playbook_error(root, "stages:\n  build: [{run: 'cd {x}'}]\n").startswith(
        "playbooks/x.yaml: stages.build[0].run: unknown placeholder {x}; known: address, "
    )
    assert playbook_error(root, "name: y\n") == (
        "playbooks/x.yaml: name: 'y' does not match the file name 'x'"
    )
    assert playbook_error(root, "vars: {release: x}\n") == (
        "playbooks/x.yaml: vars.release: variable name 'release' is reserved"
    )


def test_steps_and_hooks(root: Path):
    path = root / "playbooks" / "x.yaml"
    path.write_text(
        "vars: {tool: /bin/tool}\n"
        "stages:\n"
        "  build: [\"make\"]\n"
        "  reload:\n"
        "    - {run: '{tool} reload', roles: [web, lb], once: true, timeout: 9, cwd: '{current_path}/sub'}\n"
        "  worker_restart: [restart]\n"
        "hooks:\n"
        "  before: {switch: [notify]}\n"
        "  after: {gate: [{run: done, roles: [ledger]}]}\n"
    )
    pb = load_playbook(path, root=root, extra_vars=())
    (build,) = pb.steps("build")
    assert (build.roles, build.cwd, build.where) == (["web"], "{release_path}",
                                                     "playbooks/x.yaml: stages.build[0]")
    (reload,) = pb.steps("reload")
    assert (reload.roles, reload.once, reload.timeout) == (["web", "lb"], True, 9.0)
    cmd = reload.command({"tool": "/bin/tool", "current_path": "/srv/a b/current"})
    assert cmd.script == "cd '/srv/a b/current'/sub && /bin/tool reload"
    assert cmd.timeout == 9.0
    assert pb.steps("worker_restart")[0].roles == ["worker"]
    assert pb.hooks_for("before", "switch")[0].roles == ["web"]
    assert pb.hooks_for("after", "gate")[0].roles == ["ledger"]
    assert pb.hooks_for("after", "switch") == []
    assert pb.steps("maintenance", "on") == []
    assert pb.steps("migrate", "run") == []


# ------------------------------------------------------------------ shipped files


def full_values(names: set[str]) -> dict[str, object]:
    values: dict[str, object] = {name: f"v-{name}" for name in names}
    values.update(message="Back soon; $(touch /tmp/pwned)", retry=60, expires_at="",
                  target_version=3, release="20261121T120501Z-3f8cb52")
    return values


@pytest.mark.parametrize("name", PLAYBOOKS)
def test_shipped_playbook_renders(name: str):
    assert PLAYBOOKS == ["demo", "django", "laravel", "node"]
    pb = load_playbook(REPO / "playbooks" / f"{name}.yaml", root=REPO, extra_vars=())
    values = full_values(set(TEMPLATE_VALUES) | set(pb.vars))
    values.update(pb.vars)
    for step in pb.all_steps():
        cmd = step.command(values)
        assert "'Back soon; $(touch /tmp/pwned)'" in cmd.script or "{message}" not in step.run
        assert cmd.display == cmd.script
        syntax = subprocess.run(["sh", "-n", "-c", cmd.script], capture_output=True, text=True,
                                check=False)
        assert syntax.returncode == 0, (step.where, cmd.script, syntax.stderr)


def test_demo_maintenance_writes_valid_json(tmp_path: Path):
    pb = load_playbook(REPO / "playbooks" / "demo.yaml", root=REPO, extra_vars=())
    on = pb.steps("maintenance", "on")[0]  # (the next one stops the queue worker)
    values = {"shared_path": str(tmp_path), "python": sys.executable,
              "message": 'Back "soon"; $(touch /tmp/pwned)', "retry": 30,
              "expires_at": 1800000000}
    subprocess.run(["sh", "-c", on.command(values).script], check=True)
    data = json.loads((tmp_path / "storage" / "maintenance.json").read_text())
    assert data == {"message": 'Back "soon"; $(touch /tmp/pwned)', "retry": 30,
                    "expires_at": 1800000000.0}


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_shipped_inventories_load(env: str):
    cfg = load_config(env, root=REPO, environ={})
    assert cfg.playbook.name == "laravel"
    assert cfg.ssh.known_hosts == REPO / "hosts" / "known_hosts.example"
    text = cfg.ssh.known_hosts.read_text()
    for host in cfg.hosts:
        assert f"{host.address} ssh-ed25519 " in text
    if env == "prod":
        assert cfg.waves == [1, "50%", "100%"]
        assert len(cfg.web_hosts) == 4
        assert (cfg.db_host.name, cfg.lb_host.name, cfg.migrate_host.name) == ("db1", "lb1", "web1")
        assert [h.name for h in cfg.hosts_with("worker")] == ["worker1"]


def test_render_hostile_values_in_shipped_playbook():
    pb = load_playbook(REPO / "playbooks" / "laravel.yaml", root=REPO, extra_vars=())
    on = pb.steps("maintenance", "on")[0]  # (the next one stops the queue worker)
    cmd = on.command({"current_path": "/var/www/app/current", "php": "/usr/bin/php",
                      "retry": "60; rm -rf /"})
    assert cmd.script == (
        "if [ -d /var/www/app/current ]; then cd /var/www/app/current && /usr/bin/php artisan "
        "down --retry='60; rm -rf /'; fi"
    )
    assert render("x {a}", {"a": "y"}).script == "x y"


# ------------------------------------------------------------------ windows, freezes, schedules


def test_windows_freezes_schedules_retention_defaults(root: Path):
    write(root, "local", LOCAL)
    cfg = load_config("local", root=root, environ={})
    assert (cfg.windows, cfg.freezes, cfg.schedules) == ([], [], [])
    assert cfg.retention == Policy(7, 16, 8, 4, 2)
    assert cfg.maintenance_ttl == 900


def test_windows_freezes_schedules_retention_load(root: Path):
    write(root, "prod", """\
playbook: demo
repo: ../.fleet/demo-app
ssh: {known_hosts: ../.fleet/known_hosts}
hosts:
  - {name: web1, address: 10.77.0.11, roles: [web, worker, migrate]}
windows:
  - name: sunday-night
    cron: "0 2 * * 0"
    duration: 3h
    timezone: UTC
  - {name: wednesday, cron: "0 2 * * 3", duration: 1h30m, timezone: Europe/Paris}
freezes:
  - {start: 2026-12-20, end: 2027-01-03, reason: "code freeze before launch", timezone: UTC}
  - {start: "2027-02-01T18:00:00+01:00", end: 2027-02-02T06:00:00Z}
schedules:
  - {name: maintenance, cron: "0 3 * * 0", command: "maintenance.run"}
  - {name: nightly-backup, cron: "0 2 * * *", command: "maintenance.run"}
retention: {daily_days: 10, yearly_years: 5}
maintenance_ttl: 600
""")
    cfg = load_config("prod", root=root, environ={})
    assert cfg.windows == [
        Window("sunday-night", "0 2 * * 0", timedelta(hours=3), "UTC"),
        Window("wednesday", "0 2 * * 3", timedelta(minutes=90), "Europe/Paris"),
    ]
    first, second = cfg.freezes
    assert (first.start, first.end) == (datetime(2026, 12, 20, tzinfo=UTC),
                                        datetime(2027, 1, 4, tzinfo=UTC))
    assert first.reason == "code freeze before launch" and first.span == "2026-12-20..2027-01-03"
    assert (second.start, second.end, second.reason) == (
        datetime(2027, 2, 1, 17, tzinfo=UTC), datetime(2027, 2, 2, 6, tzinfo=UTC), "")
    assert cfg.schedules == [Schedule("maintenance", "0 3 * * 0", "maintenance.run"),
                             Schedule("nightly-backup", "0 2 * * *", "maintenance.run")]
    assert cfg.retention == Policy(all_days=7, daily_days=10, weekly_weeks=8, monthly_months=4,
                                   yearly_years=5)
    assert cfg.maintenance_ttl == 600


@pytest.mark.parametrize("changes,message", [
    ({"windows": [{"name": "w", "cron": "61 * * * *", "duration": "1h"}]},
     "windows[0].cron: invalid cron expression '61 * * * *'"),
    ({"windows": [{"name": "w", "cron": "0 2 * * 0", "duration": "1h"},
                  {"name": "x", "cron": "0 2 * * 3", "duration": "1h",
                   "timezone": "Mars/Olympus"}]},
     "windows[1].timezone: unknown time zone 'Mars/Olympus'"),
    ({"windows": [{"name": "w", "cron": "0 0 30 2 *", "duration": "1h"}]},
     "windows[0].cron: cron expression '0 0 30 2 *' never fires"),
    ({"windows": [{"name": "w", "cron": "0 2 * * 0", "duration": "3 hours"}]},
     ("windows[0].duration: invalid duration '3 hours': expected a duration like \"90m\", "
     "\"3h\", \"1h30m\" or \"2d\"")),
    ({"windows": [{"name": "w", "cron": "0 2 * * 0", "duration": 90}]},
     ("windows[0].duration: expected a duration like \"90m\", \"3h\", \"1h30m\" or \"2d\", "
     "got 90")),
    ({"windows": [{"name": "w", "cron": "0 2 * * 0"}]},
     "windows[0].duration: required key is missing"),
    ({"windows": [{"name": "w", "cron": "0 2 * * 0", "duration": "1h", "tz": "UTC"}]},
     "windows[0].tz: unknown key"),
    ({"windows": {"name": "w"}}, "windows: expected a list"),
    ({"windows": [{"name": "w", "cron": "0 2 * * 0", "duration": "1h"},
                  {"name": "w", "cron": "0 2 * * 3", "duration": "1h"}]},
     "windows[1].name: duplicate name 'w' (also windows[0])"),
    ({"freezes": [{"start": "2027-01-03", "end": "2026-12-20"}]},
     "freezes[0]: end is before start"),
    ({"freezes": [{"start": "soon", "end": "2026-12-20"}]},
     "freezes[0].start: expected a date (2026-12-20) or an ISO datetime, got 'soon'"),
    ({"freezes": [{"start": "2026-12-20", "end": "2026-12-21", "timezone": "Mars/Olympus"}]},
     "freezes[0].timezone: unknown time zone 'Mars/Olympus'"),
    ({"schedules": [{"name": "backup", "cron": "0 2 * * 0 0", "command": "maintenance.run"}]},
     "schedules[0].cron: invalid cron expression '0 2 * * 0 0'"),
    ({"schedules": [{"name": "backup", "cron": "0 2 * * *", "command": "backup.run; rm -rf /"}]},
     ("schedules[0].command: invalid task name 'backup.run; rm -rf /' (expected a deployer verb "
     "named as its Invoke task, such as maintenance.run)")),
    ({"schedules": [{"name": "Backup", "cron": "0 2 * * *", "command": "maintenance.run"}]},
     "schedules[0].name: invalid schedule name 'Backup' (use lowercase letters, digits and -)"),
    ({"schedules": [{"name": "b", "cron": "0 2 * * *", "command": "maintenance.run"},
                    {"name": "b", "cron": "0 3 * * *", "command": "maintenance.run"}]},
     "schedules[1].name: duplicate name 'b' (also schedules[0])"),
    ({"retention": {"daily_days": -1}}, "retention.daily_days: must be >= 0"),
    ({"retention": {"weekly": 3}}, "retention.weekly: unknown key (did you mean 'weekly_weeks'?)"),
    ({"maintenance_ttl": 0}, "maintenance_ttl: must be >= 1"),
    ({"maintenance_ttl": "15m"}, "maintenance_ttl: expected an integer"),
])
def test_window_freeze_schedule_errors(root: Path, changes: dict[str, Any], message: str):
    write(root, "prod", local(**changes))
    assert error_of(root) == f"hosts/prod.yaml: {message}"


# ------------------------------------------------------------------ YAML merge keys

MERGED_INVENTORY = """\
x-web: &web {roles: [web, worker], port: 2222, user: app}
.db: &db
  roles: [db, ledger]
playbook: shop
repo: ../.fleet/demo-app
ssh: {key: ../.fleet/id_ed25519, known_hosts: ../.fleet/known_hosts}
database: {name: demo}
hosts:
  - {<<: *web, name: web1, address: 10.77.0.11, roles: [web, worker, migrate]}
  - {<<: *web, name: web2, address: 10.77.0.12}
  - <<: *db
    name: db1
    address: 10.77.0.21
"""

MERGED_PLAYBOOK = """\
x-supervisor: &supervisor
  supervisorctl: /srv/bin/supervisorctl
  supervisor_conf: /srv/supervisor/supervisord.conf
name: shop
extends: demo
vars:
  <<: *supervisor
  python: /usr/bin/python3
"""


def test_yaml_merge_keys_in_an_inventory_and_a_playbook(root: Path):
    (root / "playbooks" / "shop.yaml").write_text(MERGED_PLAYBOOK)
    write(root, "prod", MERGED_INVENTORY)
    cfg = load_config("prod", root=root, environ={})
    hosts = {h.name: (h.roles, h.port, h.user) for h in cfg.hosts}
    assert hosts == {"web1": (("web", "worker", "migrate"), 2222, "app"),  # its own roles win
                     "web2": (("web", "worker"), 2222, "app"),
                     "db1": (("db", "ledger"), 22, "root")}
    assert cfg.playbook.vars["supervisorctl"] == "/srv/bin/supervisorctl"
    assert cfg.playbook.vars["python"] == "/usr/bin/python3"


def test_errors_through_merge_keys_still_name_the_file_and_the_line_or_key(root: Path):
    (root / "playbooks" / "shop.yaml").write_text(MERGED_PLAYBOOK)
    write(root, "prod", MERGED_INVENTORY.replace("port: 2222", 'port: "x"'))
    assert error_of(root) == ("hosts/prod.yaml: hosts[0].port: expected an integer\n"
                              "hosts/prod.yaml: hosts[1].port: expected an integer")
    # a key written twice in one mapping is still refused (a merged key overridden is not)
    write(root, "prod", MERGED_INVENTORY.replace("    name: db1\n", "    name: db1\n    name: db2\n"))
    assert error_of(root) == "hosts/prod.yaml: line 13: invalid YAML: duplicate key 'name'"
    write(root, "prod", MERGED_INVENTORY.replace("<<: *db", "<<: *nosuch"))
    assert error_of(root) == "hosts/prod.yaml: line 11: invalid YAML: found undefined alias 'nosuch'"


def test_lb_up_timeout_is_a_bounded_number_of_seconds(root: Path):
    lb = {"backend": "web", "socket": "/srv/haproxy/admin.sock"}
    write(root, "prod", local(lb=lb))
    assert load_config("prod", root=root, environ={}).lb.up_timeout == 10.0
    write(root, "prod", local(lb={**lb, "up_timeout": 45}))
    assert load_config("prod", root=root, environ={}).lb.up_timeout == 45.0
    write(root, "prod", local(lb={**lb, "up_timeout": 0}))
    assert error_of(root) == "hosts/prod.yaml: lb.up_timeout: must be > 0"
    write(root, "prod", local(lb={**lb, "up_timeout": 3600}))
    assert error_of(root) == "hosts/prod.yaml: lb.up_timeout: must be <= 600"
    write(root, "prod", local(lb={**lb, "up_timeout": "10s"}))
    assert error_of(root) == "hosts/prod.yaml: lb.up_timeout: expected a number"
