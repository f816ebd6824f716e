"""The fault suite's tools: an orchestrator driven as a user's process (its JSON events read
live, so a fault lands at a precise point), and the invariant checker, which looks at the hosts
through the fleet harness, never through deployer's own report."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("preflight", "lock", "snapshot", "maintenance", "backup", "pull", "migrate", "cache_warm",
          "switch", "worker_restart", "gate", "finalize")


class Orchestrator:
    """`deployer <args> --output json` in a subprocess; events arrive on a queue as they are printed.
    `prefix`: an argv it runs under (e.g. faketime: an orchestrator whose clock is off)."""

    def __init__(self, args: list[str], inventory: str, env: dict | None = None, prefix: tuple[str, ...] = ()):
        argv = [*prefix, sys.executable, "-m", "deployer.cli", *args, "--inventory", inventory, "--output", "json"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     cwd=ROOT, env={**os.environ, **(env or {})})
        self.events: list[dict] = []
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        self._err: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self._err.append(self.proc.stderr.read()), daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("{"):
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                self.events.append(e)
                self._q.put(e)
        self._q.put(None)

    def wait_for(self, pred, timeout: float = 120) -> dict | None:
        """The first event (from now on) matching pred; None if the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                e = self._q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if e is None:
                self._q.put(None)
                return None
            if pred(e):
                return e
        raise AssertionError(f"no matching event within {timeout}s; last: {self.events[-3:]}")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def finish(self, timeout: float = 240) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait(timeout=30)
            raise AssertionError(f"orchestrator did not finish within {timeout}s") from None

    @property
    def stderr(self) -> str:
        time.sleep(0.05)
        return "".join(self._err)

    @property
    def stdout(self) -> str:
        return "".join(self.lines)


def at_stage(name: str, *, command: bool = True):
    """Matches the start of a stage; with command=True, its first command instead (the stage's
    work is then in flight) when the stage has any."""
    state = {"in": False}

    def pred(e: dict) -> bool:
        if e.get("event") == "stage" and e.get("state") == "start":
            if state["in"] and e.get("stage") != name:
                return True  # the stage ran no command: we are just past it
            state["in"] = e.get("stage") == name
            return state["in"] and (not command or name in ("preflight", "lock", "snapshot"))
        if command and state["in"] and e.get("event") == "command":
            return True
        if e.get("event") == "stage" and state["in"] and e.get("state") in ("done", "failed"):
            return True  # a stage without commands: its end is as far as it goes
        return False

    return pred


def is_rollback(e: dict) -> bool:
    return e.get("event") == "rollback"


@dataclass
class Observed:
    """What the invariant checker saw, and what did not hold."""

    serving: dict[str, str | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def lb_states(fleet) -> dict[str, str]:
    from deployer.commands import lb as LB

    out = fleet.sh("lb1", "echo 'show servers state web' | socat stdio UNIX-CONNECT:/srv/haproxy/admin.sock",
                   check=False).stdout
    return LB.parse_states(out, "web")


def psql(fleet, sql: str) -> str:
    import shlex

    res = fleet.sh("db1", f"runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -h /srv/pg/run -d demo "
                          f"-XAtq -c {shlex.quote(sql)}", check=False)
    return res.stdout.strip()


def check_invariants(fleet, cli, inventory: str, *, allowed: set[str], canary_rows: int, secret: str,
                     texts: list[str], state_dir: Path) -> Observed:
    """The invariants of the fault suite, checked on the hosts themselves."""
    from e2e.conftest import health, serving

    obs = Observed(serving=serving(fleet))
    releases = set(obs.serving.values())
    status = cli("status", "--env", "local", "--inventory", inventory)
    said = status.stdout + status.stderr
    if len(releases) != 1:
        if status.returncode != 4 or "disagree" not in said:
            obs.problems.append(f"hosts serve {obs.serving} and status does not say so (exit {status.returncode})")
    for rel in releases:
        if rel not in allowed:
            obs.problems.append(f"a host serves {rel}, neither the snapshot's nor the new release ({allowed})")
    for h in fleet.spec.web_hosts:
        rel = obs.serving.get(h.name)
        try:
            got = health(fleet, h).get("release")
        except Exception as exc:  # noqa: BLE001
            got = f"no answer ({exc})"
        if rel and got != rel:
            obs.problems.append(f"{h.name} points at {rel} but answers {got}")
    lock = fleet.sh("db1", "cat /srv/app/.deployer/lock/info.json 2>/dev/null", check=False).stdout.strip()
    if lock and "lock: held by" not in said:
        obs.problems.append(f"lock left held and not reported: {lock}")
    for h in fleet.spec.web_hosts:
        # the flag's expiry is judged by the host's clock, as its app does
        host_now, _, flag = fleet.sh(h.name, "date +%s; cat /srv/app/shared/storage/maintenance.json 2>/dev/null",
                                     check=False).stdout.partition("\n")
        if flag.strip():
            expired = False
            try:
                exp = json.loads(flag).get("expires_at")
                expired = exp is not None and exp <= int(host_now)
            except ValueError:
                pass
            if not expired and "ON" not in said:
                obs.problems.append(f"{h.name}: maintenance on, status does not show it")
    drained = {k: v for k, v in lb_states(fleet).items() if v != "ready"}
    if drained:
        obs.problems.append(f"servers left {drained} at HAProxy")
    left = psql(fleet, "SELECT relname FROM pg_class WHERE relname LIKE 'deployer%' UNION ALL "
                       "SELECT proname FROM pg_proc WHERE proname LIKE 'deployer%' UNION ALL "
                       "SELECT tgname FROM pg_trigger WHERE tgname LIKE 'deployer%'")
    if left and "ON" not in said:  # only a refused restore keeps the fence (and maintenance on)
        obs.problems.append(f"deployer objects left in the app's database: {left.split()}")
    rows = psql(fleet, "select count(*) from fault_canary")
    if rows != str(canary_rows):
        obs.problems.append(f"canary table has {rows!r} rows, expected {canary_rows}")
    ledger = fleet.sh("db1", "cat /srv/app/.deployer/ledger.jsonl 2>/dev/null", check=False).stdout
    journals = "".join(p.read_text(errors="replace") for p in state_dir.rglob("*.jsonl"))
    for name, text in [("ledger", ledger), ("journal", journals), ("status", said)] + \
            [(f"output {i}", t) for i, t in enumerate(texts)]:
        if secret in text:
            obs.problems.append(f"the canary secret appears in the {name}")
    return obs


class ArgvWatch:
    """Samples every process's command line on this machine (the fleet's hosts share its PID
    namespace) while a scenario runs: a secret must never be in a remote process's argv."""

    def __init__(self, secret: str):
        self.secret = secret.encode()
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ArgvWatch:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join(timeout=2)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            for d in os.listdir("/proc"):
                if not d.isdigit():
                    continue
                try:
                    with open(f"/proc/{d}/cmdline", "rb") as f:
                        if self.secret in f.read():
                            self.seen.append(d)
                except OSError:
                    continue
