"""MariaDB (and MySQL) backups, restores, write fence and test restores: the methods of
deployer.commands.backup's `Postgres`, for `database.kind: mariadb` or `mysql` (the same client
tools: `mariadb`, `mariadb-dump`).

Differences a user should know (docs/servers.md):

- The backup is `mariadb-dump --single-transaction` (routines, triggers, events; BLOBs in hex)
  to a temporary name, checked complete (its `-- Dump completed` trailer) and by sha256, then
  renamed, as with PostgreSQL.
- MariaDB's DDL is not transactional: a restore drops what the database holds (tables, views,
  sequences, routines, events; the write fence's table excepted) and loads the dump in one
  client session; cut short, the database is partly restored until the restore runs again
  (`recover` does; a restore is idempotent). Privileges are kept: MariaDB does not revoke a
  table's grants when the table is dropped, so they apply again to the restored table.
- The write fence is row triggers (insert, update, delete) counting writes per connection in
  `deployer_fence`; MariaDB has no `application_name`, so the migration's writes are told apart
  by their connection ids: those opened after the fence was set (right after the backup) and
  before the migration ended (a mark the db host writes then). Any other connection that
  opened in that window (a build step or a cron job writing to the database during the
  migration) counts as the migration's, and TRUNCATE, which fires no trigger, is not seen.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import ClassVar

from ..shell import Command, q, raw
from .backup import FENCE_REFUSED, PROOF_FAILED, RESTORED, backup_file, mark_of, run_as

FENCE = "deployer_fence"  # the fence's table (its triggers: deployer_fence_<i|u|d>_<hash>)
COMPLETE = "-- Dump completed"  # mariadb-dump's last line when the dump ended well


def ident(name: str) -> str:
    """A MariaDB identifier, quoted."""
    return "`" + name.replace("`", "``") + "`"


def lit(text: str) -> str:
    """A MariaDB string literal (standard SQL quoting, backslashes doubled)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


