"""PostgreSQL backups: dump to a temporary name, verify, checksum, rename; all-or-nothing restore;
the write fence; test restores. (MariaDB's: deployer.commands.mariadb, the same methods.)"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import ClassVar

from ..shell import Command, q, raw


def run_as(os_user: str | None, script: str) -> str:
    """`script` run as whoever runs the database tools: the SSH user itself when no `os_user`
    is set, else that OS user through sudo (runuser when the SSH user is root, which needs no
    sudo rule). The only place that decides it."""
    if os_user is None:
        return f"sh -c {q(script)}"
    user = q(os_user)
    return (f"cd / && if [ \"$(id -u)\" -eq 0 ]; then set -- runuser -u {user} --; "
            f"else set -- sudo -n -u {user} --; fi && \"$@\" sh -c {q(script)}")


@dataclass(frozen=True)
class Postgres:
    name: str
    os_user: str | None
    bin_dir: str
    socket_dir: str | None
    port: int
    backup_dir: str
    user: str | None = None  # the database role (-U); None: libpq's default
    host: str | None = None  # TCP host; else socket_dir; else libpq's default
    password_file: str | None = None  # PGPASSFILE

    kind: ClassVar[str] = "PostgreSQL"

    @classmethod
    def of(cls, cfg) -> Postgres:
        return cls(cfg.name, cfg.os_user, cfg.bin_dir, cfg.socket_dir, cfg.port or 5432, cfg.backup_dir,
                   user=cfg.user, host=cfg.host, password_file=cfg.password_file)

    def conn_args(self) -> str:
        args = [f"-p {q(self.port)}"]
        if self.host or self.socket_dir:
            args.insert(0, f"-h {q(self.host or self.socket_dir)}")
        if self.user:
            args.append(f"-U {q(self.user)}")
        return " ".join(args)

    def as_user(self, script: str) -> str:
        """`run_as` the tools' user; PGPASSFILE set inside."""
        if self.password_file:
            script = f"export PGPASSFILE={q(self.password_file)}; {script}"
        return run_as(self.os_user, script)

    def tool(self, name: str) -> str:
        return q(posixpath.join(self.bin_dir, name) if self.bin_dir else name)

    # -- what the plans run: the same methods on each kind of database --------------------
    def backup_path(self, env: str, release: str, kind: str = "predeploy") -> str:
        return backup_path(self, env, release, kind)

    def dump(self, path: str) -> Command:
        return dump(self, path)

    def verify(self, path: str, sha256: str) -> Command:
        return verify(self, path, sha256)

    def restore(self, path: str) -> Command:
        return restore(self, path)

    def restore_once(self, path: str, sha256: str) -> Command:
        return restore_once(self, path, sha256)

    def fence(self) -> Command:
        return fence(self)

    def unfence(self) -> Command:
        return unfence(self)

    def fence_left(self) -> Command:
        """Prints `fence` when the write fence (or any part of it) is in the database."""
        sql = ("SELECT 'fence' WHERE to_regclass('public.deployer_fence') IS NOT NULL OR EXISTS (SELECT FROM "
               "pg_proc WHERE proname = 'deployer_fence_note') OR EXISTS (SELECT FROM pg_trigger WHERE tgname "
               "LIKE 'deployer_fence_%')")
        return raw(self.as_user(f"{self.tool('psql')} -XAtq {self.conn_args()} -d {q(self.name)} -c {q(sql)}"))

    def migration_env(self) -> Command | None:
        """What the migration's shell exports so that the write fence tells its writes apart."""
        return raw(f"export PGAPPNAME={FENCE_APP}")

    def migration_over(self) -> Command | None:
        """What the db host runs once the migration ended (nothing: PostgreSQL names the
        migration's connections)."""
        return None

    def prove(self, path: str, sha256: str | None = None) -> Command:
        return prove(self, path, sha256)

    def scratch_name(self) -> str:
        return scratch_name(self)


def backup_file(backup_dir: str, env: str, release: str, kind: str = "predeploy") -> str:
    """A backup's path on the db host, for either kind of database (retention reads the names)."""
    return posixpath.join(backup_dir, f"{env}-{kind}-{release}.dump")


def backup_path(db: Postgres, env: str, release: str, kind: str = "predeploy") -> str:
    return backup_file(db.backup_dir, env, release, kind)


