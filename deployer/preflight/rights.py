"""The rights a non-root SSH user needs on a host, checked in one script per host.

`needs(cfg, host)` says what the host must let the user do: run the playbook's `{sudo}`
commands (deployer.privileges), write the load balancer's admin socket, connect to the
database as the backups do and own it (a restore drops and recreates its schema `public`),
write the trees deployer fills (`deploy_to`, the backup directory). `command(needs)` checks all
of it in one script, one ``@@right <what> ...`` line per finding; `rows(needs)` (in
`.fixes`) turns those lines into one row per right, each missing one naming its fix.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from ..commands import databases as DB
from ..commands.backup import Postgres
from ..commands.mariadb import MariaDB
from ..config import Config, Host
from ..layout import ENTRIES
from ..privileges import RootCommand, commands
from ..shell import Command, argv, q, raw
from .remote import nearest

MARK = "@@right"
#: what deployer writes under deploy_to (the deploy tree's Layout): each must be writable too
DEPLOY_ENTRIES = ENTRIES
#: the database check: who connects, whether it is superuser, who owns the database, whether
#: the role is (a member of) the owner, and of the owner of schema public (restores recreate
#: what it holds), whether it may create databases (the test restores' scratch database)
DB_SQL = ("select current_user, r.rolsuper, pg_get_userbyid(d.datdba), "
          "pg_has_role(d.datdba, 'MEMBER'), coalesce((select pg_has_role(n.nspowner, 'MEMBER') "
          "from pg_namespace n where n.nspname = 'public'), true), r.rolcreatedb "
          "from pg_database d join pg_roles r on r.rolname = current_user "
          "where d.datname = current_database()")


@dataclass(frozen=True)
class Tree:
    """A directory deployer writes to (created by the first deploy when missing)."""

    label: str  # the row's name: deploy_to, backup_dir
    path: str
    entries: tuple[str, ...] = ()  # what inside must be writable too, when it exists


@dataclass(frozen=True)
class Needs:
    """What one host must let the SSH user do."""

    user: str
    app: str  # the playbook's name: /etc/sudoers.d/<app>
    sudo: tuple[RootCommand, ...] = ()
    socket: str | None = None
    database: DB.Db | None = None
    #: the role the database check expects, named in fixes when the connection fails before
    #: PostgreSQL says which role it tried
    role: str = ""
    trees: tuple[Tree, ...] = ()


def needs(cfg: Config, host: Host) -> Needs | None:
    """What `host` must allow its SSH user; None for root (root may do all of it) or when the
    host needs nothing."""
    if host.user == "root":
        return None
    trees = []
    ledger = cfg.state.backend == "ssh" and host.name == cfg.ledger_host.name
    if host.has("web") or host.has("worker") or ledger:
        trees.append(Tree("deploy_to", cfg.deploy_to, DEPLOY_ENTRIES))
    db = role = None
    if cfg.database is not None and cfg.db_host is not None and cfg.db_host.name == host.name:
        db = DB.of(cfg.database)
        # the role the backups connect as: database.user where the inventory has one, else
        # PostgreSQL's default, the OS user psql runs as
        role = getattr(cfg.database, "user", None) or cfg.database.os_user
        trees.append(Tree("backup_dir", cfg.database.backup_dir))
    socket = None
    if cfg.lb is not None and cfg.lb_host is not None and cfg.lb_host.name == host.name:
        socket = cfg.lb.socket
    found = Needs(user=host.user, app=cfg.playbook.name, sudo=tuple(commands(cfg, host)),
                  socket=socket, database=db, role=role or "", trees=tuple(trees))
    return found if (found.sudo or found.socket or found.database or found.trees) else None


def command(n: Needs) -> Command:
    """One script checking every right of `n`; it prints one ``@@right`` line per finding."""
    parts = []
    if n.sudo:
        parts.append(_sudo(n.sudo))
    if n.socket:
        parts.append(_socket(n.socket))
    match n.database:
        case Postgres():
            parts.append(_database(n.database))
        case MariaDB():
            parts.append(_mariadb(n.database))
    parts += [_tree(t) for t in n.trees]
    return raw("\n".join(parts))


def _say(*words: str) -> str:
    """A line of the mark and `words`, printed as one string (shell text inside double quotes:
    `$x`, `$(...)`; printf, not echo, so that a backslash in an error message stays as it is)."""
    return "printf '%s\\n' \"" + " ".join([MARK, *words]) + '"'


_STAT = "$(stat -L -c '%U %G %a' \"$x\")"
_X = "$x"
_RC = "$rc"
_OUT = "$(printf %s \"$out\" | tr '\\n' ' ')"


def _sudo(cmds: tuple[RootCommand, ...]) -> str:
    """`sudo -n -l -- <argv>` per command (a shell function `r <index> <argv>`): ok, password (a
    rule without NOPASSWD) or denied."""
    say = _say("sudo", "$i", "ok")
    lines = ["if command -v sudo >/dev/null 2>&1; then",
             f"  r() {{ i=$1; shift; if e=$(LC_ALL=C sudo -n -l -- \"$@\" 2>&1 >/dev/null); then {say}; "
             f"else case \"$e\" in *password*) {_say('sudo', '$i', 'password')};; "
             f"*) {_say('sudo', '$i', 'denied')};; esac; fi; }}"]
    lines += [f"  {argv('r', i, *c.argv).script}" for i, c in enumerate(cmds)]
    lines.append(f"else {_say('sudo', '-', 'nosudo')}; fi")
    return "\n".join(lines)


def _socket(socket: str) -> str:
    """Whether the admin socket is writable, else its owner, group and mode; the user's groups."""
    return (f"x={q(socket)}; {_say('groups', '$(id -Gn)')}; "
            f"if [ -w \"$x\" ]; then {_say('lb_socket', 'ok')}; "
            f"elif [ -e \"$x\" ]; then {_say('lb_socket', 'unwritable', _STAT)}; "
            f"else {_say('lb_socket', 'missing')}; fi")


