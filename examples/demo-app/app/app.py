"""Demo WSGI application deployed by deployer in tests.

Served by gunicorn as ``app:application`` with ``--pythonpath <app>/current``.
Only the standard library and psycopg 3 are used.  Everything is found relative
to this file's *real* directory, so code imported through the ``current``
symlink knows which release it belongs to.
"""

import contextlib
import datetime
import json
import os
import socket
import time
import urllib.parse

import psycopg
import psycopg.rows

HERE = os.path.dirname(os.path.realpath(__file__))
STORAGE = os.path.join(HERE, "storage")
LOG_FILE = os.path.join(STORAGE, "logs", "app.log")
MAINTENANCE_FILE = os.path.join(STORAGE, "maintenance.json")
HOST = socket.gethostname()


def _read_first_line(name, default):
    try:
        with open(os.path.join(HERE, name), encoding="utf-8") as f:
            return f.readline().strip() or default
    except OSError:
        return default


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


def _config():
    cfg = load_env(os.path.join(HERE, ".env"))
    for key in ("DATABASE_URL", "APP_ENV", "APP_DEBUG"):
        if key in os.environ:
            cfg[key] = os.environ[key]
    return cfg


REVISION = _read_first_line("REVISION", "unknown")
VERSION = _read_first_line("VERSION", "unknown")
CONFIG = _config()
DATABASE_URL = CONFIG.get("DATABASE_URL", "")


def redact(text):
    """Remove the database URL and its password from a message."""
    text = str(text)
    if DATABASE_URL:
        text = text.replace(DATABASE_URL, "<DATABASE_URL>")
        password = urllib.parse.urlsplit(DATABASE_URL).password
        if password:
            text = text.replace(password, "***")
    return text


# --- database: one lazy connection per process, re-created after any failure ----

_conn = None
_conn_pid = None


def _get_conn():
    global _conn, _conn_pid
    if _conn is None or _conn.closed or _conn_pid != os.getpid():
        if not DATABASE_URL:
            raise RuntimeError("DATABASE_URL is not set")
        _conn = psycopg.connect(DATABASE_URL, connect_timeout=2, autocommit=True)
        _conn_pid = os.getpid()
    return _conn


def _drop_conn():
    global _conn
    if _conn is not None:
        with contextlib.suppress(psycopg.Error, OSError):
            _conn.close()
    _conn = None


def run(sql, params=None, *, dicts=False):
    """Run one statement (autocommit) and return all rows (tuples or dicts).

    A broken connection (database restarted, network blip) is dropped and the
    statement retried once on a fresh connection.
    """
    for attempt in (1, 2):
        conn = _get_conn()
        try:
            factory = psycopg.rows.dict_row if dicts else psycopg.rows.tuple_row
            with conn.cursor(row_factory=factory) as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        except psycopg.OperationalError:
            _drop_conn()
            if attempt == 2:
                raise
        except psycopg.Error:
            if conn.broken:
                _drop_conn()
            raise


def scalar(sql, params=None):
    return run(sql, params)[0][0]


def schema_version():
    if scalar("SELECT to_regclass('schema_migrations')") is None:
        return None
    return scalar("SELECT coalesce(max(version), 0) FROM schema_migrations")


# --- helpers ---------------------------------------------------------------------

STATUS_TEXT = {
    200: "200 OK",
    201: "201 Created",
    400: "400 Bad Request",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}