def dump(db: Postgres, path: str) -> Command:
    """pg_dump -Fc to path.partial, verified with pg_restore --list, then renamed.

    Prints `sha256 size` on success; on any failure the partial file is removed.
    """
    tmp = path + ".partial"
    inner = (
        f"umask 077; mkdir -p -m 700 {q(db.backup_dir)} && rm -f {q(tmp)} && "
        f"if {db.tool('pg_dump')} -Fc {db.conn_args()} -f {q(tmp)} {q(db.name)} "
        f"&& {db.tool('pg_restore')} --list {q(tmp)} >/dev/null "
        f"&& sum=$(sha256sum {q(tmp)} | cut -d' ' -f1) && size=$(stat -c %s {q(tmp)}) "
        f"&& mv -T {q(tmp)} {q(path)}; then echo \"$sum $size\"; "
        f"else rc=$?; rm -f {q(tmp)}; exit $rc; fi"
    )
    return raw(db.as_user(inner))


def parse_dump(output: str) -> tuple[str, int]:
    parts = output.strip().split()
    if len(parts) != 2 or len(parts[0]) != 64:
        raise ValueError(f"backup: unexpected output {output.strip()!r}")
    return parts[0], int(parts[1])


def verify(db: Postgres, path: str, sha256: str) -> Command:
    """The backup is there, has its sha256 and reads as a dump (as the tools' user: the
    backups are theirs, mode 0600)."""
    return raw(db.as_user(_verify(db, path, sha256)))


def _verify(db: Postgres, path: str, sha256: str) -> str:
    return (f"test -f {q(path)} && echo {q(sha256)}' '{q(path)} | sha256sum -c --status - "
            f"&& {db.tool('pg_restore')} --list {q(path)} >/dev/null")


def restore(db: Postgres, path: str) -> Command:
    """Give the database back the dump's content, in one transaction (see `_restore`)."""
    return raw(db.as_user(_restore(db, path)))


#: Everything in the public schema, dropped in the restore's transaction, the schema itself kept
#: (its owner, privileges, comment and initial privileges stay as they are; the dump applies its
#: own). Extensions first (their members go with them), then each object the schema holds that
#: is not part of another (a table's row type, an identity sequence, an extension's function),
#: by its catalog identity; anything left makes the transaction fail: nothing is half-restored.
#: `keep`: an object to spare (the write fence's table, which carries the restore's mark).
_WIPE_SQL = """DO $w$ DECLARE r record; keep text := %s; BEGIN
  FOR r IN SELECT extname FROM pg_extension WHERE extnamespace = 'public'::regnamespace LOOP
    EXECUTE format('DROP EXTENSION IF EXISTS %%I CASCADE', r.extname);
  END LOOP;
  FOR r IN SELECT o.type, o.identity FROM pg_depend d, LATERAL pg_identify_object(d.classid, d.objid, 0) o
      WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = 'public'::regnamespace
        AND d.deptype = 'n' AND o.identity IS DISTINCT FROM keep
        AND NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = d.classid AND x.objid = d.objid
                        AND x.deptype IN ('i', 'e') AND x.refobjid <> x.objid)
      ORDER BY o.type IN ('table', 'partitioned table', 'foreign table', 'view', 'materialized view') DESC LOOP
    EXECUTE format('DROP %%s IF EXISTS %%s CASCADE', CASE r.type WHEN 'partitioned table' THEN 'TABLE'
      WHEN 'partitioned index' THEN 'INDEX' WHEN 'composite type' THEN 'TYPE'
      WHEN 'statistics object' THEN 'STATISTICS' ELSE upper(r.type) END, r.identity);
  END LOOP;
  IF EXISTS (SELECT 1 FROM pg_depend d, LATERAL pg_identify_object(d.classid, d.objid, 0) o
             WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = 'public'::regnamespace
               AND d.deptype = 'n' AND o.identity IS DISTINCT FROM keep
               AND NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = d.classid AND x.objid = d.objid
                               AND x.deptype IN ('i', 'e') AND x.refobjid <> x.objid)) THEN
    RAISE EXCEPTION 'restore: objects of schema public could not be dropped';
  END IF;
END $w$;"""

FENCE_TABLE = "public.deployer_fence"
RESTORED = "RESTORED"  # the `op` of the restore's mark in the fence table


