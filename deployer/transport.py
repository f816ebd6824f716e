"""The one place that touches Fabric and paramiko.

One SSH connection per host per run, opened lazily and reused by every stage; strict host-key
checking against the inventory's known_hosts (Fabric's default AutoAddPolicy is replaced by
RejectPolicy); keepalives; per-command timeouts enforced on the remote side with timeout(1) so
the remote process is stopped, not only the channel; a bounded thread pool for parallel work.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import paramiko
from fabric import Config as FabricConfig
from fabric import Connection
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_fixed

from .errors import CommandFailed, ConnectError
from .shell import Command, quote
from .sshconfig import Endpoint, default_key_files

T = TypeVar("T")

# Grace between the remote timeout(1) firing and the channel being given up on.
CHANNEL_GRACE = 10.0


@dataclass
class Result:
    host: str
    command: str  # the display (masked) form
    stdout: str
    stderr: str
    exited: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exited == 0


@dataclass
class GroupResult:
    """Each host's result or exception, collected after every host finished (as Fabric's)."""

    results: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, BaseException] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def raise_failures(self, what: str = "") -> None:
        if self.failures:
            raise GroupFailed(self, what)


class GroupFailed(CommandFailed):
    def __init__(self, group: GroupResult, what: str = ""):
        lines = [f"{what or 'command'} failed on {len(group.failures)} host(s)"]
        for host, exc in sorted(group.failures.items()):
            lines.append(f"  {host}: {exc}")
        msg = "\n".join(lines)
        first = next(iter(group.failures.values()))
        super().__init__(next(iter(group.failures)), getattr(first, "command", what), None)
        self.message = msg
        self.args = (msg,)
        self.group = group


@dataclass(frozen=True)
class SSHSettings:
    #: the inventory's known_hosts file; None: each endpoint's own (the ssh config's
    #: UserKnownHostsFile, ~/.ssh/known_hosts, /etc/ssh/ssh_known_hosts)
    known_hosts: str | None
    key_filename: str | None = None
    key_data: Any = None  # shell.Secret holding a private key's text
    jump: Endpoint | None = None  # in front of every endpoint that has no `jumps` of its own
    connect_timeout: float = 10.0
    keepalive: int = 15
    command_timeout: float = 600.0


@dataclass
class _Done:
    stdout: str
    stderr: str
    exited: int


PID_MARK = "@@deployer-pid "


def _exec(conn: Connection, command: str, stdin: str | None, limit: float,
          on_pid: Callable[[int], None] | None = None) -> tuple[str, str, int]:
    """Run one command on a new channel of the connection's transport.

    Straight on paramiko's channel (Fabric opened the connection): Invoke's runner feeds stdin
    one byte per 10 ms and polls for completion, which costs tenths of seconds per command.
    """
    chan = conn.transport.open_session(timeout=limit)
    try:
        chan.settimeout(limit)
        chan.exec_command(command)
        if stdin:
            chan.sendall(stdin.encode())
        chan.shutdown_write()
        err_chunks: list[bytes] = []

        def read_stderr() -> None:
            told = on_pid is None
            try:
                while True:
                    data = chan.recv_stderr(32768)
                    if not data:
                        return
                    err_chunks.append(data)
                    if not told:
                        head = b"".join(err_chunks)
                        if b"\n" in head:
                            told = True
                            line = head.split(b"\n", 1)[0].decode("ascii", "replace")
                            if line.startswith(PID_MARK) and line[len(PID_MARK):].isdigit():
                                on_pid(int(line[len(PID_MARK):]))
            except (TimeoutError, OSError):
                return

        t = threading.Thread(target=read_stderr, daemon=True)
        t.start()
        out_chunks = []
        while True:
            data = chan.recv(32768)
            if not data:
                break
            out_chunks.append(data)
        exited = chan.recv_exit_status()
        t.join(timeout=limit)
        decode = lambda chunks: b"".join(chunks).decode("utf-8", "replace")  # noqa: E731
        return decode(out_chunks), decode(err_chunks), exited
    finally:
        chan.close()


def _tcp_keepalive(sock, every: float) -> None:
    """The kernel notices a silently dead host (pulled cable, frozen machine) within about
    3 x `every` seconds, whatever the command's own timeout: its connection then fails."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        idle = max(1, int(every))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, idle // 2))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(idle * 3 * 1000))
    except (OSError, AttributeError):  # not a TCP socket (a jump host's channel): paramiko's own
        pass


