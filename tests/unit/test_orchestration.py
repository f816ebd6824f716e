"""Whole runs without the fleet: a recording transport with canned output drives deploy,
rollback, abort and the failure paths; the commands executed are exactly the plan's."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from recording import SHA, FakeHttp, Fleet, RecordingTransport, fake_bake, untoken

from deployer import records as REC
from deployer.config import load_config
from deployer.engine.deploy import DeployRun
from deployer.engine.rollback import Resume, Rollback
from deployer.errors import ConnectError, ConnectionLost, DeployFailed
from deployer.output import JsonReporter
from deployer.session import Session

ROOT = Path(__file__).resolve().parents[2]
OLD = "20261101T000000Z-aaaaaaa"
RELEASE_RE = re.compile(r"\d{8}T\d{6}Z-" + SHA[:7])
EPOCH_RE = re.compile(r"\b1\d{9}\b")


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYER_STATE_DIR", str(tmp_path / "state"))


def config(env: str, tmp_path: Path, **overrides):
    if env == "local":
        key, known = tmp_path / "id", tmp_path / "known_hosts"
        key.write_text("not used: the transport is a recording one\n")
        known.write_text("")
        overrides.update({"ssh.key": str(key), "ssh.known_hosts": str(known)})
    return load_config(env, root=ROOT, overrides=overrides)


def session(cfg, transport, http=None) -> Session:
    return Session(cfg, JsonReporter(io.StringIO()), transport=transport, http_check=http or FakeHttp(), bake=fake_bake)


def events(stream: io.StringIO, kind: str) -> list[dict]:
    return [e for e in map(json.loads, stream.getvalue().splitlines()) if e["event"] == kind]


def per_host(evs: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in evs:
        cmd = untoken(EPOCH_RE.sub("<epoch>", RELEASE_RE.sub("<release>", e["command"])))
        out.setdefault(e["host"], []).append(cmd)
    return out


def run_deploy(cfg, fleet, *, dry_run=False, http=None, fail=None, down=None, transport=None):
    out = io.StringIO()
    rep = JsonReporter(out)
    t = transport or RecordingTransport(fleet, fail=fail, down=down)
    d = DeployRun(cfg, rep, ref="v2", session=Session(cfg, rep, transport=t, http_check=http or FakeHttp(), bake=fake_bake))
    code = d.dry_run() if dry_run else d.run()
    return code, out, t


@pytest.mark.parametrize("env", ["local", "prod", "staging"])
def test_dry_run_prints_exactly_the_commands_the_deploy_runs(env, tmp_path):
    cfg = config(env, tmp_path)
    hosts = [h.name for h in cfg.hosts]
    code, planned, _ = run_deploy(cfg, Fleet(hosts, OLD), dry_run=True)
    assert code == 0
    code, ran, t = run_deploy(cfg, Fleet(hosts, OLD))
    assert code == 0
    plan = per_host(events(planned, "plan"))
    assert plan and plan == per_host(events(ran, "command"))
    # ...and every one of them reached the hosts, in that order (HTTP checks aside)
    remote = {}
    for host, display in t.calls:
        remote.setdefault(host, []).append(display)
    for host, cmds in plan.items():
        sent = [untoken(RELEASE_RE.sub("<release>", c)) for c in remote.get(host, [])]
        expected = [c for c in cmds if not c.startswith("GET ")]
        it = iter(sent)
        assert all(any(c == s for s in it) for c in expected), host


def test_waves_follow_the_rollout_of_the_inventory(tmp_path):
    cfg = config("local", tmp_path)
    code, planned, _ = run_deploy(cfg, Fleet([h.name for h in cfg.hosts], OLD), dry_run=True)
    stages = [e["stage"] for e in events(planned, "plan")]
    # hosts/local.yaml: a canary wave of 1, then the rest: two switch waves
    assert "switch w1" in stages and "switch w2" in stages and "switch w3" not in stages
    w1 = {e["host"] for e in events(planned, "plan") if e["stage"] == "switch w1" and "mv -T" in e["command"]}
    assert w1 == {"web1"}


def test_a_failed_host_stops_its_wave_and_the_rollback_is_the_rollback_plan(tmp_path):
    cfg = config("local", tmp_path, rollout=[{"size": "100%"}], max_unavailable=1)
    hosts = [h.name for h in cfg.hosts]
    fleet = Fleet(hosts, OLD)
    t = RecordingTransport(fleet)
    with pytest.raises(DeployFailed) as exc:
        run_deploy(cfg, fleet, http=FakeHttp(failing={"web1"}, good=OLD), transport=t)
    assert "health gate failed" in exc.value.message
    # web1 failed its check: web2 and web3 never switched; web1 is back on the old release
    switched = [h for h, c in t.calls if ".current." in c and OLD not in c]
    assert switched == ["web1"]
    assert fleet.current == {h: OLD for h in hosts}
    # web1 was put back into rotation once healthy on the old release
    assert [c for h, c in t.calls if "state ready" in c and "web1" in c]


def test_rollback_dry_run_prints_exactly_the_commands_the_rollback_runs(tmp_path):
    cfg = config("local", tmp_path)
    hosts = [h.name for h in cfg.hosts]
    fleet = Fleet(hosts, OLD)
    run_deploy(cfg, fleet)
    new = fleet.current["web1"]
    assert new != OLD
    # the ledger (canned) knows both releases; roll back to the old one by its id
    fleet.releases = {h: [OLD, new] for h in hosts}
    outs = []
    for dry in (True, False):
        out = io.StringIO()
        rep = JsonReporter(out)
        t = RecordingTransport(fleet)
        rb = Rollback(cfg, rep, to=OLD, keep_db=True, dry_run=dry,
                      session=Session(cfg, rep, transport=t, http_check=FakeHttp(), bake=fake_bake))
        assert rb.run() == 0
        outs.append(out)
    assert per_host(events(outs[0], "plan")) == per_host(events(outs[1], "command"))
    assert set(fleet.current.values()) == {OLD}


def test_unreachable_ledger_host_never_stops_the_failure_path(tmp_path):
    """db1 (ledger) stops answering after the lock: the failing deploy still rolls back every
    host, the record stays in the local journal, and the next command ships it."""
    cfg = config("local", tmp_path, rollout=[{"size": "100%"}], max_unavailable=1)
    hosts = [h.name for h in cfg.hosts]
    fleet = Fleet(hosts, OLD)
    down: set[str] = set()

    def fail(host, step):
        if "pg_dump" in step:  # the backup is the last thing db1 answers
            down.add("db1")
        return None

    with pytest.raises(DeployFailed):
        run_deploy(cfg, fleet, http=FakeHttp(failing={"web1"}, good=OLD), fail=fail, down=down)
    assert fleet.current == {h: OLD for h in hosts}
    assert "deploy.end" not in fleet.ledger  # not shipped: db1 was down
    down.clear()
    s = session(cfg, RecordingTransport(fleet))
    history = s.history()
    assert history.local_only == []
    outcomes = [r.outcome for r in history.releases.values()]
    assert outcomes == ["rolled_back"] and '"deploy.end"' in fleet.ledger


def test_abort_of_a_paused_rollout_goes_back_to_its_snapshot(tmp_path):
    cfg = config("local", tmp_path, rollout=[{"size": 1, "pause": True}, {"size": "100%"}])
    hosts = [h.name for h in cfg.hosts]
    fleet = Fleet(hosts, OLD)
    code, out, _ = run_deploy(cfg, fleet)
    assert code == 0 and events(out, "outcome")[-1]["outcome"] == "paused"
    assert [fleet.current[h] == OLD for h in ("web1", "web2", "web3")] == [False, True, True]
    s = session(cfg, RecordingTransport(fleet))
    assert Resume(cfg, s.reporter, "abort", session=s).run() == 0
    assert fleet.current == {h: OLD for h in hosts}


def test_a_failing_steps_stderr_never_carries_a_secret_anywhere(tmp_path, monkeypatch):
    """A build step fails printing the .env it read: the secret is masked in the error, the
    events, the journal and the ledger."""
    secret = "s3cr3t-Canary-Value-42"
    monkeypatch.setenv("CANARY_SECRET", f"APP_KEY={secret}\n")
    cfg = config("local", tmp_path, secret_files=[{"path": ".env", "from_env": "CANARY_SECRET"}])
    fleet = Fleet([h.name for h in cfg.hosts], OLD)

    def fail(host, step):
        if "compileall" in step and host == "web2":
            return 1, f"Traceback: bad config APP_KEY={secret} and DB_PASSWORD=hunter2hunter2\n"
        return None

    out = io.StringIO()
    rep = JsonReporter(out)
    t = RecordingTransport(fleet, fail=fail)
    with pytest.raises(DeployFailed) as exc:
        DeployRun(cfg, rep, ref="v2", session=Session(cfg, rep, transport=t, http_check=FakeHttp(),
                                                       bake=fake_bake)).run()
    journal = "".join(p.read_text() for p in (tmp_path / "state" / "local").glob("*.jsonl"))
    assert "web2" in exc.value.message and "build" in exc.value.message
    for where in (exc.value.message, out.getvalue(), journal, fleet.ledger):
        assert secret not in where and "hunter2hunter2" not in where
    # ... and the secret went to the host on stdin only, never in a command line
    assert all(secret not in display for _, display in t.calls)


def test_a_failed_migration_shows_what_it_printed_on_both_streams_everywhere(tmp_path, monkeypatch):
    """artisan prints its exceptions on stdout: the migration's stdout tail (and its stderr's)
    is in the error, the JSON events, the journal and the ledger, labelled, secrets masked."""
    secret = "s3cr3t-Canary-Value-42"
    monkeypatch.setenv("CANARY_SECRET", f"DB_PASSWORD={secret}\n")
    cfg = config("local", tmp_path, secret_files=[{"path": ".env", "from_env": "CANARY_SECRET"}])
    fleet = Fleet([h.name for h in cfg.hosts], OLD, schema=2)
    said = ("Migrating: 0003_orders\n"
            f'SQLSTATE[42P01]: Undefined table: relation "orders" does not exist (connected with {secret})')

    def fail(host, step):
        return (1, "PHP Warning: deprecated\n", said) if "PGAPPNAME" in step else None

    out = io.StringIO()
    rep = JsonReporter(out)
    with pytest.raises(DeployFailed) as exc:
        DeployRun(cfg, rep, ref="v2", session=Session(cfg, rep, transport=RecordingTransport(fleet, fail=fail),
                                                       http_check=FakeHttp(), bake=fake_bake)).run()
    shown = ("stdout:\n  Migrating: 0003_orders\n  SQLSTATE[42P01]: Undefined table: relation \"orders\" "
             "does not exist (connected with ***)\nstderr:\n  PHP Warning: deprecated")
    assert "failed and was rolled back: migrate: step 2/3: web1: `export PGAPPNAME=" in exc.value.message
    assert exc.value.message.endswith(shown)
    failed = [e for e in events(out, "host") if e["state"] == "failed"]
    assert [(e["host"], e["detail"], e["exit_status"], e["stderr"]) for e in failed] == [
        ("web1", "migrate", 1, "PHP Warning: deprecated")]
    assert failed[0]["stdout"].splitlines()[-1].startswith("SQLSTATE[42P01]")
    assert failed[0]["error"].startswith("migrate: step 2/3: web1: `export PGAPPNAME=")
    journal = [json.loads(line) for p in (tmp_path / "state" / "local").glob("*.jsonl")
               for line in p.read_text().splitlines()]
    step = [REC.parse(d) for d in journal if d["type"] == "step.failed"]
    assert len(step) == 1 and isinstance(step[0], REC.StepFailed)
    assert (step[0].stage, step[0].host, step[0].what, step[0].exit_status) == ("migrate", "web1", "migrate", 1)
    assert step[0].stdout == failed[0]["stdout"] and step[0].stderr == "PHP Warning: deprecated"
    assert '"type": "step.failed"' in fleet.ledger or '"type":"step.failed"' in fleet.ledger
    for where in (exc.value.message, out.getvalue(), json.dumps(journal), fleet.ledger):
        assert secret not in where
    assert fleet.current == {h: OLD for h in fleet.current}


def test_a_migration_cut_short_is_undone_by_what_the_schema_really_is(tmp_path):
    """Ctrl-C or a lost connection mid-migration leaves no `after` version: the rollback reads the
    schema first, and runs no down migration when it did not move (an older release over a newer
    database migrates nothing; `migrate --to <before>` would fail in that release)."""
    cfg = config("local", tmp_path)
    hosts = [h.name for h in cfg.hosts]
    fleet = Fleet(hosts, OLD, schema=2)

    def cut(host, step):
        return (255, "connection lost") if "PGAPPNAME" in step else None

    t = RecordingTransport(fleet, fail=cut)
    with pytest.raises(DeployFailed):
        run_deploy(cfg, fleet, transport=t)
    assert not [c for _, c in t.calls if "migrate --to" in c or "can-rollback" in c]
    assert fleet.current == {h: OLD for h in hosts}
    # the schema was read once more, after the cut, before the rollback was planned
    reads = [c for _, c in t.calls if c.strip().endswith("schema-version")]
    assert len(reads) >= 3, reads


def test_a_run_that_ended_while_the_facts_were_read_makes_the_deploy_read_them_again(tmp_path):
    """The lock was free when asked for, but another run wrote to the ledger after this deploy
    began reading the hosts (it ended in between): the facts are read again, under the lock."""
    cfg = config("local", tmp_path)
    hosts = [h.name for h in cfg.hosts]
    fleet = Fleet(hosts, OLD)
    import datetime as dt

    later = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    fleet.ledger = json.dumps({"type": "deploy.end", "run": "other-run", "at": later, "outcome": "success",
                               "schema": 1}) + "\n"
    code, _, t = run_deploy(cfg, fleet)
    assert code == 0
    reads = [h for h, c in t.calls if "@@deployer-state" in c]
    assert sorted(reads) == sorted(hosts * 2), reads


class AnswerLost(RecordingTransport):
    """The lock's round trip takes the lock on db1, then the connection drops before its answer
    comes back (`lost_release`: the release that follows fails too)."""

    def __init__(self, fleet, lost_release=False, times=2):
        super().__init__(fleet)
        self.lost_release = lost_release
        self.times = times  # how many of the lock's round trips lose their answer

    def run(self, ep, cmd, **kw):
        from deployer.commands import lock as LK

        if LK.LEDGER_MARK in cmd.script and self.times:
            self.times -= 1
            super().run(ep, cmd, **kw)
            self.fleet.holder = json.loads(kw["stdin"])  # what the lock's info.json now says
            raise ConnectionLost(f"{ep.name} ({ep.address}): connection lost: the connection was "
                                 "closed by the host")
        if self.lost_release and "/lock/info.json" in cmd.script and "rm -rf" in cmd.script:
            raise ConnectError(f"{ep.name} ({ep.address}): connection lost: test cut it off")
        return super().run(ep, cmd, **kw)


def test_a_lock_taken_whose_answer_was_lost_is_released_and_taken_again(tmp_path):
    cfg = config("local", tmp_path)
    hosts = [h.name for h in cfg.hosts]
    fleet = Fleet(hosts, OLD)
    code, out, _ = run_deploy(cfg, fleet, transport=AnswerLost(fleet, times=1))
    assert code == 0
    assert set(fleet.current.values()) != {OLD} and not fleet.lock
    (notice,) = [e["message"] for e in events(out, "notice") if e["message"].startswith("lock:")]
    assert "db1" in notice and "connection lost" in notice and "trying again" in notice


def test_a_lock_whose_answer_is_lost_twice_is_released_and_the_run_fails(tmp_path):
    cfg = config("local", tmp_path)
    hosts = [h.name for h in cfg.hosts]
    fleet = Fleet(hosts, OLD)
    with pytest.raises(ConnectError, match="db1 .*connection lost") as err:
        run_deploy(cfg, fleet, transport=AnswerLost(fleet))
    assert not fleet.lock  # the next run is not refused by a lock nobody holds
    assert "may be held" not in err.value.message
    assert fleet.current == {h: OLD for h in hosts}


def test_a_lock_that_could_not_be_released_either_is_reported_with_its_remedy(tmp_path):
    cfg = config("local", tmp_path)
    fleet = Fleet([h.name for h in cfg.hosts], OLD)
    with pytest.raises(ConnectError) as err:
        run_deploy(cfg, fleet, transport=AnswerLost(fleet, lost_release=True))
    assert fleet.lock
    assert "the lock may be held by this run" in err.value.message
    assert "inv recover --env local" in err.value.message


def test_a_deploy_with_no_pending_migration_runs_no_migration(tmp_path):
    """The playbook's `migrate.pending` probe read no pending migration in the new code: the
    migrate stage runs nothing (no `migrate` on the migrate host), the hosts serve the new release,
    and the ledger keeps the schema version the snapshot read. With one pending, it migrates."""
    cfg = config("local", tmp_path)
    hosts = [h.name for h in cfg.hosts]
    fleet = Fleet(hosts, OLD, schema=3)
    fleet.pending = "[]"
    code, out, t = run_deploy(cfg, fleet)
    assert code == 0
    assert not [c for _, c in t.calls if "PGAPPNAME" in c], "a migration ran with none pending"
    assert "no pending migration" in [e["detail"] for e in events(out, "stage") if e["stage"] == "migrate"]
    new = {fleet.current[h.name] for h in cfg.app_hosts}
    assert len(new) == 1 and new != {OLD}
    recs = [json.loads(line) for line in fleet.ledger.splitlines() if line.strip()]
    assert [r for r in recs if r["type"] == "deploy.end"][-1]["outcome"] == "success"
    fleet.pending = '[{"name": "0004_more", "online_safe": true}]'
    code, out, t = run_deploy(cfg, fleet)
    assert code == 0 and [c for _, c in t.calls if "PGAPPNAME" in c]
