"""The app's own files (`backup.files`, under shared/) archived by the nightly job on each app
host, pruned by the retention policy, listed, and put back byte for byte by `restore --files` and
`rollback --restore-files`: checked on the hosts themselves."""

from __future__ import annotations

import datetime as dt
import json

from .conftest import serving
from .test_rollout import _ledger, _on_v2, variant

FILES = """
backup:
  files: [uploads, media/avatars]
  exclude: ["*.tmp"]
"""
SHARED = "/srv/app/shared"
ARCHIVES = "/srv/app/backups"


def _web(fleet) -> list[str]:
    return [h.name for h in fleet.spec.web_hosts]


def _tree(fleet, host: str) -> dict[str, str]:
    """path -> "mode[ sha256]" of every folder and file of the backed-up paths on `host`."""
    def lines(cmd: str) -> list[str]:
        return fleet.sh(host, f"cd {SHARED} && {cmd} 2>/dev/null || true").stdout.splitlines()

    tree = {name: mode for name, mode in (ln.rsplit("|", 1) for ln in lines(
        "find uploads media -exec stat -c '%n|%a' {} +"))}
    for ln in lines("find uploads media -type f -exec sha256sum {} +"):
        sha, name = ln.split("  ", 1)
        tree[name] += " " + sha
    return tree


def _write_uploads(fleet, host: str) -> None:
    """A user's uploads: nested folders, binary data, a name with spaces, a temp file excluded."""
    fleet.sh(host, f"""set -e; cd {SHARED}; rm -rf uploads media
        mkdir -p 'uploads/2026/12 dec' media/avatars media/cache
        head -c 300000 /dev/urandom > 'uploads/2026/12 dec/photo 1.jpg'
        printf 'invoice of {host}\\n' > uploads/2026/invoice.pdf
        head -c 5000 /dev/urandom > media/avatars/u1.png
        echo partial > uploads/upload.tmp
        echo cache > media/cache/thumb.bin
        chmod 640 uploads/2026/invoice.pdf
        chown -R --reference={SHARED} uploads media""")


def _archives(fleet, host: str) -> list[str]:
    return sorted(fleet.sh(host, f"ls {ARCHIVES} 2>/dev/null || true").stdout.split())


