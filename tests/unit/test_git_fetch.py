"""The host's mirror is not fetched again for a commit it already has: real git, real shell."""

from __future__ import annotations

import subprocess

import pytest

from deployer.commands import git as GIT


def sh(script: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60, **kw)


def test_a_commit_the_mirror_has_is_not_fetched_again(tmp_path):
    repo, mirror = tmp_path / "repo", tmp_path / "mirror.git"
    env = "GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t"
    assert sh(f"git init -q {repo} && cd {repo} && echo a > a && git add a && {env} git commit -qm one").returncode == 0
    one = sh(f"git -C {repo} rev-parse HEAD").stdout.strip()
    assert sh(GIT.fetch(str(repo), str(mirror), one).script).returncode == 0  # first: a clone
    assert sh(f"git -C {mirror} cat-file -e {one}").returncode == 0
    sh(f"cd {repo} && echo b > b && git add b && {env} git commit -qm two")
    two = sh(f"git -C {repo} rev-parse HEAD").stdout.strip()
    (tmp_path / "repo").rename(tmp_path / "gone")  # the origin unreachable from now on
    assert sh(GIT.fetch(str(repo), str(mirror), one).script).returncode == 0  # has it: no fetch
    assert sh(GIT.fetch(str(repo), str(mirror), two).script).returncode != 0  # must fetch: fails
    (tmp_path / "gone").rename(tmp_path / "repo")
    assert sh(GIT.fetch(str(repo), str(mirror), two).script).returncode == 0
    assert sh(f"git -C {mirror} cat-file -e {two}").returncode == 0


def test_the_commit_must_be_a_sha():
    with pytest.raises(ValueError, match="expected a hex sha"):
        GIT.fetch("/r", "/m", "main; rm -rf /")
