"""One command's session with the fleet: transport, ledger, lock and the helpers every verb uses."""

from __future__ import annotations

import getpass
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable

from .commands import releases as R
from .config import Config, Host
from .errors import CommandFailed, ConnectionLost, DeployerError, LockLost, Refused
from .ledger import now_iso
from .output import Reporter
from .shell import Command
from .state.base import FileRunner, StateBackend
from .transport import Endpoint, GroupResult, SSHSettings, Transport

#: the longest time between two heartbeats of a lock holder (shorter with a short `state.lease`:
#: a sixth of it, so five beats may be lost before the lock looks stale)
HEARTBEAT_SECONDS = 10


def who() -> str:
    user = os.environ.get("DEPLOYER_USER") or os.environ.get("GITHUB_ACTOR") or getpass.getuser()
    return f"{user}@{socket.gethostname()}"


def ssh_settings(cfg: Config) -> SSHSettings:
    """The run's SSH settings. Jump hosts, the ssh config's keys and known_hosts files are per
    host (`Host.endpoint`, resolved when the config was loaded)."""
    s = cfg.ssh
    known = s.known_hosts
    if known is None and s.known_hosts_data is not None:
        known = _write_private_file("known_hosts", s.known_hosts_data.reveal())
    return SSHSettings(
        known_hosts=str(known) if known is not None else None,
        key_filename=str(s.key) if s.key else None, key_data=s.key_data,
        connect_timeout=s.connect_timeout, keepalive=int(s.keepalive),
        command_timeout=s.command_timeout,
    )