def _auth_failed(label: str, ep: Endpoint, tried: list[str], missing: list[str],
                 exc: Exception | None) -> str:
    """Why a host refused every key: which keys were offered, which were looked for."""
    msg = f"{label}: authentication as {ep.user} failed; tried: {', '.join(tried) or 'no key at all'}"
    if missing:
        msg += f"; not found: {', '.join(missing)}"
    if isinstance(exc, paramiko.PasswordRequiredException):
        msg += " (a key is encrypted: add it to ssh-agent)"
    return msg + " (set ssh.key, an IdentityFile in the ssh config, or load the key in ssh-agent)"


def _load_pkey(text: str) -> paramiko.PKey:
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise ConnectError("ssh key from DEPLOYER_SSH_KEY_DATA: not a readable private key")


class Transport:
    """Connections to the hosts of one run."""

    def __init__(self, settings: SSHSettings, parallel: int = 10):
        self.settings = settings
        self.parallel = max(1, parallel)
        self._conns: dict[str, Connection] = {}
        self._jumps: dict[tuple[Endpoint, ...], Connection] = {}  # jump hosts, per chain
        self._known_files: dict[tuple, paramiko.HostKeys] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.opened: dict[str, int] = {}  # connections opened per host, for benchmarks
        self._inflight: dict[object, tuple[Endpoint, int]] = {}  # commands running: host, pid

    def cancel(self) -> list[str]:
        """Stop every remote command still running (their process groups: TERM, then KILL), so
        that an interrupted run leaves no migration running behind it. Returns the hosts."""
        hosts = []
        for ep, pid in list(self._inflight.values()):
            try:
                conn = self._conns.get(ep.name)
                if conn is None or not conn.is_connected:
                    continue
                _exec(conn, f"kill -TERM -- -{int(pid)} 2>/dev/null; sleep 1; kill -KILL -- -{int(pid)} "
                            "2>/dev/null; true", None, 10)
                hosts.append(ep.name)
            except Exception:  # noqa: BLE001 - best effort: the remote timeout is the backstop
                continue
        return hosts

    # -- connections ---------------------------------------------------------------------
    def _known_file(self, path: str) -> paramiko.HostKeys:
        """The keys of one known_hosts file (read again when it changed; missing: none)."""
        try:
            st = os.stat(path)
            stamp: tuple = (path, st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = (path,)
        with self._guard:
            keys = self._known_files.get(stamp)
        if keys is None:
            keys = paramiko.HostKeys()
            try:
                keys.load(path)
            except FileNotFoundError:
                pass
            except (OSError, UnicodeDecodeError, paramiko.SSHException) as exc:
                raise ConnectError(f"known_hosts {path}: cannot read: {exc}") from None
            with self._guard:
                self._known_files[stamp] = keys
        return keys

    def _known_paths(self, ep: Endpoint) -> list[str]:
        if self.settings.known_hosts:
            return [self.settings.known_hosts]
        return list(ep.known_hosts)

    def _host_keys(self, ep: Endpoint, out: paramiko.HostKeys) -> paramiko.HostKeys:
        """The keys known for `ep`, added to `out` under the name paramiko looks up (address,
        or [address]:port): those recorded under its HostKeyAlias, else under its address and
        under the alias it was given (the first name and the first file winning)."""
        connected = ep.address if ep.port == 22 else f"[{ep.address}]:{ep.port}"
        files = [self._known_file(p) for p in self._known_paths(ep)]
        for name in reversed(ep.host_key_names()):
            for keys in reversed(files):
                entry = keys.lookup(name)
                for keytype in entry.keys() if entry is not None else ():
                    out.add(connected, keytype, entry[keytype])
        return out

    def _auth(self, ep: Endpoint) -> tuple[dict[str, Any], list[str], list[str]]:
        """connect() arguments for the keys to offer `ep`, what they are (for an error) and
        the key files looked for but missing."""
        s = self.settings
        kwargs: dict[str, Any] = {"allow_agent": False, "look_for_keys": False}
        tried: list[str] = []
        files: list[str] = []
        if s.key_data is not None:
            kwargs["pkey"] = _load_pkey(s.key_data.reveal())
            tried.append("the key in DEPLOYER_SSH_KEY_DATA")
        if s.key_filename:
            files.append(s.key_filename)
        files += ep.identity_files
        explicit = s.key_data is not None or bool(s.key_filename)
        if not explicit and not ep.identity_files:
            files += default_key_files()
        present = [f for f in dict.fromkeys(files) if os.path.isfile(f)]
        missing = [f for f in dict.fromkeys(files) if not os.path.isfile(f)]
        if present:
            kwargs["key_filename"] = present
            tried += [f"key {f}" for f in present]
        if not explicit and not ep.identities_only:
            kwargs["allow_agent"] = True
            tried.append("ssh-agent" if os.environ.get("SSH_AUTH_SOCK") else
                         "no ssh-agent (SSH_AUTH_SOCK is not set)")
        return kwargs, tried, missing

    def _strict_connection(self, ep: Endpoint, sock: Any = None) -> tuple[Connection, list[str], list[str]]:
        s = self.settings
        kwargs, tried, missing = self._auth(ep)
        kwargs.update(banner_timeout=s.connect_timeout, auth_timeout=s.connect_timeout)
        if sock is not None:
            kwargs["sock"] = sock
        cfg = FabricConfig(overrides={"load_ssh_configs": False, "run": {"hide": True}})
        conn = Connection(ep.address, user=ep.user, port=ep.port, config=cfg,
                          connect_timeout=s.connect_timeout, connect_kwargs=kwargs)
        client = paramiko.SSHClient()
        self._host_keys(ep, client.get_host_keys())
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        conn.client = client
        return conn, tried, missing

    def _lock(self, name: object) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def connection(self, ep: Endpoint) -> Connection:
        with self._lock(ep.name):
            conn = self._conns.get(ep.name)
            if conn is not None and conn.is_connected:
                return conn
            conn = self._open(ep)
            self._conns[ep.name] = conn
            return conn

    def _jump(self, hops: tuple[Endpoint, ...], target: Endpoint) -> Connection:
        """The connection to the last of `hops`, through the ones before it; one per chain,
        shared by every host behind it."""
        with self._lock(("jump", hops)):
            conn = self._jumps.get(hops)
            if conn is not None and conn.is_connected:
                return conn
            sock = self._channel(hops[:-1], hops[-1], target) if len(hops) > 1 else None
            conn = self._connect(hops[-1], sock, f"{target.name}: jump host {hops[-1].label()}")
            self._jumps[hops] = conn
            return conn

    def _channel(self, hops: tuple[Endpoint, ...], dest: Endpoint, target: Endpoint):
        """A direct-tcpip channel to `dest` through the last of `hops` (its socket)."""
        via = self._jump(hops, target)
        try:
            return via.transport.open_channel("direct-tcpip", (dest.address, dest.port), ("", 0),
                                              timeout=self.settings.connect_timeout)
        except paramiko.ChannelException as exc:
            raise ConnectError(f"{target.name}: jump host {hops[-1].label()} cannot reach "
                               f"{dest.address}:{dest.port}: {exc.text or exc}") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self._jumps.pop(hops, None)
            raise ConnectError(f"{target.name}: jump host {hops[-1].label()}: connection lost: "
                               f"{exc or type(exc).__name__}") from None

    @retry(retry=retry_if_exception_type((socket.timeout, ConnectionResetError, EOFError)),
           stop=stop_after_attempt(2), wait=wait_fixed(0.5), reraise=True)
    def _open(self, ep: Endpoint) -> Connection:
        hops = ep.jumps or ((self.settings.jump,) if self.settings.jump else ())
        sock = self._channel(hops, ep, ep) if hops else None
        conn = self._connect(ep, sock, f"{ep.name} ({ep.address})", f"{ep.name} ({ep.address}:{ep.port})")
        self.opened[ep.name] = self.opened.get(ep.name, 0) + 1
        return conn

    def _connect(self, ep: Endpoint, sock: Any, label: str, where: str | None = None) -> Connection:
        """Open one SSH connection (straight, or over `sock`: a channel through a jump host),
        host key checked; errors name `label` (the host, or the jump host and its host)."""
        s = self.settings
        conn, tried, missing = self._strict_connection(ep, sock)
        known = ", ".join(self._known_paths(ep)) or "a known_hosts file"
        try:
            conn.open()
        except Exception as exc:
            message = self._connect_error(exc, conn, ep, label, where or label, known, tried, missing)
            try:
                conn.client.close()  # (and the channel it was given)
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
            if message is None:
                raise
            raise ConnectError(message) from (exc if isinstance(exc, TimeoutError) else None)
        conn.transport.set_keepalive(s.keepalive)
        _tcp_keepalive(conn.transport.sock, s.keepalive)
        return conn

    def _connect_error(self, exc: Exception, conn: Connection, ep: Endpoint, label: str, where: str,
                       known: str, tried: list[str], missing: list[str]) -> str | None:
        """The one-line message of a failed connection (None: not ours to explain); `label`
        names the host, `where` its address and port too."""
        s = self.settings
        if isinstance(exc, paramiko.BadHostKeyException):
            return (f"{label}: host key CHANGED (got {exc.key.get_name()} "
                    f"{exc.key.get_fingerprint().hex()}); refusing to connect. If the host was "
                    f"reinstalled, update {known}")
        if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
            return (f"{label}: host key unknown; add it to {known} (looked up as "
                    f"{', '.join(ep.host_key_names())}; strict host-key checking)")
        if isinstance(exc, paramiko.SSHException):
            t = conn.client.get_transport()
            # paramiko may raise the last key's parse error instead of the refusal: a transport
            # that got past the host key but is not authenticated was refused every key
            if isinstance(exc, paramiko.AuthenticationException) or (
                    t is not None and t.is_active() and not t.is_authenticated()):
                return _auth_failed(label, ep, tried, missing, exc)
            return f"{label}: ssh: {exc}"
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            reasons = {e.strerror or str(e) for e in exc.errors.values()}
            return f"{where}: {', '.join(sorted(reasons))} (is sshd running?)"
        if isinstance(exc, TimeoutError):
            return f"{where}: connection timed out after {s.connect_timeout:g}s"
        if isinstance(exc, OSError):
            return f"{where}: {exc.strerror or exc}"
        return None

    def close(self) -> None:
        for conn in [*self._conns.values(), *reversed(list(self._jumps.values()))]:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self._conns.clear()
        self._jumps.clear()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running -------------------------------------------------------------------------
    def run(self, ep: Endpoint, cmd: Command, *, timeout: float | None = None,
            stdin: str | None = None, check: bool = True) -> Result:
        limit = timeout or cmd.timeout or self.settings.command_timeout
        # timeout(1) stops the remote process group; -k kills it if TERM is ignored. Its pid (the
        # group's) is told first on stderr, so that an interrupted run can stop it (`cancel`).
        remote = (f"echo {PID_MARK}$$ >&2; exec timeout -k 5 {int(max(1, limit))} "
                  f"sh -c {quote(cmd.script)[0]}")
        conn = self.connection(ep)
        t0 = time.monotonic()
        key = object()
        try:
            out, err, exited = _exec(conn, remote, stdin, limit + CHANNEL_GRACE,
                                     on_pid=lambda pid: self._inflight.__setitem__(key, (ep, pid)))
        except TimeoutError:
            raise CommandFailed(ep.name, cmd.display, None, timed_out=True) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self._conns.pop(ep.name, None)
            raise ConnectError(f"{ep.name} ({ep.address}): connection lost: {exc}") from None
        finally:
            self._inflight.pop(key, None)
        if err.startswith(PID_MARK):
            err = err.split("\n", 1)[1] if "\n" in err else ""
        res = _Done(out, err, exited)
        seconds = time.monotonic() - t0
        result = Result(ep.name, cmd.display, res.stdout, res.stderr, res.exited, seconds)
        if check and res.exited != 0:
            raise CommandFailed(ep.name, cmd.display, res.exited, res.stdout, res.stderr,
                                timed_out=res.exited == 124)
        return result

    # -- files (SFTP on the run's own connection) -------------------------------------------
    def _sftp(self, ep: Endpoint) -> paramiko.SFTPClient:
        conn = self.connection(ep)
        try:
            return paramiko.SFTPClient.from_transport(conn.transport)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self._conns.pop(ep.name, None)
            raise ConnectError(f"{ep.name} ({ep.address}): sftp: {exc}") from None

    def get(self, ep: Endpoint, remote: str, local: str) -> int:
        """Copy the file `remote` of the host to `local` (created 0600); its size."""
        import os

        sftp = self._sftp(ep)
        try:
            fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                sftp.getfo(remote, out)
            return os.path.getsize(local)
        except FileNotFoundError:
            raise CommandFailed(ep.name, f"sftp get {remote}", None, stderr="no such file") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise CommandFailed(ep.name, f"sftp get {remote}", None, stderr=str(exc)) from None
        finally:
            sftp.close()

    def put(self, ep: Endpoint, local: str, remote: str, *, mode: int = 0o600,
            owner_of_dir: bool = True) -> int:
        """Copy `local` to `remote` on the host: written under a temporary name created with
        `mode` before any byte is sent, owned like its directory when `owner_of_dir` (a backup
        in the database user's backup directory), then renamed over `remote`. Its size."""
        import posixpath
        import secrets

        sftp = self._sftp(ep)
        tmp = f"{remote}.sftp-{secrets.token_hex(4)}"
        try:
            with sftp.open(tmp, "wb") as f:
                f.chmod(mode)
                if owner_of_dir:
                    d = sftp.stat(posixpath.dirname(remote) or ".")
                    f.chown(d.st_uid, d.st_gid)
                f.set_pipelined(True)
                with open(local, "rb") as src:
                    while block := src.read(256 * 1024):
                        f.write(block)
            size = sftp.stat(tmp).st_size
            sftp.posix_rename(tmp, remote)
            return int(size or 0)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            try:
                sftp.remove(tmp)
            except (paramiko.SSHException, EOFError, OSError):
                pass
            raise CommandFailed(ep.name, f"sftp put {remote}", None, stderr=str(exc)) from None
        finally:
            sftp.close()

    def each(self, items: Iterable[T], fn: Callable[[T], Any], *,
             key: Callable[[T], str] = lambda item: item.name,  # type: ignore[attr-defined]
             limit: int | None = None) -> GroupResult:
        """Run fn on every item in the bounded pool; collect each result or exception."""
        items = list(items)
        group = GroupResult()
        if not items:
            return group
        workers = min(self.parallel, limit or self.parallel, len(items))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = {key(item): pool.submit(fn, item) for item in items}
            try:
                for name, fut in futures.items():
                    try:
                        group.results[name] = fut.result()
                    except Exception as exc:  # noqa: BLE001 - reported per host
                        group.failures[name] = exc
            except KeyboardInterrupt:
                # Ctrl-C reaches the main thread while it waits: stop queueing hosts, let the
                # running commands end (each has its remote timeout), and let the caller clean up.
                for fut in futures.values():
                    fut.cancel()
                raise
        return group
