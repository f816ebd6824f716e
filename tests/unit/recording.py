"""A recording transport with canned output: drives whole runs (deploy, rollback, abort, the
failure paths) without the fleet, and records every command it was given, per host."""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from deployer.commands import fence as FN
from deployer.commands import lock as LK
from deployer.errors import CommandFailed, ConnectError
from deployer.gate import Sample, Verdict
from deployer.shell import STEP_MARK
from deployer.transport import GroupResult, Result

SHA = "3f8cb52" + "0" * 33
ARTIFACT_SHA = "af" * 32  # what a build host's artifact pack prints


#: how a host script's fencing token check (`fence.guard`) starts
GUARD_HEAD = "(command -v flock "
#: a host script's fencing token check, as `fence.fenced` puts it first
GUARD_RE = re.compile(re.escape(GUARD_HEAD)
                      + r".*?-gt (\d+) \]; then echo \"fenced: host has seen token .*?\) \|\| exit \$\?\n", re.S)


def split_guard(script: str) -> tuple[int | None, str]:
    """(the token a script checks first, None without a check; the script after the check)."""
    m = GUARD_RE.match(script)
    return (int(m.group(1)), script[m.end():]) if m else (None, script)


#: the token in a check's display (a dry run shows `<token>` where a run shows its number)
TOKEN_RE = re.compile(r"(?<=-gt )\d+(?= \])|(?<=\$s > )\d+(?=\")|(?<=-eq )\d+(?= \])|(?<=\{ echo )\d+(?= >)")


def untoken(display: str) -> str:
    """A command's display with its fencing token shown as a dry run shows it."""
    return TOKEN_RE.sub(FN.DRY_RUN_SHOWN, display)


def unguarded(display: str) -> str:
    """A command's display without the token check it starts with."""
    head, sep, tail = display.partition(") || exit $?; ")
    return tail if sep and head.startswith(GUARD_HEAD) else display


def split_steps(script: str) -> list[str]:
    """The steps of a batch() script (or the whole script when it is not one)."""
    parts = re.split(rf"(?:^|\n)echo {STEP_MARK} \d+; echo {STEP_MARK} \d+ >&2; \( ", script)
    return parts[1:] if len(parts) > 1 else [script]


class Fleet:
    """What the hosts hold: which release each serves, which exist, the ledger's lines."""

    def __init__(self, hosts: list[str], current: str | None, schema: int = 1):
        self.current = {h: current for h in hosts}
        self.releases = {h: [current] if current else [] for h in hosts}
        self.schema = schema
        # what the playbook's `migrate.pending` probe reads in the new code: one online-safe
        # migration (a deploy migrates, without maintenance mode); "[]": nothing to migrate
        self.pending = '[{"name": "0002_items", "online_safe": true}]'
        self.ledger = ""
        self.lock = False
        self.holder: dict | None = None  # the lock's info.json, when a test says who holds it
        self.counter = 0  # the last fencing token the lock handed out
        self.seen: dict[str, int] = {}  # host -> the largest fencing token it has seen
        self.refused: list[tuple[str, int, int]] = []  # (host, seen, token) of each script refused
        # each host's clock, as `date +%s` prints it in the state read: seconds off this
        # machine's (an int), per host (a dict; hosts not in it are on time), or None: on time
        self.clock_offset: int | dict[str, int] | None = None
        self.fence_left = False  # the write fence is in the database (db1)
        self.unpacked: dict[str, str] = {}  # host -> the sha256 its artifact fetch prints (default: the build's)

    def next_token(self) -> int:
        self.counter += 1
        return self.counter

    def check_token(self, host: str, token: int | None) -> str | None:
        """A host's token check (`fence.guard`): the refusal's message, else None (recorded)."""
        if token is None:
            return None
        seen = self.seen.get(host, 0)
        if seen > token:
            self.refused.append((host, seen, token))
            return f"fenced: host has seen token {seen} > {token}"
        self.seen[host] = max(seen, token)
        return None

    def now(self, host: str) -> int:
        """What `date +%s` prints on `host`."""
        off = self.clock_offset
        return int(time.time()) + (off.get(host, 0) if isinstance(off, dict) else off or 0)


