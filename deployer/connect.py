"""Opening SSH connections, strictly: host keys checked on every hop against known_hosts
(paramiko's RejectPolicy, never Fabric's AutoAddPolicy), the keys OpenSSH would offer (the
inventory's, the ssh config's IdentityFiles, ssh-agent, the default keys), jump host chains
(one connection per chain, shared by the hosts behind it), keepalives at both the SSH and the
TCP level, and one-line errors that name the host and what was tried."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import paramiko
from fabric import Config as FabricConfig
from fabric import Connection
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_fixed

from . import startup
from .errors import ConnectError
from .sshconfig import Endpoint, default_key_files


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


ALIVE_COUNT = 3  # keepalives left unanswered before a connection is given up (ServerAliveCountMax)
_given_up: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # transport -> why it was closed


def why_closed(transport: paramiko.Transport) -> str:
    """Why this connection closed: deployer gave up on it (its host stopped answering), the
    host ended it, or the error that broke it."""
    given_up = _given_up.get(transport)
    if given_up:
        return given_up
    exc = getattr(transport, "saved_exception", None)
    if exc is None or isinstance(exc, EOFError):
        return "the connection was closed by the host"
    return f"the connection broke: {type(exc).__name__}: {exc}"


def _tcp_keepalive(sock, every: float) -> bool:
    """The kernel notices a silently dead host (pulled cable, frozen machine) within about
    3 x `every` seconds, whatever the command's own timeout: its connection then fails. False
    when `sock` is not a TCP socket (a jump host's channel): see `watch_liveness`."""
    try:
        # small packets leave at once (Nagle's wait for the peer's delayed ACK cost 40 ms per
        # health probe sent through the connection, as OpenSSH's client knows)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        idle = max(1, int(every))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, idle // 2))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(idle * ALIVE_COUNT * 1000))
        return True
    except (OSError, AttributeError):  # not a TCP socket (a jump host's channel)
        return False


def watch_liveness(transport: paramiko.Transport, every: float, label: str) -> threading.Thread:
    """OpenSSH's ServerAliveInterval for a connection through a jump host, where no TCP
    keepalive can see the host (the jump host's own connection to it stays quiet): every `every`
    seconds a keepalive request that wants a reply (any reply, even a refusal, proves the host's
    sshd alive); none within ALIVE_COUNT x `every` and the connection is closed, so the commands
    waiting on it fail now instead of at their timeout. paramiko's own keepalive asks for no
    reply, so it never notices."""
    def ask(answered: threading.Event) -> None:
        try:
            transport.global_request("keepalive@openssh.com", wait=True)
        except Exception:  # noqa: BLE001 - a transport closing under it: nothing to report
            pass
        answered.set()

    def watch() -> None:
        while transport.is_active():
            time.sleep(every)
            answered = threading.Event()
            threading.Thread(target=ask, args=(answered,), name=f"alive-{label}", daemon=True).start()
            if not answered.wait(every * ALIVE_COUNT) and transport.is_active():
                _given_up[transport] = (f"no answer to {ALIVE_COUNT} keepalives in {every * ALIVE_COUNT:g}s "
                                        "(the host, or the network to it, is down)")
                transport.close()  # the host stopped answering: what waits on it fails now
                return

    thread = threading.Thread(target=watch, name=f"liveness-{label}", daemon=True)
    thread.start()
    return thread


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


class Connector:
    """Opens the connections of one run (the caller keeps and reuses them)."""

    def __init__(self, settings: SSHSettings):
        self.settings = settings
        self._jumps: dict[tuple[Endpoint, ...], Connection] = {}  # jump hosts, per chain
        self._known_files: dict[tuple, paramiko.HostKeys] = {}
        self._locks: dict[object, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, name: object) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

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
    def open(self, ep: Endpoint) -> Connection:
        startup.over()  # the first host contacted: the program's startup is over
        hops = ep.jumps or ((self.settings.jump,) if self.settings.jump else ())
        sock = self._channel(hops, ep, ep) if hops else None
        return self._connect(ep, sock, f"{ep.name} ({ep.address})", f"{ep.name} ({ep.address}:{ep.port})")

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
        if not _tcp_keepalive(conn.transport.sock, s.keepalive):
            watch_liveness(conn.transport, s.keepalive, label)
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
        """Close the jump hosts' connections (the last hops first)."""
        for conn in reversed(list(self._jumps.values())):
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self._jumps.clear()
