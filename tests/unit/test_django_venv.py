"""The shipped django playbook's build step, run for real on this machine: a release whose
requirements.txt did not change gets the previous release's virtualenv (hard links), its bin/
pointing at the new release; its console scripts survive the old release's removal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from deployer.config.project import load_playbook

ROOT = Path(__file__).resolve().parents[2]


def build_step(values: dict) -> str:
    pb = load_playbook(ROOT / "playbooks" / "django.yaml", root=ROOT)
    return pb.steps("build")[0].command(values).script


def test_unchanged_requirements_reuse_the_previous_virtualenv(tmp_path):
    old, new = tmp_path / "releases" / "r1", tmp_path / "releases" / "r2"
    for d in (old, new):
        d.mkdir(parents=True)
        (d / "requirements.txt").write_text("Django==5.1\n")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(old / ".venv")], check=True)
    tool = old / ".venv" / "bin" / "tool"
    tool.write_text(f"#!{old}/.venv/bin/python\nimport sys; print(sys.prefix)\n")
    tool.chmod(0o755)
    lib = next((old / ".venv" / "lib").iterdir()) / "site-packages" / "pkg.py"
    lib.write_text("X = 1\n")
    script = build_step({"previous_path": str(old), "release_path": str(new), "base_python": "/nonexistent/python"})
    res = subprocess.run(["sh", "-c", script], cwd=new, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    new_lib = next((new / ".venv" / "lib").iterdir()) / "site-packages" / "pkg.py"
    assert os.stat(new_lib).st_ino == os.stat(lib).st_ino  # hard-linked, not copied
    assert (new / ".venv/bin/tool").read_text().splitlines()[0] == f"#!{new}/.venv/bin/python"
    assert tool.read_text().splitlines()[0] == f"#!{old}/.venv/bin/python"  # the old one untouched
    assert str(old) not in (new / ".venv/bin/activate").read_text()
    # the old release gone (keep_releases): the new one's console script runs its own virtualenv
    subprocess.run(["rm", "-rf", str(old)], check=True)
    out = subprocess.run([str(new / ".venv/bin/tool")], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(new / ".venv")


def test_changed_requirements_build_a_new_virtualenv(tmp_path):
    old, new = tmp_path / "releases" / "r1", tmp_path / "releases" / "r2"
    for d, req in ((old, "Django==5.0\n"), (new, "Django==5.1\n")):
        d.mkdir(parents=True)
        (d / "requirements.txt").write_text(req)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(old / ".venv")], check=True)
    script = build_step({"previous_path": str(old), "release_path": str(new), "base_python": "/nonexistent/python"})
    res = subprocess.run(["sh", "-c", script], cwd=new, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "/nonexistent/python" in res.stderr  # it went to build one
    assert not (new / ".venv").exists()