def mark_of(sha256: str) -> str:
    """The mark a restore leaves in the fence table (checked by a second restore)."""
    return f"deployer: restored from a backup with sha256 {sha256}"


def _restore(db: Postgres, path: str, mark: str | None = None) -> str:
    """The dump is rendered to SQL first (so a broken dump fails before anything is touched),
    then applied with psql --single-transaction and ON_ERROR_STOP: all or nothing. Everything in
    the public schema goes first (`_WIPE_SQL`): objects created after the dump (a new table) go
    too; the schema itself stays, with its privileges and comment, and nothing is added to it.
    With `mark`, the fence table is spared and the same transaction writes the mark in it (see
    `restore_once`); without, the fence goes with the rest."""
    sql = path + ".restore.sql"
    keep = f"'{FENCE_TABLE}'" if mark else "NULL"
    tail = ""
    if mark:
        tail = "; echo " + q(f"INSERT INTO {FENCE_TABLE} (tbl, op, n, app) VALUES "
                             f"('', '{RESTORED}', 0, '{mark}');")
    inner = (
        f"umask 077; {{ printf '%s\n' {q(_WIPE_SQL % keep)}; "
        f"{db.tool('pg_restore')} -f - {q(path)}{tail}; }} > {q(sql)} "
        f"&& {db.tool('pg_restore')} --list {q(path)} >/dev/null "
        f"&& PGOPTIONS='-c client_min_messages=warning' {db.tool('psql')} -X -q {db.conn_args()} "
        f"--single-transaction -v ON_ERROR_STOP=1 -d {q(db.name)} -f {q(sql)} >/dev/null; rc=$?; rm -f {q(sql)}; exit $rc"
    )
    return inner


def restore_once(db: Postgres, path: str, sha256: str) -> Command:
    """The automatic rollback's restore (run again by `recover` after a crash): the backup
    verified, refused when the write fence saw another writer (`writes_since_backup`), then
    restored, with a mark naming the backup's sha256 written in the fence table by the same
    transaction.

    One restore at a time on the host (a lock file next to the backups), and once per backup:
    a restore that a killed orchestrator left running there is waited for, and when the
    database already carries this backup's mark it is not restored again (a second restore
    would restore over writes made since the first). The mark goes with the fence table, which
    the rollback removes once it is over (`unfence`)."""
    lock = posixpath.join(db.backup_dir, ".restore.lock")
    # each part in its own subshell: their `exit`s end that part, not the script
    checked = f"( {_verify(db, path, sha256)} ) && ( {_writes_since_backup(db)} )"
    if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):  # verify refuses it: nothing to mark
        return raw(db.as_user(f"exec 9>>{q(lock)} && flock 9 && {checked} && ( {_restore(db, path)} )"))
    mark = mark_of(sha256)
    read = (f"{db.tool('psql')} -XAtq {db.conn_args()} -d {q(db.name)} -c "
            + q(f"SELECT app FROM {FENCE_TABLE} WHERE op = '{RESTORED}' AND app = '{mark}'"))
    return raw(db.as_user(
        f"exec 9>>{q(lock)} && flock 9 && if [ \"$({read} 2>/dev/null)\" = {q(mark)} ]; then "
        f"echo 'restore: the database is restored from this backup already' >&2; else "
        f"{checked} && ( {_restore(db, path, mark)} ); fi"))


FENCE_APP = "deployer-migrate"  # application_name of the migration's connections (PGAPPNAME)
FENCE_REFUSED = 98  # exit status of the restore when writes were seen since the backup