def _write_private_file(name: str, text: str) -> str:
    """A private copy of data given in the environment: a fresh 0700 directory with a random
    name (never a predictable path a planted symlink could redirect), removed at exit."""
    import atexit
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="deployer-", dir=os.environ.get("XDG_RUNTIME_DIR") or None)
    atexit.register(shutil.rmtree, d, True)
    path = os.path.join(d, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def make_state(cfg: Config, transport: FileRunner, *, run_id: str, reporter: Reporter) -> StateBackend:
    """The state backend of the inventory (`cfg.state`): an S3 bucket (`backend: s3`), else the
    ledger host's state directory. `run_id` names this writer's batches in an S3 ledger."""
    if cfg.state.backend == "s3":
        from .state.s3_backend import S3State

        return S3State(transport, cfg, cfg.state, run_id=run_id, reporter=reporter)
    from .state.ssh import SshState

    return SshState(transport, cfg.ledger_host.target(), cfg.layout.state)


class Session:
    def __init__(self, cfg: Config, reporter: Reporter, *, reason: str = "", transport=None,
                 http_check=None, bake=None):
        """`transport` and `http_check` are the run's only ways out (SSH and HTTP); tests give
        recording ones."""
        from .gate import wait_passes

        self.cfg = cfg
        self.reporter = reporter
        self.reason = reason
        self._run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)
        self.transport = transport or Transport(ssh_settings(cfg), cfg.parallel)
        self.http_check = http_check or wait_passes
        if bake is None:
            from .bake import run_bake as bake
        self.bake = bake  # bounded canary/baseline probes (HTTP)
        self.state_path = cfg.layout.state
        # where the lock and the ledger live
        self.state: StateBackend = make_state(cfg, self.transport, run_id=self._run_id, reporter=reporter)
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None
        self._locked = False
        self._lock_run = self._run_id  # the run the lock is held as (recover writes as others)
        self._lock_lost: str | None = None
        self._fence_token: int | None = None  # the lock's fencing token (taken or adopted)
        self._keep_lock = False  # a paused rollout leaves the lock to promote/abort
        self._ledger_read: list[dict] | None = None  # the ledger as read with the lock (used once)
        #: seconds without a heartbeat after which a lock is stale (`state.lease`): others may
        #: break it, and a holder whose beats did not get through that long stops
        self.stale_after = float(cfg.state.lease)
        self.beat_every = min(HEARTBEAT_SECONDS, self.stale_after / 6)

    @property
    def run_id(self) -> str:
        """The run this session writes for: its journal. Its own, or the run it continues
        (`continue_run`). The lock stays held as the run that took or adopted it."""
        return self._run_id

    @property
    def locked(self) -> bool:
        """This session holds the env's lock (taken or adopted, not released yet)."""
        return self._locked

    @property
    def fence_token(self) -> int | None:
        """The fencing token of the lock this session took or adopted (None: it took none).
        Every host script of the run's plans checks it first (`commands.fence.guard`)."""
        return self._fence_token

    @property
    def lock_lost(self) -> str | None:
        """Why the lock held is no longer this run's for sure (None: it is, or none is held)."""
        return self._lock_lost

    @property
    def keep_lock(self) -> bool:
        """The lock stays with a paused rollout when this session ends (`pause_with_lock`)."""
        return self._keep_lock

    def continue_run(self, run_id: str) -> None:
        """From now on this session writes as run `run_id` (a recovered or resumed run keeps
        its id: one story in the ledger). The lock held, if any, stays as it is."""
        self._run_id = run_id

    def ep(self, host: Host) -> Endpoint:
        return host.target()

    def run(self, host: Host, cmd: Command, **kw):
        return self.transport.run(self.ep(host), cmd, **kw)

    def run_on(self, name: str, cmd: Command, **kw):
        return self.transport.run(self.ep(self.cfg.host(name)), cmd, **kw)

    def opener(self, name: str):
        """How an HTTP probe of host `name` reaches it: through its SSH connection (a channel to
        the url's host and port, opened by the host itself), or None (straight from here) when
        `health.via` is direct or the transport cannot tunnel (a recording one)."""
        if self.cfg.health.via != "ssh" or not hasattr(self.transport, "open_tcp"):
            return None
        ep = self.ep(self.cfg.host(name))
        return lambda host, port, timeout: self.transport.open_tcp(ep, host, port, timeout)

    @property
    def ledger_id(self) -> str:
        """Where this env's ledger lives: journals are shipped only there."""
        return self.state.ident

    def ship(self, text: str) -> None:
        """Append journal lines to the ledger (raises when it cannot be reached)."""
        self.state.append(text)

    def ship_and_release(self, text: str) -> None:
        """A run's last shipment and the release of its lock in one round trip (the ledger gets
        the lines first: whoever takes the lock next reads this run whole). Without the lock
        (or keeping it for a paused rollout): a plain shipment. When the release did not happen,
        `release_lock` tries again and says so."""
        if not self.locked or self.keep_lock:
            return self.ship(text)
        self.stop_heartbeat()
        if self.state.append_and_release(text, self._lock_run):
            self._locked = False

    def history(self, ship_first: bool = True):
        """The ledger's history, with this machine's records not shipped yet (shipped first when
        the ledger answers). `local_only` lists the runs whose record is still only local."""
        from .ledger import History

        events, local = self._ledger(ship_first)
        h = History.fold(events)
        h.local_only = local
        return h

    def ledger_events(self) -> list[dict]:
        """The ledger's JSON objects as written (this machine's records not shipped yet
        included), for what renders the ledger's own format (the HTML report)."""
        return self._ledger(True)[0]

    def _ledger(self, ship_first: bool) -> tuple[list[dict], list[str]]:
        from . import journal as J
        from .records import dedupe

        events, self._ledger_read = self._ledger_read, None
        if ship_first:
            shipped, _ = J.ship_pending(self.cfg.env, self.ledger_id, self.ship)
            if shipped:
                events = None  # read with the lock, before these were shipped
            for path in shipped:
                # A run that ended while the ledger host was away could not free its lock: its
                # journal says it is over, so the lock it left is freed now (only if still its own).
                if J.ended(path) and not any(r.get("type") == "deploy.paused"
                                             for r in J.read_records(path)[-3:]):
                    self.state.release(path.stem)
                    self.reporter.event("notice", message=f"shipped the record of run {path.stem} to the "
                                                          f"ledger (it was local only)")
        if events is None:
            events = self.state.read()
        local = J.local_only(self.cfg.env, self.ledger_id)
        for path in local:
            events += J.read_records(path)
        return dedupe(events), sorted({p.stem for p in local})

    def facts(self, hosts: list[Host], ref: str | None = None):
        """Read every host's facts in one command each, in parallel."""
        from . import facts as F

        out = F.Facts()

        def one(h: Host):
            res = self.run(h, F.command(self.cfg, h, ref), timeout=60)
            return F.parse(self.cfg, h, res.stdout, ref)

        group = self.each(hosts, one)
        for name, (state, extras) in group.results.items():
            out.hosts[name] = state
            if "commit" in extras:
                out.commit = extras["commit"]
            if "schema" in extras:
                out.schema = extras["schema"]
        out.unreachable = {h: str(e) for h, e in group.failures.items()}
        return out

    def warm(self, hosts: list[Host]) -> GroupResult:
        """Open the connections to `hosts` in parallel, running nothing: their handshakes overlap
        whatever runs meanwhile (failures are left to the command that needs the host)."""
        connect = getattr(self.transport, "connection", None)
        return self.each(hosts, lambda h: connect(self.ep(h)) if connect else None)

    def each(self, hosts: list[Host], fn: Callable[[Host], object], limit: int | None = None) -> GroupResult:
        return self.transport.each(hosts, fn, limit=limit)

    def close(self) -> None:
        self.stop_heartbeat()
        self.transport.close()

    # -- reading state -----------------------------------------------------------------
    def host_states(self, hosts: list[Host]) -> GroupResult:
        return self.each(hosts, lambda h: R.parse_state(
            self.run(h, R.read_state(self.cfg.deploy_to, self.cfg.playbook.stages.maintenance.flag), timeout=30).stdout))

    # -- the lock ------------------------------------------------------------------------
    def lock_info(self) -> dict:
        return {"holder": who().split("@")[0], "host": socket.gethostname(), "pid": os.getpid(),
                "reason": self.reason, "started": now_iso(), "run": self._lock_run}

    def acquire_lock(self, wait: float = 0.0, *, read_ledger: bool = False,
                     stop: threading.Event | None = None) -> bool:
        """Take the env's lock, waiting up to `wait` s (less if `stop` is set meanwhile). True
        when it had to wait for it. With `read_ledger`, the ledger is read in the same round
        trip, for the next `history()`."""
        waited, retried = False, False
        self._lock_run = self.run_id
        stop = stop or threading.Event()
        deadline = time.monotonic() + wait
        while True:
            try:
                held = self._take_lock(read_ledger)
            except (ConnectionLost, CommandFailed) as exc:
                # the round trip failed after it reached the host: the lock may have been taken
                if not (isinstance(exc, ConnectionLost) or exc.timed_out):
                    raise
                if not self._undo_unanswered_acquire(exc) or retried:
                    raise
                retried = True  # released: one more try, over a new connection
                self.reporter.event("notice", message=f"lock: {exc.message.splitlines()[0]}; "
                                                      "trying again")
                continue
            if held is None:
                self._locked = True
                self._fence_token = self.state.token(self._lock_run)
                self._start_heartbeat()
                return waited
            waited = True
            if time.monotonic() >= deadline:
                stale = not held.paused and (not held.run or (held.heartbeat_age is not None
                                                              and held.heartbeat_age > self.stale_after))
                hint = (" The lock looks STALE (no heartbeat): if that run is dead, "
                        f"`inv recover --env {self.cfg.env}` converges what it left and frees the lock." if stale else
                        " Wait for it, or pass --lock-wait SECONDS.")
                raise Refused(f"{self.cfg.env}: locked by {held.describe()}.{hint}")
            if stop.wait(min(2.0, max(0.1, deadline - time.monotonic()))):
                raise Refused(f"{self.cfg.env}: locked by {held.describe()}; no longer waited for")

    def _take_lock(self, read_ledger: bool):
        """One try at the lock: None when taken, else who holds it."""
        if read_ledger:
            held, events = self.state.acquire_and_read(self.lock_info())
            self._ledger_read = events if held is None else None
            return held
        return self.state.acquire(self.lock_info())

    def _undo_unanswered_acquire(self, exc: DeployerError) -> bool:
        """The lock's round trip failed (connection lost, timed out): the lock may have been
        taken all the same, the answer lost. It is released if it names this run (a release
        checks that), over a new connection: True. When even that fails, the error says so."""
        try:
            self.state.release(self._lock_run)
            return True
        except DeployerError as again:
            first = again.message.splitlines()[0]
            exc.message += (f"\nthe lock may be held by this run ({self._lock_run}) and could not be "
                            f"released ({first}): `inv recover --env {self.cfg.env}` frees it")
            exc.args = (exc.message,)
            return False

    def _start_heartbeat(self) -> None:
        """Beat every `beat_every` seconds. The lock is LOST when a beat finds it is no longer ours
        (broken, taken over), or when no beat got through for `stale_after` seconds (others may
        break it as stale): the run then stops before its next switch (`check_fence`)."""
        self._lock_lost = None
        last_ok = time.monotonic()

        def beat() -> None:
            nonlocal last_ok
            while not self._hb_stop.wait(min(HEARTBEAT_SECONDS, self.beat_every)):
                try:
                    ours = self.state.heartbeat(self._lock_run)
                except Exception:  # noqa: BLE001 - unreachable: judged by the time since the last beat
                    if time.monotonic() - last_ok > self.stale_after:
                        self._lock_lost = (f"no heartbeat got through to {self.state.where()} for "
                                          f"{self.stale_after:g}s: the lock may have been broken as stale")
                    continue
                if ours:
                    last_ok = time.monotonic()
                else:
                    self._lock_lost = "the lock is no longer this run's (broken or taken over)"

        self._hb_stop.clear()
        self._hb_thread = threading.Thread(target=beat, name="lock-heartbeat", daemon=True)
        self._hb_thread.start()

    def adopt_lock(self, run_id: str) -> dict | None:
        """Continue the paused rollout `run_id` (promote/abort, from any machine): its lock is
        taken over and kept beating. The lock's new details, or None when it could not be taken
        over (not paused any more, or taken by another)."""
        self.continue_run(run_id)
        self._lock_run = run_id
        info = self.lock_info()
        if not self.state.adopt(run_id, info):
            return None
        self._locked = True
        self._fence_token = self.state.token(run_id)  # a new one: the paused run's is stale now
        self._start_heartbeat()
        return info

    def pause_with_lock(self) -> None:
        """The run pauses its rollout: its lock is marked paused and stays held when the
        session ends, for promote/abort to adopt."""
        self.state.mark_paused(self._lock_run)
        self._keep_lock = True

    def check_fence(self) -> None:
        """Raise LockLost when this run no longer holds its lock for sure (a backend with a
        fencing token checks it too, before each switch)."""
        if self.locked:
            self.state.check_fence(self._lock_run)
        if self.locked and self.lock_lost:
            raise LockLost(f"{self.cfg.env}: lock lost: {self.lock_lost}; stopping before any further "
                           "switch")

    def stop_heartbeat(self) -> None:
        self._hb_stop.set()
        if self._hb_thread:
            self._hb_thread.join(timeout=1)
            self._hb_thread = None

    def release_lock(self) -> None:
        self.stop_heartbeat()
        if not self.locked or self.keep_lock:
            return
        self.state.release(self._lock_run)
        self._locked = False
