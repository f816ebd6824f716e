"""Old releases leave `releases/` at once and are deleted in the background: real shell, real
files."""

from __future__ import annotations

import os
import subprocess
import time

from deployer.commands import releases as R


def test_removed_releases_leave_at_once_and_their_files_go_in_the_background(tmp_path):
    root = tmp_path / "app"
    for r in ("r1", "r2", "r3"):
        d = root / "releases" / r / "node_modules" / "x"
        d.mkdir(parents=True)
        for i in range(200):
            (d / f"f{i}").write_text("x")
    stale = root / ".deployer" / "trash" / "1"  # a bin a reboot cut short, two hours ago
    stale.mkdir(parents=True)
    old = time.time() - 7200
    os.utime(stale, (old, old))
    cmd = R.remove(str(root), ["r1", "r2", "gone"])
    proc = subprocess.run(["sh", "-c", cmd.script], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (root / "releases").iterdir()) == ["r3"]  # at once
    deadline = time.monotonic() + 10
    while any((root / ".deployer" / "trash").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((root / ".deployer" / "trash").iterdir()) == []  # the bin and the stale one
    assert R.remove(str(root), []).script == "true"


def test_without_a_trash_they_are_deleted_in_place(tmp_path):
    """A full disk cannot make the trash's bin (no mkdir): the releases are deleted as before."""
    root = tmp_path / "app"
    (root / "releases" / "r1" / "x").mkdir(parents=True)
    (root / ".deployer").mkdir()
    (root / ".deployer" / "trash").write_text("not a directory: mkdir under it fails")
    proc = subprocess.run(["sh", "-c", R.remove(str(root), ["r1"]).script], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert list((root / "releases").iterdir()) == []
