"""File backups (work in progress: the commands, run by a real shell on real files; not yet in
any plan)."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from deployer.commands import files as F


def sh(cmd) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", cmd.script], capture_output=True, text=True)


def tree(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_an_archive_is_whole_checksummed_and_restores_each_path_exactly(tmp_path):
    shared = tmp_path / "shared"
    (shared / "storage/app/public/avatars").mkdir(parents=True)
    (shared / "storage/app/public/avatars/1.png").write_bytes(b"\x89PNG one")
    (shared / "storage/app/public/cache.tmp").write_text("skip me")
    (shared / "media").mkdir()
    (shared / "media/a b.pdf").write_bytes(b"%PDF quoted name")
    (shared / ".env").write_text("SECRET=1")  # not listed: never archived
    dest = tmp_path / "backups" / F.archive_name("prod", "web1", "20261207T020000Z")
    res = sh(F.archive(str(shared), ["storage/app/public", "media", "missing/dir"], ["*.tmp"], str(dest)))
    assert res.returncode == 0, res.stderr
    sha, size = F.parse(res.stdout)
    assert sha == hashlib.sha256(dest.read_bytes()).hexdigest() and size == dest.stat().st_size
    assert (dest.stat().st_mode & 0o777) == 0o600 and not list(dest.parent.glob("*.partial"))
    listing = subprocess.run(["tar", "-tzf", str(dest)], capture_output=True, text=True).stdout
    assert "media/a b.pdf" in listing and "avatars/1.png" in listing
    assert "cache.tmp" not in listing and ".env" not in listing

    before = tree(shared)
    (shared / "storage/app/public/avatars/1.png").write_bytes(b"overwritten")
    (shared / "media/a b.pdf").unlink()
    (shared / "media/new.txt").write_text("added after the backup")
    res = sh(F.restore(str(shared), str(dest), sha, ["storage/app/public", "media"], "20261207T030000Z"))
    assert res.returncode == 0, res.stderr
    after = tree(shared)
    assert after["storage/app/public/avatars/1.png"] == b"\x89PNG one"
    assert after["media/a b.pdf"] == b"%PDF quoted name" and "media/new.txt" not in after
    assert after[".env"] == b"SECRET=1"
    assert {k: v for k, v in after.items() if "cache.tmp" not in k} == {k: v for k, v in before.items()
                                                                           if "cache.tmp" not in k}
    assert not list(shared.glob(".restore-*"))


def test_a_corrupt_archive_changes_nothing(tmp_path):
    shared = tmp_path / "shared"
    (shared / "media").mkdir(parents=True)
    (shared / "media/x").write_text("kept")
    dest = tmp_path / F.archive_name("prod", "web1", "20261207T020000Z")
    sha, _ = F.parse(sh(F.archive(str(shared), ["media"], [], str(dest))).stdout)
    (shared / "media/x").write_text("current")
    with dest.open("r+b") as f:
        f.seek(20)
        f.write(b"XXXX")
    res = sh(F.restore(str(shared), str(dest), sha, ["media"], "20261207T030000Z"))
    assert res.returncode == 1 and "sha256 differs" in res.stderr
    assert (shared / "media/x").read_text() == "current"


def test_names_and_outputs_are_checked():
    with pytest.raises(ValueError):
        F.archive_name("prod", "web1", "yesterday")
    with pytest.raises(ValueError):
        F.parse("not a checksum")


def test_retention_reads_archive_names_and_the_ledger_keeps_each_hosts_newest(tmp_path):
    import datetime as dt

    from deployer import records as REC
    from deployer import retention as RT
    from deployer.inspect import files_line
    from deployer.ledger import History

    assert RT.parse_backup_name("files-prod-web1-20261207T020000Z.tar.gz") == dt.datetime(2026, 12, 7, 2, 0, tzinfo=dt.UTC)
    h = History.fold([REC.FilesBackup(run="m1", at="2026-12-06T02:00:00Z", host="web1", path="/b/a.tar.gz",
                                      sha256="ab" * 32, size=4096).to_dict(),
                      REC.FilesBackup(run="m2", at="2026-12-07T02:00:00Z", host="web1", path="/b/b.tar.gz",
                                      sha256="cd" * 32, size=8192).to_dict()])
    assert h.newest_archives()["web1"].path == "/b/b.tar.gz"
    now = dt.datetime(2026, 12, 7, 5, 0, tzinfo=dt.UTC).timestamp()
    assert files_line(h, now) == "file backups: web1 b.tar.gz (8 KiB, 3 h ago)"


def test_restore_files_puts_each_hosts_archive_back_under_the_lock(tmp_path, monkeypatch):
    import io
    import json

    from recording import FakeHttp, Fleet, RecordingTransport, fake_bake
    from test_orchestration import OLD, config

    from deployer import records as REC
    from deployer.engine.restore import run_restore
    from deployer.errors import Refused
    from deployer.output import JsonReporter
    from deployer.session import Session

    monkeypatch.setenv("DEPLOYER_STATE_DIR", str(tmp_path / "state"))
    cfg = config("local", tmp_path, **{"backup.files": ["storage/uploads"]})
    fleet = Fleet([h.name for h in cfg.hosts], OLD)
    for stamp in ("20261206T020000Z", "20261207T020000Z"):
        for i, h in enumerate(cfg.app_hosts):
            rec = REC.FilesBackup(run=f"m{stamp}", seq=i + 1, at=f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T02:00:00Z",
                                  host=h.name, path=f"/srv/app/backups/{F.archive_name('local', h.name, stamp)}",
                                  sha256="ab" * 32, size=10, paths=["storage/uploads"])
            fleet.ledger += json.dumps(rec.to_dict()) + "\n"

    def restore(stamp):
        out = io.StringIO()
        rep = JsonReporter(out)
        t = RecordingTransport(fleet)
        s = Session(cfg, rep, transport=t, http_check=FakeHttp(), bake=fake_bake)
        return run_restore(cfg, rep, stamp=stamp, session=s), out, t, s.run_id

    code, out, t, run_id = restore(None)
    assert code == 0
    done = {h: c for h, c in t.calls if "tar -xzf" in c}
    assert sorted(done) == sorted(h.name for h in cfg.app_hosts)
    for h, c in done.items():
        assert f"files-local-{h}-20261207T020000Z.tar.gz" in c and f"/srv/app/shared/.restore-{run_id}" in c
    assert not fleet.lock  # taken, then released
    told = [e for e in map(json.loads, fleet.ledger.splitlines()) if e.get("run") == run_id and e["type"] != "journal"]
    assert [e["type"] for e in told][0] == "maintenance.start" and told[0]["task"] == "restore files"
    assert sorted(e["host"] for e in told if e["type"] == "files.restore") == sorted(h.name for h in cfg.app_hosts)
    assert told[-1]["type"] == "maintenance.end" and told[-1]["outcome"] == "success"
    code, out, t, _ = restore("20261206T020000Z")
    assert all("20261206T020000Z" in c for _, c in t.calls if "tar -xzf" in c)
    with pytest.raises(Refused, match="no file archive of 20260101T000000Z"):
        restore("20260101T000000Z")


def test_rollback_restores_the_archives_taken_while_its_target_served():
    """`rollback --restore-files` to a release: each host's newest archive from before the deploy
    that left it (later nights hold the files of the release being left); the newest of all when
    no deploy left it. `releases` lists each night once, newest first."""
    from deployer import records as REC
    from deployer.ledger import History

    def arc(run, host, stamp):
        return REC.FilesBackup(run=run, host=host, path=f"/srv/app/backups/{F.archive_name('prod', host, stamp)}",
                               sha256="ab" * 32, size=2048, paths=["uploads"]).to_dict()

    def deploy(run, release, before):
        return [REC.RunStarted(run=run, release=release).to_dict(),
                REC.Snapshot(run=run, hosts={"web1": before, "web2": before}).to_dict(),
                REC.RunEnded(run=run, outcome="success").to_dict()]

    events = (deploy("d1", "r1", None) + [arc("m1", h, "20261201T020000Z") for h in ("web1", "web2")]
              + [arc("m2", "web1", "20261202T020000Z")] + deploy("d2", "r2", "r1")
              + [arc("m3", h, "20261203T020000Z") for h in ("web1", "web2")])
    h = History.fold(events)
    back = h.files_before_leaving("r1")
    assert {k: v.path.rsplit("-", 1)[1] for k, v in back.items()} == {
        "web1": "20261202T020000Z.tar.gz", "web2": "20261201T020000Z.tar.gz"}
    assert {v.path.rsplit("-", 1)[1] for v in h.files_before_leaving("r2").values()} == {"20261203T020000Z.tar.gz"}

    from types import SimpleNamespace

    from deployer.inspect import archive_rows

    rows = archive_rows(SimpleNamespace(env="prod"), h)
    assert [r[:3] for r in rows] == [["20261203T020000Z", "web1, web2", "4 KiB"],
                                     ["20261202T020000Z", "web1", "2 KiB"], ["20261201T020000Z", "web1, web2", "4 KiB"]]
    assert rows[0][4] == "inv restore --env prod --files --at 20261203T020000Z"
