"""The S3 state backend (`deployer.state.s3_backend.S3State`) as Session uses it, without the
fleet: the lock interface (acquire, lease renewal, takeover after expiry, fencing, pause and
adoption), the ledger as journal batches, backups copied off the host and fetched back, and the
`state:` section of the inventory. The S3 server is a real SeaweedFS on 127.0.0.1 (as in
test_s3_state.py); the "database host" is a directory reached through a fake transport."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from deployer import errors
from deployer.config import load_config
from deployer.config.model import Host
from deployer.config.state import State
from deployer.engine.state import RunState
from deployer.errors import ConfigError
from deployer.fleet import s3 as weed
from deployer.records import BackupRef
from deployer.state import backups as B
from deployer.state.lock import LockHeld
from deployer.state.s3 import S3Location, StateError
from deployer.state.s3_backend import PAUSED_LEASE, S3State, lock_info, parse_lines

BUCKET = "deployer-state"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    try:
        weed.weed_binary()
    except weed.FleetError as e:
        pytest.skip(str(e))
    srv = weed.start(tmp_path_factory.mktemp("weed"), "127.0.0.1", 0, buckets=(BUCKET,), timeout=90)
    try:
        yield srv
    finally:
        srv.stop(timeout=1)


@pytest.fixture(scope="module", autouse=True)
def aws_env(server):
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", server.access_key)
        mp.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
        mp.setenv("AWS_DEFAULT_REGION", server.region)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        yield


@pytest.fixture(autouse=True)
def bounded():
    def expire(signum, frame):
        raise TimeoutError("test ran longer than 60s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


class FakeHost:
    """The database host: its files under `root`, reached by path; commands run locally."""

    def __init__(self, root: Path):
        self.root = root

    def local(self, remote: str) -> Path:
        return self.root / remote.lstrip("/")


class FakeTransport:
    def __init__(self, host: FakeHost):
        self.host, self.calls = host, []

    def run(self, ep, cmd, **kw):
        """Only the sha256 probe of ensure_backup runs here: executed with the host's root."""
        script = cmd.script.replace("-- /", f"-- {self.host.root}/")
        out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
        return SimpleNamespace(stdout=out.stdout, ok=out.returncode == 0)

    def get(self, ep, remote, local):
        self.calls.append(("get", ep.name, remote))
        shutil.copyfile(self.host.local(remote), local)
        return os.path.getsize(local)

    def put(self, ep, local, remote, *, mode=0o600, owner_of_dir=True):
        self.calls.append(("put", ep.name, remote, oct(mode)))
        dest = self.host.local(remote)
        shutil.copyfile(local, dest)
        dest.chmod(mode)
        return dest.stat().st_size


class FakeSession:
    """What a session builds its backend from (a transport, the config, the run id, a reporter)."""

    def __init__(self, spec, tmp: Path, env: str = "prod"):
        self.host = FakeHost(tmp / "db1")
        self.transport = FakeTransport(self.host)
        self.events: list[tuple[str, dict]] = []
        self.reporter = SimpleNamespace(event=lambda kind, **kw: self.events.append((kind, kw)))
        self.run_id = "20261122T000000Z-" + uuid.uuid4().hex[:6]
        db1 = Host(name="db1", address="10.0.0.2", port=22, user="root", roles=("db",))
        self.cfg = SimpleNamespace(env=env, host=lambda name: db1, ssh=SimpleNamespace(command_timeout=60))
        self.state = S3State(self.transport, self.cfg, spec, run_id=self.run_id, reporter=self.reporter)


def spec(server, lease: float = 60.0):
    return State(backend="s3", bucket=BUCKET, prefix=f"u/{uuid.uuid4().hex[:10]}",
                 endpoint_url=server.endpoint_url, lease=lease)


def info(s: FakeSession, who: str = "alice") -> dict:
    return {"holder": who, "host": "laptop", "pid": 4242, "reason": f"deploy by {who}",
            "started": "2026-11-22T00:00:00.000000Z", "run": s.run_id}


# -- pure parts -----------------------------------------------------------------------------------
def test_lock_info_from_an_s3_lock():
    held = LockHeld(env="prod", token=3, run="r1", expires_at=1000.0, lease=60.0,
                    info={"holder": "bob", "host": "ci-7", "pid": "77", "reason": "deploy v2",
                          "started": "2026-11-22T00:00:00.000000Z"})
    li = lock_info(held, now=950.0)
    assert (li.holder, li.host, li.pid, li.run, li.heartbeat_age, li.paused) == ("bob", "ci-7", 77, "r1", 10, False)
    assert "bob@ci-7 pid 77" in li.describe() and "deploy v2" in li.describe()
    held.expired, held.info["paused"] = True, True
    li = lock_info(held, now=1100.0)
    assert li.paused and "lease EXPIRED" in li.reason and "PAUSED" in li.describe()


def test_parse_lines():
    assert parse_lines('{"a":1}\n\n{"b":2}\n') == [{"a": 1}, {"b": 2}]
    with pytest.raises(ValueError):
        parse_lines('{"a":1}\n[1]\n')