def _database(db: Postgres) -> str:
    """The backups' own connection (as_user, conn_args) asked who it is and who owns the
    database: its exit status, then its output (or error) on one line."""
    psql = f"{db.tool('psql')} -XAtq {db.conn_args()} -d {q(db.name)} -c {q(DB_SQL)}"
    return (f"out=$({{ export PGCONNECT_TIMEOUT=10; {db.as_user(psql)}; }} 2>&1); rc=$?; "
            + _say("database", _RC, _OUT))


#: what a MariaDB account needs on the app's database: dump (SHOW VIEW, TRIGGER, EVENT, LOCK
#: TABLES for MyISAM tables), restore (CREATE, DROP, ALTER, INDEX, REFERENCES, views, routines,
#: writing rows), the write fence (TRIGGER, and writing its table)
MARIADB_NEEDS = ("ALTER", "ALTER ROUTINE", "CREATE", "CREATE ROUTINE", "CREATE VIEW", "DELETE", "DROP",
                 "EVENT", "INDEX", "INSERT", "LOCK TABLES", "REFERENCES", "SELECT", "SHOW VIEW", "TRIGGER",
                 "UPDATE")
#: the account, then its privileges on the app's database and on the test restores' scratch
#: database (the global ones count for both)
MARIADB_SQL = ("SELECT CURRENT_USER(), (SELECT IFNULL(GROUP_CONCAT(DISTINCT privilege_type ORDER BY privilege_type "
               "SEPARATOR ','), '') FROM (SELECT privilege_type FROM information_schema.SCHEMA_PRIVILEGES WHERE "
               "DATABASE() LIKE table_schema UNION SELECT privilege_type FROM information_schema.USER_PRIVILEGES) p), "
               "(SELECT IFNULL(GROUP_CONCAT(DISTINCT privilege_type ORDER BY privilege_type SEPARATOR ','), '') FROM "
               "(SELECT privilege_type FROM information_schema.SCHEMA_PRIVILEGES WHERE {scratch} LIKE table_schema "
               "UNION SELECT privilege_type FROM information_schema.USER_PRIVILEGES) s)")


def _mariadb(db: MariaDB) -> str:
    """The backups' own client (as_user, option file) asked who it is and what it may do on the
    database and on the scratch database: its exit status, then `user|privileges|scratch`."""
    from ..commands.mariadb import lit

    sql = MARIADB_SQL.format(scratch=lit(db.scratch_name()))
    client = f"{db.client(db.name, '--connect-timeout=10')} -e {q(sql)} | tr '\t' '|'"
    return f"out=$({{ {db.as_user(client)}; }} 2>&1); rc=$?; " + _say("database", _RC, _OUT)


def _tree(t: Tree) -> str:
    """An existing tree: each entry not writable (owner group mode path), then `exists`; a
    missing one: whether its nearest existing parent lets the user create it."""
    inside = " ".join(q(posixpath.join(t.path, e)) for e in t.entries)
    return (f"d={q(t.path)}; if [ -e \"$d\" ]; then for x in \"$d\" {inside}; do "
            f"if [ -e \"$x\" ] && [ ! -w \"$x\" ]; then {_say(t.label, 'unwritable', _STAT, _X)}; "
            f"fi; done; {_say(t.label, 'exists')}; "
            f"else {nearest(t.path, 'x')}; "
            f"if [ -w \"$x\" ]; then {_say(t.label, 'creatable', _X)}; "
            f"else {_say(t.label, 'uncreatable', _STAT, _X)}; fi; fi")
