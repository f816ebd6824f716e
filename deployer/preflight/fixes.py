"""The rows of the `rights` check (see `.rights`): from the ``@@right`` lines its script printed,
one row per right, each missing one saying what is missing and the exact line that fixes it.
Pure: tested on recorded output."""

from __future__ import annotations

import re

from ..commands.backup import Postgres
from ..commands.mariadb import MariaDB
from ..errors import ConfigError
from ..privileges import RootCommand, rule
from .model import Rows
from .rights import MARIADB_NEEDS, MARK, Needs, Tree

Row = tuple[str, bool, str]


def rows(n: Needs) -> Rows:
    """The parser of `rights.command(n)`'s output."""

    def parse(stdout: str, exit_status: int | None) -> list[Row]:
        found: dict[str, list[list[str]]] = {}
        for line in stdout.splitlines():
            if line.startswith(MARK + " "):
                what, _, rest = line[len(MARK) + 1:].partition(" ")
                found.setdefault(what, []).append(rest.split(" ") if rest else [])
        silent = f"not checked: the script stopped (exit {exit_status})"
        out: list[Row] = []
        if n.sudo:
            out += _sudo(n, {f[0]: f[1] for f in found.get("sudo", []) if len(f) > 1}, silent)
        if n.socket:
            groups = (found.get("groups") or [[]])[0]
            out.append(_socket(n, n.socket, (found.get("lb_socket") or [[]])[0], groups, silent))
        match n.database:
            case Postgres():
                out.append(_database(n, (found.get("database") or [None])[0], silent))
            case MariaDB():
                out.append(_mariadb(n, (found.get("database") or [None])[0], silent))
        for tree in n.trees:
            out += _tree(n.user, tree, found.get(tree.label, []), silent)
        return out

    return parse


# ---------------------------------------------------------------- sudo


def _sudo(n: Needs, status: dict[str, str], silent: str) -> list[Row]:
    if status.get("-") == "nosudo":
        return [("sudo", False, f"sudo is not installed, and the playbook runs {_count(n.sudo)} "
                                f"as root: apt-get install sudo, then install the rules of "
                                f"`deployer init` (deploy/sudoers) as /etc/sudoers.d/{n.app}")]
    out: list[Row] = []
    for i, cmd in enumerate(n.sudo):
        state = status.get(str(i))
        if state == "ok":
            continue
        if state is None:
            out.append(("sudo", False, f"`{cmd.text}` ({cmd.steps[0]}): {silent}"))
            continue
        why = "is not allowed without a password" if state == "password" else "is not allowed"
        out.append(("sudo", False, f"{n.user} running `{cmd.text}` as root ({cmd.steps[0]}) "
                                   f"{why}: {_rule_fix(n, cmd)}"))
    if not out:
        out.append(("sudo", True, f"{n.user} may run the {_count(n.sudo)} of the playbook as root"))
    return out


def _rule_fix(n: Needs, cmd: RootCommand) -> str:
    try:
        return f"add to /etc/sudoers.d/{n.app}: {rule(n.user, cmd)}"
    except ConfigError as exc:  # no sudo rule can name it: the playbook must change
        return exc.message


def _count(cmds: tuple[RootCommand, ...]) -> str:
    return f"{len(cmds)} command{'s' if len(cmds) != 1 else ''}"


# ---------------------------------------------------------------- the load balancer's socket


