"""One scenario: from a known state (v2 served everywhere, schema 2), a deploy meets a fault;
then what a human would run (heal the fault, `recover`), then the invariants."""

from __future__ import annotations

import json
import time

from e2e.conftest import serving

from .conftest import CANARY_ROWS, record
from .driver import ArgvWatch, Orchestrator, check_invariants, psql


def _tag(fleet, ref: str) -> str:
    return fleet.state["tags"][ref][:7]


def baseline(fleet, cli, env) -> str:
    """Every web host on v2 with schema 2; returns the release they serve."""
    inv = ["--inventory", env.inventory]
    # whatever a failed scenario left: converged, maintenance off (each scenario starts clean)
    cli("recover", "--env", "local", "--force", "--reason", "fault test", *inv, env=env.env())
    if any(fleet.sh(h.name, "test -e /srv/app/shared/storage/maintenance.json", check=False).returncode == 0
           for h in fleet.spec.web_hosts):
        cli("maintenance", "off", "--env", "local", *inv, env=env.env())
    s = serving(fleet)
    schema = psql(fleet, "select max(version) from schema_migrations")
    rels = set(s.values())
    if len(rels) == 1 and (next(iter(rels)) or "").endswith(_tag(fleet, "v2")) and schema == "2":
        return next(iter(rels))
    if schema == "3":  # v3's own down migration, by hand
        psql(fleet, "ALTER TABLE items RENAME COLUMN kind TO category; DELETE FROM schema_migrations WHERE version = 3")
    cli("deploy", "--env", "local", "--ref", "v2", *inv, env=env.env(), check=0)
    s = serving(fleet)
    assert len(set(s.values())) == 1, s
    return next(iter(s.values()))


def releases_of(cli, env, ref: str) -> set[str]:
    proc = cli("releases", "--env", "local", "--inventory", env.inventory, "--output", "json", env=env.env())
    rows = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    return {r["release"] for r in rows if r.get("event") == "row" and r.get("ref") == ref}


def recover(cli, env) -> str:
    """`recover`; when it stops for a possibly half-migrated database, check and --force, as
    its message says. Returns the exit codes, e.g. '0' or '4,0'."""
    inv = ["--inventory", env.inventory]
    codes = []
    r = cli("recover", "--env", "local", *inv, env=env.env())
    codes.append(r.returncode)
    if r.returncode == 4 and "--force" in r.stdout + r.stderr:
        time.sleep(0.5)
        r = cli("recover", "--env", "local", "--force", "--reason", "fault test", *inv, env=env.env())
        codes.append(r.returncode)
    assert r.returncode == 0, f"recover: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    again = cli("recover", "--env", "local", *inv, env=env.env())
    assert again.returncode == 0 and "nothing to recover" in again.stdout + again.stderr, \
        f"recover is not idempotent: {again.stdout[-1500:]}{again.stderr[-1500:]}"
    return ",".join(map(str, codes))


def run(name: str, fleet, cli, env, *, ref: str = "v3", args: tuple = (), trigger=None, action=None,
        heal=None, expect: tuple = (-9,), do_recover: bool = True, timeout: float = 240,
        inventory: str | None = None, prefix: tuple[str, ...] = ()) -> Orchestrator:
    """The scenario: baseline, the faulted run (with `inventory` if given, else the fault
    inventory; under the argv `prefix` if given, e.g. faketime), heal, recover, invariants
    (recorded in the table)."""
    snap = baseline(fleet, cli, env)
    o = None
    code: object = "?"
    rec = "-"
    texts: list[str] = []
    try:
        with ArgvWatch(env.secret) as watch:
            o = Orchestrator(["deploy", "--env", "local", "--ref", ref, *args], inventory or env.inventory,
                             env.env(), prefix)
            if trigger is not None:
                hit = o.wait_for(trigger, timeout=timeout)
                if hit is not None and action is not None:
                    action(o)
            code = o.finish(timeout=timeout)
            texts = [o.stdout, o.stderr]
            if heal is not None:
                heal()
            if do_recover:
                rec = recover(cli, env)
        allowed = {snap} | releases_of(cli, env, ref)
        obs = check_invariants(fleet, cli, env.inventory, allowed=allowed, canary_rows=CANARY_ROWS,
                               secret=env.secret, texts=texts, state_dir=env.state_dir)
        if watch.seen:
            obs.problems.append(f"the canary secret was in the argv of processes {watch.seen[:3]}")
        assert code in expect, f"{name}: exit {code}, expected {expect}\n{texts[1][-3000:] if texts else ''}"
        assert obs.ok, obs.problems
        record(name, code, rec, True)
        return o
    except BaseException as exc:
        record(name, code, rec, False, str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__)
        if heal is not None:
            try:
                heal()
            except Exception:  # noqa: BLE001 - healed already
                pass
        raise
    finally:
        if o is not None and o.proc.poll() is None:
            o.kill()
