"""The `shared` preflight check: what every release links from shared/, who creates what is
missing (a shared dir: the deploy; a file: secret_files, or nobody), decided on recorded output
and on a real directory."""

from __future__ import annotations

import subprocess

import pytest

from deployer.preflight import shared as SH

SHARED = "/srv/app/shared"


def test_who_makes_each_entry():
    found = SH.entries(["config/oauth.key", ".env", "./certs/tls.pem"], ["storage", "media/"],
                       ["certs/tls.pem", ".env"], skip=[".env"])
    assert found == (
        SH.Entry("config/oauth.key", SH.Kind.FILE, SH.Maker.NOBODY),
        SH.Entry("certs/tls.pem", SH.Kind.FILE, SH.Maker.SECRET_FILES),
        SH.Entry("storage", SH.Kind.DIR, SH.Maker.SHARED_DIRS),
        SH.Entry("media", SH.Kind.DIR, SH.Maker.SHARED_DIRS),
    )


@pytest.mark.parametrize("entry, state, expected", [
    (SH.Entry("storage", SH.Kind.DIR, SH.Maker.SHARED_DIRS), "dir", SH.Verdict(True, "storage")),
    (SH.Entry("storage", SH.Kind.DIR, SH.Maker.SHARED_DIRS), "missing",
     SH.Verdict(True, "storage (shared_dirs: mkdir -p)", created=True)),
    (SH.Entry("storage", SH.Kind.DIR, SH.Maker.SHARED_DIRS), "file",
     SH.Verdict(False, f"{SHARED}/storage is a file, the playbook shares it as a dir")),
    (SH.Entry("tls.pem", SH.Kind.FILE, SH.Maker.SECRET_FILES), "missing",
     SH.Verdict(True, "tls.pem (secret_files writes it)", created=True)),
    (SH.Entry("tls.pem", SH.Kind.FILE, SH.Maker.SECRET_FILES), "file", SH.Verdict(True, "tls.pem")),
    (SH.Entry("oauth.key", SH.Kind.FILE, SH.Maker.NOBODY), "missing",
     SH.Verdict(False, f"{SHARED}/oauth.key is missing and nothing creates it (every release "
                       "links it): put it on the host, or give it in the inventory's secret_files")),
    (SH.Entry("oauth.key", SH.Kind.FILE, SH.Maker.NOBODY), None,
     SH.Verdict(False, f"cannot inspect {SHARED}/oauth.key")),
])
def test_verdict(entry, state, expected):
    assert SH.verdict(entry, f"{SHARED}/{entry.rel}", state) == expected


def test_one_row_for_every_entry():
    found = SH.entries(["oauth.key", "tls.pem"], ["storage"], ["tls.pem"])
    parse = SH.parse(SHARED, found)
    assert parse("@@shared 0 file\n@@shared 1 missing\n@@shared 2 missing\n", 0) == (
        True, "present: oauth.key; will be created by the next deploy: tls.pem (secret_files writes "
              "it), storage (shared_dirs: mkdir -p)")
    ok, detail = parse("@@shared 0 missing\n@@shared 1 file\n@@shared 2 dir\n", 0)
    assert not ok and detail.startswith(f"{SHARED}/oauth.key is missing and nothing creates it")
    assert parse("", 255) == (False, f"cannot inspect {SHARED} (exit 255)")


def test_the_command_run_for_real(tmp_path):
    shared = tmp_path / "sh ared"  # a space: every path is quoted
    shared.mkdir()
    found = SH.entries(["oauth.key", "tls.pem", "$(touch pwned)"], ["storage"], ["tls.pem"])
    cmd = SH.command(str(shared), found)
    assert cmd.script == cmd.display

    def run():
        r = subprocess.run(["sh", "-c", cmd.script], capture_output=True, text=True, check=False,
                           cwd=tmp_path)
        return SH.parse(str(shared), found)(r.stdout, r.returncode)

    ok, detail = run()
    assert not ok and "oauth.key is missing" in detail and "$(touch pwned) is missing" in detail
    assert "tls.pem" not in detail and not (tmp_path / "pwned").exists()
    (shared / "oauth.key").write_text("k")
    (shared / "$(touch pwned)").write_text("x")
    assert run() == (True, "present: oauth.key, $(touch pwned); will be created by the next deploy: "
                           "tls.pem (secret_files writes it), storage (shared_dirs: mkdir -p)")
    (shared / "storage").write_text("not a dir")
    assert run() == (False, f"{shared}/storage is a file, the playbook shares it as a dir")
