#!/usr/bin/env python3
"""Management commands of the demo app (migrations, cache, environment check).

    manage.py migrate [--to N]
    manage.py schema-version
    manage.py pending [--json]
    manage.py can-rollback --to N
    manage.py warm-cache
    manage.py check

Exit 0 on success, 1 on failure (message on stderr), 2 on usage errors.
"""

import argparse
import json
import os
import re
import stat
import sys
import tempfile
import urllib.parse

HERE = os.path.dirname(os.path.realpath(__file__))
MIGRATIONS_DIR = os.path.join(HERE, "migrations")
STORAGE = os.path.join(HERE, "storage")
ENV_FILE = os.path.join(HERE, ".env")
MIGRATION_RE = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.up\.sql$")
ONLINE_SAFE_MARKER = "-- online-safe"
# Serialises migrations run concurrently from several hosts.
ADVISORY_LOCK_ID = 7_240_001


class Failure(Exception):
    """A clean, user-facing failure: printed to stderr, exit 1."""


def load_env(path):
    """Parse KEY=VALUE lines (``#`` comments, optional ``export``, optional quotes)."""
    values = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return values
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export ") :].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def config():
    cfg = load_env(ENV_FILE)
    for key in ("DATABASE_URL", "APP_ENV", "APP_DEBUG"):
        if key in os.environ:
            cfg[key] = os.environ[key]
    return cfg


CONFIG = config()
DATABASE_URL = CONFIG.get("DATABASE_URL", "")


def redact(text):
    text = str(text)
    if DATABASE_URL:
        text = text.replace(DATABASE_URL, "<DATABASE_URL>")
        password = urllib.parse.urlsplit(DATABASE_URL).password
        if password:
            text = text.replace(password, "***")
    return text


def connect():
    import psycopg

    if not DATABASE_URL:
        raise Failure("DATABASE_URL is not set (in .env or the environment)")
    try:
        return psycopg.connect(DATABASE_URL, connect_timeout=5, autocommit=True)
    except psycopg.Error as exc:
        raise Failure(f"cannot connect to the database: {redact(exc).strip()}") from None


# --- migrations on disk ------------------------------------------------------------


class Migration:
    def __init__(self, version, name, up_path):
        self.version = version
        self.name = name
        self.up_path = up_path
        self.down_path = up_path[: -len(".up.sql")] + ".down.sql"

    @property
    def filename(self):
        return os.path.basename(self.up_path)

    @property
    def down_filename(self):
        return os.path.basename(self.down_path)

    @property
    def has_down(self):
        return os.path.isfile(self.down_path)

    @property
    def online_safe(self):
        with open(self.up_path, encoding="utf-8") as f:
            return f.readline().strip().lower() == ONLINE_SAFE_MARKER

    def as_json(self):
        return {
            "version": self.version,
            "name": self.name,
            "online_safe": self.online_safe,
            "has_down": self.has_down,
        }


def migrations_on_disk():
    found = {}
    if not os.path.isdir(MIGRATIONS_DIR):
        return found
    for fname in sorted(os.listdir(MIGRATIONS_DIR)):
        m = MIGRATION_RE.match(fname)
        if not m:
            continue
        version = int(m.group(1))
        if version in found:
            raise Failure(
                f"two migrations with version {version}: {found[version].filename}, {fname}"
            )
        found[version] = Migration(version, m.group(2), os.path.join(MIGRATIONS_DIR, fname))
    return found


def read_sql(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# --- migrations in the database ----------------------------------------------------


def ensure_table(conn):
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )


def applied_versions(conn):
    if conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None:
        return []
    return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def current_version(conn):
    applied = applied_versions(conn)
    return max(applied) if applied else 0


def pending(conn, disk):
    applied = set(applied_versions(conn))
    return [disk[v] for v in sorted(disk) if v not in applied]


def missing_downs(conn, disk, target):
    """Down files needed to go from the current schema to ``target`` that do not exist."""
    missing = []
    for v in sorted((v for v in applied_versions(conn) if v > target), reverse=True):
        m = disk.get(v)
        if m is None:
            missing.append(f"{v:04d}_*.down.sql (migration {v} is not in this release)")
        elif not m.has_down:
            missing.append(m.down_filename)
    return missing


def apply_up(conn, m):
    import psycopg

    try:
        with conn.transaction():
            conn.execute(read_sql(m.up_path))
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (m.version, m.name)
            )
    except psycopg.Error as exc:
        raise Failure(
            f"migration {m.filename} failed and was rolled back: {redact(exc).strip()}"
        ) from None
    print(f"applied {m.filename}", flush=True)


def apply_down(conn, m):
    import psycopg

    try:
        with conn.transaction():
            conn.execute(read_sql(m.down_path))
            conn.execute("DELETE FROM schema_migrations WHERE version = %s", (m.version,))
    except psycopg.Error as exc:
        raise Failure(
            f"migration {m.down_filename} failed and was rolled back: {redact(exc).strip()}"
        ) from None
    print(f"reverted {m.filename} with {m.down_filename}", flush=True)