def test_file_backups_are_archived_pruned_listed_and_restored_byte_for_byte(fleet, cli, tmp_path, consistent):
    r1 = _on_v2(fleet, cli)
    inv = variant(fleet, tmp_path, FILES)
    now = dt.datetime.now(dt.UTC)
    old = [f"files-local-{{h}}-{(now - dt.timedelta(days=d)).strftime('%Y%m%dT020000Z')}.tar.gz" for d in range(1, 60)]
    for h in _web(fleet):
        _write_uploads(fleet, h)
        fleet.sh(h, f"rm -rf {ARCHIVES} && mkdir -p {ARCHIVES} && cd {ARCHIVES} && touch "
                    + " ".join(n.format(h=h) for n in old) + f" && chown -R --reference={SHARED} {ARCHIVES}")
    before = {h: _tree(fleet, h) for h in _web(fleet)}
    assert "uploads/upload.tmp" in before["web1"] and "media/cache/thumb.bin" in before["web1"]

    # the nightly job: one archive per app host, recorded with its sha256, the old ones pruned
    proc = cli("maintenance", "run", "--env", "local", "--inventory", inv, check=0)
    assert "file archives on 3 host(s)" in proc.stdout, proc.stdout[-2000:]
    run = [e for e in _ledger(fleet) if e["type"] == "maintenance.start"][-1]["run"]
    recs = {e["host"]: e for e in _ledger(fleet) if e["type"] == "backup.files" and e["run"] == run}
    assert sorted(recs) == _web(fleet)
    from deployer.retention import Policy, plan

    for h, rec in recs.items():
        there = fleet.sh(h, f"sha256sum {rec['path']}").stdout.split()[0]
        assert there == rec["sha256"] and rec["paths"] == ["uploads", "media/avatars"]
        assert fleet.sh(h, f"stat -c %a {rec['path']}").stdout.strip() == "600"
        listing = fleet.sh(h, f"tar -tzf {rec['path']}").stdout.split("\n")
        assert "uploads/2026/12 dec/photo 1.jpg" in listing and "media/avatars/u1.png" in listing
        assert not [n for n in listing if n.endswith(".tmp") or "cache" in n]
        names = [n.format(h=h) for n in old] + [rec["path"].rsplit("/", 1)[1]]
        kept, removed, _ = plan(names, now, Policy(), {names[-1]})
        assert _archives(fleet, h) == sorted(kept) and len(removed) > 20

    stamp = recs["web1"]["path"].rsplit("-", 1)[1].removesuffix(".tar.gz")
    status = cli("status", "--env", "local", "--inventory", inv).stdout
    assert f"file backups: web1 files-local-web1-{stamp}.tar.gz" in status
    listed = cli("releases", "--env", "local", "--inventory", inv, "--output", "json").stdout
    rows = [json.loads(line) for line in listed.splitlines() if '"row"' in line]
    night = [r for r in rows if r.get("taken") == stamp]
    assert night and night[0]["hosts"] == "web1, web2, web3"
    assert night[0]["restore with"] == f"inv restore --env local --files --at {stamp}"

    # the users' files change: one deleted, one rewritten, one added; the excluded file changes too
    for h in _web(fleet):
        fleet.sh(h, f"cd {SHARED} && rm 'uploads/2026/12 dec/photo 1.jpg' && echo forged > uploads/2026/invoice.pdf "
                    f"&& echo new > media/avatars/u2.png && echo again > uploads/upload.tmp")
    changed = {h: _tree(fleet, h) for h in _web(fleet)}

    # --dry-run prints each host's restore and changes nothing
    dry = cli("restore", "--env", "local", "--inventory", inv, "--files", "--dry-run", check=0)
    assert dry.stdout.count("tar -xzf") == 3 and f"files-local-web2-{stamp}.tar.gz" in dry.stdout
    assert {h: _tree(fleet, h) for h in _web(fleet)} == changed

    # a corrupt archive: refused on that host before any byte moves (exit 4), the files untouched
    path = recs["web2"]["path"]
    fleet.sh("web2", f"cp -p {path} /tmp/good.tar.gz && printf XXXX | dd of={path} bs=1 seek=100 conv=notrunc "
                     "status=none")
    try:
        bad = cli("restore", "--env", "local", "--inventory", inv, "--files", "--yes", check=4)
        assert "sha256 differs" in bad.stderr and "web2" in bad.stderr, bad.stderr[-2000:]
        assert _tree(fleet, "web2") == changed["web2"]
    finally:
        fleet.sh("web2", f"mv -f /tmp/good.tar.gz {path}")

    # restored: every host's paths byte for byte (and mode) as archived, each swapped in whole (so
    # what `exclude` left out of a path is not in it any more); the paths not listed untouched
    cli("restore", "--env", "local", "--inventory", inv, "--files", "--yes", check=0)
    for h in _web(fleet):
        now_tree = _tree(fleet, h)
        assert now_tree == {k: v for k, v in before[h].items() if k != "uploads/upload.tmp"}
        assert now_tree["media/cache/thumb.bin"] == changed[h]["media/cache/thumb.bin"]
        assert not [n for n in fleet.sh(h, f"ls -A {SHARED}").stdout.split() if n.startswith(".restore-")]
    assert set(serving(fleet).values()) == {r1}  # the code was not touched
    restored = [e for e in _ledger(fleet) if e["type"] == "files.restore"]
    assert sorted(e["host"] for e in restored[-3:]) == _web(fleet)

    # rollback --restore-files: a deploy, files changed under the new release, then back to r1 with
    # the files as archived while r1 served
    cli("deploy", "--env", "local", "--ref", "v2", "--inventory", inv, check=0)
    assert set(serving(fleet).values()) != {r1}
    for h in _web(fleet):
        fleet.sh(h, f"cd {SHARED} && rm -rf media/avatars && echo v2 > uploads/2026/invoice.pdf")
    cli("rollback", "--env", "local", "--to", r1, "--restore-files", "--inventory", inv, "--yes", check=0)
    assert set(serving(fleet).values()) == {r1}
    for h in _web(fleet):
        tree = _tree(fleet, h)
        assert tree["media/avatars/u1.png"] == before[h]["media/avatars/u1.png"]
        assert tree["uploads/2026/invoice.pdf"] == before[h]["uploads/2026/invoice.pdf"]
    start = [e for e in _ledger(fleet) if e["type"] == "rollback.start"][-1]
    assert start["restore_files"] is True


def test_restore_files_is_refused_when_a_host_has_no_archive(fleet, cli, tmp_path, consistent):
    """An archive of another night than asked, or a host with none: refused (exit 3), nothing changed."""
    _on_v2(fleet, cli)
    inv = variant(fleet, tmp_path, FILES)
    for h in _web(fleet):
        _write_uploads(fleet, h)
    before = {h: _tree(fleet, h) for h in _web(fleet)}
    refused = cli("restore", "--env", "local", "--inventory", inv, "--files", "--at", "20200101T000000Z",
                  "--yes", check=3)
    assert "no file archive of 20200101T000000Z of web1, web2, web3 in the ledger" in refused.stderr
    bad = cli("restore", "--env", "local", "--files", "--yes", check=2)
    assert "backup.files: none listed for env 'local'" in bad.stderr
    assert {h: _tree(fleet, h) for h in _web(fleet)} == before
    assert "lock: free" in cli("status", "--env", "local").stdout