@dataclass(frozen=True)
class MariaDB:
    name: str
    os_user: str | None
    bin_dir: str
    socket: str | None  # the server's socket file
    port: int
    backup_dir: str
    user: str | None = None  # the account the tools log in as (-u); default: the option file's
    host: str | None = None  # TCP host; else `socket`; else the client's default socket
    option_file: str | None = None  # --defaults-extra-file: [client] user, password

    kind: ClassVar[str] = "MariaDB"

    @classmethod
    def of(cls, cfg) -> MariaDB:
        return cls(cfg.name, cfg.os_user, cfg.bin_dir, cfg.socket, cfg.port or 3306, cfg.backup_dir,
                   user=cfg.user, host=cfg.host, option_file=cfg.option_file)

    def conn_args(self) -> str:
        args = [f"--defaults-extra-file={q(self.option_file)}"] if self.option_file else []  # first
        if self.host:
            args += [f"-h {q(self.host)}", f"-P {q(self.port)}", "--protocol=TCP"]
        elif self.socket:
            args.append(f"-S {q(self.socket)}")
        if self.user:
            args.append(f"-u {q(self.user)}")
        return " ".join(args)

    def as_user(self, script: str) -> str:
        return run_as(self.os_user, script)

    def tool(self, name: str) -> str:
        return q(posixpath.join(self.bin_dir, name) if self.bin_dir else name)

    def client(self, database: str | None = None, *opts: str) -> str:
        """The `mariadb` client, batch mode, no column names, errors stop it."""
        db = f" {q(database)}" if database else ""
        return " ".join([self.tool("mariadb"), self.conn_args(), "-N", "-B", *opts]) + db

    # -- what the plans run ---------------------------------------------------------------
    def backup_path(self, env: str, release: str, kind: str = "predeploy") -> str:
        return backup_file(self.backup_dir, env, release, kind)

    def dump(self, path: str) -> Command:
        """mariadb-dump to path.partial, checked complete, then renamed. Prints `sha256 size`;
        on any failure the partial file is removed."""
        tmp = path + ".partial"
        inner = (
            f"umask 077; mkdir -p -m 700 {q(self.backup_dir)} && rm -f {q(tmp)} && "
            f"if {self.tool('mariadb-dump')} {self.conn_args()} --single-transaction --routines --triggers "
            f"--events --hex-blob --ignore-table={q(self.name + '.' + FENCE)} {q(self.name)} > {q(tmp)} "
            f"&& {_complete(tmp)} "
            f"&& sum=$(sha256sum {q(tmp)} | cut -d' ' -f1) && size=$(stat -c %s {q(tmp)}) "
            f"&& mv -T {q(tmp)} {q(path)}; then echo \"$sum $size\"; "
            f"else rc=$?; {_full(self.backup_dir)}; rm -f {q(tmp)}; exit $rc; fi")
        return raw(self.as_user(inner))

    def verify(self, path: str, sha256: str) -> Command:
        return raw(self.as_user(self._verify(path, sha256)))

    def _verify(self, path: str, sha256: str) -> str:
        return (f"test -f {q(path)} && echo {q(sha256)}' '{q(path)} | sha256sum -c --status - "
                f"&& {_complete(path)}")

    def restore(self, path: str) -> Command:
        return raw(self.as_user(self._restore(path)))

    def _restore(self, path: str, mark: str | None = None) -> str:
        """Everything the database holds dropped (the fence's table too, unless `mark`: then it
        is kept and takes the mark), then the dump loaded, in one client session that stops at
        the first error."""
        keep = f" AND table_name <> {lit(FENCE)}" if mark else ""
        drops = (
            "SELECT CONCAT('DROP VIEW IF EXISTS ', CONCAT('`', REPLACE(table_name, '`', '``'), '`'), ';') "
            "FROM information_schema.views WHERE table_schema = DATABASE() UNION ALL "
            "SELECT CONCAT(IF(table_type = 'SEQUENCE', 'DROP SEQUENCE IF EXISTS ', 'DROP TABLE IF EXISTS '), "
            "CONCAT('`', REPLACE(table_name, '`', '``'), '`'), ';') FROM information_schema.tables "
            f"WHERE table_schema = DATABASE() AND table_type IN ('BASE TABLE', 'SEQUENCE'){keep} UNION ALL "
            "SELECT CONCAT('DROP ', routine_type, ' IF EXISTS ', CONCAT('`', REPLACE(routine_name, '`', '``'), '`'), "
            "';') FROM information_schema.routines WHERE routine_schema = DATABASE() UNION ALL "
            "SELECT CONCAT('DROP EVENT IF EXISTS ', CONCAT('`', REPLACE(event_name, '`', '``'), '`'), ';') "
            "FROM information_schema.events WHERE event_schema = DATABASE()")
        tail = ""
        if mark:
            tail = "; echo " + q(f"INSERT INTO {FENCE} (conn, tbl, op, who) VALUES (0, '', '{RESTORED}', "
                                 f"{lit(mark)});")
        return (f"{_complete(path)} && drops=$({self.client(self.name, '--raw')} -e {q(drops)}) && "
                f"{{ echo 'SET FOREIGN_KEY_CHECKS=0;'; printf '%s\\n' \"$drops\"; cat {q(path)}{tail}; }} | "
                f"{self.client(self.name)}")

    def restore_once(self, path: str, sha256: str) -> Command:
        """As PostgreSQL's: one at a time (a lock file next to the backups), verified, refused
        when someone else wrote since the backup, once per backup (the fence table's mark)."""
        lock = posixpath.join(self.backup_dir, ".restore.lock")
        checked = f"( {self._verify(path, sha256)} ) && ( {self._writes_since_backup()} )"
        if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
            return raw(self.as_user(f"exec 9>>{q(lock)} && flock 9 && {checked} && ( {self._restore(path)} )"))
        mark = mark_of(sha256)
        read = (f"{self.client(self.name)} -e "
                + q(f"SELECT who FROM {FENCE} WHERE op = '{RESTORED}' AND who = {lit(mark)}"))
        return raw(self.as_user(
            f"exec 9>>{q(lock)} && flock 9 && if [ \"$({read} 2>/dev/null)\" = {q(mark)} ]; then "
            f"echo 'restore: the database is restored from this backup already' >&2; else "
            f"{checked} && ( {self._restore(path, mark)} ); fi"))

    def fence(self) -> Command:
        """After the backup: the fence's table, its window's start (this session's connection
        id: later connections are the migration's until it ends) and a trigger per table and
        kind of write counting the writes of each connection."""
        table = (f"CREATE TABLE IF NOT EXISTS {FENCE} (conn BIGINT UNSIGNED NOT NULL, tbl VARCHAR(64) NOT NULL, "
                 "op VARCHAR(16) NOT NULL, n BIGINT NOT NULL DEFAULT 0, who VARCHAR(400), "
                 "at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), PRIMARY KEY (conn, tbl, op)) ENGINE=InnoDB; "
                 f"INSERT INTO {FENCE} (conn, tbl, op) VALUES (CONNECTION_ID(), '', 'START');")
        triggers = " UNION ALL ".join(
            f"SELECT CONCAT('CREATE TRIGGER ', CONCAT('`deployer_fence_{c}_', LEFT(MD5(table_name), 24), '`'), "
            f"' AFTER {op} ON ', CONCAT('`', REPLACE(table_name, '`', '``'), '`'), ' FOR EACH ROW INSERT INTO {FENCE} "
            f"(conn, tbl, op, n, who) VALUES (CONNECTION_ID(), ', QUOTE(table_name), ', ''{op}'', 1, USER()) "
            f"ON DUPLICATE KEY UPDATE n = n + 1;') FROM information_schema.tables WHERE table_schema = DATABASE() "
            f"AND table_type = 'BASE TABLE' AND table_name <> {lit(FENCE)}"
            for c, op in (("i", "INSERT"), ("u", "UPDATE"), ("d", "DELETE")))
        inner = (f"sql=$({self.client(self.name, '--raw')} -e {q(triggers)}) && "
                 f"{{ echo {q(table)}; printf '%s\\n' \"$sql\"; }} | {self.client(self.name)}")
        return raw(self.as_user(inner))

    def unfence(self) -> Command:
        drops = ("SELECT CONCAT('DROP TRIGGER IF EXISTS ', CONCAT('`', REPLACE(trigger_name, '`', '``'), '`'), ';') "
                 "FROM information_schema.triggers WHERE trigger_schema = DATABASE() "
                 "AND trigger_name LIKE 'deployer\\_fence\\_%'")
        inner = (f"sql=$({self.client(self.name, '--raw')} -e {q(drops)}) && "
                 f"{{ printf '%s\\n' \"$sql\"; echo {q(f'DROP TABLE IF EXISTS {FENCE};')}; }} | {self.client(self.name)}")
        return raw(self.as_user(inner))

    def fence_left(self) -> Command:
        """Prints `fence` when the write fence (or any part of it) is in the database."""
        sql = (f"SELECT 'fence' FROM DUAL WHERE EXISTS (SELECT 1 FROM information_schema.tables WHERE "
               f"table_schema = DATABASE() AND table_name = {lit(FENCE)}) OR EXISTS (SELECT 1 FROM "
               "information_schema.triggers WHERE trigger_schema = DATABASE() AND trigger_name LIKE 'deployer\\_fence\\_%')")
        return raw(self.as_user(f"{self.client(self.name)} -e {q(sql)}"))

    def migration_env(self) -> Command | None:
        return None

    def migration_over(self) -> Command | None:
        """The fence's window ends: connections opened from now on are not the migration's."""
        sql = f"INSERT INTO {FENCE} (conn, tbl, op) VALUES (CONNECTION_ID(), '', 'END')"
        return raw(self.as_user(f"{self.client(self.name)} -e {q(sql)}"))

    def writes_since_backup(self) -> Command:
        return raw(self.as_user(self._writes_since_backup()))

    def _writes_since_backup(self) -> str:
        window = (f"f.conn > (SELECT MAX(conn) FROM {FENCE} WHERE op = 'START') AND f.conn < "
                  f"COALESCE((SELECT MIN(conn) FROM {FENCE} WHERE op = 'END'), 18446744073709551615)")
        sql = (f"SELECT CONCAT(f.tbl, ' ', f.op, ' (', f.n, ' row(s)) by ', COALESCE(f.who, '?'), "
               f"' (connection ', f.conn, ') at ', f.at) FROM {FENCE} f "
               f"WHERE f.op IN ('INSERT', 'UPDATE', 'DELETE') AND NOT ({window}) ORDER BY f.at LIMIT 20")
        return (f"out=$({self.client(self.name)} -e {q(sql)} 2>&1) || "
                f"{{ echo \"write fence unreadable: $out\" >&2; exit {FENCE_REFUSED}; }}; "
                f"if [ -n \"$out\" ]; then echo \"writes since the backup:\" >&2; echo \"$out\" >&2; "
                f"exit {FENCE_REFUSED}; fi")

    def scratch_name(self) -> str:
        return f"{self.name}_deployer_check"[-64:]

    def prove(self, path: str, sha256: str | None = None) -> Command:
        """A test restore (see backup.prove): the dump loaded into a scratch database, its tables
        counted against the dump's CREATE TABLEs and their rows read, the scratch database
        dropped whatever happened. Needs CREATE and DROP on the scratch database."""
        readable = self._verify(path, sha256) if sha256 else _complete(path)
        s = ident(self.scratch_name())
        count = ("SELECT CONCAT(COUNT(*), ' ', 'SELECT ', COALESCE(GROUP_CONCAT(CONCAT('(SELECT COUNT(*) FROM `', "
                 "REPLACE(table_name, '`', '``'), '`)') SEPARATOR ' + '), '0')) FROM information_schema.tables "
                 "WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE'")
        inner = "\n".join([
            f"s={q(self.scratch_name())}; out=$(mktemp) || exit 1",
            f"drop_scratch() {{ {self.client()} -e {q(f'DROP DATABASE IF EXISTS {s}')} >/dev/null 2>&1; "
            "rm -f \"$out\"; }",
            "trap drop_scratch EXIT",
            "fail() { why=\"$1: $( (grep -i -m 2 'error' \"$out\" || tail -n 3 \"$out\") | tr '\\n' ' ' | cut -c1-400)\"; "
            f"echo \"proof: ${{2:-failed}} $why\"; echo \"test restore of {path}: $why\" >&2; exit {PROOF_FAILED}; }}",
            f"( {readable} ) >\"$out\" 2>&1 || fail 'the backup is unreadable or its sha256 differs'",
            f"{self.client()} -e {q(f'DROP DATABASE IF EXISTS {s}; CREATE DATABASE {s}')} >\"$out\" 2>&1 "
            "|| fail 'no scratch database' untested",
            f"{self.client()} \"$s\" < {q(path)} >\"$out\" 2>&1 || fail 'the restore failed'",
            f"got=$({self.client(None, '--raw')} \"$s\" -e {q(count)} 2>\"$out\") || fail 'unreadable once restored'",
            "tables=${got%% *}; rows=$(" + self.client() + " \"$s\" -e \"${got#* }\" 2>\"$out\") "
            "|| fail 'unreadable once restored'",
            f"want=$(grep -c '^CREATE TABLE ' {q(path)})",
            "[ \"$tables\" = \"$want\" ] || { echo \"$tables table(s) restored, $want in the dump\" >\"$out\"; "
            "fail 'tables missing'; }",
            "echo \"proof: ok tables=$tables rows=$rows\"",
        ])
        return raw(self.as_user(inner))


def _complete(path: str) -> str:
    """The dump ended well: its last line is mariadb-dump's trailer."""
    return f"tail -n 1 {q(path)} | grep -q {q('^' + COMPLETE)}"


def _full(directory: str) -> str:
    """Says so when `directory`'s filesystem is full (mariadb-dump only says `errno 28`)."""
    return (f"free=$(df -Pk {q(directory)} 2>/dev/null | awk 'NR == 2 {{print $4}}'); "
            f"[ \"${{free:-1024}}\" -ge 1024 ] || echo \"No space left on device: {directory} has ${{free}} KiB free\" >&2")
