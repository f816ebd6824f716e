"""One plan, executed: what --dry-run prints is what runs; the journal keeps a run whole when
the ledger host stops answering."""

from __future__ import annotations

import json
import re
import time

from .conftest import ROOT, health, serving

RELEASE_RE = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{7}")
EPOCH_RE = re.compile(r"\b1\d{9}\b")
#: the run's fencing token in the check every host script starts with (a dry run takes no lock:
#: it shows `<token>` there)
TOKEN_RE = re.compile(r'host has seen token \$s > (\d+)"')


def _token_shown(cmd: str) -> str:
    m = TOKEN_RE.search(cmd)
    if not m:
        return cmd
    check, sep, rest = cmd.partition(" || exit $?")
    # only where the check puts the token (not `flock -w 30`, nor `2>&1` when the token is 2)
    t = m.group(1)
    for before, after in (("-gt ", " ]"), ("> ", '"'), ("-eq ", " ]"), ("echo ", " >")):
        check = check.replace(f"{before}{t}{after}", f"{before}<token>{after}")
    return check + sep + rest
SHIPPED_INVENTORY = str(ROOT / "hosts" / "local.yaml")


def _json(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _per_host(events: list[dict], kind: str, keep_release: str | None = None) -> dict[str, list[str]]:
    """host -> commands; release ids, epoch times (which depend on when the plan is built) and
    the fencing token (the lock's) are normalised, except `keep_release` (a rollback's target
    must be exactly the same)."""
    out: dict[str, list[str]] = {}
    for e in events:
        if e["event"] != kind:
            continue
        cmd = _token_shown(e["command"])
        if keep_release:
            cmd = cmd.replace(keep_release, "<target>")
        cmd = EPOCH_RE.sub("<epoch>", RELEASE_RE.sub("<release>", cmd))
        out.setdefault(e["host"], []).append(cmd)
    return out


def _haproxy_states(fleet) -> dict[str, str]:
    from deployer.commands import lb as LB

    out = fleet.sh("lb1", "echo 'show servers state web' | socat stdio UNIX-CONNECT:/srv/haproxy/admin.sock").stdout
    return LB.parse_states(out, "web")


def test_dry_run_is_exactly_what_the_deploy_and_the_rollback_run(fleet, cli, consistent):
    inv = ["--inventory", SHIPPED_INVENTORY]  # the shipped hosts/local.yaml, canary wave and all
    cli("deploy", "--env", "local", "--ref", "v1", *inv, check=0)
    planned = cli("deploy", "--env", "local", "--ref", "v2", "--dry-run", "--output", "json", *inv, check=0)
    before = serving(fleet)
    ran = cli("deploy", "--env", "local", "--ref", "v2", "--output", "json", *inv, check=0)
    plan, executed = _per_host(_json(planned.stdout), "plan"), _per_host(_json(ran.stdout), "command")
    assert plan and set(plan) >= {"web1", "web2", "web3", "lb1", "db1"}
    assert plan == executed
    stages = [e["stage"] for e in _json(planned.stdout) if e["event"] == "plan"]
    assert "switch w1" in stages and "switch w2" in stages  # the inventory's two waves, in both
    # and the dry run changed nothing
    assert len(set(serving(fleet).values())) == 1

    target = next(iter(before.values()))
    planned = cli("rollback", "--env", "local", "--to", target, "--keep-db", "--dry-run", "--output", "json",
                  *inv, check=0)
    ran = cli("rollback", "--env", "local", "--to", target, "--keep-db", "--output", "json", *inv, check=0)
    plan = _per_host(_json(planned.stdout), "plan", keep_release=target)
    assert plan and plan == _per_host(_json(ran.stdout), "command", keep_release=target)
    assert set(serving(fleet).values()) == {target}


def test_ledger_host_down_during_the_gate_of_a_failing_deploy(fleet, cli, consistent):
    """sshd of db1 (the ledger host) stops while the bad release is being gated: every host goes
    back to the snapshot's release, none is left drained, exit 1; once db1 answers again, the
    next `status` ships the journal and `releases` shows the whole run."""
    cli("deploy", "--env", "local", "--ref", "v2", check=0)
    before = serving(fleet)
    proc = cli.popen("deploy", "--env", "local", "--ref", "bad-health", "--output", "json")
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            e = json.loads(line) if line.startswith("{") else {}
            if e.get("event") == "command" and e.get("command", "").startswith("GET "):
                fleet.stop_ssh("db1")  # the gate of the first host has begun
                break
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
        fleet.start_sshd("db1")
    assert proc.returncode == 1, err[-2000:]
    events = _json("".join(lines) + out)
    assert any(e["event"] == "notice" and "record is kept" in e.get("message", "") for e in events), err
    assert serving(fleet) == before
    for h in fleet.spec.web_hosts:
        assert health(fleet, h)["release"] == next(iter(before.values()))
    assert set(_haproxy_states(fleet).values()) == {"ready"}, _haproxy_states(fleet)

    status = cli("status", "--env", "local", check=0)
    assert "lock: free" in status.stdout + status.stderr
    rows = [e for e in _json(cli("releases", "--env", "local", "--output", "json", check=0).stdout)
            if e["event"] == "row"]
    bad = [r for r in rows if r["ref"] == "bad-health"]
    assert bad and bad[0]["outcome"].startswith("rolled_back") and "BAD" in bad[0]["outcome"]
    ledger = fleet.sh("db1", "cat /srv/app/.deployer/ledger.jsonl").stdout
    run = [json.loads(x) for x in ledger.splitlines() if x.strip() and '"bad-health"' in x]
    run_id = run[0]["run"]
    kinds = [json.loads(x)["type"] for x in ledger.splitlines() if run_id in x]
    for kind in ("deploy.start", "snapshot", "backup", "rollback.start", "release.bad", "rollback.end",
                 "deploy.end"):
        assert kind in kinds, kind
