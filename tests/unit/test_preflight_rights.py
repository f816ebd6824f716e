"""Preflight's `rights` check: what a non-root SSH user must be allowed on each host, one script
per host, one row per right; the parsers on recorded output, and whole preflight runs against a
recording transport."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from recording import Fleet, RecordingTransport
from test_privileges import CTL, config

from deployer import inspect
from deployer import preflight as P
from deployer.commands.backup import Postgres
from deployer.config.inventory import Database as DatabaseSection
from deployer.errors import Refused
from deployer.output import JsonReporter
from deployer.preflight import fixes as FX
from deployer.preflight import rights as RT
from deployer.preflight import shared as SH
from deployer.privileges import RootCommand
from deployer.session import Session
from deployer.shell import q


def rights(checks):
    return {c.hosts: c for c in checks if c.name == "rights"}


def test_a_check_per_group_of_hosts_needing_the_same_rights(tmp_path):
    cfg = config(tmp_path)
    found = rights(P.checks_for(cfg))
    assert {hosts: c.roles for hosts, c in found.items()} == {
        ("web1",): ("migrate", "web", "worker"), ("web2",): ("web",), ("db1",): ("db", "ledger"),
        ("lb1",): ("lb",)}
    assert found[("lb1",)].command.script == (
        "x=/srv/haproxy/admin.sock; printf '%s\\n' \"@@right groups $(id -Gn)\"; "
        "if [ -w \"$x\" ]; then printf '%s\\n' \"@@right lb_socket ok\"; "
        "elif [ -e \"$x\" ]; then printf '%s\\n' \"@@right lb_socket unwritable "
        "$(stat -L -c '%U %G %a' \"$x\")\"; else printf '%s\\n' \"@@right lb_socket missing\"; fi")
    web2 = found[("web2",)].command.script.splitlines()
    assert web2[2:4] == [f"  r 0 {CTL} signal HUP web", f"  r 1 {CTL} start web"]
    assert web2[0] == "if command -v sudo >/dev/null 2>&1; then"
    assert "sudo -n -l -- \"$@\"" in web2[1]
    assert web2[5].startswith("d=/srv/app; if [ -e \"$d\" ]; then for x in \"$d\" /srv/app/releases "
                              "/srv/app/shared /srv/app/repo /srv/app/.deployer /srv/app/backups; do")
    # the database: the backups' own connection (Database.as_user, conn_args), asked who owns it
    db = Postgres.of(cfg.database)
    psql = f"{db.tool('psql')} -XAtq {db.conn_args()} -d demo -c {q(RT.DB_SQL)}"
    assert found[("db1",)].command.script.splitlines()[0] == (
        f"out=$({{ export PGCONNECT_TIMEOUT=10; {db.as_user(psql)}; }} 2>&1); rc=$?; "
        "printf '%s\\n' \"@@right database $rc $(printf %s \"$out\" | tr '\\n' ' ')\"")
    assert [line.split(";")[0] for line in found[("db1",)].command.script.splitlines()[1:]] == [
        "d=/srv/app", "d=/srv/backups"]


def test_hosts_sharing_their_rights_share_a_check(tmp_path):
    hosts = [{"name": f"web{i}", "address": f"10.77.0.1{i}", "roles": ["web"]} for i in (1, 2, 3)]
    hosts[0]["roles"] = ["web", "migrate"]
    cfg = config(tmp_path, database=None, lb=None, hosts=hosts)
    assert list(rights(P.checks_for(cfg))) == [("web1", "web2", "web3")]


def test_root_needs_no_rights_check(tmp_path):
    cfg = config(tmp_path, ssh={"user": "root", "known_hosts": "known_hosts"})
    assert rights(P.checks_for(cfg)) == {}


# ------------------------------------------------------------ the rows, from recorded output

SUDO = tuple(RootCommand(("/srv/bin/supervisorctl", "-c", "/srv/supervisor/supervisord.conf", verb, prog),
                         (f"playbooks/demo.yaml: stages.reload[{i}]",))
             for i, (verb, prog) in enumerate([("stop", "worker"), ("start", "web")]))
DB = Postgres.of(DatabaseSection(name="demo", socket_dir="/srv/pg/run", backup_dir="/srv/backups"))


def needs(**kw) -> RT.Needs:
    return RT.Needs(user="deploy", app="demo", **kw)


def test_sudo_rows():
    parse = FX.rows(needs(sudo=SUDO))
    assert parse("@@right sudo 0 ok\n@@right sudo 1 ok\n", 0) == [
        ("sudo", True, "deploy may run the 2 commands of the playbook as root")]
    assert parse("@@right sudo 0 password\n@@right sudo 1 denied\n", 0) == [
        ("sudo", False, f"deploy running `{CTL} stop worker` as root (playbooks/demo.yaml: "
                        "stages.reload[0]) is not allowed without a password: add to "
                        f"/etc/sudoers.d/demo: deploy ALL=(root) NOPASSWD: {CTL} stop worker"),
        ("sudo", False, f"deploy running `{CTL} start web` as root (playbooks/demo.yaml: "
                        "stages.reload[1]) is not allowed: add to /etc/sudoers.d/demo: deploy "
                        f"ALL=(root) NOPASSWD: {CTL} start web")]
    assert parse("@@right sudo - nosudo\n", 0) == [
        ("sudo", False, "sudo is not installed, and the playbook runs 2 commands as root: apt-get "
                        "install sudo, then install the rules of `deployer init` (deploy/sudoers) "
                        "as /etc/sudoers.d/demo")]
    assert parse("@@right sudo 0 ok\n", 1) == [
        ("sudo", False, f"`{CTL} start web` (playbooks/demo.yaml: stages.reload[1]): not checked: "
                        "the script stopped (exit 1)")]
    relative = RootCommand(("systemctl", "reload", "php8.2-fpm"), ("playbooks/x.yaml: stages.reload[0]",))
    assert FX.rows(needs(sudo=(relative,)))("@@right sudo 0 denied\n", 0)[0][2].endswith(
        "is not allowed: playbooks/x.yaml: stages.reload[0]: {sudo} runs `systemctl reload "
        "php8.2-fpm`: a sudo rule needs the program's absolute path, not 'systemctl' (write the "
        "path, or a var holding it, e.g. /usr/bin/systemctl)")


SOCK = "/run/haproxy/admin.sock"
STATS = f"stats socket {SOCK} mode 660 level admin group"


@pytest.mark.parametrize("out, row", [
    ("@@right groups deploy\n@@right lb_socket ok\n", ("lb_socket", True, f"deploy can write {SOCK}")),
    ("@@right groups deploy\n@@right lb_socket unwritable haproxy haproxy 660\n",
     ("lb_socket", False, f"deploy cannot write {SOCK} (owner haproxy, group haproxy, mode 660): "
                          "add deploy to group haproxy: `usermod -aG haproxy deploy`; or give it "
                          f"deploy's group: in haproxy.cfg's global section: `{STATS} deploy`, "
                          "then reload haproxy")),
    ("@@right groups deploy haproxy\n@@right lb_socket unwritable haproxy haproxy 600\n",
     ("lb_socket", False, f"deploy cannot write {SOCK} (owner haproxy, group haproxy, mode 600): "
                          f"make it group-writable: in haproxy.cfg's global section: `{STATS} "
                          "haproxy`, then reload haproxy")),
    ("@@right groups deploy\n@@right lb_socket unwritable root root 600\n",
     ("lb_socket", False, f"deploy cannot write {SOCK} (owner root, group root, mode 600): give it "
                          f"deploy's group: in haproxy.cfg's global section: `{STATS} deploy`, "
                          "then reload haproxy")),
    ("@@right groups deploy\n@@right lb_socket missing\n",
     ("lb_socket", False, f"{SOCK} does not exist, or deploy cannot reach it (every directory above "
                          f"it must be searchable): in haproxy.cfg's global section: `{STATS} "
                          "deploy`, then reload haproxy")),
])
def test_socket_rows(out, row):
    assert FX.rows(needs(socket=SOCK))(out, 0) == [row]


# real psql answers, recorded from a PostgreSQL 15 server
FAILED = 'psql: error: connection to server on socket "/srv/pg/run/.s.PGSQL.5432" failed: FATAL:  '
PGPASS = ("a line `*:5432:demo:demo:<password>` in the password file the backups read (~/.pgpass "
          "of deploy by default, mode 0600)")


@pytest.mark.parametrize("out, detail", [
    ("@@right database 0 demo|f|demo|t|t|t ", "role demo connects to demo and owns it"),
    ("@@right database 0 postgres|t|postgres|t|t|t ", "role postgres connects to demo as a superuser"),
    ("@@right database 0 demo|f|other|f|f|f ",
     "role demo connects to demo but does not own it (owner other), and a restore drops and "
     "recreates its schema public: as postgres: ALTER DATABASE demo OWNER TO demo; (before "
     "PostgreSQL 15, also (connected to demo) ALTER SCHEMA public OWNER TO demo;)"),
    ("@@right database 0 demo|f|demo|t|f|t ",
     "role demo owns demo but not its schema public, which a restore drops and recreates: as "
     "postgres: (connected to demo) ALTER SCHEMA public OWNER TO demo;"),
    (f'@@right database 2 {FAILED}password authentication failed for user "demo" ',
     f'role demo cannot connect to database demo (password authentication failed for user "demo"): '
     f"{PGPASS}"),
    (f'@@right database 2 {FAILED}role "demo" does not exist ',
     "role demo cannot connect to database demo (role \"demo\" does not exist): as postgres: "
     "CREATE ROLE demo LOGIN PASSWORD '<password>'; ALTER DATABASE demo OWNER TO demo; and " + PGPASS),
    (f'@@right database 2 {FAILED}database "demo" does not exist ',
     'role the-role cannot connect to database demo (database "demo" does not exist): as postgres: '
     'CREATE DATABASE demo OWNER "the-role";'),
    (f'@@right database 2 {FAILED}no pg_hba.conf entry for host "[local]", user "demo", database "demo", no encryption ',
     'role demo cannot connect to database demo (no pg_hba.conf entry for host "[local]", user '
     '"demo", database "demo", no encryption): a pg_hba.conf line before the others: `local demo '
     "demo scram-sha-256` (or `host demo demo <address>/32 scram-sha-256` over TCP), then reload "
     f"PostgreSQL, and {PGPASS}"),
    ("@@right database 1 runuser: may not be used by non-root users ",
     "role the-role cannot connect to database demo (runuser: may not be used by non-root users): "
     "deploy must reach PostgreSQL as the backups do: the inventory's database section, "
     "pg_hba.conf and the role's password file (docs/servers.md)"),
])
def test_database_rows(out, detail):
    [(name, ok, got)] = FX.rows(needs(database=DB, role="the-role"))(out + "\n", 0)
    assert (name, got) == ("database", detail)
    assert ok == detail.endswith(("owns it", "as a superuser"))


def test_an_owner_that_may_not_create_databases_passes_and_is_told_the_test_restores_need_it():
    [(name, ok, got)] = FX.rows(needs(database=DB, role="the-role"))("@@right database 0 demo|f|demo|t|t|f \n", 0)
    assert name == "database" and ok
    assert got == ("role demo connects to demo and owns it; it may not create databases, which the "
                   "maintenance job's test restores need (a scratch database): as postgres: "
                   "ALTER ROLE demo CREATEDB;")


def test_tree_rows():
    tree = RT.Tree("deploy_to", "/srv/app", RT.DEPLOY_ENTRIES)
    parse = FX.rows(needs(trees=(tree,)))
    assert parse("@@right deploy_to exists\n", 0) == [("deploy_to", True, "deploy can write /srv/app")]
    assert parse("@@right deploy_to creatable /srv\n", 0) == [
        ("deploy_to", True, "/srv/app does not exist yet; deploy can create it (in /srv)")]
    assert parse("@@right deploy_to unwritable root root 755 /srv/app/releases\n"
                 "@@right deploy_to unwritable root root 700 /srv/app/my dir\n"
                 "@@right deploy_to exists\n", 0) == [
        ("deploy_to", False, "deploy cannot write /srv/app/releases (owner root, group root, mode "
                             "755): as root: chown -R deploy: /srv/app"),
        ("deploy_to", False, "deploy cannot write /srv/app/my dir (owner root, group root, mode "
                             "700): as root: chown -R deploy: /srv/app")]
    assert parse("@@right deploy_to uncreatable root root 755 /srv\n", 0) == [
        ("deploy_to", False, "/srv/app does not exist and deploy cannot create it in /srv (owner "
                             "root, group root, mode 755): as root: mkdir -p /srv/app && chown "
                             "deploy: /srv/app")]
    assert parse("", 255) == [("deploy_to", False, "/srv/app: not checked: the script stopped (exit 255)")]


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/sbin/runuser").exists(),
                    reason="runs the script as the user nobody (needs root and runuser)")
def test_the_script_run_as_an_ordinary_user():
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:  # pytest's own is root's only (0700)
        base = Path(tmp)
        base.chmod(0o755)
        (base / "app" / "releases").mkdir(parents=True)
        os.chown(base / "app", 65534, -1)  # nobody's: writable, but releases/ inside is root's
        (base / "sock").write_text("")
        (base / "sock").chmod(0o660)
        n = RT.Needs(user="nobody", app="demo", socket=str(base / "sock"),
                     trees=(RT.Tree("deploy_to", str(base / "app"), RT.DEPLOY_ENTRIES),
                            RT.Tree("backup_dir", str(base / "backups" / "pg"))))
        run = subprocess.run(["runuser", "-u", "nobody", "--", "sh", "-c", RT.command(n).script],
                             capture_output=True, text=True, check=False, cwd="/")
        rows = FX.rows(n)(run.stdout, run.returncode)
    assert [(name, ok) for name, ok, _ in rows] == [
        ("lb_socket", False), ("deploy_to", False), ("backup_dir", False)], run.stdout + run.stderr
    assert rows[0][2].startswith(f"nobody cannot write {base}/sock (owner root, group root, mode 660)")
    assert rows[1][2] == (f"nobody cannot write {base}/app/releases (owner root, group root, "
                          f"mode 755): as root: chown -R nobody: {base}/app")
    assert rows[2][2] == (f"{base}/backups/pg does not exist and nobody cannot create it in {base} "
                          f"(owner root, group root, mode 755): as root: mkdir -p {base}/backups/pg "
                          f"&& chown nobody: {base}/backups/pg")


# ------------------------------------------------------------ a whole preflight, recorded


class Hosts(RecordingTransport):
    """Hosts answering the rights script with recorded lines (everything else as the fleet)."""

    def __init__(self, answers: dict[str, str]):
        super().__init__(Fleet(["web1", "web2", "db1", "lb1"], None))
        self.answers = answers

    def answer(self, host, step, stdin):
        if RT.MARK in step:
            return self.answers[host]
        if "df -Pk" in step:
            return "path=/srv\nFilesystem 1024-blocks Used Available Capacity Mounted on\n/dev/sda 1 1 9999999 1% /"
        if "env_tracked" in step:
            return "env_file=present\nmode=600\napp_debug=false\napp_env=production\nenv_tracked=no"
        if "missing $b" in step:
            return "\n".join(f"found {w}" for w in step.split("; do")[0].split()[3:])
        if SH.MARK in step:  # the demo's one shared dir, storage/
            return f"{SH.MARK} 0 dir"
        return super().answer(host, step, stdin)


def run_preflight(cfg, monkeypatch, answers):
    transport = Hosts(answers)
    monkeypatch.setattr(inspect, "Session", lambda c, rep: Session(c, rep, transport=transport))
    out = io.StringIO()
    try:
        code = inspect.preflight(cfg, JsonReporter(out), expect_app_env=None)
    except Refused as exc:
        code = exc.exit_code
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    return code, [(r["host"], r["check"], r["result"], r["detail"]) for r in rows if r["event"] == "row"]


ALL_OK = {
    "web1": "\n".join(f"@@right sudo {i} ok" for i in range(5)) + "\n@@right deploy_to exists",
    "web2": "@@right sudo 0 ok\n@@right sudo 1 ok\n@@right deploy_to exists",
    "db1": "@@right database 0 demo|f|demo|t|t|t\n@@right deploy_to exists\n@@right backup_dir exists",
    "lb1": "@@right groups deploy\n@@right lb_socket ok",
}


def test_preflight_names_each_missing_right_and_refuses(tmp_path, monkeypatch):
    cfg = config(tmp_path)
    code, rows = run_preflight(cfg, monkeypatch, ALL_OK)
    assert [r for r in rows if r[1] in ("sudo", "lb_socket", "database", "deploy_to", "backup_dir")] == [
        ("web1", "sudo", "PASS", "deploy may run the 5 commands of the playbook as root"),
        ("web1", "deploy_to", "PASS", "deploy can write /srv/app"),
        ("web2", "sudo", "PASS", "deploy may run the 2 commands of the playbook as root"),
        ("web2", "deploy_to", "PASS", "deploy can write /srv/app"),
        ("db1", "database", "PASS", "role demo connects to demo and owns it"),
        ("db1", "deploy_to", "PASS", "deploy can write /srv/app"),
        ("db1", "backup_dir", "PASS", "deploy can write /srv/backups"),
        ("lb1", "lb_socket", "PASS", "deploy can write /srv/haproxy/admin.sock"),
    ]
    failing = [r for r in rows if r[2] == "FAIL"]
    assert code == 0, failing

    broken = dict(ALL_OK, web2="@@right sudo 0 ok\n@@right sudo 1 denied\n@@right deploy_to exists",
                  lb1="@@right groups deploy\n@@right lb_socket unwritable haproxy haproxy 660",
                  db1=f'@@right database 2 {FAILED}password authentication failed for user "demo" \n'
                      "@@right deploy_to exists\n@@right backup_dir exists")
    code, rows = run_preflight(cfg, monkeypatch, broken)
    assert code == 3
    assert [r for r in rows if r[2] == "FAIL"] == [
        ("web2", "sudo", "FAIL", f"deploy running `{CTL} start web` as root (playbooks/demo.yaml: "
                                 "stages.reload[0]) is not allowed: add to /etc/sudoers.d/demo: "
                                 f"deploy ALL=(root) NOPASSWD: {CTL} start web"),
        ("db1", "database", "FAIL", 'role demo cannot connect to database demo (password '
                                    'authentication failed for user "demo"): a line '
                                    "`*:5432:demo:demo:<password>` in the password file the backups "
                                    "read (~/.pgpass of deploy by default, mode 0600)"),
        ("lb1", "lb_socket", "FAIL", "deploy cannot write /srv/haproxy/admin.sock (owner haproxy, "
                                     "group haproxy, mode 660): add deploy to group haproxy: "
                                     "`usermod -aG haproxy deploy`; or give it deploy's group: in "
                                     "haproxy.cfg's global section: `stats socket "
                                     "/srv/haproxy/admin.sock mode 660 level admin group deploy`, "
                                     "then reload haproxy"),
    ]


def test_an_unreachable_host_fails_its_rights_check(tmp_path, monkeypatch):
    cfg = config(tmp_path)
    transport = Hosts(ALL_OK)
    transport.down = {"lb1"}
    monkeypatch.setattr(inspect, "Session", lambda c, rep: Session(c, rep, transport=transport))
    out = io.StringIO()
    with pytest.raises(Refused):
        inspect.preflight(cfg, JsonReporter(out), expect_app_env=None)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {(r["host"], r["check"], r["result"]) for r in rows if r["event"] == "row"
            and r["host"] == "lb1"} >= {("lb1", "rights", "FAIL")}
