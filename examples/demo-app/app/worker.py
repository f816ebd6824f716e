#!/usr/bin/env python3
"""Queue worker of the demo app.

    worker.py [--poll SECONDS] [--heartbeat SECONDS]

Every --poll seconds (0.2) it claims one pending job and marks it done with this
release's id; every --heartbeat seconds (1.0) it upserts a row in
worker_heartbeats and rewrites storage/worker-<hostname>.json atomically with
{"release", "pid", "seen_at" (unix epoch), "host", "db"}.  SIGTERM/SIGINT:
finish the current job, exit 0.  Database errors: reconnect after 1 s.

Restart (Laravel's `queue:restart`, by a file): when storage/queue-restart changes (a deploy
writes it), the worker finishes its current job and re-executes itself from the path it was
started by (current/worker.py), so it runs the release `current` now points at, in the same
process (the process manager sees no exit, and has no restart delay to add).
"""

import argparse
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.parse

import psycopg

HERE = os.path.dirname(os.path.realpath(__file__))
STORAGE = os.path.join(HERE, "storage")
HOST = socket.gethostname()
HEARTBEAT_FILE = os.path.join(STORAGE, f"worker-{HOST}.json")
RESTART_FILE = os.path.join(STORAGE, "queue-restart")

CLAIM_SQL = (
    "UPDATE jobs SET status = 'done', done_by_release = %s, done_by_host = %s, done_at = now()"
    " WHERE id = (SELECT id FROM jobs WHERE status = 'pending' ORDER BY id"
    " FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id"
)
HEARTBEAT_SQL = (
    "INSERT INTO worker_heartbeats (host, release, pid, seen_at) VALUES (%s, %s, %s, now())"
    " ON CONFLICT (host) DO UPDATE SET release = EXCLUDED.release, pid = EXCLUDED.pid,"
    " seen_at = EXCLUDED.seen_at"
)


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


def read_revision():
    try:
        with open(os.path.join(HERE, "REVISION"), encoding="utf-8") as f:
            return f.readline().strip() or "unknown"
    except OSError:
        return "unknown"


CONFIG = load_env(os.path.join(HERE, ".env"))
DATABASE_URL = os.environ.get("DATABASE_URL", CONFIG.get("DATABASE_URL", ""))
RELEASE = read_revision()


def redact(text):
    text = str(text)
    if DATABASE_URL:
        text = text.replace(DATABASE_URL, "<DATABASE_URL>")
        password = urllib.parse.urlsplit(DATABASE_URL).password
        if password:
            text = text.replace(password, "***")
    return text.replace("\n", " ").strip()


def log(msg):
    print(f"worker[{os.getpid()}] release={RELEASE} {msg}", flush=True)


def write_heartbeat_file(db_ok):
    data = {
        "release": RELEASE,
        "pid": os.getpid(),
        "seen_at": time.time(),
        "host": HOST,
        "db": "ok" if db_ok else "fail",
    }
    try:
        os.makedirs(STORAGE, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=STORAGE, prefix=f".worker-{HOST}-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, HEARTBEAT_FILE)
    except OSError as exc:
        log(f"cannot write heartbeat file: {exc}")


def restart_mark():
    try:
        st = os.stat(RESTART_FILE)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def run(poll, heartbeat):
    """0 when stopped by a signal; "restart" when storage/queue-restart changed."""
    stop = threading.Event()
    mark = restart_mark()

    def on_signal(signum, frame):
        log(f"received signal {signum}, stopping after the current job")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    log(f"started on {HOST} (poll {poll}s, heartbeat {heartbeat}s)")
    conn = None
    db_ok = False
    next_heartbeat = 0.0
    restart = False
    while not stop.is_set():
        if restart_mark() != mark:
            log("restart requested (storage/queue-restart changed)")
            restart = True
            break
        now = time.monotonic()
        try:
            if conn is None or conn.closed:
                db_ok = False
                conn = psycopg.connect(DATABASE_URL, connect_timeout=2, autocommit=True)
                log("connected to the database")
            if now >= next_heartbeat:
                conn.execute(HEARTBEAT_SQL, (HOST, RELEASE, os.getpid()))
            row = conn.execute(CLAIM_SQL, (RELEASE, HOST)).fetchone()
            db_ok = True
            if row is not None:
                log(f"job {row[0]} done")
        except psycopg.Error as exc:
            db_ok = False
            log(f"database error ({type(exc).__name__}: {redact(exc)}); retrying in 1s")
            if conn is not None:
                try:
                    conn.close()
                except psycopg.Error:
                    pass
            conn = None
            if now >= next_heartbeat:
                write_heartbeat_file(db_ok)
                next_heartbeat = now + heartbeat
            stop.wait(1.0)
            continue
        if now >= next_heartbeat:
            write_heartbeat_file(db_ok)
            next_heartbeat = now + heartbeat
        if row is None:
            stop.wait(poll)
    if conn is not None:
        conn.close()
    if restart and not stop.is_set():
        return "restart"
    log("stopped")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="worker.py", description="demo app queue worker")
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between job polls")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    args = parser.parse_args(argv)
    if not DATABASE_URL:
        print("worker: DATABASE_URL is not set (in .env or the environment)", file=sys.stderr)
        return 1
    code = run(max(args.poll, 0.01), max(args.heartbeat, 0.1))
    if code == "restart":
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    return code


if __name__ == "__main__":
    sys.exit(main())