def test_state_section_of_the_inventory():
    cfg = load_config("local")
    assert cfg.state.backend == "ssh"
    cfg = load_config("local", overrides={"state": {"backend": "s3", "bucket": "acme-state", "prefix": "/web/",
                                                    "endpoint_url": "http://10.77.0.30:8333/", "lease": 5}})
    st = cfg.state
    loc = S3Location(st.bucket, st.prefix, st.endpoint_url, st.region)
    assert (loc.bucket, loc.prefix, loc.endpoint_url, cfg.state.lease) == ("acme-state", "web", "http://10.77.0.30:8333", 5)
    bad = [({"backend": "s3"}, "bucket: required"),
           ({"backend": "s3", "bucket": "acme-state", "aws_secret_access_key": "x"}, "credentials cannot be set"),
           ({"backend": "s3", "bucket": "acme-state", "endpoint_url": "http://k:s@h:1"}, "must not contain credentials"),
           ({"backend": "s3", "bucket": "acme-state", "endpoint_url": "ftp://h"}, "http(s) URL"),
           ({"backend": "s3", "bucket": "Not_A_Bucket"}, "invalid bucket name"),
           ({"backend": "s3", "bucket": "acme-state", "lease": 0}, "state.lease"),
           ({"bucket": "acme-state"}, "need backend: s3"),
           ({"backend": "gcs", "bucket": "acme-state"}, "state.backend")]
    for section, message in bad:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_config("local", overrides={"state": section})


# -- the lock -------------------------------------------------------------------------------------
def test_one_acquires_the_other_is_told_who(server, tmp_path):
    sp = spec(server)
    a, b = FakeSession(sp, tmp_path / "a"), FakeSession(sp, tmp_path / "b")
    assert a.state.acquire(info(a, "alice")) is None
    held = b.state.acquire(info(b, "bob"))
    assert held is not None and held.holder == "alice" and held.run == a.run_id and held.heartbeat_age == 0
    assert b.state.read_lock().run == a.run_id
    a.state.check_fence(a.run_id)
    with pytest.raises(errors.LockLost):
        b.state.check_fence(b.run_id)  # b does not hold it
    assert a.state.heartbeat(a.run_id) and not b.state.heartbeat(b.run_id)
    a.state.release(a.run_id)
    assert a.state.read_lock() is None
    assert b.state.acquire(info(b, "bob")) is None
    b.state.release(b.run_id)


def test_the_lease_is_renewed_while_held_and_taken_over_after_a_kill(server, tmp_path):
    sp = spec(server, lease=1.5)
    a, b = FakeSession(sp, tmp_path / "a"), FakeSession(sp, tmp_path / "b")
    assert a.state.acquire(info(a)) is None
    time.sleep(2.5)  # longer than the lease: the renewer keeps it
    assert b.state.acquire(info(b, "bob")) is not None
    a.state.check_fence(a.run_id)
    a.state._stop_renewer()  # as if killed: nobody renews any more
    t0 = time.monotonic()
    while b.state.acquire(info(b, "bob")) is not None:
        assert time.monotonic() - t0 < 5, "not taken over after the lease"
        time.sleep(0.2)
    assert 0.5 < time.monotonic() - t0 < 3
    with pytest.raises(errors.LockLost, match=b.run_id):
        a.state.check_fence(a.run_id)  # the old holder is fenced off
    assert a.state.heartbeat(a.run_id) is False
    b.state.release(b.run_id)


def test_a_broken_lock_fails_the_fence_and_the_renewer_notices(server, tmp_path):
    sp = spec(server, lease=1.5)
    a, b = FakeSession(sp, tmp_path / "a"), FakeSession(sp, tmp_path / "b")
    assert a.state.acquire(info(a)) is None
    b.state.force_release()  # unlock --force from another machine
    with pytest.raises(errors.LockLost, match="free"):
        a.state.check_fence(a.run_id)
    time.sleep(1.0)
    assert a.state.lost and "lock lost" in a.state.lost
    a.state.release(a.run_id)  # harmless: not ours any more
    assert b.state.acquire(info(b)) is None and b.state.lock.held.token == 2
    b.state.release(b.run_id)


def test_pause_keeps_the_lock_and_exactly_one_adopts_it(server, tmp_path):
    sp = spec(server, lease=2.0)
    a = FakeSession(sp, tmp_path / "a")
    assert a.state.acquire(info(a)) is None
    other = FakeSession(sp, tmp_path / "o")
    assert other.state.adopt(a.run_id, info(other)) is False  # not paused: a live run's lock
    a.state.mark_paused(a.run_id)
    held = a.state.lock.read()
    assert held.info["paused"] is True and held.expires_at - time.time() > PAUSED_LEASE - 60
    time.sleep(2.5)  # the run has ended; its lease does not expire
    assert a.state.read_lock().paused
    assert other.state.acquire(info(other, "eve")) is not None  # a deploy is refused
    c, d = FakeSession(sp, tmp_path / "c"), FakeSession(sp, tmp_path / "d")
    got = [c.state.adopt(a.run_id, dict(info(c, "carol"), run=a.run_id)),
           d.state.adopt(a.run_id, dict(info(d, "dave"), run=a.run_id))]
    assert got == [True, False]
    c.state.check_fence(a.run_id)
    assert c.state.read_lock().holder == "carol" and not c.state.read_lock().paused
    assert c.state.lock.held.token == 2
    c.state.release(a.run_id)
    assert c.state.read_lock() is None


