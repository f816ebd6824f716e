"""What proving and restoring a backup costs, on PostgreSQL and on MariaDB, by database size.

    sudo .venv/bin/python benchmarks/restores.py [--rows 0 100000 1000000] [--kinds postgresql mariadb]

Brings up a fresh fleet (no S3) and, for each database kind in turn, installs the Laravel example
app on it (db1's PostgreSQL, or a MariaDB server of its own on db1) and deploys v1 and v2. Then,
for each row count: fills the app's `notes` table with that many rows (one INSERT ... SELECT of
rows of about 100 bytes), runs the nightly job (`maintenance run`: a dump, then the test
restores of the newest deploy's backup and of tonight's, each into a scratch database that is
dropped after) and a bad release whose health gate fails (`deploy --ref v3-bad`: the backup
before it, its migration, then the rollback's restore of that backup), each bounded by
`--timeout`. The wall time of each step is read from the JSON events (a step's start to its
end on db1). Prints one row per kind and row count: the dump's size, the nightly backup, each
test restore, the deploy's backup and the rollback's restore, in seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployer.fleet.harness import Fleet  # noqa: E402
from deployer.fleet.laravel import DB_NAME, MY_ROOT, LaravelSite  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PSQL = "runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -h /srv/pg/run -XAtq"


def run(site: LaravelSite, *args: str, timeout: float) -> tuple[int, list[dict]]:
    argv = [sys.executable, "-m", "deployer", *args, "--env", "laravel", "--inventory", str(site.inventory_path),
            "--output", "json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    events = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    return proc.returncode, events


def steps(events: list[dict], host: str = "db1") -> list[tuple[str, float]]:
    """(what, seconds) of each step on `host`, in order: from its command event to its end."""
    out, start = [], None
    for e in events:
        if e.get("host") != host:
            continue
        at = dt.datetime.strptime(e["at"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
        if e.get("event") == "command":
            start = at
        elif e.get("event") == "host" and e.get("state") in ("done", "failed") and start is not None:
            out.append((e.get("stage", "?"), at - start))
            start = None
    return out


def sql(fleet: Fleet, kind: str, query: str) -> str:
    if kind == "postgresql":
        cmd = f"{PSQL} -d {DB_NAME} -c {shlex.quote(query)}"
    else:
        cmd = f"{MY_ROOT} -N -B {DB_NAME} -e {shlex.quote(query)}"
    return fleet.sh("db1", cmd).stdout.strip()


def fill(fleet: Fleet, kind: str, rows: int) -> None:
    sql(fleet, kind, "DELETE FROM notes")
    if rows == 0:
        return
    if kind == "postgresql":
        sql(fleet, kind, f"INSERT INTO notes (text, created_at) SELECT repeat(md5(g::text), 3), now() "
                         f"FROM generate_series(1, {rows}) g")
    else:
        sql(fleet, kind, f"INSERT INTO notes (text, created_at) SELECT REPEAT(MD5(seq), 3), NOW() "
                         f"FROM seq_1_to_{rows}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[0, 100_000, 1_000_000])
    ap.add_argument("--kinds", nargs="+", default=["postgresql", "mariadb"], choices=["postgresql", "mariadb"])
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds each deployer command gets")
    args = ap.parse_args()
    fleet = Fleet()
    fleet.up(3, s3=False, log=lambda *_: None)
    table = []
    try:
        for kind in args.kinds:
            site = LaravelSite(fleet, kind)
            site.install(log=lambda *_: None)
            try:
                for ref in ("v1", "v2"):
                    code, _ = run(site, "deploy", "--ref", ref, timeout=args.timeout)
                    assert code == 0, f"{kind}: deploy {ref} exited {code}"
                for rows in args.rows:
                    fill(fleet, kind, rows)
                    code, night = run(site, "maintenance", "run", "--force", "--reason", "benchmark",
                                      timeout=args.timeout)
                    assert code == 0, f"{kind}, {rows} rows: maintenance run exited {code}"
                    n = dict(steps(night))
                    proofs = [s for w, s in steps(night) if w == "test restore"]
                    code, bad = run(site, "deploy", "--ref", "v3-bad", timeout=args.timeout)
                    assert code == 1, f"{kind}, {rows} rows: deploy v3-bad exited {code} (1: rolled back)"
                    b = steps(bad)
                    backup = next((s for w, s in b if w == "backup"), float("nan"))
                    restore = next((s for w, s in b if w == "restore database"), float("nan"))
                    dump = fleet.sh("db1", "ls -l --block-size=K /srv/laravel/backups | grep nightly | tail -1 | "
                                           "awk '{print $5}'").stdout.strip()
                    table.append((kind, rows, dump, n.get("nightly backup", float("nan")), proofs, backup, restore))
                    print(f"{kind:10} {rows:>9} rows: dump {dump:>8}, nightly backup {table[-1][3]:5.2f} s, "
                          f"test restores {', '.join(f'{p:5.2f}' for p in proofs)} s, deploy's backup "
                          f"{backup:5.2f} s, rollback's restore {restore:5.2f} s", flush=True)
            finally:
                site.remove(quiet=True)
    finally:
        fleet.down(quiet=True)
    print()
    print(f"{'database':10} {'rows':>9} {'dump':>8} {'nightly':>8} {'test restores':>15} {'backup':>7} {'restore':>8}")
    for kind, rows, dump, night, proofs, backup, restore in table:
        print(f"{kind:10} {rows:>9} {dump:>8} {night:8.2f} {' + '.join(f'{p:.2f}' for p in proofs):>15} "
              f"{backup:7.2f} {restore:8.2f}")


if __name__ == "__main__":
    main()
