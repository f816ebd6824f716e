"""`rollback --to` a release some hosts no longer have (keep_releases cleaned it up, a host was
replaced): built there again from the commit the ledger recorded, then switched with the gate."""

from __future__ import annotations

from .conftest import health, serving
from .test_rollout import _ledger


def test_rollback_to_a_release_gone_from_hosts_builds_it_again_from_its_commit(fleet, cli, consistent):
    # two releases this ledger recorded (an earlier test may have deployed with its state in S3)
    cli("deploy", "--env", "local", "--ref", "v2", check=0)
    old = next(iter(serving(fleet).values()))
    cli("deploy", "--env", "local", "--ref", "v2", check=0)
    new = next(iter(serving(fleet).values()))
    assert new != old
    files = fleet.sh("web1", f"cd /srv/app/releases/{old} && find . -path ./storage -prune -o -type f ! -name '*.pyc' ! -name .env -print0 "
                             "| sort -z | xargs -0 sha256sum").stdout
    for h in ("web2", "web3"):
        fleet.sh(h, f"rm -rf /srv/app/releases/{old}")

    dry = cli("rollback", "--env", "local", "--to", old, "--dry-run", check=0)
    pulls = [line for line in dry.stdout.splitlines() if "git" in line and "archive" in line]
    assert len(pulls) == 2 and all(old in line for line in pulls), dry.stdout[-3000:]
    assert "gone from web2, web3" in dry.stdout + dry.stderr
    assert fleet.sh("web2", f"test -d /srv/app/releases/{old}", check=False).returncode == 1  # dry: nothing

    cli("rollback", "--env", "local", "--to", old, "--yes", check=0)
    assert set(serving(fleet).values()) == {old}
    for h in fleet.spec.web_hosts:
        assert health(fleet, h).get("release") == old
        again = fleet.sh(h.name, f"cd /srv/app/releases/{old} && find . -path ./storage -prune -o -type f ! -name '*.pyc' ! -name .env -print0 "
                                 "| sort -z | xargs -0 sha256sum").stdout
        assert again == files, h.name  # the same bytes as the original build
    start = [e for e in _ledger(fleet) if e["type"] == "rollback.start"][-1]
    assert start["to"] == old