# --- commands ----------------------------------------------------------------------


def cmd_migrate(args):
    disk = migrations_on_disk()
    with connect() as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_ID,))
        try:
            ensure_table(conn)
            current = current_version(conn)
            target = args.to
            if target is not None and target < current:
                missing = missing_downs(conn, disk, target)
                if missing:
                    raise Failure(
                        f"cannot migrate down from {current} to {target}: missing down migration(s): "
                        + ", ".join(missing)
                    )
                for v in sorted((v for v in applied_versions(conn) if v > target), reverse=True):
                    apply_down(conn, disk[v])
            else:
                todo = [m for m in pending(conn, disk) if target is None or m.version <= target]
                if target is not None and target > max(disk, default=0):
                    raise Failure(
                        f"no migration {target} in this release (latest is {max(disk, default=0)})"
                    )
                for m in todo:
                    apply_up(conn, m)
                if not todo:
                    print("nothing to migrate", flush=True)
            print(f"schema version {current_version(conn)}", flush=True)
        finally:
            if not conn.closed and not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_ID,))
    return 0


def cmd_schema_version(args):
    with connect() as conn:
        print(current_version(conn))
    return 0


def cmd_pending(args):
    disk = migrations_on_disk()
    with connect() as conn:
        todo = pending(conn, disk)
    if args.json:
        print(json.dumps([m.as_json() for m in todo]))
    else:
        for m in todo:
            flags = ["online-safe" if m.online_safe else "needs-maintenance"]
            flags.append("has-down" if m.has_down else "no-down")
            print(f"{m.filename} {' '.join(flags)}")
        if not todo:
            print("no pending migrations")
    return 0


def cmd_can_rollback(args):
    disk = migrations_on_disk()
    with connect() as conn:
        current = current_version(conn)
        missing = missing_downs(conn, disk, args.to)
    if missing:
        print(
            f"cannot roll back schema from {current} to {args.to}: missing " + ", ".join(missing),
            file=sys.stderr,
        )
        return 1
    print(f"can roll back schema from {current} to {args.to}")
    return 0


def cmd_warm_cache(args):
    with connect() as conn:
        items = conn.execute("SELECT count(*) FROM items").fetchone()[0]
    cache_dir = os.path.join(STORAGE, "cache")
    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".warm-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"items": items, "release": read_revision()}, f)
    os.replace(tmp, os.path.join(cache_dir, "warm.json"))
    print("cache warmed")
    return 0


def cmd_check(args):
    problems = []
    env_real = os.path.realpath(ENV_FILE)
    if not os.path.isfile(env_real):
        problems.append(f".env not found ({ENV_FILE})")
    else:
        mode = stat.S_IMODE(os.stat(env_real).st_mode)
        if mode != 0o600:
            problems.append(f".env ({env_real}) has mode {mode:04o}, expected 0600")
    if not DATABASE_URL:
        problems.append("DATABASE_URL is not set")
    debug = CONFIG.get("APP_DEBUG", "false").strip().lower()
    if debug in ("1", "true", "yes", "on"):
        problems.append(
            f"APP_DEBUG is {CONFIG.get('APP_DEBUG')!r}: debug must be off in production"
        )
    app_env = CONFIG.get("APP_ENV", "")
    if app_env != "production":
        problems.append(f"APP_ENV is {app_env!r}, expected 'production'")
    if not os.path.isdir(STORAGE):
        problems.append(f"storage directory missing ({STORAGE})")
    elif not os.access(STORAGE, os.W_OK):
        problems.append(f"storage directory not writable ({STORAGE})")
    if problems:
        for p in problems:
            print(f"check failed: {p}", file=sys.stderr)
        return 1
    print("check ok")
    return 0


def read_revision():
    try:
        with open(os.path.join(HERE, "REVISION"), encoding="utf-8") as f:
            return f.readline().strip() or "unknown"
    except OSError:
        return "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="manage.py", description="demo app management")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("migrate", help="apply pending migrations, or migrate down with --to N")
    p.add_argument("--to", type=int, default=None, metavar="N", help="target schema version")
    p.set_defaults(func=cmd_migrate)
    p = sub.add_parser("schema-version", help="print the current schema version (0 when none)")
    p.set_defaults(func=cmd_schema_version)
    p = sub.add_parser("pending", help="list pending migrations")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_pending)
    p = sub.add_parser("can-rollback", help="exit 0 if every down file down to N exists")
    p.add_argument("--to", type=int, required=True, metavar="N")
    p.set_defaults(func=cmd_can_rollback)
    p = sub.add_parser("warm-cache", help="warm the application cache")
    p.set_defaults(func=cmd_warm_cache)
    p = sub.add_parser("check", help="verify the production environment")
    p.set_defaults(func=cmd_check)
    args = parser.parse_args(argv)
    if getattr(args, "to", None) is not None and args.to < 0:
        parser.error("--to must be >= 0")
    try:
        return args.func(args)
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - never leak a traceback with the DSN
        print(f"error: {type(exc).__name__}: {redact(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