_FENCE_SQL = """
CREATE TABLE IF NOT EXISTS public.deployer_fence (
  at timestamptz NOT NULL DEFAULT now(), tbl text, op text, n bigint, app text, client inet);
CREATE OR REPLACE FUNCTION public.deployer_fence_note() RETURNS trigger LANGUAGE plpgsql
  SECURITY DEFINER SET search_path = public AS $f$
DECLARE n bigint;
BEGIN
  IF coalesce(current_setting('application_name', true), '') = 'deployer-migrate' THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'TRUNCATE' THEN n := -1;
  ELSIF TG_OP = 'DELETE' THEN SELECT count(*) INTO n FROM fence_old;
  ELSE SELECT count(*) INTO n FROM fence_new;
  END IF;
  IF n <> 0 THEN  -- a statement that changed no row (an idle queue poll) wrote nothing
    INSERT INTO public.deployer_fence (tbl, op, n, app, client)
    VALUES (TG_TABLE_NAME, TG_OP, n, current_setting('application_name', true), inet_client_addr());
  END IF;
  RETURN NULL;
END $f$;
DO $d$ DECLARE t record; BEGIN
  FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'deployer_fence' LOOP
    EXECUTE format('DROP TRIGGER IF EXISTS deployer_fence_i ON public.%1$I; '
                   'DROP TRIGGER IF EXISTS deployer_fence_u ON public.%1$I; '
                   'DROP TRIGGER IF EXISTS deployer_fence_d ON public.%1$I; '
                   'DROP TRIGGER IF EXISTS deployer_fence_t ON public.%1$I; '
                   'CREATE TRIGGER deployer_fence_i AFTER INSERT ON public.%1$I REFERENCING NEW TABLE AS fence_new '
                   'FOR EACH STATEMENT EXECUTE FUNCTION public.deployer_fence_note(); '
                   'CREATE TRIGGER deployer_fence_u AFTER UPDATE ON public.%1$I REFERENCING NEW TABLE AS fence_new '
                   'FOR EACH STATEMENT EXECUTE FUNCTION public.deployer_fence_note(); '
                   'CREATE TRIGGER deployer_fence_d AFTER DELETE ON public.%1$I REFERENCING OLD TABLE AS fence_old '
                   'FOR EACH STATEMENT EXECUTE FUNCTION public.deployer_fence_note(); '
                   'CREATE TRIGGER deployer_fence_t AFTER TRUNCATE ON public.%1$I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION public.deployer_fence_note()', t.tablename);
  END LOOP;
END $d$;
"""

_UNFENCE_SQL = """
DO $d$ DECLARE t record; BEGIN
  FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP
    EXECUTE format('DROP TRIGGER IF EXISTS deployer_fence_i ON public.%1$I; '
                   'DROP TRIGGER IF EXISTS deployer_fence_u ON public.%1$I; '
                   'DROP TRIGGER IF EXISTS deployer_fence_d ON public.%1$I; '
                   'DROP TRIGGER IF EXISTS deployer_fence_t ON public.%1$I', t.tablename);
  END LOOP;
END $d$;
DROP FUNCTION IF EXISTS public.deployer_fence_note() CASCADE;
DROP TABLE IF EXISTS public.deployer_fence;
"""


def _psql(db: Postgres, sql: str) -> str:
    return (f"PGOPTIONS='-c client_min_messages=warning' {db.tool('psql')} -X -q -v ON_ERROR_STOP=1 "
            f"{db.conn_args()} -d {q(db.name)} -c {q(sql)} >/dev/null")


def fence(db: Postgres) -> Command:
    """After the backup: every write to a table of the app (statement level, any connection)
    is noted, with its application_name. The backup does not hold the fence, so a restore
    removes it; a successful deploy removes it with `unfence`."""
    return raw(db.as_user(_psql(db, _FENCE_SQL)))


def unfence(db: Postgres) -> Command:
    return raw(db.as_user(_psql(db, _UNFENCE_SQL)))


def writes_since_backup(db: Postgres) -> Command:
    """Fails with FENCE_REFUSED, listing them, when someone else than the migration wrote since
    the backup (restoring it would lose those writes); succeeds when nothing did."""
    return raw(db.as_user(_writes_since_backup(db)))


def _writes_since_backup(db: Postgres) -> str:
    sql = (f"SELECT tbl || ' ' || op || ' (' || CASE WHEN n < 0 THEN 'all' ELSE n::text END || ' row(s)) by ' "
           f"|| coalesce(nullif(app, ''), '?') || "
           f"coalesce(' from ' || host(client), '') || ' at ' || at FROM public.deployer_fence "
           f"WHERE coalesce(app, '') <> '{FENCE_APP}' AND op <> '{RESTORED}' ORDER BY at LIMIT 20")
    inner = (f"out=$({db.tool('psql')} -X -A -t {db.conn_args()} -d {q(db.name)} -c {q(sql)} 2>&1) || "
             f"{{ echo \"write fence unreadable: $out\" >&2; exit {FENCE_REFUSED}; }}; "
             f"if [ -n \"$out\" ]; then echo \"writes since the backup:\" >&2; echo \"$out\" >&2; "
             f"exit {FENCE_REFUSED}; fi")
    return inner


