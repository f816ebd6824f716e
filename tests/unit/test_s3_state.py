"""The S3 state backend against a real S3 server: SeaweedFS (`weed server -s3`) on 127.0.0.1.

One server for the session (random free ports, a tmp dir), stopped at the end. Credentials
reach boto3 through its standard chain (environment variables); the metadata service is
disabled so nothing leaves the machine. Each test has its own prefix and an alarm bounding it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid

import boto3
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from deployer.fleet import s3 as weed
from deployer.state import backups as B
from deployer.state.ledger import S3Ledger
from deployer.state.lock import LockLost, S3Lock
from deployer.state.s3 import S3Location, StateError, client

BUCKET = "deployer-state"
TEST_SECONDS = 60


@pytest.fixture(scope="session")
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
    assert not srv.alive()


@pytest.fixture(scope="module", autouse=True)
def aws_env(server):
    """The server's credentials in boto3's standard chain (env), for this module's tests only;
    no profile, no shared files, no instance metadata service."""
    srv = server
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", srv.access_key)
        mp.setenv("AWS_SECRET_ACCESS_KEY", srv.secret_key)
        mp.setenv("AWS_DEFAULT_REGION", srv.region)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        yield


@pytest.fixture(autouse=True)
def bounded():
    """Every test here ends within TEST_SECONDS, whatever hangs."""
    def expire(signum, frame):
        raise TimeoutError(f"test ran longer than {TEST_SECONDS}s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def loc(server) -> S3Location:
    return S3Location(BUCKET, f"t/{uuid.uuid4().hex[:10]}", endpoint_url=server.endpoint_url)


def info(run: str) -> dict:
    return {"holder": "tester", "host": "ci", "pid": os.getpid(), "reason": f"test {run}",
            "started": "2026-11-22T00:00:00.000000Z", "run": run}


def race(fns, timeout: float = 20.0) -> list:
    """Run the callables at once (released together); their results in order."""
    results: list = [None] * len(fns)
    errors: list = []
    gate = threading.Barrier(len(fns))

    def go(i):
        try:
            gate.wait(timeout)
            results[i] = fns[i]()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=go, args=(i,), daemon=True) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a racer hung"
    assert not errors, errors
    return results


# -- the server ---------------------------------------------------------------------------------
def test_server_enforces_conditional_writes(server, loc):
    s3 = client(loc)
    key = loc.key("cond")
    first = s3.put_object(Bucket=BUCKET, Key=key, Body=b"one", IfNoneMatch="*")["ETag"]
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"two", IfNoneMatch="*")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"two", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert e.value.response["Error"]["Code"] == "PreconditionFailed"
    second = s3.put_object(Bucket=BUCKET, Key=key, Body=b"two", IfMatch=first)["ETag"]
    with pytest.raises(ClientError):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"three", IfMatch=first)  # stale ETag
    with pytest.raises(ClientError):
        s3.delete_object(Bucket=BUCKET, Key=key, IfMatch=first)
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"two"
    s3.delete_object(Bucket=BUCKET, Key=key, IfMatch=second)


def test_credentials_are_checked(server, loc):
    bad = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1",
                       aws_access_key_id=server.access_key, aws_secret_access_key="wrong")
    with pytest.raises(ClientError):
        bad.list_objects_v2(Bucket=BUCKET, Prefix=loc.prefix)


def test_stale_weed_is_found_by_its_pidfile_and_stopped(server, tmp_path):
    other = weed.start(tmp_path / "w", "127.0.0.1", 0, timeout=60)
    assert other.alive() and json.loads((tmp_path / "w" / "weed.pid").read_text())["pid"] == other.pid
    assert weed.stop_stale(tmp_path / "w", timeout=1) == [other.pid]
    assert not other.alive() and not (tmp_path / "w" / "weed.pid").exists()
    assert weed.stop_stale(tmp_path / "w") == []


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and iproute2")
def test_weed_runs_inside_a_network_namespace(server, tmp_path):
    ns = f"s3t-{uuid.uuid4().hex[:8]}"  # our own namespace, only loopback; never the fleet's
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=10)
        srv = weed.start(tmp_path / "ns", "127.0.0.1", 0, netns=ns, buckets=("nsb",), timeout=60)
        try:
            ident = subprocess.run(["ip", "netns", "identify", str(srv.pid)], capture_output=True,
                                   text=True, timeout=10).stdout.split()
            assert ident == [ns] and srv.alive()
        finally:
            srv.stop(timeout=1)
        assert not srv.alive()
    finally:
        subprocess.run(["ip", "netns", "del", ns], timeout=10)


# -- the lock -----------------------------------------------------------------------------------
def test_racing_acquire_exactly_one_wins_and_the_others_see_it(loc):
    for round_ in range(3):
        locks = [S3Lock(loc, f"race{round_}") for _ in range(5)]
        got = race([lambda lk=lk, i=i: lk.acquire(info(f"run-{i}"), lease_seconds=30) for i, lk in enumerate(locks)])
        winners = [g for g in got if g is not None]
        assert len(winners) == 1, got
        assert winners[0].token == 1
        for lk, g in zip(locks, got, strict=True):
            if g is None:
                assert lk.seen is not None and lk.seen.run == winners[0].run
        now = locks[0].read()
        assert (now.run, now.token, now.holder, now.host, now.pid, now.reason) == (
            winners[0].run, 1, "tester", "ci", os.getpid(), f"test {winners[0].run}")
        assert not now.expired and now.age > 0 and now.started == "2026-11-22T00:00:00.000000Z"


def test_renew_after_break_is_lock_lost_and_tokens_keep_growing(loc):
    a, b = S3Lock(loc, "prod"), S3Lock(loc, "prod")
    held = a.acquire(info("run-a"), lease_seconds=30)
    assert held and held.token == 1
    assert a.renew().token == 1 and a.check_fence(min_remaining=20).run == "run-a"
    broken = b.break_lock()
    assert broken is not None and broken.run == "run-a" and broken.holder == "tester"
    assert b.read() is None
    with pytest.raises(LockLost, match="free"):
        a.renew()
    with pytest.raises(LockLost):
        a.check_fence()
    again = b.acquire(info("run-b"), lease_seconds=30)
    assert again and again.token == 2  # the broken lock's token is kept: fencing stays monotonic
    assert a.release() is False and b.read().run == "run-b"
    assert b.release() is True and b.read() is None
    assert S3Lock(loc, "prod").acquire(info("run-c"), lease_seconds=30).token == 3


def test_expired_lease_is_taken_over_by_exactly_one_and_fences_the_old_holder(loc):
    old = S3Lock(loc, "stage")
    mine = old.acquire(info("run-old"), lease_seconds=1.0)
    assert mine and old.check_fence().token == 1
    takers = [S3Lock(loc, "stage") for _ in range(2)]
    assert takers[0].acquire(info("early"), lease_seconds=5) is None  # not expired yet
    assert takers[0].seen.run == "run-old" and not takers[0].seen.expired
    time.sleep(max(0.0, mine.expires_at - time.time()) + 0.1)
    assert old.read().expired
    got = race([lambda t=t, i=i: t.acquire(info(f"taker-{i}"), lease_seconds=30) for i, t in enumerate(takers)])
    winners = [g for g in got if g]
    assert len(winners) == 1 and winners[0].token == 2, got
    loser = takers[got.index(None)]
    assert loser.seen.run == winners[0].run
    with pytest.raises(LockLost, match=winners[0].run):
        old.check_fence()
    with pytest.raises(LockLost):
        old.renew()
    assert old.release() is False
    assert takers[got.index(winners[0])].check_fence().fence == f"2:{winners[0].run}"


def test_check_fence_fails_once_our_lease_ran_out(loc):
    now = [1000.0]
    lk = S3Lock(loc, "dev", clock=lambda: now[0])
    assert lk.acquire(info("run-x"), lease_seconds=2)
    lk.check_fence(min_remaining=1.5)
    now[0] += 1.0
    with pytest.raises(LockLost, match="expired"):
        lk.check_fence(min_remaining=1.5)
    lk.renew()  # nobody took it: the heartbeat extends it again
    assert lk.check_fence(min_remaining=1.5).expires_at == 1003.0


def test_acquire_waits_for_a_release(loc):
    a, b = S3Lock(loc, "qa"), S3Lock(loc, "qa", poll=0.05)
    assert a.acquire(info("run-a"), lease_seconds=30)
    timer = threading.Timer(0.5, a.release)
    timer.start()
    t0 = time.monotonic()
    got = b.acquire(info("run-b"), lease_seconds=30, wait=10)
    timer.join()
    assert got and got.token == 2 and 0.4 < time.monotonic() - t0 < 5


class LostAnswers:
    """An S3 client whose next put lands but whose answer never arrives (a read timeout)."""

    def __init__(self, real):
        self.real, self.drop = real, 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def put_object(self, **kw):
        out = self.real.put_object(**kw)
        if self.drop:
            self.drop -= 1
            raise ReadTimeoutError(endpoint_url="http://s3.test/")
        return out


def test_a_write_whose_answer_was_lost_is_recognised_as_ours(loc):
    s3 = LostAnswers(client(loc))
    lk = S3Lock(loc, "flaky", s3=s3)
    s3.drop = 1
    with pytest.raises(ReadTimeoutError):
        lk.acquire(info("run-f"), lease_seconds=30)
    held = lk.acquire(info("run-f"), lease_seconds=30)  # it had landed: ours, not "held by run-f"
    assert held and held.token == 1 and lk.check_fence().run == "run-f"
    s3.drop = 1
    with pytest.raises(ReadTimeoutError):
        lk.renew()
    assert lk.check_fence(min_remaining=20).token == 1  # the unanswered renew is adopted
    s3.drop = 1
    with pytest.raises(ReadTimeoutError):
        lk.renew()
    assert lk.renew().token == 1  # 412 on the stale ETag, then the landed renew is adopted
    other = S3Lock(loc, "flaky")
    assert other.acquire(info("run-g"), lease_seconds=5) is None and other.seen.run == "run-f"


def test_a_corrupt_lock_object_can_be_taken(loc):
    client(loc).put_object(Bucket=BUCKET, Key=loc.key("env1", "lock.json"), Body=b"{not json")
    lk = S3Lock(loc, "env1")
    assert lk.read() is None
    assert lk.acquire(info("run-a"), lease_seconds=5).token == 1


# -- the ledger ---------------------------------------------------------------------------------
def test_ledger_batches_read_back_in_order_past_a_corrupt_object(loc):
    ticks = iter([1_790_000_000.0 + i for i in range(100)])
    led = S3Ledger(loc, "prod", run="20261122T000000Z-abc123", clock=lambda: next(ticks))
    ev = [[{"v": 1, "at": f"t{b}{i}", "type": "stage", "run": "r", "n": b * 10 + i} for i in range(3)]
          for b in range(3)]
    k1 = led.append_batch(ev[0])
    corrupt = led.prefix + k1[len(led.prefix):].replace(".000000Z", ".500000Z")  # sorts between
    client(loc).put_object(Bucket=BUCKET, Key=corrupt, Body=b'[{"v":1, "trunc')
    k2, k3 = led.append_batch(ev[1]), led.append_batch(ev[2])
    assert led.append_batch([]) is None
    assert k1 < corrupt < k2 < k3 and k1.startswith(loc.key("prod", "ledger") + "/")
    report = led.read_report()
    assert report.keys == [k1, corrupt, k2, k3]
    assert report.events == ev[0] + ev[1] + ev[2]
    assert len(report.warnings) == 1 and corrupt in report.warnings[0]
    assert led.read(start_after=corrupt) == ev[1] + ev[2]


def test_ledger_order_survives_a_clock_step_back_and_pagination(loc):
    times = iter([2000.0, 2001.0, 1500.0] + [1500.0 + i for i in range(30)])
    led = S3Ledger(loc, "dev", run="run/with spaces", clock=lambda: next(times))
    for n in range(25):
        led.append_batch([{"v": 1, "type": "x", "run": "r", "n": n}])
    keys = led.keys(page_size=7)
    assert len(keys) == 25 and "run_with_spaces" in keys[0]
    assert [e["n"] for e in led.read_report(page_size=7).events] == list(range(25))
    other = S3Ledger(loc, "dev", run="second")
    other.append_batch([{"v": 1, "type": "late", "run": "second"}])
    assert led.read()[-1]["type"] == "late"  # real time now > the fake 1970s above


def test_ledger_order_between_writers_is_the_locks_not_their_clocks(loc):
    """Run A holds the lock and writes; then run B, whose clock is an hour behind A's, takes the
    lock and writes: B's batches come after A's (its token is larger), and so does a write by a
    process holding no lock (it writes under the last token handed out). Keys written before
    tokens (a time first) are read first."""
    env = "clock-" + uuid.uuid4().hex[:6]
    before_tokens = f"{loc.env_prefix(env, 'ledger')}20991231T000000.000000Z-old-000001.json"  # a time first
    client(loc).put_object(Bucket=loc.bucket, Key=before_tokens,
                           Body=json.dumps([{"v": 1, "type": "before tokens"}]).encode())
    a_lock, b_lock = S3Lock(loc, env), S3Lock(loc, env)
    a = S3Ledger(loc, env, run="a", clock=lambda: 2_000_000_000.0, epoch=a_lock.epoch)
    b = S3Ledger(loc, env, run="b", clock=lambda: 2_000_000_000.0 - 3600, epoch=b_lock.epoch)
    nobody = S3Ledger(loc, env, run="c", clock=lambda: 1_000_000_000.0, epoch=S3Lock(loc, env).epoch)
    assert a_lock.acquire(info("a"), 30) is not None
    a.append_batch([{"v": 1, "type": "a1"}])
    a.append_batch([{"v": 1, "type": "a2"}])
    assert a_lock.release()
    assert b_lock.acquire(info("b"), 30) is not None and b_lock.held.token > 1
    b.append_batch([{"v": 1, "type": "b1"}])
    b.append_batch([{"v": 1, "type": "b2"}])
    assert b_lock.release()
    nobody.append_batch([{"v": 1, "type": "lockless"}])  # its clock is years behind
    assert [e["type"] for e in a.read()] == ["before tokens", "a1", "a2", "b1", "b2", "lockless"]


def test_ledger_never_overwrites_a_batch(loc):
    led = S3Ledger(loc, "qa", run="same", clock=lambda: 3000.0)
    twin = S3Ledger(loc, "qa", run="same", clock=lambda: 3000.0)
    k1 = led.append_batch([{"v": 1, "type": "a"}])
    k2 = twin.append_batch([{"v": 1, "type": "b"}])  # same first key: skips to the next seq
    assert k1 != k2 and [e["type"] for e in led.read()] == ["a", "b"]


# -- backups ------------------------------------------------------------------------------------
def test_backup_multipart_round_trip_and_tamper_refused(loc, tmp_path):
    src = tmp_path / "prod-predeploy-20261122T000000Z.dump"
    src.write_bytes(os.urandom(9 * 1024 * 1024 + 4321))
    sha = B.sha256_file(src)
    key = B.backup_key(loc, "prod", src.name)
    done = B.upload(loc, src, key, sha)
    assert done.sha256 == sha and done.size == src.stat().st_size
    assert done.etag.strip('"').endswith("-2")  # two parts: multipart
    assert done.checksum_sha256  # the server verified a SHA256 checksum on arrival
    assert B.upload(loc, src, key, sha).etag == done.etag  # same backup again: a no-op
    other = tmp_path / "other.dump"
    other.write_bytes(b"different")
    with pytest.raises(StateError, match="never overwritten"):
        B.upload(loc, other, key, B.sha256_file(other))
    with pytest.raises(B.BackupCorrupt):
        B.upload(loc, other, B.backup_key(loc, "prod", "x.dump"), sha)  # local file is not that dump

    dest = tmp_path / "restore" / src.name
    dest.parent.mkdir()
    assert B.download(loc, key, dest, sha) == dest and dest.read_bytes() == src.read_bytes()
    dest.unlink()
    assert B.ensure_local(loc, key, dest, sha) == (dest, True)
    assert B.ensure_local(loc, key, dest, sha) == (dest, False)

    s3 = client(loc)  # tamper: other bytes under the same key, metadata still claiming `sha`
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"corrupted" * 1000, Metadata={"sha256": sha})
    dest.unlink()
    with pytest.raises(B.BackupCorrupt, match="download removed"):
        B.download(loc, key, dest, sha)
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    with pytest.raises(B.BackupCorrupt, match="not the expected"):
        B.download(loc, key, dest, "0" * 64)


def test_retention_deletes_only_what_is_not_kept(loc, tmp_path):
    names = [f"prod-nightly-202611{d:02d}T020000Z.dump" for d in range(1, 6)] + ["notes.txt"]
    for n in names:
        f = tmp_path / n
        f.write_bytes(n.encode())
        B.upload(loc, f, B.backup_key(loc, "prod", n), B.sha256_file(f))
    f = tmp_path / "stage.dump"
    f.write_bytes(b"s")
    B.upload(loc, f, B.backup_key(loc, "stage", "stage-nightly-20261101T020000Z.dump"), B.sha256_file(f))
    keep = {names[4], names[2], B.backup_key(loc, "prod", names[0])}  # names or keys
    assert B.apply_retention(loc, "prod", keep, dry_run=True) == [B.backup_key(loc, "prod", n) for n in names[1:4:2]]
    deleted = B.apply_retention(loc, "prod", keep)
    assert deleted == [B.backup_key(loc, "prod", names[1]), B.backup_key(loc, "prod", names[3])]
    left = B.list_backups(loc, "prod", with_sha256=True)
    assert [b.name for b in left] == ["notes.txt", names[0], names[2], names[4]]  # key order
    assert all(len(b.sha256) == 64 for b in left)
    assert [b.name for b in B.list_backups(loc, "stage")] == ["stage-nightly-20261101T020000Z.dump"]
    with pytest.raises(StateError, match="refused"):
        B.apply_retention(loc, "prod", set())
    assert B.apply_retention(loc, "prod", keep) == []


def test_location_keys():
    loc = S3Location("b", "/teams/web/")
    assert loc.prefix == "teams/web" and loc.key("prod", "lock.json") == "teams/web/prod/lock.json"
    assert S3Location("b").env_prefix("prod", "ledger") == "prod/ledger/"
    assert S3Location.parse("s3://bkt/a/b").prefix == "a/b"
    with pytest.raises(ValueError):
        S3Location("b").env_prefix("a/b")
