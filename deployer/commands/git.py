"""Getting the code of a commit onto a host: a bare mirror per host, `git archive` per release."""

from __future__ import annotations

import re

from ..shell import Command, argv, q, raw

SHA_RE = re.compile(r"^[0-9a-f]{7,40}$")



def ls_remote(repo: str, ref: str) -> Command:
    return argv("git", "ls-remote", "--", repo, ref, f"refs/tags/{ref}^{{}}")


def parse_ls_remote(output: str, ref: str) -> str | None:
    """The commit a ref names: peeled tag first, then tag, branch, any exact ref."""
    refs = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2:
            refs[parts[1]] = parts[0]
    for name in (f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"refs/heads/{ref}", ref):
        if name in refs:
            return refs[name]
    return None


def fetch(repo: str, mirror: str, commit: str | None = None) -> Command:
    """Create or update the host's bare mirror of the repository; with `commit`, nothing is
    fetched when the mirror already has it (a redeploy, a secret rotation, a rollout resumed)."""
    if commit is not None and not SHA_RE.match(commit):
        raise ValueError(f"commit {commit!r}: expected a hex sha")
    have = (f"[ -d {q(mirror)} ] && git -C {q(mirror)} cat-file -e {q(commit + '^{commit}')} 2>/dev/null; "
            if commit else "false; ")
    return raw(
        f"if {have}then :; "
        f"elif [ -d {q(mirror)} ]; then git -C {q(mirror)} remote set-url origin {q(repo)} && "
        f"git -C {q(mirror)} fetch --quiet --prune --tags origin '+refs/heads/*:refs/heads/*'; "
        f"else git clone --quiet --mirror -- {q(repo)} {q(mirror)}; fi"
    )


def export(mirror: str, commit: str, release_path: str) -> Command:
    if not SHA_RE.match(commit):
        raise ValueError(f"commit {commit!r}: expected a hex sha")
    tmp = release_path + ".partial"
    return raw(
        f"rm -rf {q(tmp)} && mkdir -p {q(tmp)} && "
        f"git -C {q(mirror)} archive --format=tar -o {q(tmp + '.tar')} {q(commit)} && "
        f"tar -x -C {q(tmp)} -f {q(tmp + '.tar')} && rm -f {q(tmp + '.tar')} && "
        f"rm -rf {q(release_path)} && mv -T {q(tmp)} {q(release_path)}"
    )