def test_release_of_an_ended_run_frees_only_its_own_lock(server, tmp_path):
    sp = spec(server)
    a, b = FakeSession(sp, tmp_path / "a"), FakeSession(sp, tmp_path / "b")
    assert a.state.acquire(info(a)) is None
    b.state.release("some-other-run")
    assert b.state.read_lock().run == a.run_id
    b.state.release(a.run_id)  # a's journal says it ended: its lock is freed from elsewhere
    assert b.state.read_lock() is None


# -- the ledger -----------------------------------------------------------------------------------
def test_journal_batches_round_trip(server, tmp_path):
    sp = spec(server)
    a, b = FakeSession(sp, tmp_path / "a"), FakeSession(sp, tmp_path / "b")
    assert a.state.ident == b.state.ident and a.state.ident.startswith(f"s3://{BUCKET}/")
    a.state.append("".join(json.dumps({"v": 1, "run": a.run_id, "seq": i, "type": "stage"}) + "\n"
                           for i in range(3)))
    b.state.append(json.dumps({"v": 1, "run": b.run_id, "seq": 0, "type": "run.start"}) + "\n")
    events = a.state.read()
    assert [(e["run"], e["seq"]) for e in events] == [(a.run_id, 0), (a.run_id, 1), (a.run_id, 2), (b.run_id, 0)]
    assert len(a.state.ledger.keys()) == 2


# -- backups --------------------------------------------------------------------------------------
def _dump(s: FakeSession, name: str, data: bytes) -> tuple[str, str]:
    path = f"/srv/backups/{name}"
    local = s.host.local(path)
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_backup_off_site_and_back(server, tmp_path):
    sp = spec(server)
    s = FakeSession(sp, tmp_path)
    data = os.urandom(9 * 1024 * 1024 + 17)  # multipart
    path, sha = _dump(s, "prod-predeploy-20261122T000000Z-abc1234.dump", data)
    with pytest.raises(StateError, match="no verified backup"):
        s.state.upload_backup("db1", path, state=RunState(run="r", release=""))
    with pytest.raises(B.BackupCorrupt, match="not the recorded"):
        s.state.upload_backup("db1", path, state=RunState(run="r", release="",
                                                          backup=BackupRef(path, "0" * 64, len(data), "db1")))
    assert s.state.list_backups() == []
    s.state.upload_backup("db1", path, state=RunState(run="r", release="", backup=BackupRef(path, sha, len(data), "db1")))
    [obj] = B.list_backups(s.state.location, "prod", with_sha256=True)
    assert obj.name == Path(path).name and obj.sha256 == sha and obj.size == len(data)
    assert any("copied to s3://" in kw.get("message", "") for _, kw in s.events)

    s.transport.calls.clear()
    s.state.ensure_backup("db1", path, sha)  # still there: nothing fetched
    assert s.transport.calls == []
    s.host.local(path).unlink()
    s.state.ensure_backup("db1", path, sha)
    assert s.host.local(path).read_bytes() == data and s.transport.calls == [("put", "db1", path, "0o600")]
    assert oct(s.host.local(path).stat().st_mode & 0o777) == "0o600"
    s.host.local(path).write_bytes(b"truncated")  # a corrupt copy is replaced, never used
    s.state.ensure_backup("db1", path, sha)
    assert s.host.local(path).read_bytes() == data
    with pytest.raises(StateError, match="no such backup"):
        s.state.ensure_backup("db1", "/srv/backups/prod-predeploy-20261101T000000Z-0000000.dump", sha)


def test_file_archives_off_site_apart_from_the_dumps(server, tmp_path):
    """An archive of the app's files goes to its own folder of the bucket (listed and pruned apart
    from the database's dumps), with the sha256 its run recorded, and comes back verified into a
    host folder that is gone."""
    from deployer.records import FilesBackup

    s = FakeSession(spec(server), tmp_path)
    data = os.urandom(4096)
    path, sha = _dump(s, "files-prod-web1-20261207T020000Z.tar.gz", data)
    st = RunState(run="r", release="", archives=[FilesBackup(host="db1", path=path, sha256=sha, size=len(data))])
    s.state.upload_backup("db1", path, state=st, kind=B.Kind.FILES)
    assert s.state.list_backups() == []  # not among the dumps
    [obj] = B.list_backups(s.state.location, "prod", with_sha256=True, kind=B.Kind.FILES)
    assert obj.key.endswith("/prod/files/files-prod-web1-20261207T020000Z.tar.gz") and obj.sha256 == sha
    shutil.rmtree(s.host.local("/srv/backups"))
    s.state.ensure_backup("db1", path, sha, kind=B.Kind.FILES)
    assert s.host.local(path).read_bytes() == data
    assert s.state.apply_retention({"other"}, B.Kind.FILES) == [obj.key]
    assert B.list_backups(s.state.location, "prod", kind=B.Kind.FILES) == []
