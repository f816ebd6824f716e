"""PostgreSQL backups: dump to a temporary name, verify, checksum, rename; all-or-nothing restore."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from ..shell import Command, q, raw


@dataclass(frozen=True)
class Database:
    name: str
    os_user: str | None
    bin_dir: str
    socket_dir: str | None
    port: int
    backup_dir: str
    user: str | None = None  # the database role (-U); None: libpq's default
    host: str | None = None  # TCP host; else socket_dir; else libpq's default
    password_file: str | None = None  # PGPASSFILE

    @classmethod
    def of(cls, cfg) -> Database:
        return cls(cfg.name, cfg.os_user, cfg.bin_dir, cfg.socket_dir, cfg.port, cfg.backup_dir,
                   user=cfg.user, host=cfg.host, password_file=cfg.password_file)

    def conn_args(self) -> str:
        args = [f"-p {q(self.port)}"]
        if self.host or self.socket_dir:
            args.insert(0, f"-h {q(self.host or self.socket_dir)}")
        if self.user:
            args.append(f"-U {q(self.user)}")
        return " ".join(args)

    def as_user(self, script: str) -> str:
        """`script` run as whoever runs the database tools: the SSH user itself when no
        `os_user` is set, else that OS user through sudo (runuser when the SSH user is root,
        which needs no sudo rule). The only place that decides it; PGPASSFILE set inside."""
        if self.password_file:
            script = f"export PGPASSFILE={q(self.password_file)}; {script}"
        if self.os_user is None:
            return f"sh -c {q(script)}"
        user = q(self.os_user)
        return (f"cd / && if [ \"$(id -u)\" -eq 0 ]; then set -- runuser -u {user} --; "
                f"else set -- sudo -n -u {user} --; fi && \"$@\" sh -c {q(script)}")

    def tool(self, name: str) -> str:
        return q(posixpath.join(self.bin_dir, name) if self.bin_dir else name)


def backup_path(db: Database, env: str, release: str, kind: str = "predeploy") -> str:
    return posixpath.join(db.backup_dir, f"{env}-{kind}-{release}.dump")


def dump(db: Database, path: str) -> Command:
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


def verify(db: Database, path: str, sha256: str) -> Command:
    """The backup is there, has its sha256 and reads as a dump (as the tools' user: the
    backups are theirs, mode 0600)."""
    return raw(db.as_user(_verify(db, path, sha256)))


def _verify(db: Database, path: str, sha256: str) -> str:
    return (f"test -f {q(path)} && echo {q(sha256)}' '{q(path)} | sha256sum -c --status - "
            f"&& {db.tool('pg_restore')} --list {q(path)} >/dev/null")


def restore(db: Database, path: str, mark: str | None = None) -> Command:
    """Replace the database's public schema by the dump's content, in one transaction.

    The dump is rendered to SQL first (so a broken dump fails before anything is touched),
    then applied with psql --single-transaction and ON_ERROR_STOP: all or nothing. Objects
    created after the dump (new tables) go too, since the schema is rebuilt. With `mark`, the
    same transaction sets it as the schema's comment (see `restore_once`).
    """
    return raw(db.as_user(_restore(db, path, mark)))


def _restore(db: Database, path: str, mark: str | None = None) -> str:
    sql = path + ".restore.sql"
    comment = f"; echo {q(f'COMMENT ON SCHEMA public IS {chr(39)}{mark}{chr(39)};')}" if mark else ""
    inner = (
        f"umask 077; {{ printf 'DROP SCHEMA public CASCADE; CREATE SCHEMA public; "
        f"ALTER SCHEMA public OWNER TO pg_database_owner; GRANT ALL ON SCHEMA public TO PUBLIC;\\n'; "
        f"{db.tool('pg_restore')} -f - {q(path)}{comment}; }} > {q(sql)} "
        f"&& {db.tool('pg_restore')} --list {q(path)} >/dev/null "
        f"&& {db.tool('psql')} -X -q {db.conn_args()} --single-transaction -v ON_ERROR_STOP=1 "
        f"-d {q(db.name)} -f {q(sql)} >/dev/null; rc=$?; rm -f {q(sql)}; exit $rc"
    )
    return inner


def restore_once(db: Database, path: str, sha256: str) -> Command:
    """The automatic rollback's restore (run again by `recover` after a crash): the backup
    verified, refused when the write fence saw another writer (`writes_since_backup`), then
    restored, the schema marked with the backup's sha256 in the same transaction.

    One restore at a time on the host (a lock file next to the backups), and once per backup:
    a restore that a killed orchestrator left running there is waited for, and when the
    database already carries this backup's mark it is not restored again (the first restore
    took the write fence with it: a second one would find none and refuse, or run twice)."""
    lock = posixpath.join(db.backup_dir, ".restore.lock")
    # each part in its own subshell: their `exit`s end that part, not the script
    checked = f"( {_verify(db, path, sha256)} ) && ( {_writes_since_backup(db)} )"
    if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):  # verify refuses it: nothing to mark
        return raw(db.as_user(f"exec 9>>{q(lock)} && flock 9 && {checked} && ( {_restore(db, path)} )"))
    mark = f"deployer: restored from a backup with sha256 {sha256}"
    read = (f"{db.tool('psql')} -XAtq {db.conn_args()} -d {q(db.name)} -c "
            + q("SELECT obj_description('public'::regnamespace, 'pg_namespace')"))
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


def _psql(db: Database, sql: str) -> str:
    return (f"PGOPTIONS='-c client_min_messages=warning' {db.tool('psql')} -X -q -v ON_ERROR_STOP=1 "
            f"{db.conn_args()} -d {q(db.name)} -c {q(sql)} >/dev/null")


def fence(db: Database) -> Command:
    """After the backup: every write to a table of the app (statement level, any connection)
    is noted, with its application_name. The backup does not hold the fence, so a restore
    removes it; a successful deploy removes it with `unfence`."""
    return raw(db.as_user(_psql(db, _FENCE_SQL)))


def unfence(db: Database) -> Command:
    return raw(db.as_user(_psql(db, _UNFENCE_SQL)))


def writes_since_backup(db: Database) -> Command:
    """Fails with FENCE_REFUSED, listing them, when someone else than the migration wrote since
    the backup (restoring it would lose those writes); succeeds when nothing did."""
    return raw(db.as_user(_writes_since_backup(db)))


def _writes_since_backup(db: Database) -> str:
    sql = (f"SELECT tbl || ' ' || op || ' (' || CASE WHEN n < 0 THEN 'all' ELSE n::text END || ' row(s)) by ' "
           f"|| coalesce(nullif(app, ''), '?') || "
           f"coalesce(' from ' || host(client), '') || ' at ' || at FROM public.deployer_fence "
           f"WHERE coalesce(app, '') <> '{FENCE_APP}' ORDER BY at LIMIT 20")
    inner = (f"out=$({db.tool('psql')} -X -A -t {db.conn_args()} -d {q(db.name)} -c {q(sql)} 2>&1) || "
             f"{{ echo \"write fence unreadable: $out\" >&2; exit {FENCE_REFUSED}; }}; "
             f"if [ -n \"$out\" ]; then echo \"writes since the backup:\" >&2; echo \"$out\" >&2; "
             f"exit {FENCE_REFUSED}; fi")
    return inner