class RecordingTransport:
    parallel = 10

    def __init__(self, fleet: Fleet, *, fail=None, down: set[str] | None = None):
        self.fleet = fleet
        # -> (exit status, stderr) or (exit status, stderr, stdout) or None
        self.fail = fail or (lambda host, step: None)
        self.down = down if down is not None else set()
        self.calls: list[tuple[str, str]] = []
        self.opened: dict[str, int] = {}
        self.refused_heartbeats = 0  # heartbeats that named another run than the lock's
        self._lock = threading.Lock()

    def close(self) -> None:
        pass

    def cancel(self) -> list[str]:
        return []

    def run(self, ep, cmd, *, timeout=None, stdin=None, check=True):
        if ep.name in self.down:
            raise ConnectError(f"{ep.name} ({ep.address}): connection lost: test cut it off")
        with self._lock:
            self.calls.append((ep.name, cmd.display))
            token, script = split_guard(cmd.script)
            refused = self.fleet.check_token(ep.name, token)
        if refused:
            if check:
                raise CommandFailed(ep.name, cmd.display, FN.FENCED_EXIT, "", refused + "\n")
            return Result(ep.name, cmd.display, "", refused + "\n", FN.FENCED_EXIT, 0.0)
        out, err, code = [], [], 0
        steps = split_steps(script)
        batched = len(steps) > 1 or f"echo {STEP_MARK} " in script
        for i, step in enumerate(steps):
            if batched:
                out.append(f"{STEP_MARK} {i}")
                err.append(f"{STEP_MARK} {i}")
            failed = self.fail(ep.name, step) or self.heartbeat_refused(step)
            if failed:
                code, text, *printed = failed
                err.append(text)
                out += printed
                break
            out.append(self.answer(ep.name, step, stdin))
        result = Result(ep.name, cmd.display, "\n".join(out) + "\n", "\n".join(err) + "\n", code, 0.0)
        if check and code:
            raise CommandFailed(ep.name, cmd.display, code, result.stdout, result.stderr)
        return result

    def heartbeat_refused(self, step: str):
        """`lock.heartbeat` fails, as on a host, unless the lock's details name its run."""
        if step.startswith("grep -qF") and re.search(r"/lock/heartbeat'?$", step.strip()) and self.fleet.holder \
                and self.fleet.holder.get("run", "") not in step:
            self.refused_heartbeats += 1
            return 1, ""
        return None

    def answer(self, host: str, step: str, stdin) -> str:
        f = self.fleet
        if "@@deployer-state" in step:
            cur = f.current.get(host)
            lines = ["@@deployer-state", f"current=/srv/app/releases/{cur}" if cur else "current=",
                     f"hostname={host}", "disk_kb=99999999", "maintenance=off", f"now={f.now(host)}"]
            lines += [f"release={r}" for r in f.releases.get(host, [])]
            return "\n".join(lines)
        if "to_regclass" in step and "deployer_fence" in step:  # `fence_left`: is the fence there?
            return "fence" if f.fence_left else ""
        if "DROP TABLE IF EXISTS public.deployer_fence" in step and "pg_dump" not in step:  # unfence
            f.fence_left = False
        if "git ls-remote" in step:
            return f"{SHA}\trefs/tags/v2"
        if LK.LEDGER_MARK in step:  # the lock taken and the ledger read in one script
            f.lock = True
            f.holder = json.loads(stdin) if stdin else f.holder
            return f"acquired\ntoken={f.next_token()}\n{LK.LEDGER_MARK}\n{f.ledger}"
        if LK.RELEASED_MARK in step:  # the last lines appended and the lock released
            with self._lock:
                f.ledger += stdin or ""
            f.lock = False
            return LK.RELEASED_MARK
        if "ledger.jsonl" in step and "flock" in step:
            with self._lock:
                f.ledger += stdin or ""
            return ""
        if "ledger.jsonl" in step:
            return f.ledger
        if step.startswith("if [ -d") and LK.HELD_MARK in step:  # `lock.read`: who holds it
            if not (f.lock and f.holder):
                return ""
            return f"{LK.HELD_MARK}\n{json.dumps(f.holder)}\nheartbeat_age=3600"
        if re.fullmatch(r"rm -rf '?\S+/lock'?", step.strip()):  # `lock.force_release`
            f.lock, f.holder = False, None
            return ""
        if step.startswith("if grep -qF") and "/lock/info.json" in step and "rm -rf" in step:
            if f.holder is None or f.holder.get("run", "") in step:  # only by the run holding it
                f.lock, f.holder = False, None
            return ""
        if "echo acquired" in step:
            f.lock = True
            f.holder = json.loads(stdin) if stdin else f.holder
            return f"acquired\ntoken={f.next_token()}"
        if "paused.taken" in step:  # `lock.adopt`: the paused run's lock taken over, a new token
            f.holder = json.loads(stdin) if stdin else f.holder
            return f"token={f.next_token()}"
        if "# deployer: artifact pack" in step:
            return f"{ARTIFACT_SHA} 4096"
        if ": deployer artifact fetch;" in step:
            return f"{f.unpacked.get(host, ARTIFACT_SHA)} 4096 12"
        if "pg_dump" in step:
            return "a" * 64 + " 1234"
        if "schema-version" in step or "max(\"batch\")" in step:
            return str(f.schema)
        if "pending" in step:
            return f.pending
        if "mv -T" in step and ".current." in step:  # the switch: remember what the host serves
            rel = step.split(".current.", 1)[1].split(".tmp", 1)[0]
            f.current[host] = rel
            f.releases.setdefault(host, [])
            if rel not in f.releases[host]:
                f.releases[host].append(rel)
        return ""

    def each(self, items, fn, *, key=lambda item: item.name, limit=None) -> GroupResult:
        items = list(items)
        group = GroupResult()
        with ThreadPoolExecutor(max_workers=max(1, min(self.parallel, limit or self.parallel, len(items) or 1))) as pool:
            futures = {key(i): pool.submit(fn, i) for i in items}
            for name, fut in futures.items():
                try:
                    group.results[name] = fut.result()
                except Exception as exc:  # noqa: BLE001
                    group.failures[name] = exc
        return group


class FakeHttp:
    """The health gate's HTTP checks: every host passes, except those in `failing` while they
    serve another release than `good`."""

    def __init__(self, failing: set[str] | None = None, good: str | None = None):
        self.failing = failing or set()
        self.good = good
        self.calls: list[tuple[str, str]] = []

    def __call__(self, host, url, **kw) -> Verdict:
        self.calls.append((host, url))
        release = (kw.get("expect_json") or {}).get("release")
        ok = host not in self.failing or (self.good is not None and release == self.good)
        return Verdict(host, ok, [Sample(ok, 200 if ok else 500, 1.0, "ok" if ok else f"GET {url}: HTTP 500")])


def fake_bake(targets, seconds, interval, timeout, headers=None, opener=None):
    """Bake probes that all pass (25 per host, 5 ms), sent nowhere."""
    from deployer.bake import Probe

    return [Probe(host=h, role=role, t=i * 0.01, ms=5.0, ok=True)
            for h, role, _url in targets for i in range(25)]