def log_line(text):
    try:
        os.makedirs(os.path.dirname(LOG_FILE), exist_ok=True)
        with open(LOG_FILE, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    except OSError:
        pass  # logging must never break a request


def maintenance_state():
    """Return the maintenance dict if maintenance mode is active, else None.

    The file is ignored once ``expires_at`` (unix epoch) is in the past, so a
    crashed orchestrator cannot leave the site down.  An unreadable file counts
    as maintenance for 10 minutes after its modification time.
    """
    try:
        with open(MAINTENANCE_FILE, encoding="utf-8") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        raw = ""
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            data = None
    except ValueError:
        data = None
    if data is None:
        try:
            mtime = os.stat(MAINTENANCE_FILE).st_mtime
        except OSError:
            return None
        data = {"message": "maintenance", "retry": 30, "expires_at": mtime + 600}
    expires_at = data.get("expires_at")
    if expires_at is not None:
        try:
            if float(expires_at) <= time.time():
                return None
        except (TypeError, ValueError):
            pass
    try:
        retry = int(data.get("retry", 30))
    except (TypeError, ValueError):
        retry = 30
    return {"message": str(data.get("message", "maintenance")), "retry": max(retry, 0)}


def read_body(environ):
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    ctype = environ.get("CONTENT_TYPE", "")
    text = raw.decode("utf-8", "replace")
    if "json" in ctype or text.lstrip().startswith("{"):
        try:
            data = json.loads(text or "{}")
        except ValueError:
            raise BadRequest("invalid JSON body") from None
        if not isinstance(data, dict):
            raise BadRequest("JSON body must be an object")
        return data
    return {k: v[-1] for k, v in urllib.parse.parse_qs(text).items()}


class BadRequest(Exception):
    pass


def _json_default(value):
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return str(value)


# --- handlers ----------------------------------------------------------------------


def health():
    checks = {"database": "fail", "schema": None}
    try:
        scalar("SELECT 1")
        checks["database"] = "ok"
        checks["schema"] = schema_version()
    except Exception as exc:  # noqa: BLE001 - any failure means the check failed
        log_line(f"{_now_iso()} health check failed: {type(exc).__name__}")
    ok = checks["database"] == "ok"
    body = {
        "status": "ok" if ok else "fail",
        "release": REVISION,
        "version": VERSION,
        "host": HOST,
        "checks": checks,
    }
    return (200 if ok else 503), body


def index():
    items = scalar("SELECT count(*) FROM items")
    return 200, {"release": REVISION, "version": VERSION, "host": HOST, "items": items}


def create_item(environ):
    data = read_body(environ)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("name is required")
    rows = run(
        "INSERT INTO items (name) VALUES (%s) RETURNING id, name, created_at",
        (name.strip(),),
        dicts=True,
    )
    return 201, rows[0]


def list_items():
    return 200, run("SELECT id, name, created_at FROM items ORDER BY id", dicts=True)


def create_job(environ):
    data = read_body(environ)
    payload = data.get("payload", "")
    if not isinstance(payload, str):
        payload = json.dumps(payload)
    job_id = scalar("INSERT INTO jobs (payload) VALUES (%s) RETURNING id", (payload,))
    return 201, {"id": job_id}


def get_job(job_id):
    rows = run(
        "SELECT id, payload, status, done_by_release, done_by_host, created_at, done_at"
        " FROM jobs WHERE id = %s",
        (job_id,),
        dicts=True,
    )
    if not rows:
        return 404, {"error": "not found"}
    return 200, rows[0]


def route(environ):
    method = environ.get("REQUEST_METHOD", "GET").upper()
    path = environ.get("PATH_INFO", "/") or "/"
    if path != "/" and path.endswith("/"):
        path = path.rstrip("/")
    if path == "/health":
        return health() if method in ("GET", "HEAD") else (405, {"error": "method not allowed"})
    if path == "/":
        return index() if method in ("GET", "HEAD") else (405, {"error": "method not allowed"})
    if path == "/items":
        if method == "POST":
            return create_item(environ)
        if method in ("GET", "HEAD"):
            return list_items()
        return 405, {"error": "method not allowed"}
    if path == "/jobs":
        if method == "POST":
            return create_job(environ)
        return 405, {"error": "method not allowed"}
    if path.startswith("/jobs/"):
        job_id = path[len("/jobs/") :]
        if not job_id.isdigit():
            return 404, {"error": "not found"}
        if method in ("GET", "HEAD"):
            return get_job(int(job_id))
        return 405, {"error": "method not allowed"}
    return 404, {"error": "not found"}


def application(environ, start_response):
    started = time.monotonic()
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "/") or "/"
    headers = [("Content-Type", "application/json")]
    maintenance = maintenance_state()
    # The deploy gate checks the new release while maintenance mode keeps users out.
    gate = path == "/health" and environ.get("HTTP_X_DEPLOYER_GATE") == "1"
    if maintenance is not None and not gate:
        status = 503
        body = {"status": "maintenance", "message": maintenance["message"], "release": REVISION}
        headers.append(("Retry-After", str(maintenance["retry"])))
    else:
        try:
            status, body = route(environ)
        except BadRequest as exc:
            status, body = 400, {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - the app's last line of defence
            status, body = 500, {"error": "internal error", "type": type(exc).__name__}
            detail = redact(exc).replace("\n", " ")
            log_line(f"{_now_iso()} ERROR {method} {path} {type(exc).__name__}: {detail}")
    payload = json.dumps(body, default=_json_default).encode("utf-8")
    headers.append(("Content-Length", str(len(payload))))
    elapsed_ms = (time.monotonic() - started) * 1000
    log_line(f"{_now_iso()} {method} {path} {status} {elapsed_ms:.1f}ms")
    start_response(STATUS_TEXT.get(status, f"{status} Status"), headers)
    return [b""] if method == "HEAD" else [payload]


def _now_iso():
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
