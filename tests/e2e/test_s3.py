"""The S3 state backend on the fleet: lock, ledger and backups in a real S3 server (SeaweedFS,
started by `fleet.up` in its own network namespace, 10.77.0.30:8333), reached with boto3 exactly
as AWS would be, credentials from `.fleet/s3.env` given to the CLI through the environment.

Each test keeps its state under its own prefix of the bucket (an inventory variant written to
tmp_path), so its ledger starts empty and nothing leaks between tests. "Another machine" is a
process with another DEPLOYER_USER and its own DEPLOYER_STATE_DIR (local journals), so what it
reads comes from the bucket, not from a journal of this machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from deployer import retention as RT
from deployer.fleet import spec as S
from deployer.state import backups as B
from deployer.state.ledger import S3Ledger
from deployer.state.lock import S3Lock
from deployer.state.s3 import S3Location

from .conftest import ROOT, health, psql, serving

ENV = "local"


class S3Fleet:
    """One test's view of the fleet with S3 state: its prefix, inventories, CLI and bucket."""

    def __init__(self, fleet, tmp_path: Path, lease: float | None = None):
        self.fleet, self.tmp = fleet, tmp_path
        self.prefix = f"e2e/{uuid.uuid4().hex[:10]}"
        self.creds = fleet.s3_env()
        self.loc = S3Location(S.S3_BUCKET, self.prefix, endpoint_url=fleet.s3_endpoint, region="us-east-1")
        self.s3 = boto3.client("s3", endpoint_url=fleet.s3_endpoint, region_name="us-east-1",
                               aws_access_key_id=self.creds["AWS_ACCESS_KEY_ID"],
                               aws_secret_access_key=self.creds["AWS_SECRET_ACCESS_KEY"])
        base = fleet.inventory_path.read_text()
        self.inventory = self.write("inventory-s3.yaml", base, lease)

    def write(self, name: str, text: str, lease: float | None = None, extra: str = "") -> str:
        path = self.tmp / name
        path.write_text(text + extra + S.state_section(prefix=self.prefix, lease=lease))
        return str(path)

    def without_db1(self) -> str:
        """The inventory without `database:` and without db1 (see the ledger-host test)."""
        lines, out, skip = self.fleet.inventory_path.read_text().splitlines(), [], False
        for line in lines:
            if line.startswith("database:"):
                skip = True
                continue
            if skip and line.startswith("  "):
                continue
            skip = False
            out.append(line)
        text = "\n".join(out) + "\n"
        text = text.replace(f"  - name: db1\n    address: {S.DB_ADDRESS}\n    roles: [db, ledger]\n", "")
        assert "db1" not in text and "database:" not in text
        return self.write("inventory-s3-nodb.yaml", text)

    def env(self, user: str = "tester", machine: str | None = None) -> dict:
        env = {**os.environ, **self.creds, "AWS_EC2_METADATA_DISABLED": "true", "DEPLOYER_USER": user}
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            env.pop(k, None)
        if machine:
            d = self.tmp / f"machine-{machine}"
            d.mkdir(exist_ok=True)
            env["DEPLOYER_STATE_DIR"] = str(d)
        return env

    def argv(self, args, inventory: str | None) -> list[str]:
        return [sys.executable, "-m", "deployer.cli", *args, "--inventory", inventory or self.inventory]

    def cli(self, *args: str, check: int | None = None, user: str = "tester", machine: str | None = None,
            inventory: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.argv(args, inventory), capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT, env=self.env(user, machine))
        if check is not None:
            assert proc.returncode == check, (
                f"{' '.join(args)}: exit {proc.returncode}, expected {check}\n"
                f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
        return proc

    def popen(self, *args: str, user: str = "tester", inventory: str | None = None) -> subprocess.Popen:
        return subprocess.Popen(self.argv(args, inventory), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=ROOT, env=self.env(user))

    # -- the bucket, read with boto3 as any other tool would --------------------------------------
    def lock(self) -> S3Lock:
        return S3Lock(self.loc, ENV, s3=self.s3)

    def lock_body(self) -> dict:
        raw = self.s3.get_object(Bucket=S.S3_BUCKET, Key=self.loc.key(ENV, "lock.json"))["Body"].read()
        return json.loads(raw)

    def ledger(self) -> list[dict]:
        return S3Ledger(self.loc, ENV, run="reader", s3=self.s3).read()

    def releases(self, machine: str = "reader") -> list[dict]:
        proc = self.cli("releases", "--env", ENV, "--output", "json", check=0, machine=machine)
        return [r for r in map(json.loads, (ln for ln in proc.stdout.splitlines() if ln.startswith("{")))
                if r.get("event") == "row"]

    def wait_lock(self, timeout: float = 60, run: str | None = None):
        deadline = time.monotonic() + timeout
        lk = self.lock()
        while time.monotonic() < deadline:
            held = lk.read()
            if held is not None and (run is None or held.run == run):
                return held
            time.sleep(0.05)
        raise AssertionError("no deploy took the lock")


@pytest.fixture
def s3f(fleet, tmp_path) -> S3Fleet:
    if not fleet.state.get("s3"):
        pytest.fail("the fleet was brought up without its S3 server (DEPLOYER_FLEET_S3=0?)")
    return S3Fleet(fleet, tmp_path)


def _post_item(fleet, name: str) -> None:
    import urllib.request

    req = urllib.request.Request(f"http://{fleet.spec.host('lb1').public}/items",
                                 data=json.dumps({"name": name}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 201


def released(s3f: S3Fleet, ref: str) -> list[str]:
    return [r["release"] for r in s3f.releases() if r.get("ref") == ref]


# -- the lock -------------------------------------------------------------------------------------
def test_two_deploys_at_once_exactly_one_runs_the_other_names_the_holder(s3f, consistent):
    procs = {u: s3f.popen("deploy", "--env", ENV, "--ref", "v2", "--yes", "--reason", f"race-{u}", user=u)
             for u in ("alice", "bob")}
    out = {u: p.communicate(timeout=300) + (p.returncode,) for u, p in procs.items()}
    codes = sorted(r[2] for r in out.values())
    assert codes == [0, 3], {u: (r[2], r[1][-1500:]) for u, r in out.items()}
    winner = next(u for u, r in out.items() if r[2] == 0)
    loser = next(u for u, r in out.items() if r[2] == 3)
    assert f"locked by {winner}@" in out[loser][1] and f"race-{winner}" in out[loser][1]
    assert f"pid {procs[winner].pid}" in out[loser][1]
    runs = {e["run"] for e in s3f.ledger() if e.get("type") == "deploy.start"}
    assert len(runs) == 1  # the loser recorded nothing
    body = s3f.lock_body()
    assert body["state"] == "free" and body["token"] == 1

    # with --lock-wait the second one waits for the first, then runs
    first = s3f.popen("deploy", "--env", ENV, "--ref", "v2", "--yes", "--reason", "first", user="alice")
    s3f.wait_lock()
    second = s3f.cli("deploy", "--env", ENV, "--ref", "v2", "--yes", "--lock-wait", "240", user="bob", check=0)
    assert first.wait(timeout=300) == 0
    starts = [e for e in s3f.ledger() if e.get("type") in ("deploy.start", "deploy.end")]
    assert [e["type"] for e in starts] == ["deploy.start", "deploy.end"] * 3  # one after the other
    assert [e["run"] for e in starts][1::2] == [e["run"] for e in starts][0::2]
    assert s3f.lock_body()["token"] == 3 and "deployed" in second.stdout


def test_a_holder_killed_with_sigkill_is_taken_over_after_its_lease(fleet, tmp_path, consistent):
    s3f = S3Fleet(fleet, tmp_path, lease=15)
    victim = s3f.popen("deploy", "--env", ENV, "--ref", "v2", "--yes", "--reason", "will-be-killed", user="alice")
    held = s3f.wait_lock()
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    killed_at = time.time()
    assert held.expires_at - killed_at <= 15.5

    refused = s3f.cli("deploy", "--env", ENV, "--ref", "v2", "--yes", user="bob", check=3)
    assert "locked by alice@" in refused.stderr and f"pid {victim.pid}" in refused.stderr
    assert "will-be-killed" in refused.stderr
    status = s3f.cli("status", "--env", ENV, machine="elsewhere")
    assert f"pid {victim.pid}" in status.stdout

    t0 = time.time()
    s3f.cli("deploy", "--env", ENV, "--ref", "v2", "--yes", "--lock-wait", "60", user="bob", check=0)
    body = s3f.lock_body()
    assert body["state"] == "free" and body["token"] == 2  # bob's acquisition fenced alice's off
    bob = [e for e in s3f.ledger() if e.get("type") == "deploy.start" and e.get("who", "").startswith("bob")]
    assert len(bob) == 1
    started = datetime.strptime(bob[0]["at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    assert started >= held.expires_at - 0.5, "taken over before the lease had run out"
    assert started - t0 < 30


def test_a_holder_whose_lock_was_broken_stops_before_its_next_switch(fleet, s3f, cli, tmp_path):
    rollout = 'rollout:\n  - {size: 1, bake: 8}\n  - {size: "100%"}\n'
    inv = s3f.write("inventory-s3-waves.yaml", fleet.inventory_path.read_text(), extra=rollout)
    s3f.cli("deploy", "--env", ENV, "--ref", "v2", "--yes", inventory=inv, check=0)
    before = serving(fleet)
    run = s3f.popen("deploy", "--env", ENV, "--ref", "v2", "--yes", "--reason", "to-be-fenced",
                    user="alice", inventory=inv)
    try:
        deadline = time.monotonic() + 120
        while serving(fleet)["web1"] == before["web1"]:  # wave 1 switched: its bake runs
            assert time.monotonic() < deadline and run.poll() is None, run.communicate()
            time.sleep(0.1)
        # alice's pid answers on this machine (the "other machine" is another state directory
        # here): breaking a live holder's lock takes a reason
        refused = s3f.cli("unlock", "--env", ENV, "--force", user="bob", machine="other", inventory=inv, check=3)
        assert "alive on this machine" in refused.stderr and "--reason" in refused.stderr
        broke = s3f.cli("unlock", "--env", ENV, "--force", "--reason", "alice's run is wedged", user="bob",
                        machine="other", inventory=inv, check=0)
        assert "broke the lock held by alice@" in broke.stdout and "reason: alice's run is wedged" in broke.stdout
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 4, err[-3000:]
    assert "lock" in err and "not rolled back" in err
    now = serving(fleet)
    assert now["web1"] != before["web1"]
    assert (now["web2"], now["web3"]) == (before["web2"], before["web3"])  # no further switch
    ends = [e for e in s3f.ledger() if e.get("type") == "deploy.end"]
    assert ends[-1]["outcome"] == "needs_human"
    s3f.cli("deploy", "--env", ENV, "--ref", "v2", "--yes", inventory=inv, check=0)  # converges
    assert len(set(serving(fleet).values())) == 1


def test_a_paused_rollout_keeps_its_lock_and_is_promoted_from_another_machine(fleet, s3f, consistent):
    rollout = 'rollout:\n  - {size: 1, pause: true}\n  - {size: "100%"}\n'
    inv = s3f.write("inventory-s3-pause.yaml", fleet.inventory_path.read_text(), lease=5, extra=rollout)
    s3f.cli("deploy", "--env", ENV, "--ref", "v2", "--yes", inventory=inv, user="alice", check=0)
    held = s3f.lock().read()
    assert held is not None and held.info.get("paused") and held.expires_at - time.time() > 29 * 86400
    time.sleep(6)  # longer than the lease: a paused lock does not expire
    refused = s3f.cli("deploy", "--env", ENV, "--ref", "v2", "--yes", inventory=inv, user="carol", check=3)
    assert "PAUSED" in refused.stderr
    s3f.cli("promote", "--env", ENV, inventory=inv, user="bob", machine="bob", check=0)
    assert len(set(serving(fleet).values())) == 1
    body = s3f.lock_body()
    assert body["state"] == "free" and body["token"] == 2


# -- the ledger host switched off ------------------------------------------------------------------
def test_releases_status_and_a_deploy_with_its_rollback_work_with_the_ledger_host_down(fleet, s3f, consistent):
    """sshd on db1 (the SSH ledger host, and the database host) is stopped. `releases` and
    `status` run with the fleet's full inventory in S3 state. The deploy (bad-health: no
    migration beyond v2's, its gate fails, it rolls back by itself) runs with the inventory
    without `database:` and without db1: a deploy reads every host of its inventory and backs up
    the database on the db host, so with db1 in it the deploy would rightly refuse; what this
    shows is that nothing of the lock, the ledger or the rollback needs the ledger host."""
    nodb = s3f.without_db1()
    s3f.cli("deploy", "--env", ENV, "--ref", "v2", "--yes", check=0)
    good = released(s3f, "v2")
    assert len(good) == 1
    fleet.stop_ssh("db1")
    try:
        assert fleet.sh("db1", "ss -Htln 'sport = :22' | wc -l").stdout.strip() == "0"
        rows = s3f.releases(machine="laptop")  # a machine that never ran anything here
        assert [r["release"] for r in rows if r.get("ref") == "v2"] == good
        status = s3f.cli("status", "--env", ENV, "--output", "json", machine="laptop", check=0)
        assert good[0] in status.stdout

        s3f.cli("deploy", "--env", ENV, "--ref", "bad-health", "--yes", inventory=nodb, machine="ci", check=1)
        assert set(serving(fleet).values()) == {good[0]}
        for h in fleet.spec.web_hosts:
            assert health(fleet, h)["release"] == good[0]
        rows = s3f.releases(machine="laptop")
        bad = [r for r in rows if r.get("ref") == "bad-health"]
        assert len(bad) == 1 and "bad" in json.dumps(bad[0]).lower()
        ledger = s3f.ledger()
        run = next(e["run"] for e in ledger if e.get("type") == "deploy.start" and e.get("ref") == "bad-health")
        types = [e.get("type") for e in ledger if e.get("run") == run]
        assert {"rollback.start", "release.bad", "deploy.end"} <= set(types)
        assert next(e for e in ledger if e.get("run") == run and e.get("type") == "deploy.end")["outcome"] == "rolled_back"
    finally:
        fleet.start_sshd("db1")


# -- backups ---------------------------------------------------------------------------------------
def test_the_backup_is_in_the_bucket_and_a_restore_fetches_it_when_the_local_copy_is_gone(fleet, s3f, consistent):
    psql(fleet, "DROP SCHEMA public CASCADE; CREATE SCHEMA public; "
                "ALTER SCHEMA public OWNER TO pg_database_owner; GRANT ALL ON SCHEMA public TO PUBLIC")
    s3f.cli("deploy", "--env", ENV, "--ref", "v1", "--yes", check=0)
    _post_item(fleet, "kept-a")
    _post_item(fleet, "kept-b")
    s3f.cli("deploy", "--env", ENV, "--ref", "v2", "--yes", check=0)
    _post_item(fleet, "after-v2")
    backups = [e for e in s3f.ledger() if e.get("type") == "backup"]
    assert len(backups) == 2
    rec = backups[-1]
    name = Path(rec["path"]).name
    obj = B.head(s3f.loc, B.backup_key(s3f.loc, ENV, name), s3f.s3)
    assert obj is not None and obj.sha256 == rec["sha256"] and obj.size == rec["size"]
    assert [b.name for b in B.list_backups(s3f.loc, ENV, s3=s3f.s3)] == sorted(Path(b["path"]).name for b in backups)

    fleet.sh("db1", f"rm -f {rec['path']}")
    proc = s3f.cli("rollback", "--env", ENV, "--to", "v1", "--restore-db", "--yes", check=0)
    assert "fetched from s3://" in proc.stdout + proc.stderr
    assert psql(fleet, "select max(version) from schema_migrations") == "1"
    assert psql(fleet, "select string_agg(name, ',' order by name) from items") == "kept-a,kept-b"
    st = fleet.sh("db1", f"stat -c '%a %U' {rec['path']} && sha256sum {rec['path']}").stdout.split()
    assert st[:3] == ["600", "deploy", rec["sha256"]]  # the database tools' user (the SSH user)
    s3f.cli("deploy", "--env", ENV, "--ref", "v2", "--yes", check=0)


def test_a_corrupt_copy_in_the_bucket_is_never_restored(fleet, s3f, consistent):
    s3f.cli("deploy", "--env", ENV, "--ref", "v2", "--yes", check=0)
    s3f.cli("deploy", "--env", ENV, "--ref", "v2", "--yes", check=0)
    rec = [e for e in s3f.ledger() if e.get("type") == "backup"][-1]
    key = B.backup_key(s3f.loc, ENV, Path(rec["path"]).name)
    s3f.s3.put_object(Bucket=S.S3_BUCKET, Key=key, Body=b"not a dump", Metadata={"sha256": rec["sha256"]})
    fleet.sh("db1", f"rm -f {rec['path']}")
    before = serving(fleet)
    first = next(e["release"] for e in s3f.ledger() if e.get("type") == "deploy.start")
    proc = s3f.cli("rollback", "--env", ENV, "--to", first, "--restore-db", "--yes", check=3)
    assert "could not be fetched" in proc.stderr and "sha256" in proc.stderr
    assert serving(fleet) == before
    assert fleet.sh("db1", f"ls {Path(rec['path']).parent}").stdout.count(Path(rec["path"]).name) == 0


def test_retention_on_the_bucket_matches_the_planner(fleet, s3f, consistent):
    s3f.cli("deploy", "--env", ENV, "--ref", "v2", "--yes", check=0)
    deploy_backup = Path([e for e in s3f.ledger() if e.get("type") == "backup"][-1]["path"]).name
    now = datetime.now(UTC)
    # a nightly every day for three years, two on some days: the policy thins them out
    fake = [f"{ENV}-nightly-{(now - timedelta(days=d, hours=h)).strftime('%Y%m%dT%H%M%SZ')}.dump"
            for d in range(1, 3 * 366, 3) for h in ((3, 9) if d % 2 else (3,))]
    fake += ["notes.txt"]  # not a backup's name: never removed
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: s3f.s3.put_object(Bucket=S.S3_BUCKET, Key=B.backup_key(s3f.loc, ENV, n),
                                                  Body=n.encode(), Metadata={"sha256": "0" * 64}), fake))
    names = [b.name for b in B.list_backups(s3f.loc, ENV, s3=s3f.s3)]
    assert deploy_backup in names and len(names) == len(fake) + 1

    proc = s3f.cli("maintenance", "run", "--env", ENV, check=0)
    # the nightly backup went to the bucket too, with the sha256 the ledger recorded
    nightly = [e for e in s3f.ledger() if e.get("type") == "backup"][-1]
    assert "-nightly-" in nightly["path"], nightly
    head = s3f.s3.head_object(Bucket=S.S3_BUCKET, Key=B.backup_key(s3f.loc, ENV, Path(nightly["path"]).name))
    assert head["Metadata"]["sha256"] == nightly["sha256"]
    cfg_policy = RT.Policy()  # the fleet inventory's retention: seed 003's defaults
    kept, removed, unknown = RT.plan(names + [Path(nightly["path"]).name], datetime.now(UTC), cfg_policy,
                                     {deploy_backup, Path(nightly["path"]).name})
    left = {b.name for b in B.list_backups(s3f.loc, ENV, s3=s3f.s3)}
    assert left == set(kept) | set(unknown), (sorted(left), sorted(kept))
    assert len(removed) > 100 and not set(removed) & left and deploy_backup in left and "notes.txt" in left
    assert f"removed {len(removed)}" in proc.stdout + proc.stderr


def test_file_archives_go_to_the_bucket_and_come_back_for_a_restore(fleet, s3f, consistent):
    """With S3 state each host's archive of the app's files is copied to the bucket's `files/`
    folder (apart from the dumps), and a host that lost its copy gets it back, verified, for
    `restore --files`."""
    from .test_file_backups import FILES, SHARED, _tree, _web, _write_uploads

    inv = s3f.write("inventory-s3-files.yaml", s3f.fleet.inventory_path.read_text(), extra=FILES)
    s3f.cli("deploy", "--env", ENV, "--ref", "v2", "--yes", check=0, inventory=inv)
    for h in _web(fleet):
        _write_uploads(fleet, h)
    before = {h: _tree(fleet, h) for h in _web(fleet)}
    s3f.cli("maintenance", "run", "--env", ENV, check=0, inventory=inv)
    recs = {e["host"]: e for e in s3f.ledger() if e.get("type") == "backup.files"}
    assert sorted(recs) == _web(fleet)
    objs = {b.name: b for b in B.list_backups(s3f.loc, ENV, s3=s3f.s3, with_sha256=True, kind=B.Kind.FILES)}
    for rec in recs.values():
        assert objs[Path(rec["path"]).name].sha256 == rec["sha256"]
    assert not [b for b in B.list_backups(s3f.loc, ENV, s3=s3f.s3) if b.name.startswith("files-")]

    fleet.sh("web1", f"rm -f {recs['web1']['path']} && rm -rf {SHARED}/uploads")
    s3f.cli("restore", "--env", ENV, "--files", "--yes", check=0, inventory=inv)
    assert fleet.sh("web1", f"sha256sum {recs['web1']['path']}").stdout.split()[0] == recs["web1"]["sha256"]
    for h in _web(fleet):
        assert _tree(fleet, h) == {k: v for k, v in before[h].items() if k != "uploads/upload.tmp"}


def test_artifacts_go_through_the_bucket_and_a_release_comes_back_from_it(fleet, s3f, consistent):
    """With S3 state and a build host, the artifact goes through the bucket: web1 builds, packs and
    uploads it with presigned URLs, the other hosts fetch it from the bucket (no server on web1),
    every host has the same bytes; the bucket keeps the newest `artifact.keep`. A release gone
    from every host and from web1 too (the build host replaced) comes back from the bucket for
    `rollback --to`, checked against the ledger's sha256."""
    from deployer.state import artifacts as ART

    from .test_artifacts import _servers, _tree

    art = ("--set", "artifact.build=web1", "--set", "artifact.keep=2")
    checked = s3f.cli("preflight", "--env", ENV, "--output", "json", *art, check=0).stdout
    bucket_rows = [r for r in map(json.loads, (ln for ln in checked.splitlines() if ln.startswith("{")))
                   if r.get("check") == "bucket"]
    assert sorted(r["host"] for r in bucket_rows) == ["web1", "web2", "web3"], checked[-2000:]
    assert all(r["result"] == "PASS" and "answers (HTTP" in r["detail"] for r in bucket_rows), bucket_rows
    releases = []
    for _ in range(3):
        s3f.cli("deploy", "--env", ENV, "--ref", "v2", "--yes", *art, check=0)
        releases.append(next(iter(serving(fleet).values())))
    r1, r2, r3 = releases
    assert set(serving(fleet).values()) == {r3}
    recs = [e for e in s3f.ledger() if e.get("type") == "artifact"]
    built = {e["release"]: e["sha256"] for e in recs if e["built"]}
    assert sorted(built) == releases
    assert {e["sha256"] for e in recs if e["release"] == r3} == {built[r3]}
    assert sorted(e["host"] for e in recs if e["release"] == r3 and not e["built"]) == ["web2", "web3"]
    want = _tree(fleet, "web1", r3)
    assert all(_tree(fleet, h, r3) == want for h in ("web2", "web3"))
    assert not _servers(fleet)
    # the bucket: the newest two artifacts (artifact.keep), whole, with the ledger's sha256
    there = ART.releases(s3f.loc, ENV, s3=s3f.s3)
    assert sorted(there) == [r2, r3] and all(len(keys) == 3 for keys in there.values())
    assert ART.sha256_of(s3f.loc, ENV, r2, s3=s3f.s3) == built[r2]
    r2_files = _tree(fleet, "web1", r2)
    listed = s3f.cli("releases", "--env", ENV, "--output", "json", *art, check=0).stdout
    rows = {r["release"]: r for r in map(json.loads, (ln for ln in listed.splitlines() if ln.startswith("{")))
            if r.get("event") == "row" and "release" in r}
    assert rows[r3]["artifact"] == f"{built[r3][:12]} (on web1 and the bucket)", rows[r3]
    assert rows[r1]["artifact"] == built[r1][:12]  # pruned from both

    # r2 gone from every host, and web1 lost its artifacts (a new build host): from the bucket
    for h in ("web1", "web2", "web3"):
        fleet.sh(h, f"rm -rf /srv/app/releases/{r2} /srv/app/.deployer/artifacts")
    back = s3f.cli("rollback", "--env", ENV, "--to", r2, "--yes", *art, check=0)
    assert "fetched there from its artifact in the bucket" in back.stdout + back.stderr
    assert set(serving(fleet).values()) == {r2}
    for h in fleet.spec.web_hosts:
        assert health(fleet, h).get("release") == r2
        assert _tree(fleet, h.name, r2) == r2_files, h.name
    run = [e for e in s3f.ledger() if e.get("type") == "rollback.start"][-1]["run"]
    again = [e for e in s3f.ledger() if e.get("type") == "artifact" and e.get("run") == run]
    assert sorted(e["host"] for e in again) == ["web1", "web2", "web3"]
    assert {e["sha256"] for e in again} == {built[r2]}
    assert not _servers(fleet)
    # neither the presigned URLs nor the credentials are in anything the CLI printed
    assert "X-Amz-Signature" not in back.stdout + back.stderr
