"""Pure parts of the engine: command builders, parsers, wave planning, the ledger fold, the plan."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from deployer.commands import backup as B
from deployer.commands import git as GIT
from deployer.commands import lb as LB
from deployer.commands import lock as LK
from deployer.commands import releases as R
from deployer.config import Host, load_config
from deployer.engine.deploy_plan import DeployInputs, deploy_plan
from deployer.engine.ops import plan_waves
from deployer.facts import Facts
from deployer.layout import Layout
from deployer.ledger import History

ROOT = Path(__file__).resolve().parents[2]
REL = "20261121T120501Z-3f8cb52"


def hosts(n: int) -> list[Host]:
    return [Host(name=f"web{i}", address=f"192.0.2.{i}", port=22, user="root", roles=("web",))
            for i in range(1, n + 1)]


def test_layout_spells_every_path_of_the_deploy_tree():
    lay = Layout("/srv/app")
    assert (lay.releases, lay.shared, lay.current, lay.repo, lay.state) == (
        "/srv/app/releases", "/srv/app/shared", "/srv/app/current", "/srv/app/repo", "/srv/app/.deployer")
    assert lay.release(REL) == f"/srv/app/releases/{REL}"
    assert lay.shared_file("storage/maintenance.json") == "/srv/app/shared/storage/maintenance.json"
    assert lay.current_tmp(REL) == f"/srv/app/.current.{REL}.tmp"
    assert lay.log_mark(REL) == f"/srv/app/.deployer/log-offset-{REL}"


def test_switch_is_an_atomic_rename_of_a_temporary_symlink():
    assert R.switch("/srv/app", REL).script == (
        f"test -d /srv/app/releases/{REL} && ln -sfn /srv/app/releases/{REL} "
        f"/srv/app/.current.{REL}.tmp && mv -T /srv/app/.current.{REL}.tmp /srv/app/current")


def test_prepare_links_shared_files_and_writes_revision():
    assert R.prepare("/srv/app", REL, [".env"], ["storage"]).script == (
        f"mkdir -p /srv/app/shared/storage /srv/app/releases/{REL} && rm -rf /srv/app/releases/{REL}/storage "
        f"&& ln -s /srv/app/shared/storage /srv/app/releases/{REL}/storage && "
        f"mkdir -p /srv/app/releases/{REL} && rm -f /srv/app/releases/{REL}/.env && "
        f"ln -s /srv/app/shared/.env /srv/app/releases/{REL}/.env && "
        f"printf '%s\\n' {REL} > /srv/app/releases/{REL}/REVISION")


def test_hostile_values_are_quoted_in_builders():
    cmd = GIT.ls_remote("/repo; rm -rf /", "$(touch /tmp/pwned)")
    assert cmd.script == ("git ls-remote -- '/repo; rm -rf /' '$(touch /tmp/pwned)' "
                          "'refs/tags/$(touch /tmp/pwned)^{}'")
    with pytest.raises(ValueError):
        GIT.export("/srv/app/repo", "$(id)", "/srv/app/releases/x")


def test_git_export_goes_through_a_partial_directory():
    script = GIT.export("/srv/app/repo", "3f8cb52", f"/srv/app/releases/{REL}").script
    assert script.startswith(f"rm -rf /srv/app/releases/{REL}.partial && mkdir -p")
    assert script.endswith(f"mv -T /srv/app/releases/{REL}.partial /srv/app/releases/{REL}")


def test_parse_ls_remote_prefers_the_peeled_tag():
    out = ("1111111111111111111111111111111111111111\trefs/tags/v1\n"
           "2222222222222222222222222222222222222222\trefs/tags/v1^{}\n")
    assert GIT.parse_ls_remote(out, "v1") == "2" * 40
    assert GIT.parse_ls_remote("3333333333333333333333333333333333333333\trefs/heads/main\n", "main") == "3" * 40
    assert GIT.parse_ls_remote("", "nope") is None


def test_dump_writes_a_partial_file_verifies_and_renames():
    db = B.Postgres("demo", "postgres", "/usr/lib/postgresql/15/bin", "/srv/pg/run", 5432, "/srv/backups")
    script = B.dump(db, "/srv/backups/x.dump").script
    assert script.startswith("cd / && if [ \"$(id -u)\" -eq 0 ]; then set -- runuser -u postgres --; "
                             "else set -- sudo -n -u postgres --; fi && \"$@\" sh -c ")
    assert "umask 077; mkdir -p -m 700 /srv/backups && rm -f /srv/backups/x.dump.partial && " in script
    assert "pg_dump -Fc -h /srv/pg/run -p 5432 -f /srv/backups/x.dump.partial demo" in script
    assert "pg_restore --list /srv/backups/x.dump.partial" in script
    assert "rm -f /srv/backups/x.dump.partial; exit $rc" in script
    assert B.parse_dump("a" * 64 + " 1234\n") == ("a" * 64, 1234)
    with pytest.raises(ValueError):
        B.parse_dump("pg_dump: error\n")


def test_without_os_user_the_tools_run_as_the_ssh_user_with_the_role():
    """No os_user: pg_dump runs as the SSH user itself (no sudo, no runuser), logs in as the
    role, and creates the backup directory itself (mode 700), so the dump can be written there."""
    db = B.Postgres("demo", None, "/usr/lib/postgresql/15/bin", "/srv/pg/run", 5432, "/srv/backups",
                    user="demo")
    assert B.dump(db, "/srv/backups/x.dump").script == (
        "sh -c 'umask 077; mkdir -p -m 700 /srv/backups && rm -f /srv/backups/x.dump.partial && "
        "if /usr/lib/postgresql/15/bin/pg_dump -Fc -h /srv/pg/run -p 5432 -U demo "
        "-f /srv/backups/x.dump.partial demo && /usr/lib/postgresql/15/bin/pg_restore --list "
        "/srv/backups/x.dump.partial >/dev/null && sum=$(sha256sum /srv/backups/x.dump.partial | "
        "cut -d'\"'\"' '\"'\"' -f1) && size=$(stat -c %s /srv/backups/x.dump.partial) && mv -T "
        "/srv/backups/x.dump.partial /srv/backups/x.dump; then echo \"$sum $size\"; else rc=$?; "
        "rm -f /srv/backups/x.dump.partial; exit $rc; fi'")
    assert db.as_user("id -un") == "sh -c 'id -un'"
    assert db.conn_args() == "-h /srv/pg/run -p 5432 -U demo"


def test_the_database_over_tcp_with_a_password_file():
    db = B.Postgres("app", None, "/usr/bin", None, 6432, "/var/backups/app", user="app_owner",
                    host="10.0.0.5", password_file="/home/deploy/.pgpass-app")
    assert db.conn_args() == "-h 10.0.0.5 -p 6432 -U app_owner"
    assert db.as_user("psql -c 'select 1'") == (
        "sh -c 'export PGPASSFILE=/home/deploy/.pgpass-app; psql -c '\"'\"'select 1'\"'\"''")
    assert B.verify(db, "/var/backups/app/x.dump", "ab" * 32).script == (
        "sh -c 'export PGPASSFILE=/home/deploy/.pgpass-app; test -f /var/backups/app/x.dump && echo "
        + "ab" * 32 + "'\"'\"' '\"'\"'/var/backups/app/x.dump | sha256sum -c --status - && "
        "/usr/bin/pg_restore --list /var/backups/app/x.dump >/dev/null'")


def test_with_an_os_user_the_tools_run_through_sudo_or_runuser_as_root():
    db = B.Postgres("demo", "postgres", "/usr/bin", None, 5432, "/srv/backups")
    assert db.as_user("id -un") == (
        "cd / && if [ \"$(id -u)\" -eq 0 ]; then set -- runuser -u postgres --; "
        "else set -- sudo -n -u postgres --; fi && \"$@\" sh -c 'id -un'")
    assert db.conn_args() == "-p 5432"


def test_restore_is_single_transaction_and_stops_on_error():
    db = B.Postgres("demo", "postgres", "/usr/lib/postgresql/15/bin", None, 5432, "/srv/backups")
    script = B.restore(db, "/srv/backups/x.dump").script
    assert "--single-transaction -v ON_ERROR_STOP=1" in script
    assert "pg_identify_object" in script and "DROP SCHEMA" not in script


def test_the_rollbacks_restore_runs_once_per_backup_and_one_at_a_time():
    """A restore a killed orchestrator left running on the db host is waited for (a lock file
    next to the backups), and a backup already restored is not restored again: the restore marks
    the fence table with the backup's sha256 in its own transaction, and the mark is checked
    first. The schema itself is never dropped, granted to or commented on."""
    db = B.Postgres("demo", "postgres", "/usr/lib/postgresql/15/bin", None, 5432, "/srv/backups")
    sha = "ab" * 32
    script = B.restore_once(db, "/srv/backups/x.dump", sha).script
    # as the database tools' user, in one shell: the lock file, the mark, the checks, the restore
    assert script.count(" sh -c ") == 1 and script.count("runuser") == 1
    script = shlex.split(script.split(' "$@" sh -c ', 1)[1])[0]
    assert script.startswith("exec 9>>/srv/backups/.restore.lock && flock 9 && if ")
    mark = f"deployer: restored from a backup with sha256 {sha}"
    check, rest = script.split("; then ", 1)
    assert "FROM public.deployer_fence WHERE op = " in check and "RESTORED" in check and mark in check
    skip, do = rest.split("; else ", 1)
    assert "pg_restore" not in skip and "restored from this backup already" in skip
    assert do.index("sha256sum -c") < do.index("deployer_fence") < do.index("DROP EXTENSION IF EXISTS")
    # the fence table is spared by the wipe and takes the mark, in the restore's transaction
    assert "keep text := NULL" not in do and "keep text := " in do
    assert do.index("DROP %s IF EXISTS") < do.index("pg_restore -f -") < do.rindex("RESTORED") < do.rindex(mark)
    for text in (do, B.restore(db, "/srv/backups/x.dump").script):
        assert "DROP SCHEMA" not in text and "GRANT" not in text and "COMMENT ON" not in text
    plain = B.restore(db, "/srv/backups/x.dump").script
    assert "keep text := NULL" in plain and "RESTORED" not in plain


def test_host_state_parser_reads_recorded_output():
    out = ("@@deployer-state\ncurrent=/srv/app/releases/" + REL + "\nhostname=web1\ndisk_kb=123456\n"
           "maintenance=off\nrelease=20261120T000000Z-aaaaaaa\nrelease=" + REL + "\n")
    st = R.parse_state(out)
    assert (st.current, st.hostname, st.disk_kb, st.maintenance) == (REL, "web1", 123456, False)
    assert st.releases == ["20261120T000000Z-aaaaaaa", REL]
    empty = R.parse_state("@@deployer-state\ncurrent=\nhostname=web2\ndisk_kb=\nmaintenance=on\n")
    assert empty.current is None and empty.releases == [] and empty.maintenance


def test_cleanup_never_removes_protected_releases():
    rels = [f"2026110{i}T000000Z-aaaaaaa" for i in range(1, 8)]
    assert R.to_remove(rels, 2, {rels[0]}) == rels[1:5]
    assert R.to_remove(rels, 10, set()) == []


def test_lock_holder_is_parsed_from_the_refusal():
    out = ('@@lock-held\n{"holder": "ana", "host": "laptop", "pid": 42, "reason": "deploy v2", '
           '"started": "2026-11-21T12:00:00Z", "run": "r1"}\n\nheartbeat_age=75\n')
    info = LK.parse_held(out)
    assert info.describe() == ("ana@laptop pid 42 since 2026-11-21T12:00:00Z (deploy v2; run r1, "
                               "last heartbeat 75s ago)")
    assert LK.parse_held("acquired\n") is None


def test_haproxy_commands_and_state_parser():
    assert LB.drain("/srv/haproxy/admin.sock", "web", "web2").script == (
        "echo 'set server web/web2 state drain' | socat stdio UNIX-CONNECT:/srv/haproxy/admin.sock")
    out = ("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state\n"
           "3 web 1 web1 10.77.0.101 2 0 1 1 5 6 3 4 6 0 0 0 - 8000 -\n"
           "3 web 2 web2 10.77.0.102 2 8 1 1 5 6 3 4 6 0 0 0 - 8000 -\n")
    assert LB.parse_states(out, "web") == {"web1": "ready", "web2": "drain"}


@pytest.mark.parametrize("n,waves,sizes", [
    (3, ["100%"], [3]),
    (10, [1, "25%", "100%"], [1, 2, 7]),
    (10, ["10%", "50%", "100%"], [1, 4, 5]),
    (1, [1, "50%", "100%"], [1]),
    (30, [1, "10%", "100%"], [1, 2, 27]),
])
def test_wave_planning(n, waves, sizes):
    planned = plan_waves(hosts(n), waves)
    assert [len(w) for w in planned] == sizes
    assert [h.name for w in planned for h in w] == [h.name for h in hosts(n)]


def _events():
    return [
        {"type": "deploy.start", "run": "r1", "release": "20261101T000000Z-aaaaaaa", "ref": "v1",
         "commit": "a" * 40},
        {"type": "snapshot", "run": "r1", "hosts": {"web1": None}, "schema": None},
        {"type": "migrate", "run": "r1", "before": None, "after": 1},
        {"type": "deploy.end", "run": "r1", "outcome": "success"},
        {"type": "deploy.start", "run": "r2", "release": "20261102T000000Z-bbbbbbb", "ref": "v2",
         "commit": "b" * 40},
        {"type": "snapshot", "run": "r2", "hosts": {"web1": "20261101T000000Z-aaaaaaa"}, "schema": 1},
        {"type": "backup", "run": "r2", "path": "/srv/backups/b.dump", "sha256": "c" * 64, "size": 9},
        {"type": "migrate", "run": "r2", "before": 1, "after": 2},
        {"type": "deploy.end", "run": "r2", "outcome": "success"},
        {"type": "deploy.start", "run": "r3", "release": "20261103T000000Z-ccccccc", "ref": "bad",
         "commit": "c" * 40},
        {"type": "snapshot", "run": "r3", "hosts": {"web1": "20261102T000000Z-bbbbbbb"}, "schema": 2},
        {"type": "rollback.start", "run": "r3", "auto": True, "to": {"web1": "20261102T000000Z-bbbbbbb"}},
        {"type": "release.bad", "run": "r3", "release": "20261103T000000Z-ccccccc"},
        {"type": "rollback.end", "run": "r3", "outcome": "success"},
        {"type": "deploy.end", "run": "r3", "outcome": "rolled_back"},
        {"type": "deploy.start", "run": "r4", "release": "20261104T000000Z-ddddddd", "ref": "v3",
         "commit": "d" * 40},
        '{"type": "torn',
    ]


def test_ledger_fold_tells_outcomes_bad_releases_and_what_to_return_to():
    from deployer.commands import ledger as L

    events = L.decode("\n".join(e if isinstance(e, str) else __import__("json").dumps(e)
                                for e in _events()))
    h = History.fold(events)
    assert [h.releases[r].outcome for r in h.order] == ["success", "success", "rolled_back", "in-flight"]
    assert h.releases["20261103T000000Z-ccccccc"].bad
    assert h.previous_good("20261103T000000Z-ccccccc").release == "20261102T000000Z-bbbbbbb"
    assert h.previous_good("20261102T000000Z-bbbbbbb").release == "20261101T000000Z-aaaaaaa"
    assert h.resolve("v1").release == "20261101T000000Z-aaaaaaa"
    assert h.resolve("20261102").release == "20261102T000000Z-bbbbbbb"
    assert h.resolve("2026110") is None  # ambiguous prefix, no ref by that name
    assert h.schema_of("20261101T000000Z-aaaaaaa") == 1
    assert h.backup_before_leaving("20261101T000000Z-aaaaaaa").path == "/srv/backups/b.dump"
    assert [r.run for r in h.in_flight] == ["r4"]


def canned_facts(cfg, current: str | None = "20261101T000000Z-aaaaaaa") -> Facts:
    facts = Facts(commit="3f8cb52" + "0" * 33, schema=1)
    for h in cfg.hosts:
        facts.hosts[h.name] = R.HostState(current=current, releases=[current] if current else [],
                                          hostname=h.name, disk_kb=10 ** 7)
    return facts


def test_dry_run_plan_of_the_laravel_playbook_is_the_deploy_sh_of_seed_003():
    cfg = load_config("prod", root=ROOT)
    facts = canned_facts(cfg)
    plan = deploy_plan(cfg, facts, DeployInputs(release=REL, commit=facts.commit, ref="v2.3.0",
                                                 maintenance=True))
    rows = plan.rows()
    by_stage = {}
    for stage, _host, command in rows:
        by_stage.setdefault(stage.split()[0], []).append(command)
    text = "\n".join(c for _, _, c in rows)
    for expected in ("php artisan down --retry=60", "composer install --no-dev --optimize-autoloader",
                     "npm ci", "php artisan migrate --force", "php artisan config:cache",
                     "php artisan route:cache", "php artisan view:cache", "php artisan event:cache",
                     "php artisan queue:restart", "php artisan horizon:terminate", "php artisan up"):
        assert expected in text, expected
    # ordering as the script: down, before build, before migrate, before caches, before up
    # (the dead-man switch armed with maintenance mode carries `artisan up` too: the last one is
    # finalize's)
    order = [text.index(x) for x in ("artisan down", "composer install", "artisan migrate --force",
                                      "config:cache", "queue:restart")] + [text.rindex("artisan up")]
    assert order == sorted(order)
    names = [st.name for st in plan.stages if st.name in ("maintenance", "finalize")]
    assert names[0] == "maintenance" and set(names[1:]) == {"finalize"}
    # under maintenance mode the backup is followed by the write fence, removed after finalize
    assert "deployer_fence" in by_stage["backup"][0] and "DROP TABLE IF EXISTS public.deployer_fence" in text
    assert any("pg_dump -Fc" in c for c in by_stage["backup"])
    # migrations run on the one migrate host only
    migrations = [a for st in plan.stages for a in st.actions() if a.what == "migrate"]
    assert [a.host for a in migrations] == [cfg.migrate_host.name]


def test_secret_file_is_written_from_stdin_with_a_0600_umask():
    cmd = R.write_secret("/srv/app/shared", "keys/api token")
    assert cmd.script == ("umask 077 && mkdir -p /srv/app/shared/keys && "
                          "tmp='/srv/app/shared/keys/api token.tmp.'$$ && cat > \"$tmp\" && "
                          "mv -f \"$tmp\" '/srv/app/shared/keys/api token'")


def test_secret_file_needs_exactly_one_source(tmp_path):
    import shutil

    from deployer.errors import ConfigError

    shutil.copytree(ROOT / "playbooks", tmp_path / "playbooks")
    (tmp_path / "hosts").mkdir()
    shutil.copy(ROOT / "hosts" / "known_hosts.example", tmp_path / "hosts")
    text = (ROOT / "hosts" / "staging.yaml").read_text()
    (tmp_path / "hosts" / "staging.yaml").write_text(text + "\nsecret_files:\n  - {path: .env}\n")
    with pytest.raises(ConfigError, match=r"hosts/staging.yaml: secret_files\[0\]: give exactly one of "
                                          r"from_env, from_file"):
        load_config("staging", root=tmp_path, environ={})


def test_maintenance_watchdog_runs_the_off_steps_detached_after_the_ttl():
    from deployer.shell import raw

    cmd = R.watchdog_start("/srv/app/.deployer", 900, raw("php artisan up"))
    assert cmd.script == (
        "mkdir -p /srv/app/.deployer || exit 1; "
        "if [ -f /srv/app/.deployer/maintenance-watchdog.pid ]; then "
        "kill -- -$(cat /srv/app/.deployer/maintenance-watchdog.pid) 2>/dev/null; fi; "
        "setsid sh -c 'sleep 900; php artisan up; rm -f /srv/app/.deployer/maintenance-watchdog.pid' "
        "</dev/null >/dev/null 2>&1 & echo $! > /srv/app/.deployer/maintenance-watchdog.pid")
