"""Release artifacts on the fleet (`artifact.build`): one host builds, the others fetch from it
host to host, and every host ends up with the same bytes; a bad release shipped so rolls back
and leaves neither its files nor its server behind."""

from __future__ import annotations

import json
import re

from .conftest import health, serving
from .test_rollout import _ledger

ART = ("--set", "artifact.build=web1", "--set", "artifact.serve_for=120")
TREE = ("cd /srv/app/releases/{r} && find . \\( -type f -o -type l \\) -print0 | sort -z | "
        "xargs -0 -I{{}} sh -c 'if [ -L \"$1\" ]; then echo \"link $1 -> $(readlink \"$1\")\"; "
        "else sha256sum \"$1\"; fi' sh {{}}")


def _tree(fleet, host: str, release: str) -> str:
    return fleet.sh(host, TREE.format(r=release)).stdout


def _servers(fleet) -> str:
    """web1's artifact server processes: the hosts share this machine's process table, so the
    pattern names web1's own address (the bracket keeps this shell's command line from
    matching)."""
    addr = fleet.spec.host("web1").address.replace(".", "\\.")
    return fleet.sh("web1", f"pgrep -af 'DEPLOYER_ARTIFACT_[T]OKEN.* {addr} ' || true").stdout.strip()


def test_a_release_built_once_reaches_every_host_with_the_same_bytes(fleet, cli, consistent):
    dry = cli("deploy", "--env", "local", "--ref", "v2", "--dry-run", *ART, check=0)
    assert "artifact fetch " in dry.stdout and "python3 -c <artifact pack>" in dry.stdout
    assert not re.search(r"http://[0-9.]+:\d+/[A-Za-z0-9_-]{20,}", dry.stdout)  # the URL goes on stdin

    cli("deploy", "--env", "local", "--ref", "v2", *ART, check=0)
    r1 = next(iter(serving(fleet).values()))
    cli("deploy", "--env", "local", "--ref", "v2", *ART, check=0)
    r2 = next(iter(serving(fleet).values()))
    assert r2 != r1 and set(serving(fleet).values()) == {r2}
    for h in fleet.spec.web_hosts:
        assert health(fleet, h).get("release") == r2

    # the ledger: web1 packed it, the others unpacked the very same sha256
    recs = [e for e in _ledger(fleet) if e["type"] == "artifact" and e["release"] == r2]
    built = [e for e in recs if e["built"]]
    assert [e["host"] for e in built] == ["web1"]
    assert sorted(e["host"] for e in recs if not e["built"]) == ["web2", "web3"]
    sha = built[0]["sha256"]
    assert {e["sha256"] for e in recs} == {sha}
    # the hosts themselves: web1 keeps that very tar, and every host's release has the same files
    assert fleet.sh("web1", f"sha256sum /srv/app/.deployer/artifacts/{r2}.tar").stdout.split()[0] == sha
    want = _tree(fleet, "web1", r2)
    assert "app.py" in want and "REVISION" in want
    for h in ("web2", "web3"):
        assert _tree(fleet, h, r2) == want, h
    # unchanged since r1 (the same commit): hard-linked on the hosts that fetched it, not written again
    ino = fleet.sh("web2", f"stat -c %i /srv/app/releases/{r1}/app.py /srv/app/releases/{r2}/app.py").stdout.split()
    assert ino[0] == ino[1]
    assert fleet.sh("web2", f"cat /srv/app/releases/{r2}/REVISION").stdout.strip() == r2
    assert fleet.sh("web2", f"cat /srv/app/releases/{r1}/REVISION").stdout.strip() == r1
    assert [e["linked"] for e in recs if e["host"] == "web2"][0] > 10
    assert not _servers(fleet)
    assert fleet.sh("web2", f"test -e /srv/app/.deployer/artifacts/{r2}.tar", check=False).returncode == 1
    r1_files = _tree(fleet, "web1", r1)
    listed = cli("releases", "--env", "local", "--output", "json", *ART, check=0).stdout
    rows = {e["release"]: e for e in (json.loads(x) for x in listed.splitlines() if x.startswith("{")) if e.get("event") == "row"
            and "release" in e}
    assert rows[r2]["artifact"] == f"{sha[:12]} (on web1)", rows[r2]

    # a bad release shipped the same way: the gate fails, every host goes back to r2, and
    # neither the bad release nor its artifact nor its server stays behind
    bad = cli("deploy", "--env", "local", "--ref", "bad-health", *ART, check=1)
    assert "rolled back" in (bad.stdout + bad.stderr).lower()
    assert set(serving(fleet).values()) == {r2}
    gone = [e["release"] for e in _ledger(fleet) if e["type"] == "artifact" and e["built"]][-1]
    assert gone != r2
    for h in ("web1", "web2", "web3"):
        assert fleet.sh(h, f"ls /srv/app/releases/{gone} /srv/app/.deployer/artifacts/{gone}.tar",
                        check=False).returncode != 0, h
    assert not _servers(fleet)

    # r1 gone from every host (keep_releases, hosts replaced): web1 still keeps its artifact, so
    # `rollback --to` fetches it from there, checks it against the ledger's sha256, and switches
    for h in ("web1", "web2", "web3"):
        fleet.sh(h, f"rm -rf /srv/app/releases/{r1}")
    back = cli("rollback", "--env", "local", "--to", r1, "--yes", *ART, check=0)
    assert "fetched there from the artifact web1 keeps" in back.stdout + back.stderr
    assert set(serving(fleet).values()) == {r1}
    for h in fleet.spec.web_hosts:
        assert health(fleet, h).get("release") == r1
        assert _tree(fleet, h.name, r1) == r1_files, h.name
    run = [e for e in _ledger(fleet) if e["type"] == "rollback.start"][-1]["run"]
    again = [e for e in _ledger(fleet) if e["type"] == "artifact" and e.get("run") == run]
    assert sorted(e["host"] for e in again) == ["web1", "web2", "web3"]
    packed = [e for e in _ledger(fleet) if e["type"] == "artifact" and e["release"] == r1 and e["built"]]
    assert {e["sha256"] for e in again} == {packed[0]["sha256"]}
    assert not _servers(fleet)