def _socket(n: Needs, socket: str, found: list[str], groups: list[str], silent: str) -> Row:
    if not found:
        return ("lb_socket", False, f"{socket}: {silent}")
    line = f"stats socket {socket} mode 660 level admin group"
    if found[0] == "ok":
        return ("lb_socket", True, f"{n.user} can write {socket}")
    primary = groups[0] if groups else n.user
    if found[0] == "missing" or len(found) < 4:
        return ("lb_socket", False, f"{socket} does not exist, or {n.user} cannot reach it (every "
                                    f"directory above it must be searchable): in haproxy.cfg's "
                                    f"global section: `{line} {primary}`, then reload haproxy")
    owner, group, mode = found[1:4]
    say = f"{n.user} cannot write {socket} (owner {owner}, group {group}, mode {mode})"
    set_group = f"in haproxy.cfg's global section: `{line} {group}`, then reload haproxy"
    writable = len(mode) >= 2 and int(mode[-2]) & 2
    if group in groups:
        return ("lb_socket", False, f"{say}: make it group-writable: {set_group}")
    own_group = f"in haproxy.cfg's global section: `{line} {primary}`, then reload haproxy"
    if group == "root":  # never a reason to add a deploy user to root's group
        return ("lb_socket", False, f"{say}: give it {n.user}'s group: {own_group}")
    join = f"add {n.user} to group {group}: `usermod -aG {group} {n.user}`"
    if not writable:
        join += f", and make it group-writable: {set_group}"
    return ("lb_socket", False, f"{say}: {join}; or give it {n.user}'s group: {own_group}")


# ---------------------------------------------------------------- the database

_ROLE_RE = re.compile(r'(?:user|role) "([^"]+)"')


def _database(n: Needs, found: list[str] | None, silent: str) -> Row:
    db = n.database
    assert db is not None
    if not found:
        return ("database", False, f"{db.name}: {silent}")
    rc, text = found[0], " ".join(found[1:]).strip()
    fields = text.split("|")
    if rc == "0" and len(fields) == 6:
        role, superuser, owner, member, public, createdb = fields
        if superuser == "t":
            return ("database", True, f"role {role} connects to {db.name} as a superuser")
        if member == "t" and public == "t":
            scratch = "" if createdb == "t" else (
                f"; it may not create databases, which the maintenance job's test restores need "
                f"(a scratch database): as postgres: ALTER ROLE {_ident(role)} CREATEDB;")
            return ("database", True, f"role {role} connects to {db.name} and owns it{scratch}")
        schema = f"(connected to {db.name}) ALTER SCHEMA public OWNER TO {_ident(role)};"
        if member == "t":
            return ("database", False, f"role {role} owns {db.name} but not its schema public, "
                                       f"which a restore drops and recreates: as postgres: {schema}")
        also = f" (before PostgreSQL 15, also {schema})" if public != "t" else ""
        return ("database", False, f"role {role} connects to {db.name} but does not own it (owner "
                                   f"{owner}), and a restore drops and recreates its schema public: "
                                   f"as postgres: ALTER DATABASE {_ident(db.name)} OWNER TO "
                                   f"{_ident(role)};{also}")
    match = _ROLE_RE.search(text)
    role = match.group(1) if match else (n.role or "the backups' role")
    error = _error(text) or f"exit {rc}"
    return ("database", False, f"role {role} cannot connect to database {db.name} ({error}): "
                               f"{_connect_fix(n, role, text)}")


def _mariadb(n: Needs, found: list[str] | None, silent: str) -> Row:
    db = n.database
    assert isinstance(db, MariaDB)
    if not found:
        return ("database", False, f"{db.name}: {silent}")
    rc, text = found[0], " ".join(found[1:]).strip()
    fields = text.split("|")
    if rc == "0" and len(fields) == 3:
        account, on_db, on_scratch = fields[0], set(fields[1].split(",")), set(fields[2].split(","))
        user, _, host = account.partition("@")
        who = f"'{user}'@'{host or '%'}'"
        missing = [p for p in MARIADB_NEEDS if p not in on_db]
        if missing:
            return ("database", False, f"account {account} lacks {', '.join(missing)} on {db.name} (backups, "
                                       f"restores and the write fence need them): as root: GRANT ALL ON "
                                       f"`{db.name}`.* TO {who};")
        scratch = db.scratch_name()
        if not {"CREATE", "DROP"} <= on_scratch:
            return ("database", True, f"account {account} may do what backups and restores need on {db.name}; "
                                      f"not create {scratch}, which the maintenance job's test restores need "
                                      f"(a scratch database): as root: GRANT ALL ON `{scratch}`.* TO {who};")
        return ("database", True, f"account {account} may back up, restore and test-restore {db.name}")
    error = text[:300] or f"exit {rc}"
    where = f"socket {db.socket}" if db.socket else (f"{db.host}:{db.port}" if db.host else "the default socket")
    hint = (f"the option file {db.option_file}" if db.option_file else f"~/.my.cnf of {n.user}")
    return ("database", False, f"{n.user} cannot connect to {db.kind} database {db.name} ({error}): check the "
                               f"server answers on {where} and that {hint} holds the account ([client] user, "
                               "password; mode 0600) (docs/servers.md)")


