"""The engine's vocabulary as types: effects, state backend operations and what an action's
output records are typed variants; the executor dispatches on them (no names looked up, no
string prefixes decoded), and what it journals is what it journaled before."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from deployer import records as REC
from deployer.engine.executor import Executor
from deployer.engine.plan import (
    Action,
    Effect,
    EnsureBackup,
    RecordBackup,
    RecordSchema,
    SchemaKey,
    Stage,
    UploadBackup,
)
from deployer.engine.state import RunState
from deployer.shell import STEP_MARK, raw

SHA = "ab" * 32


class FakeState:
    """A state backend that records the operations asked of it."""

    def __init__(self):
        self.calls = []

    def upload_backup(self, host, path, *, state=None, kind=None):
        self.calls.append(("upload_backup", host, path, state))

    def ensure_backup(self, host, path, sha256, *, state=None, kind=None):
        self.calls.append(("ensure_backup", host, path, sha256, state))
        return REC.Backup(path=path, sha256=sha256, size=3, host=host, kind="fetched")


class FakeSession:
    def __init__(self, stdout: str = ""):
        self.state = FakeState()
        self.stdout = stdout
        self.ran = []
        self.fenced = 0

    def run_on(self, host, cmd, *, timeout=None, stdin=None):
        self.ran.append((host, cmd.display))
        return SimpleNamespace(stdout=self.stdout, stderr="")

    def check_fence(self):
        self.fenced += 1


class FakeJournal:
    def __init__(self):
        self.records = []

    def write(self, rec):
        self.records.append(rec)
        return rec.to_dict() if hasattr(rec, "to_dict") else vars(rec)


def executor(stdout: str = "", **state) -> Executor:
    rep = SimpleNamespace(event=lambda *a, **kw: None)
    return Executor(FakeSession(stdout), FakeJournal(), rep, RunState(run="r1", release="rel", **state))


def steps(*outputs: str) -> str:
    return "".join(f"{STEP_MARK} {i}\n{out}\n" for i, out in enumerate(outputs))


STAGE = Stage("backup")


def test_effects_are_an_enum_whose_values_are_what_the_journal_always_held():
    assert [e.value for e in Effect] == [
        "pulled", "switched", "unswitched", "drained", "undrained", "maintenance_on",
        "maintenance_off", "migrated", "workers_restarted", "db_restored", "worker_healthy"]
    with pytest.raises(ValueError, match="unknown effect"):
        Action(host="web1", command=raw("true"), effect="switched")


@pytest.mark.parametrize("effect, before, after", [
    (Effect.PULLED, {}, {"pulled": ["web1"]}),
    (Effect.SWITCHED, {"switched": ["web1"]}, {"switched": ["web1"]}),
    (Effect.UNSWITCHED, {"switched": ["web1", "web2"]}, {"switched": ["web2"]}),
    (Effect.DRAINED, {}, {"drained": ["web1"]}),
    (Effect.UNDRAINED, {"drained": ["web1"]}, {"drained": []}),
    (Effect.UNDRAINED, {}, {"drained": []}),
    (Effect.WORKERS_RESTARTED, {}, {"workers_restarted": ["web1"]}),
    (Effect.WORKER_HEALTHY, {}, {"workers_healthy": ["web1"]}),
    (Effect.MAINTENANCE_ON, {}, {"maintenance_on": True}),
    (Effect.MAINTENANCE_OFF, {"maintenance_on": True}, {"maintenance_on": False}),
    (Effect.MIGRATED, {}, {"migrated": True}),
    (Effect.DB_RESTORED, {"migrated": True}, {"migrated": False}),
])
def test_each_effect_changes_the_run_state(effect, before, after):
    st = RunState(run="r1", release="rel", **before)
    st.apply(effect, "web1")
    assert {k: getattr(st, k) for k in after} == after


def test_journaled_effects_keep_their_json_and_fold_back_into_the_same_state():
    ex = executor()
    act = Action(host="web1", command=raw("ln -s x current"), effect=Effect.SWITCHED, what="switch")
    ex.run_action(Stage("switch"), "web1", act)
    ex.run_action(Stage("switch"), "web1", Action(host="lb1", command=raw("enable"), effect=Effect.UNDRAINED))
    effects = [r for r in ex.journal.records if isinstance(r, REC.Effect)]
    assert [(r.effect, r.host) for r in effects] == [("switched", "web1"), ("undrained", "web1")]
    on_disk = json.loads(json.dumps(effects[0].to_dict()))  # the JSON line the journal writes
    assert (on_disk["type"], on_disk["effect"], on_disk["host"]) == ("effect", "switched", "web1")
    assert ex.s.fenced == 1  # a switch checks the lock's fence first
    # an old ledger's records (strings) rebuild the state; an unknown effect changes nothing
    old = [REC.RunStarted(run="r1", release="rel"), REC.Effect(host="web1", effect="switched"),
           REC.Effect(host="web2", effect="pulled"), REC.Effect(host="web3", effect="teleported")]
    st = RunState.from_events(old)
    assert st.switched == ["web1"] and st.pulled == ["web2"]


def test_an_effect_that_adds_risk_is_journaled_before_its_action_one_that_removes_it_after():
    ex = executor()
    order = []
    ex.s.run_on = lambda host, cmd, **kw: order.append("run") or SimpleNamespace(stdout="", stderr="")
    ex.write = lambda rec: order.append(rec.effect) if isinstance(rec, REC.Effect) else None
    ex.run_action(STAGE, "web1", Action(host="web1", command=raw("x"), effect=Effect.DRAINED))
    ex.run_action(STAGE, "web1", Action(host="web1", command=raw("x"), effect=Effect.UNDRAINED))
    assert order == ["drained", "run", "run", "undrained"]


def test_backend_operations_display_as_before_and_go_to_their_method():
    up = Action(host="db1", backend=UploadBackup("/b/x.dump"), what="backup off-site")
    ensure = Action(host="db1", backend=EnsureBackup("/b/x.dump", SHA), what="backup from off-site")
    assert up.display() == "upload_backup /b/x.dump"
    assert ensure.display() == f"ensure_backup /b/x.dump {SHA}"
    ex = executor()
    ex.run_action(STAGE, "db1", up)
    ex.run_action(STAGE, "db1", ensure)
    assert ex.s.state.calls == [("upload_backup", "db1", "/b/x.dump", ex.st),
                                ("ensure_backup", "db1", "/b/x.dump", SHA, ex.st)]
    assert ex.s.ran == []  # done by the orchestrator, nothing run on the host
    # a result of the backend is journaled; none is nothing
    assert [r.kind for r in ex.journal.records if isinstance(r, REC.Backup)] == ["fetched"]


def test_an_action_is_exactly_one_kind():
    with pytest.raises(ValueError, match="state backend operation"):
        Action(host="db1", command=raw("true"), backend=UploadBackup("/b/x.dump"))
    with pytest.raises(ValueError, match="state backend operation"):
        Action(host="db1")


def test_a_recorded_backup_is_parsed_from_its_step_and_journaled():
    ex = executor(stdout=steps("unfenced", f"dumped\n{SHA} 1234"))
    act = Action(host="db1", command=raw("dump"), records=(RecordBackup(1, "/b/x.dump"),), what="backup")
    ex.run_action(STAGE, "db1", act)
    backups = [r for r in ex.journal.records if isinstance(r, REC.Backup)]
    assert [(b.path, b.sha256, b.size, b.host) for b in backups] == [("/b/x.dump", SHA, 1234, "db1")]
    assert ex.st.backup == REC.BackupRef(path="/b/x.dump", sha256=SHA, size=1234, host="db1")
    assert not any(isinstance(r, REC.Migrated) for r in ex.journal.records)


def test_recorded_schemas_set_the_run_state_and_journal_the_migration():
    ex = executor(stdout=steps("3", "migrating", "5"))
    act = Action(host="web1", command=raw("migrate"), effect=Effect.MIGRATED, what="migrate",
                 records=(RecordSchema(0, SchemaKey.BEFORE), RecordSchema(2, SchemaKey.AFTER)))
    ex.run_action(Stage("migrate"), "web1", act)
    assert (ex.st.schema_before, ex.st.schema_after, ex.st.migrated) == (3, 5, True)
    migrated = [r for r in ex.journal.records if isinstance(r, REC.Migrated)]
    assert [(m.before, m.after) for m in migrated] == [(3, 5)]


def test_a_schema_that_did_not_change_leaves_nothing_to_undo():
    ex = executor(stdout=steps("4", "nothing to migrate", "4"))
    act = Action(host="web1", command=raw("migrate"), effect=Effect.MIGRATED, what="migrate",
                 records=(RecordSchema(0, SchemaKey.BEFORE), RecordSchema(2, SchemaKey.AFTER)))
    ex.run_action(Stage("migrate"), "web1", act)
    assert (ex.st.schema_before, ex.st.schema_after, ex.st.migrated) == (4, 4, False)