# -- test restores ---------------------------------------------------------------------------
PROOF_FAILED = 95  # exit status of a test restore that failed (its verdict line says why)
_PROOF_RE = re.compile(r"proof: (ok) tables=(\d+) rows=(\d+)|proof: (failed|untested) (.*)")

#: the tables of the scratch database's public schema and their rows, counted one by one
_COUNT_SQL = ("SELECT count(*) || ' ' || coalesce(sum((xpath('/row/c/text()', query_to_xml(format("
              "'SELECT count(*) AS c FROM %I.%I', table_schema, table_name), false, true, '')))[1]::text::bigint), 0) "
              "FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")


def scratch_name(db: Postgres) -> str:
    """The scratch database a test restore uses, on the same server (dropped after each)."""
    return f"{db.name}_deployer_check"[-63:]


def prove(db: Postgres, path: str, sha256: str | None = None) -> Command:
    """A test restore: the backup (its sha256 checked, when known) restored into a scratch
    database on the db host (without owners or grants: no role needs to exist), its tables
    counted against the dump's list and their rows read, then the scratch database dropped,
    whatever happened. Prints one verdict line, `proof: ok tables=N rows=M`, else `proof: failed
    <why>` (the backup is bad) or `proof: untested <why>` (no scratch database: the backup is
    neither proven nor condemned), and exits PROOF_FAILED. Needs the right to create databases
    (CREATEDB)."""
    readable = _verify(db, path, sha256) if sha256 else f"{db.tool('pg_restore')} --list {q(path)} >/dev/null"
    conn = db.conn_args()
    inner = "\n".join([
        f"s={q(scratch_name(db))}; out=$(mktemp) || exit 1",
        f"drop_scratch() {{ {db.tool('dropdb')} --if-exists {conn} \"$s\" >/dev/null 2>&1; rm -f \"$out\"; }}",
        "trap drop_scratch EXIT",
        "fail() { why=\"$1: $( (grep -i -m 2 'error' \"$out\" || tail -n 3 \"$out\") | tr '\\n' ' ' | cut -c1-400)\"; "
        f"echo \"proof: ${{2:-failed}} $why\"; echo \"test restore of {path}: $why\" >&2; exit {PROOF_FAILED}; }}",
        f"( {readable} ) >\"$out\" 2>&1 || fail 'the backup is unreadable or its sha256 differs'",
        f"{db.tool('dropdb')} --if-exists {conn} \"$s\" >\"$out\" 2>&1 && {db.tool('createdb')} {conn} \"$s\" "
        ">\"$out\" 2>&1 || fail 'no scratch database' untested",
        f"{db.tool('pg_restore')} --no-owner --no-acl --exit-on-error --single-transaction {conn} -d \"$s\" {q(path)} "
        ">\"$out\" 2>&1 || fail 'the restore failed'",
        f"got=$({db.tool('psql')} -XAtq {conn} -d \"$s\" -c {q(_COUNT_SQL)} 2>\"$out\") || fail 'unreadable once restored'",
        f"want=$({db.tool('pg_restore')} --list {q(path)} | grep -c ' TABLE public ')",
        "set -- $got",
        "[ \"$1\" = \"$want\" ] || { echo \"$1 table(s) restored, $want in the dump\" >\"$out\"; fail 'tables missing'; }",
        "echo \"proof: ok tables=$1 rows=$2\"",
    ])
    return raw(db.as_user(inner))


@dataclass(frozen=True)
class Verdict:
    """A test restore's verdict line, read back."""

    ok: bool
    tested: bool  # False: it could not run (no scratch database, no verdict): nothing is known
    tables: int = 0
    rows: int = 0
    why: str = ""


def parse_proof(output: str) -> Verdict:
    for line in reversed(output.strip().splitlines()):
        m = _PROOF_RE.fullmatch(line.strip())
        if m and m.group(1):
            return Verdict(True, True, int(m.group(2)), int(m.group(3)))
        if m:
            return Verdict(False, m.group(4) == "failed", why=m.group(5))
    return Verdict(False, False, why=f"no verdict in its output {output.strip()[-200:]!r}")
