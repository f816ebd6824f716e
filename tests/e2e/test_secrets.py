"""`secrets set`: a secret file rotated as a release through the gate, on the fleet. A good
rotation goes out and becomes shared/; a bad one (a database password that does not work) fails
the canary's health check and the fleet goes back to the previous release with the previous
content. No byte of either secret in any output, the ledger, a journal or a process's argv."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from urllib.parse import urlsplit

from faults.driver import ArgvWatch

from .conftest import ROOT, health, serving
from .test_rollout import _ledger

DOTENV = "/srv/app/shared/.env"


def _set(fleet, name: str, content: str, *extra: str, state_dir) -> subprocess.CompletedProcess:
    """`secrets set` with the content on stdin, as a user pipes a file in."""
    argv = [sys.executable, "-m", "deployer.cli", "secrets", "set", "--env", "local", "--inventory",
            str(fleet.inventory_path), "--yes", *extra, "--", name]
    return subprocess.run(argv, input=content, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "DEPLOYER_STATE_DIR": str(state_dir)})


def _current_env(fleet, host: str) -> tuple[str, str]:
    """The .env the served release reads (through its link or its own copy), and its mode."""
    real = fleet.sh(host, "readlink -f /srv/app/current/.env").stdout.strip()
    return fleet.sh(host, f"cat {real}").stdout, fleet.sh(host, f"stat -c %a {real}").stdout.strip()


def test_a_secret_rotates_through_the_gate_and_a_bad_one_is_rolled_back(fleet, cli, tmp_path, consistent):
    # a release this ledger recorded (an earlier test may have deployed with its state in S3)
    cli("deploy", "--env", "local", "--ref", "v2", check=0)
    r0 = next(iter(serving(fleet).values()))
    web = [h.name for h in fleet.spec.web_hosts]
    original = fleet.sh("web1", f"cat {DOTENV}").stdout
    assert all(fleet.sh(h, f"cat {DOTENV}").stdout == original for h in web)
    token = "rot-" + secrets.token_hex(16)
    good = original + ("" if original.endswith("\n") else "\n") + f"ROTATED_TOKEN={token}\n"
    commit = fleet.state["tags"]["v2"]
    state = tmp_path / "state"
    texts = []
    try:
        with ArgvWatch(token) as watch:
            proc = _set(fleet, ".env", good, state_dir=state)
        texts += [proc.stdout, proc.stderr]
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert not watch.seen
        r1 = next(iter(serving(fleet).values()))
        assert r1 != r0 and set(serving(fleet).values()) == {r1} and r1.endswith(commit[:7])
        for h in web:  # the new release has its own copy; shared/ follows once the gate passed
            assert _current_env(fleet, h) == (good, "600")
            assert fleet.sh(h, f"test -L /srv/app/releases/{r1}/.env", check=False).returncode == 1
            assert fleet.sh(h, f"cat {DOTENV}").stdout == good
            assert fleet.sh(h, f"stat -c %a {DOTENV}").stdout.strip() == "600"
            assert fleet.sh(h, f"readlink /srv/app/releases/{r0}/.env").stdout.strip() == DOTENV
        start = [e for e in _ledger(fleet) if e["type"] == "deploy.start"][-1]
        assert start["release"] == r1 and start["reason"] == "rotate secret .env" and start["commit"] == commit

        # a bad password: the canary's health check fails, the fleet goes back to r1 and its file
        bad_pw = "bad-" + secrets.token_hex(12)
        url = urlsplit(next(line for line in original.splitlines() if line.startswith("DATABASE_URL="))
                       .split("=", 1)[1].strip().strip("'\""))
        netloc = f"{url.username}:{bad_pw}@{url.hostname}" + (f":{url.port}" if url.port else "")
        bad = good + f"DATABASE_URL={url._replace(netloc=netloc).geturl()}\n"  # the last one counts
        with ArgvWatch(bad_pw) as watch:
            proc = _set(fleet, ".env", bad, state_dir=state)
        texts += [proc.stdout, proc.stderr]
        assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "rolled back" in proc.stdout + proc.stderr
        assert not watch.seen
        assert set(serving(fleet).values()) == {r1}
        for h in web:
            assert _current_env(fleet, h) == (good, "600")
            assert fleet.sh(h, f"cat {DOTENV}").stdout == good  # never promoted
            assert health(fleet, fleet.spec.host(h)).get("status") == "ok"
        ledger = fleet.sh("db1", "cat /srv/app/.deployer/ledger.jsonl").stdout
        journals = "".join(p.read_text(errors="replace") for p in state.rglob("*") if p.is_file())
        for where, text in [("ledger", ledger), ("journal", journals)] + [(f"output {i}", t) for i, t in enumerate(texts)]:
            assert token not in text and bad_pw not in text, f"a secret in the {where}"
            assert not url.password or url.password not in text, f"the database password in the {where}"

        # bad input: changes nothing, exit 2, says what is wrong
        proc = _set(fleet, "nope.env", "x=1\n", state_dir=state)
        assert proc.returncode == 2 and "not a secret file of env 'local'" in proc.stderr and ".env" in proc.stderr
        proc = _set(fleet, ".env", "  \n", state_dir=state)
        assert proc.returncode == 2 and "the new content is empty" in proc.stderr
        proc = _set(fleet, "storage/x.key", "k\n", state_dir=state)
        assert proc.returncode == 2 and "shared dir 'storage'" in proc.stderr
        assert set(serving(fleet).values()) == {r1}
    finally:  # the fleet's own .env again, for the next tests (from an env var this time)
        proc = cli("secrets", "set", "--env", "local", "--inventory", str(fleet.inventory_path),
                   "--from-env", "DOTENV_BACK", "--yes", "--", ".env", env={"DOTENV_BACK": original})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert all(fleet.sh(h, f"cat {DOTENV}").stdout == original for h in web)
