"""Release artifacts' host programs, run for real on this machine (sh, python3, HTTP on
loopback): pack on a "build host" tree, serve, fetch into another tree, hard links from the
previous release, refusals."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess

import pytest

from deployer.commands import artifact as A
from deployer.commands import releases as R
from deployer.layout import Layout


def sh(cmd, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", cmd.script], input=stdin, capture_output=True, text=True, timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(root, files: dict[str, str], links: dict[str, str] = {}) -> None:  # noqa: B006
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for rel, target in links.items():
        os.symlink(target, root / rel)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def hosts(tmp_path):
    """Two deploy trees: the build host's and another app host's."""
    b, o = tmp_path / "build" / "app", tmp_path / "other" / "app"
    for d in (b, o):
        (d / "releases").mkdir(parents=True)
    return b, o


def ship(b, o, release: str, previous: str | None, port: int) -> tuple[str, int, int]:
    packed = sh(A.pack(str(b), release, [".env"]))
    assert packed.returncode == 0, packed.stderr
    sha, size, _ = A.parse(packed.stdout.splitlines()[-1])
    token = "tok" + release
    started = sh(A.serve(str(b), release, "127.0.0.1", port, 30), stdin=token + "\n")
    assert started.returncode == 0, started.stderr
    try:
        got = sh(A.fetch(str(o), release, previous), stdin=A.urls("127.0.0.1", port, token, release))
        assert got.returncode == 0, got.stderr
    finally:
        assert sh(A.stop(str(b))).returncode == 0
    fsha, fetched, linked = A.parse(got.stdout.splitlines()[-1])
    assert fsha == sha and (fetched == size or (linked and fetched < size))  # whole, or only what differs
    assert digest(b / os.path.relpath(Layout(str(b)).artifact(release, ".tar"), str(b))) == sha
    return sha, fetched, linked


def test_a_release_packed_once_arrives_the_same_and_links_what_did_not_change(hosts):
    b, o = hosts
    files = {"app.py": "print(1)\n", "lib/dep.py": "x = 1\n" * 1000, "static/a.css": "body{}\n"}
    r1, r2 = "20261207T080000Z-aaaaaaa", "20261207T090000Z-bbbbbbb"
    tree(b / "releases" / r1, {**files, ".env": "SECRET=1\n"}, {"storage": str(b / "shared/storage")})
    os.chmod(b / "releases" / r1 / "app.py", 0o750)
    ship(b, o, r1, None, free_port())
    got = o / "releases" / r1
    assert (got / "app.py").read_text() == "print(1)\n" and (got / "lib/dep.py").read_text() == files["lib/dep.py"]
    assert os.stat(got / "app.py").st_mode & 0o777 == 0o750
    assert os.readlink(got / "storage") == str(b / "shared/storage")
    assert not (got / ".env").exists(), "a release's own secret file never goes in the artifact"
    # the next release: one file changed, one added; the rest is hard-linked from r1
    tree(b / "releases" / r2, {**files, "app.py": "print(2)\n", "new.txt": "n\n"})
    _, fetched, linked = ship(b, o, r2, r1, free_port())
    # only the two files that differ came (with the folders and links), not lib/dep.py's 6 kB
    assert fetched + 6000 <= os.path.getsize(b / ".deployer/artifacts" / f"{r2}.tar")
    new = o / "releases" / r2
    assert linked == 2
    assert os.stat(new / "lib/dep.py").st_ino == os.stat(got / "lib/dep.py").st_ino
    assert os.stat(new / "app.py").st_ino != os.stat(got / "app.py").st_ino
    assert (new / "app.py").read_text() == "print(2)\n" and (got / "app.py").read_text() == "print(1)\n"
    man = (o / ".deployer/artifacts" / f"{r2}.manifest").read_text().splitlines()
    assert sorted(line.split(" ", 2)[2] for line in man) == ["app.py", "lib/dep.py", "new.txt", "static/a.css"]
    assert f"{digest(new / 'app.py')} 644 app.py" in man
    # removing a release: the build host keeps its artifact (pruned apart, `artifact.keep`);
    # a host that only unpacked it drops the manifest with the release
    assert sh(R.remove(str(b), [r1])).returncode == 0 and sh(R.remove(str(o), [r1])).returncode == 0
    assert sorted(p.name for p in (b / ".deployer/artifacts").glob(f"{r1}.*")) == [
        f"{r1}.manifest", f"{r1}.sha256", f"{r1}.tar"]
    assert not list((o / ".deployer/artifacts").glob(f"{r1}.*"))
    assert sh(A.prune(str(b), [r1])).returncode == 0
    assert not list((b / ".deployer/artifacts").glob(f"{r1}.*"))


def test_a_corrupted_artifact_is_refused_before_anything_is_unpacked(hosts):
    b, o = hosts
    r1 = "20261207T080000Z-aaaaaaa"
    tree(b / "releases" / r1, {"app.py": "print(1)\n"})
    assert sh(A.pack(str(b), r1, [])).returncode == 0
    tar = b / ".deployer/artifacts" / f"{r1}.tar"
    data = bytearray(tar.read_bytes())
    data[600] ^= 0xFF
    tar.write_bytes(bytes(data))
    port = free_port()
    assert sh(A.serve(str(b), r1, "127.0.0.1", port, 30), stdin="t\n").returncode == 0
    try:
        got = sh(A.fetch(str(o), r1, None), stdin=A.urls("127.0.0.1", port, "t", r1))
        wrong = sh(A.fetch(str(o), r1, None), stdin=A.urls("127.0.0.1", port, "guess", r1))
    finally:
        sh(A.stop(str(b)))
    assert got.returncode != 0 and "nothing unpacked" in got.stderr
    assert not (o / "releases" / r1).exists()
    assert wrong.returncode != 0 and "404" in wrong.stderr  # only the capability path answers


class _Bucket:
    """A bucket as the hosts see it through presigned URLs: PUT and GET of a path whose query
    string must be the signature handed out (else 403), on loopback."""

    def __init__(self):
        import http.server
        import threading

        objects, bucket = {}, self

        class H(http.server.BaseHTTPRequestHandler):
            def _key(s):
                path, _, query = s.path.partition("?")
                return path if query == "X-Amz-Signature=ok" else None

            def do_PUT(s):  # noqa: N802
                key = s._key()
                body = s.rfile.read(int(s.headers.get("Content-Length", 0)))
                if key is None:
                    s.send_error(403)
                    return
                objects[key] = body
                bucket.puts.append(key)
                s.send_response(200)
                s.send_header("Content-Length", "0")
                s.end_headers()

            def do_GET(s):  # noqa: N802
                key = s._key()
                if key is None or key not in objects:
                    s.send_error(403 if key is None else 404)
                    return
                s.send_response(200)
                s.send_header("Content-Length", str(len(objects[key])))
                s.end_headers()
                s.wfile.write(objects[key])

            def log_message(s, *a):
                pass

        self.objects, self.puts = objects, []
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def urls(self, release: str, exts: tuple[str, ...], sig: str = "ok") -> str:
        port = self.srv.server_address[1]
        return "".join(f"http://127.0.0.1:{port}/b/env/artifacts/{release}{e}?X-Amz-Signature={sig}\n" for e in exts)


def test_an_artifact_goes_through_the_bucket_with_presigned_urls(hosts):
    """`artifact.store: bucket`: the build host uploads the three files with one curl to the
    presigned PUT URLs on stdin (the sha256 last: it says the artifact is whole); another host
    fetches them with the presigned GET URLs and unpacks the same bytes. A wrong signature is
    refused with nothing unpacked."""
    from deployer.state.artifacts import FETCH_ORDER, UPLOAD_ORDER

    b, o = hosts
    r1 = "20261207T080000Z-aaaaaaa"
    tree(b / "releases" / r1, {"app.py": "print(1)\n", "lib/x.py": "x = 1\n"})
    packed = sh(A.pack(str(b), r1, []))
    sha, size, _ = A.parse(packed.stdout.splitlines()[-1])
    bucket = _Bucket()
    try:
        up = sh(A.upload(str(b), r1), stdin=bucket.urls(r1, UPLOAD_ORDER))
        assert up.returncode == 0, up.stderr
        assert [k.rsplit("/", 1)[1] for k in bucket.puts] == [f"{r1}.tar", f"{r1}.manifest", f"{r1}.sha256"]
        assert bucket.objects[f"/b/env/artifacts/{r1}.sha256"].split()[0].decode() == sha
        denied = sh(A.fetch(str(o), r1, None, "the bucket"), stdin=bucket.urls(r1, FETCH_ORDER, sig="forged"))
        assert denied.returncode != 0 and "cannot fetch it from the bucket" in denied.stderr
        assert not (o / "releases" / r1).exists()
        got = sh(A.fetch(str(o), r1, None, "the bucket"), stdin=bucket.urls(r1, FETCH_ORDER))
        assert got.returncode == 0, got.stderr
        assert A.parse(got.stdout.splitlines()[-1])[:2] == (sha, size)
        assert (o / "releases" / r1 / "lib/x.py").read_text() == "x = 1\n"
        assert "Signature" not in A.upload(str(b), r1).script + A.fetch(str(o), r1, None).script
    finally:
        bucket.srv.shutdown()


def test_a_changed_file_that_arrives_other_than_its_manifest_says_is_refused(hosts):
    """Only the files that differ come from the build host's server; each is checked against
    the manifest's sha256 before the release moves into place (the tar's own sha256 cannot be:
    the host has only some of its members)."""
    import tarfile

    b, o = hosts
    r1, r2 = "20261207T080000Z-aaaaaaa", "20261207T090000Z-bbbbbbb"
    tree(b / "releases" / r1, {"app.py": "print(1)\n", "lib/dep.py": "x = 1\n" * 100})
    ship(b, o, r1, None, free_port())
    tree(b / "releases" / r2, {"app.py": "print(2)\n", "lib/dep.py": "x = 1\n" * 100})
    assert sh(A.pack(str(b), r2, [])).returncode == 0
    tar = b / ".deployer/artifacts" / f"{r2}.tar"
    with tarfile.open(tar) as t:
        at = t.getmember("app.py").offset_data
    data = bytearray(tar.read_bytes())
    data[at + 6] = ord("9")  # print(9): the bytes the server sends are not the packed ones
    tar.write_bytes(bytes(data))
    port = free_port()
    assert sh(A.serve(str(b), r2, "127.0.0.1", port, 30), stdin="t\n").returncode == 0
    try:
        got = sh(A.fetch(str(o), r2, r1), stdin=A.urls("127.0.0.1", port, "t", r2))
    finally:
        sh(A.stop(str(b)))
    assert got.returncode != 0 and "another sha256 than its manifest" in got.stderr, got.stderr
    assert not (o / "releases" / r2).exists() and not (o / "releases" / f"{r2}.partial").exists()
    assert (o / "releases" / r1 / "app.py").read_text() == "print(1)\n"


def test_a_server_that_cannot_listen_fails_its_step_with_the_reason(hosts):
    b, _ = hosts
    r1 = "20261207T080000Z-aaaaaaa"
    tree(b / "releases" / r1, {"app.py": "print(1)\n"})
    assert sh(A.pack(str(b), r1, [])).returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        res = sh(A.serve(str(b), r1, "127.0.0.1", s.getsockname()[1], 30), stdin="t\n")
    assert res.returncode == 1 and "did not start" in res.stderr and "Address already in use" in res.stderr


def test_the_artifact_holds_each_file_once_with_its_bytes_mode_and_second_and_no_owner(hosts):
    """What the build host packs: every file, folder and link of the release but its own secret
    files (nested ones too), owned by no one (uid 0, no names), mtimes to the second; the
    manifest has each regular file's sha256 and mode; a short name costs one header block (no
    extended header per file), a long one its own."""
    import tarfile

    b, _ = hosts
    rel = "20261207T080000Z-aaaaaaa"
    root = b / "releases" / rel
    deep = "lib/" + "d" * 60 + "/" + "m" * 60 + ".py"  # past ustar's 100 characters
    files = {"app.py": "print(1)\n", "lib/dep.py": "x = 1\n" * 300, deep: "y = 2\n", "config/secret.env": "K=1\n",
             ".env": "SECRET=1\n"}
    tree(root, files, {"storage": "/srv/shared/storage"})
    os.chmod(root / "app.py", 0o750)
    os.utime(root / "app.py", (1_700_000_000.75, 1_700_000_000.75))
    os.link(root / "lib/dep.py", root / "lib/same.py")  # a hard link inside the release
    packed = sh(A.pack(str(b), rel, [".env", "config/secret.env"]))
    assert packed.returncode == 0, packed.stderr
    sha, size, _ = A.parse(packed.stdout.splitlines()[-1])
    tar = b / ".deployer/artifacts" / f"{rel}.tar"
    assert digest(tar) == sha and tar.stat().st_size == size
    with tarfile.open(tar) as t:
        members = {m.name: m for m in t}
        for m in members.values():
            assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "") and m.mtime == int(m.mtime)
        assert members["app.py"].mtime == 1_700_000_000 and members["app.py"].mode == 0o750
        for name in ("app.py", "lib/dep.py", deep):
            assert t.extractfile(members[name]).read().decode() == files[name]
        assert members["lib/same.py"].islnk() and members["lib/same.py"].linkname == "lib/dep.py"
        assert members["storage"].issym() and members["storage"].linkname == "/srv/shared/storage"
        assert ".env" not in members and "config/secret.env" not in members and "config" in members
        # one 512-byte header a member, its data padded to 512, the long name's extended header,
        # the end of the archive and the padding to a 10 kB record
        data = sum(512 + (m.size + 511) // 512 * 512 for m in members.values())
        assert size <= data + 1024 + 10240
    man = (b / ".deployer/artifacts" / f"{rel}.manifest").read_text().splitlines()
    assert man == sorted(f"{digest(root / n)} {os.stat(root / n).st_mode & 0o7777:o} {n}"
                         for n in ("app.py", "lib/dep.py", deep))


def test_the_token_is_never_in_a_command_line():
    cmd = A.serve("/srv/app", "r", "10.0.0.1", 4242, 60)
    assert "DEPLOYER_ARTIFACT_TOKEN" in cmd.script and "<artifact server>" in cmd.display
    assert A.fetch("/srv/app", "r", "p").display == "artifact fetch r into /srv/app/releases/r (linking from p)"


def test_parse_refuses_what_is_not_a_digest_line():
    with pytest.raises(ValueError, match="unexpected output"):
        A.parse("Traceback (most recent call last):")
    assert A.parse("a" * 64 + " 10") == ("a" * 64, 10, 0)


# -- the plan of a deploy with a build host ------------------------------------------------------
def _plan(build: str, secret: bool = False):
    from test_engine_pure import REL, ROOT, canned_facts

    from deployer.config import load_config
    from deployer.engine.deploy_plan import DeployInputs, deploy_plan
    from deployer.shell import Secret

    cfg = load_config("prod", root=ROOT, overrides={"artifact.build": build}, environ={})
    facts = canned_facts(cfg)
    inp = DeployInputs(release=REL, commit=facts.commit, ref="v2", maintenance=False, token=7,
                       artifact_token=Secret("capability-xyz") if build != "each" else None,
                       artifact_port=43210,
                       secret_files=((".env", Secret("APP_KEY=s3cr3t\n")),) if secret else ())
    return cfg, deploy_plan(cfg, facts, inp)


def test_a_build_host_builds_once_and_the_others_fetch_from_it():
    from deployer.engine.plan import RecordArtifact

    cfg, plan = _plan("web2")
    pulls = [st for st in plan.stages if st.name == "pull"]
    assert [st.detail.split(": ")[-1] for st in pulls] == ["built on web2", "artifact from web2:43210",
                                                          "artifact server stopped"]
    build, fetch, stop = pulls
    assert [lane.subject for lane in build.lanes] == ["web2"]
    assert [a.what for a in build.actions()] == ["pull", "pack artifact", "artifact server"]
    assert build.actions()[1].records == (RecordArtifact(0, plan.release, built=True),)
    others = {h.name for h in cfg.app_hosts} - {"web2"}
    assert {lane.subject for lane in fetch.lanes} == others
    for a in fetch.actions():
        assert a.what == "fetch artifact" and a.records == (RecordArtifact(0, plan.release, built=False),)
        addr = cfg.host("web2").address
        assert a.stdin.reveal() == A.urls(addr, 43210, "capability-xyz", plan.release)
        assert a.stdin.reveal().splitlines()[0] == f"http://{addr}:43210/capability-xyz/{plan.release}.sha256"
    assert stop.best_effort and [a.host for a in stop.actions()] == ["web2"]
    assert not any(cmd for st in pulls for a in st.actions() for cmd in [a.display()] if "capability-xyz" in cmd)
    assert "capability-xyz" not in "".join(a.script.script for st in pulls for a in st.actions())


def test_secret_files_stay_out_of_the_artifact_and_each_host_writes_its_own():
    cfg, plan = _plan("first", secret=True)
    pulls = [st for st in plan.stages if st.name == "pull"]
    pack = next(a for a in pulls[0].actions() if a.what == "pack artifact")
    assert pack.command.display.endswith(" .env")  # excluded by name
    for lane in pulls[1].lanes:
        assert [a.what for a in lane.actions] == ["fetch artifact", "secret file .env"]


def test_without_a_build_host_each_host_builds():
    cfg, plan = _plan("each")
    pulls = [st for st in plan.stages if st.name == "pull"]
    assert len(pulls) == 1 and {lane.subject for lane in pulls[0].lanes} == {h.name for h in cfg.app_hosts}
    assert not any("artifact" in a.display() for a in pulls[0].actions())


# -- `rollback --to` a release no host has: its artifact, kept by the build host -----------------
def test_rollback_to_a_release_no_host_has_fetches_the_artifact_the_build_host_keeps():
    from test_engine_pure import ROOT

    from deployer.config import load_config
    from deployer.engine.back_plan import from_artifact, manual_rollback_plan, rebuild_of
    from deployer.engine.plan import RecordArtifact
    from deployer.facts import Facts
    from deployer.ledger import History
    from deployer.shell import Secret

    old, now = "20261101T000000Z-bbbbbbb", "20261104T000000Z-ccccccc"
    sha = "ab" * 32
    ledger = [{"type": "deploy.start", "run": "r1", "release": old, "ref": "v2", "commit": "b" * 40},
              {"type": "artifact", "run": "r1", "release": old, "host": "web1", "sha256": sha, "size": 10,
               "built": True},
              {"type": "deploy.end", "run": "r1", "outcome": "success"}]
    cfg = load_config("prod", root=ROOT, overrides={"artifact.build": "first"}, environ={})
    history = History.fold(ledger)
    assert history.releases[old].artifact == sha
    facts = Facts(schema=2)
    for h in cfg.app_hosts:
        facts.hosts[h.name] = R.HostState(current=now, releases=[now], artifacts=[old] if h.name == "web1" else [])
    token = Secret("cap-123")
    rebuild = from_artifact(cfg, rebuild_of(history, old, facts), history, old, facts, token, 40000)
    assert rebuild.source == "web1" and "fetched there from the artifact web1 keeps" in rebuild.how()
    plan = manual_rollback_plan(cfg, old, cfg.app_hosts, backup=None, safety_path=None, token=3, rebuild=rebuild)
    pulls = [st for st in plan.stages if st.name == "pull"]
    assert [a.what for a in pulls[0].actions()] == ["artifact server"]
    fetches = [a for a in pulls[1].actions() if a.what == "fetch artifact"]
    assert sorted(a.host for a in fetches) == sorted(h.name for h in cfg.app_hosts)  # web1 from itself
    assert all(a.records == (RecordArtifact(0, old, built=False, sha256=sha),) for a in fetches)
    assert "git" not in " ".join(a.display() for st in pulls for a in st.actions())
    assert all("cap-123" not in a.display() for st in plan.stages for a in st.actions())
    # the build host no longer keeps it, or the ledger has no sha256 for it: built from the commit
    for h in facts.hosts.values():
        h.artifacts = []
    assert from_artifact(cfg, rebuild_of(history, old, facts), history, old, facts, token, 40000).source is None
    assert from_artifact(cfg, rebuild_of(History.fold(ledger[:1]), old, facts), History.fold(ledger[:1]), old,
                         facts, token, 40000).source is None


def test_the_build_host_keeps_artifacts_beyond_keep_releases_and_prunes_past_artifact_keep():
    from test_engine_pure import REL, ROOT, canned_facts

    from deployer.config import load_config
    from deployer.engine.deploy_plan import DeployInputs, artifacts_to_prune
    from deployer.shell import Secret

    cfg = load_config("prod", root=ROOT, overrides={"artifact.build": "first", "artifact.keep": 3}, environ={})
    facts = canned_facts(cfg)
    olds = [f"202610{d:02d}T000000Z-aaaaaaa" for d in range(1, 7)]
    facts.hosts["web1"].artifacts = list(olds)
    inp = DeployInputs(release=REL, commit=facts.commit, ref="v2", maintenance=False,
                       artifact_token=Secret("t"), order=tuple(olds), bad=frozenset({olds[5]}),
                       protected=frozenset({olds[0]}))
    # the newest 3 good ones stay (the new one counts), the protected one stays, the bad one goes
    assert artifacts_to_prune(cfg, facts, inp) == [olds[1], olds[2], olds[5]]
    assert R.parse_state(R.STATE_MARK + "\nartifact=" + olds[0] + "\n").artifacts == [olds[0]]


# -- whole runs through the recording transport ---------------------------------------------------
def _run(tmp_path, monkeypatch, unpacked: dict[str, str]):
    import io

    from recording import FakeHttp, Fleet, RecordingTransport, fake_bake
    from test_engine_pure import ROOT

    from deployer.config import load_config
    from deployer.engine.deploy import DeployRun
    from deployer.output import JsonReporter
    from deployer.session import Session

    monkeypatch.setenv("DEPLOYER_STATE_DIR", str(tmp_path / "state"))
    cfg = load_config("prod", root=ROOT, overrides={"artifact.build": "first"}, environ={})
    fleet = Fleet([h.name for h in cfg.hosts], "20261101T000000Z-aaaaaaa")
    fleet.unpacked = unpacked
    out = io.StringIO()
    rep = JsonReporter(out)
    t = RecordingTransport(fleet)
    d = DeployRun(cfg, rep, ref="v2", session=Session(cfg, rep, transport=t, http_check=FakeHttp(), bake=fake_bake))
    try:
        code = d.run()
    except Exception as exc:  # noqa: BLE001 - the CLI's exit code of it
        code = getattr(exc, "exit_code", 99)
    ledger = [json.loads(line) for line in fleet.ledger.splitlines() if line.strip()]
    return cfg, fleet, code, ledger


def test_every_host_must_unpack_the_build_hosts_sha256(tmp_path, monkeypatch):
    from recording import ARTIFACT_SHA

    cfg, fleet, code, ledger = _run(tmp_path, monkeypatch, {})
    assert code == 0
    arts = [e for e in ledger if e["type"] == "artifact"]
    assert [e["host"] for e in arts if e["built"]] == ["web1"]
    assert sorted(e["host"] for e in arts if not e["built"]) == sorted(h.name for h in cfg.app_hosts[1:])
    assert {e["sha256"] for e in arts} == {ARTIFACT_SHA}

    # web3 unpacked other bytes: the deploy fails before any host is switched, and says why
    cfg, fleet, code, ledger = _run(tmp_path / "2", monkeypatch, {"web3": "cd" * 32})
    assert code == 1
    assert set(fleet.current.values()) == {"20261101T000000Z-aaaaaaa"}
    failed = [e for e in ledger if e["type"] == "step.failed"]
    assert failed and failed[0]["host"] == "web3"
    assert f"web3 unpacked sha256 {'cd' * 32}, the build host packed {ARTIFACT_SHA}" in failed[0]["stderr"]
    assert [e["outcome"] for e in ledger if e["type"] == "deploy.end"] == ["rolled_back"]


# -- artifacts through the state's bucket (`artifact.store: bucket`) ---------------------------
def _bucket_cfg(**extra):
    from test_engine_pure import ROOT

    from deployer.config import load_config

    return load_config("prod", root=ROOT, environ={}, overrides={
        "artifact.build": "web2", "state.backend": "s3", "state.bucket": "acme-deploy", **extra})


def test_with_s3_state_the_artifact_goes_through_the_bucket_and_no_server_runs():
    from test_engine_pure import REL, canned_facts

    from deployer.engine.deploy_plan import BucketUrls, DeployInputs, deploy_plan
    from deployer.engine.plan import PruneArtifacts, RecordArtifact
    from deployer.shell import Secret

    cfg = _bucket_cfg()
    assert cfg.artifact_bucket
    facts = canned_facts(cfg)
    urls = BucketUrls(put=Secret("https://put?X-Amz-Signature=p\n" * 3), get=Secret("https://get?X-Amz-Signature=g\n" * 3))
    inp = DeployInputs(release=REL, commit=facts.commit, ref="v2", maintenance=False, token=7, artifact_bucket=urls,
                       order=("r1", "r2", "r3"), bad=frozenset({"r2"}), protected=frozenset({"r0"}))
    plan = deploy_plan(cfg, facts, inp)
    pulls = [st for st in plan.stages if st.name == "pull"]
    build, fetch = pulls
    assert [a.what for a in build.actions()] == ["pull", "pack artifact", "artifact upload"]
    assert build.actions()[2].stdin is urls.put and build.detail.endswith("built on web2, to the bucket")
    assert {a.host for a in fetch.actions()} == {h.name for h in cfg.app_hosts} - {"web2"}
    for a in fetch.actions():
        assert a.stdin is urls.get and a.records == (RecordArtifact(0, REL, built=False),)
        assert "from the bucket" in a.command.script
    assert not [a for st in plan.stages for a in st.actions() if "server" in a.what]
    assert not [row for row in plan.rows() if "Signature" in row[2]]
    retention = [a.backend for st in plan.stages for a in st.actions() if isinstance(a.backend, PruneArtifacts)]
    assert retention == [PruneArtifacts(tuple(sorted(("r0", "r1", "r3", REL))))]
    assert [st for st in plan.stages if st.detail == "artifacts in the bucket pruned"][0].best_effort
    # host to host when asked, and bucket refused without S3 state
    assert not _bucket_cfg(**{"artifact.store": "host"}).artifact_bucket
    from test_engine_pure import ROOT

    from deployer.config import load_config
    from deployer.errors import ConfigError

    with pytest.raises(ConfigError, match="artifact.store"):
        load_config("prod", root=ROOT, environ={}, overrides={"artifact.build": "web2", "artifact.store": "bucket"})


def test_rollback_to_a_release_only_the_bucket_keeps_fetches_it_from_there():
    from deployer.engine.back_plan import from_artifact, manual_rollback_plan, rebuild_of
    from deployer.engine.plan import RecordArtifact
    from deployer.facts import Facts
    from deployer.ledger import History
    from deployer.shell import Secret

    old, now, sha = "20261101T000000Z-bbbbbbb", "20261104T000000Z-ccccccc", "cd" * 32
    history = History.fold([
        {"type": "deploy.start", "run": "r1", "release": old, "ref": "v2", "commit": "b" * 40},
        {"type": "artifact", "run": "r1", "release": old, "host": "web2", "sha256": sha, "size": 10, "built": True},
        {"type": "deploy.end", "run": "r1", "outcome": "success"}])
    cfg = _bucket_cfg()
    facts = Facts(schema=2)
    for h in cfg.app_hosts:  # the build host is gone and came back empty: no host keeps anything
        facts.hosts[h.name] = R.HostState(current=now, releases=[now], artifacts=[])
    urls = Secret("https://get?X-Amz-Signature=g\n" * 3)
    rebuild = from_artifact(cfg, rebuild_of(history, old, facts), history, old, facts, bucket=(sha, urls))
    assert rebuild.bucket is urls and "from its artifact in the bucket" in rebuild.how()
    plan = manual_rollback_plan(cfg, old, cfg.app_hosts, backup=None, safety_path=None, token=3, rebuild=rebuild)
    pulls = [st for st in plan.stages if st.name == "pull"]
    assert len(pulls) == 1 and pulls[0].detail == f"artifact of {old} from the bucket"
    fetches = [a for a in pulls[0].actions() if a.what == "fetch artifact"]
    assert sorted(a.host for a in fetches) == sorted(h.name for h in cfg.app_hosts)
    assert all(a.stdin is urls and a.records == (RecordArtifact(0, old, built=False, sha256=sha),) for a in fetches)
    assert [a.what for a in pulls[0].actions()].count("link shared files") == len(fetches)
    # the bucket's copy names another sha256 than the ledger's: not that one (built from the commit)
    other = from_artifact(cfg, rebuild_of(history, old, facts), history, old, facts, bucket=("ef" * 32, urls))
    assert other.bucket is None and other.source is None and "built again" in other.how()
    # the bucket has none, the build host still keeps it: served by the build host for this run
    from deployer.engine.deploy import artifact_server

    assert artifact_server(cfg) == {}  # a deploy through the bucket starts no server
    facts.hosts["web2"].artifacts = [old]
    local = from_artifact(cfg, rebuild_of(history, old, facts), history, old, facts, bucket=None,
                          **artifact_server(cfg, fallback=True))
    assert local.source == "web2" and local.bucket is None and local.token is not None
