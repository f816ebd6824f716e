"""Running commands over SSH (with `connect.py`, the one place that touches Fabric and paramiko).

One SSH connection per host per run, opened lazily (strictly: see `connect.Connector`) and reused
by every stage; per-command timeouts enforced on the remote side with timeout(1) so the remote
process is stopped, not only the channel; the remote process groups of running commands are
known, so that an interrupted run can stop them (`cancel`); SFTP get/put; a bounded thread pool
for parallel work.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import paramiko
from fabric import Connection

from .connect import Connector, SSHSettings, why_closed
from .errors import CommandFailed, ConnectError, ConnectionLost
from .shell import Command, quote
from .sshconfig import Endpoint

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
        if exited == -1 and not conn.transport.is_active():  # closed under it: no exit status
            raise EOFError(why_closed(conn.transport))
        t.join(timeout=limit)
        decode = lambda chunks: b"".join(chunks).decode("utf-8", "replace")  # noqa: E731
        return decode(out_chunks), decode(err_chunks), exited
    finally:
        chan.close()


class Tunnel:
    """A forwarded TCP connection (a direct-tcpip channel), socket-like: sendall, recv,
    settimeout, close.

    Each recv that got data answers with an SSH ignore message: the sshd at the other end (and
    each jump host's) sends a reply split over several writes only once its previous segment is
    acknowledged (Nagle: OpenSSH sets TCP_NODELAY for terminal sessions only), and a receiver
    with nothing to send delays that acknowledgement by 40 ms. A few bytes back carry it at once,
    through every hop: a health probe answered in 2 ms no longer takes 44."""

    def __init__(self, chan: paramiko.Channel):
        self._chan = chan

    def sendall(self, data: bytes) -> None:
        self._chan.sendall(data)

    def recv(self, n: int) -> bytes:
        data = self._chan.recv(n)
        if data:
            try:
                self._chan.get_transport().send_ignore(1)
            except (paramiko.SSHException, EOFError, OSError):
                pass  # only an acknowledgement: the next recv says whether the connection lives
        return data

    def settimeout(self, timeout: float | None) -> None:
        self._chan.settimeout(timeout)

    def close(self) -> None:
        self._chan.close()


class Transport:
    """Connections to the hosts of one run."""

    def __init__(self, settings: SSHSettings, parallel: int = 10):
        self.settings = settings
        self.parallel = max(1, parallel)
        self.connector = Connector(settings)
        self._conns: dict[str, Connection] = {}
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
    def _lock(self, name: object) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def connection(self, ep: Endpoint) -> Connection:
        with self._lock(ep.name):
            conn = self._conns.get(ep.name)
            if conn is not None and conn.is_connected:
                return conn
            conn = self.connector.open(ep)
            self.opened[ep.name] = self.opened.get(ep.name, 0) + 1
            self._conns[ep.name] = conn
            return conn

    def close(self) -> None:
        for conn in self._conns.values():
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self._conns.clear()
        self.connector.close()

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
            raise ConnectionLost(f"{ep.name} ({ep.address}): connection lost: {exc}") from None
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

    # -- TCP from the host itself (health checks through the SSH connection) -----------------
    def open_tcp(self, ep: Endpoint, host: str, port: int, timeout: float) -> Tunnel:
        """A TCP connection made by the host `ep` to host:port (a direct-tcpip channel of the run's
        SSH connection, as `ssh -L` opens): the host's own view of its port, wherever this
        machine sits. Raises OSError when it cannot be opened (the port refused, a timeout)."""
        conn = self.connection(ep)
        try:
            chan = conn.transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0),
                                               timeout=timeout)
        except paramiko.ChannelException as exc:  # sshd could not connect: refused, no route
            raise ConnectionRefusedError(f"{host}:{port} from {ep.name}: {exc.text or 'refused'}") from None
        except (paramiko.SSHException, EOFError) as exc:  # a timeout, or the connection is gone
            if not conn.is_connected:
                self._conns.pop(ep.name, None)
            raise OSError(f"{host}:{port} through the SSH connection to {ep.name}: {exc or 'timed out'}") from None
        return Tunnel(chan)

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
