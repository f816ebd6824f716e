"""Preflight checks: the exact commands for hosts/prod.yaml, and parsers on recorded outputs."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime

import pytest

from deployer import preflight as P
from deployer import windows as W
from deployer.config import load_config
from deployer.engine.deploy import MIN_FREE_KB
from deployer.preflight import shared as SH

SUNDAY_3AM = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
MONDAY_NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ENV_FILE = "/var/www/app/shared/.env"


@pytest.fixture(scope="module")
def cfg():
    return load_config("prod", environ={})


@pytest.fixture(scope="module")
def checks(cfg):
    return P.checks_for(cfg, now=SUNDAY_3AM)


def pick(checks, name, role=None):
    found = [c for c in checks if c.name == name and (role is None or role in c.roles)]
    assert len(found) == 1, (name, role, found)
    return found[0]


# ------------------------------------------------------------ the checklist of prod


def test_checks_for_prod(checks):
    assert [(c.name, c.roles, c.hosts, c.blocking) for c in checks] == [
        ("ssh", ("*",), ("web1", "web2", "web3", "web4", "worker1", "db1", "lb1"), True),
        ("disk", ("*",), ("web1", "web2", "web3", "web4", "worker1", "db1", "lb1"), True),
        ("disk", ("db",), ("db1",), True),
        ("binaries", ("web", "worker"), ("web1", "web2", "web3", "web4", "worker1"), True),
        ("binaries", ("db",), ("db1",), True),
        ("binaries", ("lb",), ("lb1",), True),
        ("binaries", ("*",), ("db1", "lb1"), True),
        ("app_env", ("web", "worker"), ("web1", "web2", "web3", "web4", "worker1"), True),
        ("shared", ("web", "worker"), ("web1", "web2", "web3", "web4", "worker1"), True),
        ("pending_migrations", ("migrate",), ("web1",), False),
        ("lock", ("ledger",), ("db1",), True),
        ("window", (), (), True),
    ]
    for c in checks:
        if c.command is not None:  # no secrets in any check: what runs is what is shown
            assert c.command.script == c.command.display


def test_ssh_command(checks):
    assert pick(checks, "ssh").command.script == "true"


def test_disk_commands(checks):
    assert pick(checks, "disk", "*").command.script == (
        'd=/var/www/app; while [ ! -e "$d" ]; do d=$(dirname "$d"); done; '
        'echo "path=$d"; df -Pk "$d"')
    assert pick(checks, "disk", "db").command.script == (
        'd=/var/backups/pg; while [ ! -e "$d" ]; do d=$(dirname "$d"); done; '
        'echo "path=$d"; df -Pk "$d"')


def test_binaries_commands(checks):
    loop = ('for b in {}; do if command -v "$b" >/dev/null 2>&1; then echo "found $b"; '
            'else echo "missing $b"; fi; done')
    assert pick(checks, "binaries", "web").command.script == \
        loop.format("git tar timeout flock sha256sum")
    assert pick(checks, "binaries", "db").command.script == (
        loop.format("sha256sum runuser") + "; for b in /usr/lib/postgresql/16/bin/pg_dump "
        "/usr/lib/postgresql/16/bin/pg_restore /usr/lib/postgresql/16/bin/psql; do "
        'if [ -x "$b" ]; then echo "found $b"; else echo "missing $b"; fi; done')
    assert pick(checks, "binaries", "lb").command.script == loop.format("socat")
    assert pick(checks, "binaries", "*").command.script == loop.format("flock")  # every other host


def test_app_env_command(checks):
    assert pick(checks, "app_env").command.script == (
        "f=/var/www/app/shared/.env; r=/var/www/app/repo; "
        'val() { grep -E "^[[:space:]]*(export[[:space:]]+)?$1[[:space:]]*=" "$f" | tail -n 1 '
        "| cut -d= -f2- | sed 's/[[:space:]]#.*//' | tr -d \"[:space:]\\\"'\"; }; "
        'if [ -f "$f" ] && [ ! -r "$f" ]; then echo env_file=unreadable; '
        'elif [ -f "$f" ]; then echo env_file=present; '
        'echo "mode=$(stat -L -c %a "$f")"; '
        "d=$(val APP_DEBUG | tr '[:upper:]' '[:lower:]'); "
        "case \"$d\" in '') echo app_debug=unset;; "
        "true|'(true)'|1|on|yes) echo app_debug=true;; "
        "false|'(false)'|0|off|no|null|'(null)'|empty|'(empty)') echo app_debug=false;; "
        "*) echo app_debug=other;; esac; "
        "e=$(val APP_ENV); "
        "case \"$e\" in '') echo app_env=unset;; *[!A-Za-z0-9_.-]*) echo app_env=other;; "
        '*) if [ ${#e} -le 32 ]; then echo "app_env=$e"; else echo app_env=other; fi;; esac; '
        "else echo env_file=missing; fi; "
        'if [ -d "$r" ]; then '
        'if [ -n "$(git -C "$r" ls-tree --name-only HEAD .env 2>/dev/null)" ]; '
        "then echo env_tracked=yes; else echo env_tracked=no; fi; "
        "else echo env_tracked=unknown; fi")


def test_pending_migrations_command(checks, cfg):
    step = cfg.playbook.steps("migrate", "pending")[0]
    rendered = step.command(cfg.template_values("web1", release_path="/var/www/app/current"))
    assert rendered.script.startswith("cd /var/www/app/current && mkdir -p storage/framework/")
    assert "[ -f vendor/autoload.php ] ||" in rendered.script  # the live release's vendor/ is kept
    assert pick(checks, "pending_migrations").command.script == (
        "if [ -d /var/www/app/current ]; then " + rendered.script +
        "\nelse echo @@no-release; fi")
    probe = P.checks_for(cfg, release_path="/var/www/app/.deployer/probe-1", now=SUNDAY_3AM)
    assert pick(probe, "pending_migrations").command.script.startswith(
        "if [ -d /var/www/app/.deployer/probe-1 ]; then cd /var/www/app/.deployer/probe-1 && ")


def test_lock_command(checks):
    assert pick(checks, "lock").command.script == (
        "if [ -d /var/www/app/.deployer/lock ]; then echo @@lock-held; "
        "cat /var/www/app/.deployer/lock/info.json 2>/dev/null; echo; "
        "echo heartbeat_age=$(( $(date +%s) - $(stat -c %Y /var/www/app/.deployer/lock/heartbeat "
        "2>/dev/null || date +%s) )); "
        "if [ -e /var/www/app/.deployer/lock/paused ]; then echo paused=1; fi; fi")


def test_window_is_local(checks):
    window = pick(checks, "window")
    assert window.local and window.command is None
    assert window.run_local() == [P.Result(P.LOCAL, "window", P.PASS,
                                           "no deploy windows configured")]
    with pytest.raises(ValueError):
        pick(checks, "ssh").run_local()


def test_threshold_matches_the_deploy_preflight():
    assert P.DEFAULT_MIN_FREE_MIB * 1024 == MIN_FREE_KB


# ------------------------------------------------------------ parsers


def test_parse_ssh():
    assert P.parse_ssh("", 0) == (True, "reachable, host key verified")
    assert P.parse_ssh("", 255) == (False, "`true` exited 255")


DF = ("path={path}\n"
      "Filesystem     1024-blocks     Used Available Capacity Mounted on\n"
      "/dev/vda1        41152736 30000000 {avail:>9}      74% /\n")


def test_parse_disk():
    parse = P.parse_disk("/var/www/app", 100)
    assert parse(DF.format(path="/var/www/app", avail=2048000), 0) == \
        (True, "2000 MiB free under /var/www/app")
    assert parse(DF.format(path="/var/www/app", avail=51200), 0) == \
        (False, "50 MiB free under /var/www/app, needs >= 100 MiB")
    assert parse(DF.format(path="/var", avail=102400), 0) == \
        (True, "100 MiB free under /var/www/app (not created yet; measured /var)")
    assert parse("path=/var/www/app\ndf: /var/www/app: No such file\n", 1) == \
        (False, "cannot read free space under /var/www/app (df exited 1)")
    # a mount point with spaces, a device name with a percent sign
    out = ("path=/mnt/my data\nFilesystem 1024-blocks Used Available Capacity Mounted on\n"
           "//nas/a%b 1000000 10 999990 1% /mnt/my data\n")
    assert parse(out, 0) == (True, "976 MiB free under /var/www/app (not created yet; "
                                   "measured /mnt/my data)")


def test_parse_binaries():
    names = ("git", "tar", "timeout", "flock", "sha256sum")
    parse = P.parse_binaries(names)
    ok = "".join(f"found {n}\n" for n in names)
    assert parse(ok, 0) == (True, "present: git, tar, timeout, flock, sha256sum")
    assert parse(ok.replace("found flock", "missing flock"), 0) == (False, "missing: flock")
    assert parse("", 127) == (False, "missing: git, tar, timeout, flock, sha256sum")
    tools = ("/usr/lib/postgresql/16/bin/pg_dump", "socat")
    assert P.parse_binaries(tools)("missing /usr/lib/postgresql/16/bin/pg_dump\nfound socat\n",
                                   0) == (False, "missing: /usr/lib/postgresql/16/bin/pg_dump")
    assert P.parse_binaries(tools)("found /usr/lib/postgresql/16/bin/pg_dump\nfound socat\n",
                                   0) == (True, "present: pg_dump, socat")


def facts(**kw) -> str:
    base = {"env_file": "present", "mode": "600", "app_debug": "false",
            "app_env": "production", "env_tracked": "no"}
    base.update(kw)
    return "".join(f"{k}={v}\n" for k, v in base.items() if v is not None)


@pytest.mark.parametrize("out, expected", [
    (facts(), (True, "APP_DEBUG false, APP_ENV production, mode 600, not in git")),
    (facts(app_debug="unset", app_env="unset", mode="400", env_tracked="unknown"),
     (True, "APP_DEBUG unset, APP_ENV unset, mode 400, git not checked (no repo mirror yet)")),
    (facts(app_debug="true"), (False, "APP_DEBUG is true (must be false in production)")),
    (facts(app_debug="other"),
     (False, "APP_DEBUG has a value that is not false (frameworks read it as true)")),
    (facts(app_env="local"), (False, "APP_ENV is 'local' (must be 'production')")),
    (facts(app_env="other"), (False, "APP_ENV has an unexpected value")),
    (facts(mode="644"), (False, "mode 644 (must be 600: readable by its owner only)")),
    (facts(mode="640"), (False, "mode 640 (must be 600: readable by its owner only)")),
    (facts(mode=None), (False, f"cannot read the mode of {ENV_FILE}")),
    (facts(env_tracked="yes"),
     (False, ".env is tracked by git (in the repo's HEAD tree): remove it from the repository "
             "and rotate its secrets")),
    ("env_file=missing\nenv_tracked=no\n",
     (False, f"{ENV_FILE} is missing (the playbook links it into every release) and nothing "
             "creates it: put it on the host, or give it in the inventory's secret_files")),
    ("env_file=unreadable\nenv_tracked=no\n",
     (False, f"{ENV_FILE} is not readable by the SSH user: cannot verify it")),
    (facts(app_debug="true", app_env="local", mode="644", env_tracked="yes"),
     (False, "APP_DEBUG is true (must be false in production); APP_ENV is 'local' (must be "
             "'production'); mode 644 (must be 600: readable by its owner only); .env is tracked "
             "by git (in the repo's HEAD tree): remove it from the repository and rotate its "
             "secrets")),
    ("", (False, f"cannot inspect {ENV_FILE} (exit 0)")),
    (facts(), (True, "APP_DEBUG false, APP_ENV production, mode 600, not in git")),
])
def test_parse_app_env(out, expected):
    assert P.parse_app_env(ENV_FILE)(out, 0) == expected


def test_a_missing_env_that_secret_files_writes_will_be_created_by_the_next_deploy():
    written = P.parse_app_env(ENV_FILE, made_by=SH.Maker.SECRET_FILES)
    assert written("env_file=missing\nenv_tracked=unknown\n", 0) == (
        True, f"{ENV_FILE} will be created by the next deploy (secret_files writes it), git not "
              "checked (no repo mirror yet)")
    # still checked: a .env in git, and what is there when it is there
    assert written("env_file=missing\nenv_tracked=yes\n", 0)[0] is False
    assert written(facts(mode="644"), 0)[0] is False
    assert written(facts(), 0) == (True, "APP_DEBUG false, APP_ENV production, mode 600, not in git")


def test_checks_know_what_the_inventorys_secret_files_write():
    """prod shares .env (laravel): without secret_files a missing one FAILs, with an entry for
    it the same answer passes; `shared` covers storage/ (a shared dir: the deploy makes it)."""
    missing = "env_file=missing\nenv_tracked=no\n"
    plain = P.checks_for(load_config("prod", environ={}), now=SUNDAY_3AM)
    given = P.checks_for(load_config("prod", environ={}, overrides={
        "secret_files": [{"path": ".env", "from_env": "APP_DOTENV"}]}), now=SUNDAY_3AM)
    assert pick(plain, "app_env").result("web2", missing, 0).status == P.FAIL
    row = pick(given, "app_env").result("web2", missing, 0)
    assert row.status == P.PASS and "will be created by the next deploy (secret_files writes it)" in row.detail
    for checks in (plain, given):
        shared = pick(checks, "shared")
        assert ".env" not in shared.command.script  # app_env's
        assert shared.result("web1", "@@shared 0 missing\n", 0) == P.Result(
            "web1", "shared", P.PASS, "will be created by the next deploy: storage (shared_dirs: mkdir -p)")


def test_parse_app_env_other_expectations():
    assert P.parse_app_env(ENV_FILE)(facts(), 1) == (False, f"cannot inspect {ENV_FILE} (exit 1)")
    staging = P.parse_app_env(ENV_FILE, "staging")
    assert staging(facts(app_env="staging"), 0)[0] is True
    assert staging(facts(), 0) == (False, "APP_ENV is 'production' (must be 'staging')")
    anything = P.parse_app_env(ENV_FILE, None)
    assert anything(facts(app_env="staging"), 0)[0] is True
    assert anything(facts(app_env="local"), 0) == (False, "APP_ENV is 'local'")


def test_parse_pending():
    out = ('Psy Shell noise\n[{"version": 1, "name": "2026_01_01_add_orders", "online_safe": false,'
           ' "has_down": true}, {"version": 2, "name": "2026_01_02_index", "online_safe": true}]\n')
    assert P.parse_pending(out, 0) == (
        True, "2 pending: 2026_01_01_add_orders (not online-safe: maintenance mode), "
              "2026_01_02_index")
    assert P.parse_pending("[]\n", 0) == (True, "none pending")
    assert P.parse_pending("@@no-release\n", 0) == (
        True, "no release deployed yet: every migration will run on the first deploy")
    assert P.parse_pending("PHP Fatal error\n", 255) == \
        (False, "could not list pending migrations (exit 255)")
    assert P.parse_pending("not json\n", 0) == (False, "migrate.pending did not print a JSON list")
    assert P.parse_pending('{"a": 1}\n', 0) == \
        (False, "migrate.pending did not print a JSON list of objects")


def test_pending_is_a_warning_not_a_failure(checks):
    check = pick(checks, "pending_migrations")
    assert check.result("web1", "boom", 1) == P.Result(
        "web1", "pending_migrations", P.WARN, "could not list pending migrations (exit 1)")
    assert check.error("web1", "timed out\nmore").status == P.WARN


def test_parse_lock():
    held = ('@@lock-held\n{"holder": "alice", "host": "laptop", "pid": 4242, "reason": "deploy v2",'
            ' "started": "2026-11-21T11:00:00Z", "run": "r1"}\n\nheartbeat_age=12\n')
    assert P.parse_lock("", 0) == (True, "free")
    assert P.parse_lock(held, 0) == (
        False, "held by alice@laptop pid 4242 since 2026-11-21T11:00:00Z (deploy v2; run r1, "
               "last heartbeat 12s ago)")
    assert P.parse_lock(held + "paused=1\n", 0)[1].endswith("PAUSED rollout (promote or abort it))")
    assert P.parse_lock("", 1) == (False, "cannot read the lock (exit 1)")


def test_window_check(cfg):
    import dataclasses

    windowed = dataclasses.replace(
        cfg, windows=[W.Window("sunday", "0 2 * * 0", "3h")],
        freezes=[W.make_freeze("2026-12-20", "2027-01-03", "holidays")])
    def window_at(now):
        return pick(P.checks_for(windowed, now=now), "window").run_local()[0]
    assert window_at(SUNDAY_3AM).status == P.PASS
    assert "inside window 'sunday'" in window_at(SUNDAY_3AM).detail
    refused = window_at(MONDAY_NOON)
    assert refused.status == P.FAIL
    assert refused.detail.startswith("outside every deploy window; next window 'sunday' starts "
                                     "2026-11-29T02:00:00+00:00")
    frozen = window_at(datetime(2026, 12, 27, 3, 0, tzinfo=UTC))
    assert frozen.status == P.FAIL and "inside freeze 2026-12-20..2027-01-03 (holidays)" in \
        frozen.detail
    # a callable clock is read when the check runs, not when it is built
    times = iter([SUNDAY_3AM, MONDAY_NOON])
    check = pick(P.checks_for(windowed, now=lambda: next(times)), "window")
    assert [check.run_local()[0].status for _ in range(2)] == [P.PASS, P.FAIL]


# ------------------------------------------------------------ results


def test_result_table_and_exit_code(checks):
    ssh, app_env = pick(checks, "ssh"), pick(checks, "app_env")
    results = [ssh.result("web1", "", 0), ssh.error("web2", "host key mismatch\ndetails"),
               app_env.result("web1", facts(), 0),
               pick(checks, "pending_migrations").result("web1", "x", 2)]
    assert P.table(results) == [
        ["web1", "ssh", "PASS", "reachable, host key verified"],
        ["web2", "ssh", "FAIL", "could not run: host key mismatch"],
        ["web1", "app_env", "PASS", "APP_DEBUG false, APP_ENV production, mode 600, not in git"],
        ["web1", "pending_migrations", "WARN", "could not list pending migrations (exit 2)"],
    ]
    assert P.exit_code(results) == 3
    assert P.exit_code([r for r in results if r.status != P.FAIL]) == 0
    assert P.exit_code([]) == 0


def test_checks_follow_the_inventory():
    local = load_config("local", environ={})
    checks = P.checks_for(local, now=SUNDAY_3AM)
    # flock on every host that is not an app host (the ledger's among them)
    assert local.ledger_host.name in pick(checks, "binaries", "*").hosts
    db = pick(checks, "binaries", "db").command.script
    assert "/usr/lib/postgresql/15/bin/pg_dump" in db
    assert pick(checks, "lock").hosts == (local.ledger_host.name,)


# ------------------------------------------------------------ the .env command, run for real


@pytest.mark.skipif(not (shutil.which("sh") and shutil.which("git") and shutil.which("stat")),
                    reason="needs sh, git and GNU stat")
def test_app_env_command_reports_findings_and_never_the_content(tmp_path):
    shared, mirror = tmp_path / "shared", tmp_path / "repo"
    shared.mkdir()
    env_file = shared / ".env"
    cmd = P.app_env_command(str(shared), str(mirror))
    parse = P.parse_app_env(str(env_file))

    def run():
        r = subprocess.run(["sh", "-c", cmd.script], capture_output=True, text=True, check=False)
        assert "s3cr3t" not in r.stdout + r.stderr
        return parse(r.stdout, r.returncode)

    def write(text, mode):
        env_file.write_text(text)
        os.chmod(env_file, mode)

    write("DB_PASSWORD=s3cr3t\nAPP_ENV=production\nAPP_DEBUG=false\n", 0o600)
    assert run() == (True, "APP_DEBUG false, APP_ENV production, mode 600, git not checked "
                           "(no repo mirror yet)")
    write('DB_PASSWORD=s3cr3t\nexport APP_ENV = "production"  # prod\nAPP_DEBUG=false\n'
          "APP_DEBUG=TRUE\n", 0o600)
    assert run() == (False, "APP_DEBUG is true (must be false in production)")
    write("DB_PASSWORD=s3cr3t\nAPP_ENV=local\nAPP_DEBUG='(false)'\n", 0o644)
    assert run() == (False, "APP_ENV is 'local' (must be 'production'); mode 644 (must be 600: "
                            "readable by its owner only)")
    write("APP_ENV=$(touch pwned)s3cr3t\n", 0o600)
    assert run() == (False, "APP_ENV has an unexpected value")
    assert not (tmp_path / "pwned").exists()
    env_file.unlink()
    assert run()[0] is False

    work = tmp_path / "work"
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t",
           "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(work)], check=True)
    (work / ".env").write_text("DB_PASSWORD=s3cr3t\n")
    subprocess.run([*git, "-C", str(work), "add", ".env"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "oops"], check=True)
    subprocess.run([*git, "clone", "-q", "--mirror", str(work), str(mirror)], check=True)
    write("APP_ENV=production\n", 0o600)
    assert run() == (False, ".env is tracked by git (in the repo's HEAD tree): remove it from the "
                            "repository and rotate its secrets")


def test_with_artifacts_through_the_bucket_each_app_host_must_reach_it():
    from deployer.preflight.checklist import binaries_checks, parse_bucket

    cfg = load_config("prod", environ={}, overrides={
        "artifact.build": "web2", "state.backend": "s3", "state.bucket": "acme-deploy", "state.region": "eu-west-3"})
    checks = [c for c in binaries_checks(cfg) if c.name == "bucket"]
    assert len(checks) == 1 and set(checks[0].hosts) == {h.name for h in cfg.app_hosts}
    assert "https://acme-deploy.s3.eu-west-3.amazonaws.com/" in checks[0].command.script
    ok, detail = parse_bucket("https://x/")("403", 0)
    assert ok and "HTTP 403" in detail
    ok, detail = parse_bucket("https://x/")("000", 7)
    assert not ok and "artifact.store: host" in detail
    host_to_host = load_config("prod", environ={}, overrides={
        "artifact.build": "web2", "state.backend": "s3", "state.bucket": "acme-deploy", "artifact.store": "host"})
    assert not [c for c in binaries_checks(host_to_host) if c.name == "bucket"]