def _error(text: str) -> str:
    """The gist of psql's error: its FATAL part, else the text after the last `error:`."""
    for key in ("FATAL:", "error:"):
        if key in text:
            return text.rsplit(key, 1)[1].strip()[:200]
    return text[:200]


def _connect_fix(n: Needs, role: str, text: str) -> str:
    db = n.database
    assert db is not None
    pgpass = (f"a line `*:{db.port}:{db.name}:{role}:<password>` in the password file the backups "
              f"read (~/.pgpass of {n.user} by default, mode 0600)")
    hba = (f"a pg_hba.conf line before the others: `local {db.name} {role} scram-sha-256` (or "
           f"`host {db.name} {role} <address>/32 scram-sha-256` over TCP), then reload PostgreSQL")
    gist = _error(text)
    if gist.startswith("database") and gist.endswith("does not exist"):
        return f"as postgres: CREATE DATABASE {_ident(db.name)} OWNER {_ident(role)};"
    if gist.startswith("role") and gist.endswith("does not exist"):
        return (f"as postgres: CREATE ROLE {_ident(role)} LOGIN PASSWORD '<password>'; "
                f"ALTER DATABASE {_ident(db.name)} OWNER TO {_ident(role)}; and {pgpass}")
    if "no pg_hba.conf entry" in text or "Peer authentication failed" in text:
        return f"{hba}, and {pgpass}"
    if "password" in text:
        return pgpass
    if "Connection refused" in text or "No such file or directory" in text or "timeout" in text:
        where = f"socket directory {db.socket_dir}" if db.socket_dir else "the default socket"
        return f"PostgreSQL does not answer on port {db.port} ({where}): is it running there?"
    return (f"{n.user} must reach PostgreSQL as the backups do: the inventory's database "
            "section, pg_hba.conf and the role's password file (docs/servers.md)")


def _ident(name: str) -> str:
    """A SQL identifier, double-quoted unless it is a plain lowercase one."""
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


# ---------------------------------------------------------------- the trees deployer writes


def _tree(user: str, tree: Tree, found: list[list[str]], silent: str) -> list[Row]:
    if not found:
        return [(tree.label, False, f"{tree.path}: {silent}")]
    out: list[Row] = []
    for f in found:
        if f[0] == "unwritable" and len(f) >= 5:
            owner, group, mode, path = f[1], f[2], f[3], " ".join(f[4:])
            out.append((tree.label, False, f"{user} cannot write {path} (owner {owner}, group "
                                           f"{group}, mode {mode}): as root: chown -R {user}: "
                                           f"{tree.path}"))
        elif f[0] == "uncreatable" and len(f) >= 5:
            owner, group, mode, parent = f[1], f[2], f[3], " ".join(f[4:])
            out.append((tree.label, False, f"{tree.path} does not exist and {user} cannot create "
                                           f"it in {parent} (owner {owner}, group {group}, mode "
                                           f"{mode}): as root: mkdir -p {tree.path} && chown "
                                           f"{user}: {tree.path}"))
        elif f[0] == "creatable" and not out:
            out.append((tree.label, True, f"{tree.path} does not exist yet; {user} can create it "
                                          f"(in {' '.join(f[1:])})"))
        elif f[0] == "exists" and not out:
            out.append((tree.label, True, f"{user} can write {tree.path}"))
    return out or [(tree.label, False, f"{tree.path}: {silent}")]
