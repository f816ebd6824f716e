"""A fleet host's own files, and the OS account deployer logs in as.

The hosts share this machine's root filesystem and /etc/passwd: each has its own directory
(`<fleet_dir>/hosts/<name>`) that its mount namespace binds over /srv, /tmp, /root,
/home/deploy, /etc/sudoers.d and /etc/hosts (`init_script`). The OS user `deploy` is one for
all of them; its home, the deploy trees, the backups and the sudo rules are per host.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from . import spec as S
from .procs import FleetError, _run


def ensure_deploy_user() -> None:
    """The OS user `deploy` (the hosts share /etc/passwd): created when missing, its password
    field `*` (not locked: sshd without PAM refuses a locked account's key logins), and the
    mount point of each host's own /home/deploy."""
    import pwd

    try:
        pwd.getpwnam(S.DEPLOY_USER)
    except KeyError:
        _run(["useradd", "--user-group", "--no-create-home", "--home-dir", f"/home/{S.DEPLOY_USER}",
              "--shell", "/bin/bash", S.DEPLOY_USER])
    _run(["usermod", "-p", "*", S.DEPLOY_USER])
    home = Path("/home") / S.DEPLOY_USER
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, *deploy_ids())
    os.chmod(home, 0o750)


def deploy_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(S.DEPLOY_USER)
    return entry.pw_uid, entry.pw_gid


def chown_tree(path: Path) -> None:
    """`path` and everything under it owned by the deploy user."""
    uid, gid = deploy_ids()
    os.chown(path, uid, gid)
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(top, name), uid, gid)


def write_private(path: Path, text: str, owner: tuple[int, int] | None = None) -> None:
    """`text` into `path`, mode 0600 from creation (replacing what was there)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if owner:
        os.chown(path, *owner)


def pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def write_sudoers(directory: Path, name: str, text: str) -> None:
    """A sudoers file as sudo accepts it: root's, 0440, in a directory only root may write to;
    checked with visudo first when it is installed."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    tmp = directory / f".{name}.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o440)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    visudo = shutil.which("visudo") or ("/usr/sbin/visudo" if os.path.exists("/usr/sbin/visudo") else None)
    if visudo:
        check = _run([visudo, "-cqf", str(tmp)], check=False)
        if check.returncode != 0:
            tmp.unlink()
            raise FleetError(f"fleet: sudoers for {directory.parent.name} rejected by visudo: "
                             f"{(check.stderr or check.stdout).strip()}\n{text}")
    os.replace(tmp, directory / name)


# -- a host's directory ----------------------------------------------------------------------------

def prepare_host(d: Path, host: S.FleetHost, spec: S.FleetSpec, *, authorized_keys: Path,
                 db_password: str) -> None:
    """Host `host`'s own directory `d`: what its namespaces bind over /srv, /tmp, /root,
    /home/deploy, /etc/sudoers.d and /etc/hosts, its sshd key and config, and its services'
    files (the sudo rules are the fleet's to write: they come from the playbooks)."""
    for sub in ("srv", "tmp", "root", "home", "sudoers.d", "srv/log"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(d / "tmp", 0o1777)
    os.chmod(d / "srv", 0o755)
    # traversable (not readable) by the deploy user: the Python the fleet's tools run on may
    # live under /root (pyenv), bound in read-only (see init_script)
    os.chmod(d / "root", 0o711)
    os.chmod(d / "srv" / "log", 0o700)  # the sudo log: root's
    uid, gid = deploy_ids()
    os.chown(d / "home", uid, gid)
    os.chmod(d / "home", 0o750)
    # the app repositories the hosts clone are this machine's, root's (a git server's, in
    # production): git refuses another user's repository unless it is declared safe
    gitconfig = d / "home" / ".gitconfig"
    gitconfig.write_text("[safe]\n\tdirectory = *\n")
    os.chown(gitconfig, uid, gid)
    key = d / "ssh_host_ed25519_key"
    if not key.exists():
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", str(key)])
    # the host's own /etc/hosts: its name resolves (sudo looks it up on every command)
    (d / "hosts").write_text(f"127.0.0.1\tlocalhost\n{host.address}\t{host.name}\n"
                             "::1\tlocalhost ip6-localhost ip6-loopback\n")
    bastion = "bastion" in host.roles
    (d / "sshd_config").write_text(S.sshd_config(d, authorized_keys,
                                                 listen="0.0.0.0" if bastion else host.address,
                                                 root_login=bastion))
    srv = d / "srv"
    bindir = srv / "bin"
    bindir.mkdir(exist_ok=True)
    venv_bin = Path(sys.prefix) / "bin"
    for tool in ("python", "gunicorn", "supervisorctl", "supervisord"):
        wrapper = bindir / tool
        wrapper.write_text(f'#!/bin/sh\nexec {venv_bin / tool} "$@"\n')
        wrapper.chmod(0o755)
    if "bastion" not in host.roles:  # the deploy tree (the ledger's state dir on db1)
        (srv / "app").mkdir(exist_ok=True)
    if "web" in host.roles:
        (srv / "supervisor" / "log").mkdir(parents=True, exist_ok=True)
        (srv / "supervisor" / "supervisord.conf").write_text(S.supervisord_config(spec.worker_poll))
        chown_tree(srv / "supervisor" / "log")
        shared = srv / "app" / "shared"
        for sub in ("storage/logs", "storage/cache"):
            (shared / sub).mkdir(parents=True, exist_ok=True)
        env_file = shared / ".env"
        if env_file.exists():
            env_file.unlink()
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(S.app_env(db_password))
    if (srv / "app").exists():
        chown_tree(srv / "app")
    if "lb" in host.roles:
        (srv / "haproxy").mkdir(exist_ok=True)
        (srv / "haproxy" / "haproxy.cfg").write_text(S.haproxy_config(spec.web_hosts, check_inter=spec.check_inter))
    if "db" in host.roles:
        (srv / "backups").mkdir(exist_ok=True)
        os.chmod(srv / "backups", 0o700)
        chown_tree(srv / "backups")  # pg_dump runs as the deploy user (role demo)
        (srv / "pg" / "run").mkdir(parents=True, exist_ok=True)
        pw = d / "pgpass"
        pw.write_text(db_password + "\n")
        os.chmod(pw, 0o600)
        shutil.chown(pw, "postgres", "postgres")
        for p in (srv / "pg", srv / "pg" / "run"):
            shutil.chown(p, "postgres", "postgres")
        write_private(d / "home" / ".pgpass", f"*:*:*:{S.DB_USER}:{pgpass_escape(db_password)}\n",
                      owner=deploy_ids())


def init_script(d: Path, host: S.FleetHost, fleet_dir: Path) -> str:
    """What the host's holder runs in its new namespaces: its mounts, hostname and services;
    it ends as the `sleep infinity` that holds the namespaces (marked with the fleet's directory,
    so that `down()` finds it)."""
    lines = [
        "#!/bin/sh",
        "set -e",
        f"# {S.NETNS_PREFIX}marker {fleet_dir}",
        f"hostname {host.name}",
        f"mkdir -p /srv /run/sshd /home/{S.DEPLOY_USER}",
        f"mount --bind {d}/srv /srv",
        f"mount --bind {d}/tmp /tmp",
        f"mount --bind {d}/home /home/{S.DEPLOY_USER}",
        f"mount --bind {d}/sudoers.d /etc/sudoers.d",
        f"mount --bind {d}/hosts /etc/hosts",
    ]
    # The host's own /root, but with the Python install the fleet's tools run on (pyenv keeps
    # it under /root on some machines) bound in, read-only.
    base = Path(sys.base_prefix).resolve()
    if base.is_relative_to("/root"):
        top = Path("/root") / base.relative_to("/root").parts[0]
        (d / "root" / top.name).mkdir(exist_ok=True)
        lines.append(f"mount --bind -o ro {top} {d}/root/{top.name}")
    lines.append(f"mount --rbind {d}/root /root")
    if "db" in host.roles:
        pg = "/usr/lib/postgresql/15/bin"
        lines += [
            "if [ ! -f /srv/pg/data/PG_VERSION ]; then",
            f"  runuser -u postgres -- {pg}/initdb -A scram-sha-256 -U postgres "
            f"--pwfile={d}/pgpass -D /srv/pg/data >/srv/pg/initdb.log 2>&1",
            f"  echo \"host all all {S.PRIVATE_SUBNET} scram-sha-256\" >> /srv/pg/data/pg_hba.conf",
            "  sed -i 's/^local.*all.*all.*scram-sha-256/local all all peer/' /srv/pg/data/pg_hba.conf",
            "  FRESH=1",
            "fi",
            # the app's role over the socket with its password (the deploy user's backups);
            # before the catch-all `peer` line (the first matching line wins)
            f"grep -q '^local all {S.DB_USER} scram-sha-256' /srv/pg/data/pg_hba.conf || "
            f"runuser -u postgres -- sed -i '1i local all {S.DB_USER} scram-sha-256' /srv/pg/data/pg_hba.conf",
            f"runuser -u postgres -- {pg}/pg_ctl -D /srv/pg/data -l /srv/pg/postgres.log -w "
            f"-o \"-c listen_addresses={host.address} -k /srv/pg/run -c fsync=off -c max_connections=600\" start >/dev/null",
            'if [ -n "${FRESH:-}" ]; then',
            f"  printf \"CREATE ROLE {S.DB_USER} LOGIN PASSWORD '%s';\" \"$(cat {d}/pgpass)\" | "
            f"runuser -u postgres -- {pg}/psql -q -h /srv/pg/run -U postgres",
            f"  runuser -u postgres -- {pg}/createdb -h /srv/pg/run -U postgres -O {S.DB_USER} {S.DB_NAME}",
            "fi",
            # the maintenance job's test restores make a scratch database (a data dir kept from
            # before had the role without it)
            f"runuser -u postgres -- {pg}/psql -q -h /srv/pg/run -U postgres -c 'ALTER ROLE {S.DB_USER} CREATEDB'",
        ]
    if "lb" in host.roles:
        lines.append("haproxy -D -f /srv/haproxy/haproxy.cfg")
    if "web" in host.roles:
        lines.append(f"DEPLOYER_APP_AUTOSTART=$([ -e {S.DEPLOY_TO}/current ] && echo true || echo false) "
                     "/srv/bin/supervisord -c /srv/supervisor/supervisord.conf")
    lines += [
        f"/usr/sbin/sshd -f {d}/sshd_config",
        "exec sleep infinity",
    ]
    return "\n".join(lines) + "\n"
