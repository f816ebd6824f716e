"""One atomic lock per env: a directory created with mkdir(2) on the ledger host."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

from ..shell import Command, argv, q, raw
from . import fence as FN

HELD_MARK = "@@lock-held"
#: `acquire`'s exit status when the state directory cannot be written (full, read-only): it
#: leaves nothing behind, and the run is refused
UNWRITABLE = 73


def lock_dir(state_path: str) -> str:
    return posixpath.join(state_path, "lock")


def acquire(state_path: str, run_id: str) -> Command:
    """Atomic: the lock directory appears whole (holder's details from stdin, heartbeat) by a
    rename(2) of a private directory, so no reader ever sees a lock without its holder; exactly
    one caller wins. The details must have arrived whole (this run's id, and the final "}" and
    newline): when the connection dies while they are sent, `cat` sees an early end of input
    and the shell, which lives on, must not install a lock that nobody can heartbeat or release.
    The winner gets the next fencing token (`fence.next_token`, kept in the lock as `token`) on
    a `token=N` line after `acquired`; without one, the lock is removed again and the script fails
    (with UNWRITABLE when the token could not be written)."""
    d = lock_dir(state_path)
    tmp = f"{q(d + '.new.')}$$"
    info = tmp + "/info.json"
    return raw(
        f"unwritable() {{ rm -rf {tmp}; echo {q('lock: cannot write ' + state_path)} >&2; exit {UNWRITABLE}; }}; "
        f"mkdir -p {q(state_path)} || unwritable; mkdir {tmp} || unwritable; cat > {info} || unwritable; "
        f"{{ grep -qF {q(run_id)} {info} && [ \"$(tail -c 2 {info})\" = '}}' ] "
        f"|| {{ rm -rf {tmp}; echo 'lock: holder details cut short' >&2; exit 1; }}; }} && "
        f"{{ touch {tmp}/heartbeat || unwritable; }} && "
        f"if mv -T {tmp} {q(d)} 2>/dev/null; then {_token_into(state_path, 'rm -rf ' + q(d), UNWRITABLE)} "
        f"echo acquired; echo {FN.TOKEN_PREFIX}$t; else rm -rf {tmp}; "
        f"echo {HELD_MARK}; cat {q(d + '/info.json')} 2>/dev/null; echo; "
        f"echo heartbeat_age=$(( $(date +%s) - $(stat -c %Y {q(d + '/heartbeat')} 2>/dev/null || date +%s) )); "
        f"if [ -e {q(d + '/paused')} ]; then echo paused=1; fi; fi"
    )


def _token_into(state_path: str, undo: str, unwritable: int = 1) -> str:
    """Shell text: the next fencing token into `$t` and the lock's `token` file; when that
    fails, `undo` runs and the script exits: with `unwritable` when the counter or the token
    file could not be written (a full state filesystem), else with 1."""
    tok = q(lock_dir(state_path) + "/token")
    return (f"rc=0; t=$({FN.next_token(state_path, unwritable)}) || rc=$?; "
            f"if [ $rc -eq 0 ] && [ -n \"$t\" ]; then echo $t > {tok} || rc={unwritable}; "
            f"elif [ $rc -ne {unwritable} ]; then rc=1; fi; "
            f"if [ $rc -ne 0 ]; then {undo}; echo 'lock: no fencing token' >&2; exit $rc; fi;")


def unwritable(host: str, state_path: str, stderr: str) -> str:
    """Why `acquire` could not write the lock (it exited UNWRITABLE, having removed what it had
    begun): "db1: no space left on /srv/app/.deployer: the lock cannot be taken"."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("lock: ")]
    if any("No space left on device" in ln for ln in lines):
        return f"{host}: no space left on {state_path}: the lock cannot be taken"
    why = lines[-1].rsplit(": ", 1)[-1] if lines else "write failed"
    return f"{host}: cannot write {state_path} ({why}): the lock cannot be taken"


def heartbeat(state_path: str, run_id: str) -> Command:
    d = lock_dir(state_path)
    return raw(f"grep -qF {q(run_id)} {q(d + '/info.json')} && touch {q(d + '/heartbeat')}")


def release(state_path: str, run_id: str) -> Command:
    """Remove the lock only if this run holds it."""
    d = lock_dir(state_path)
    return raw(f"if grep -qF {q(run_id)} {q(d + '/info.json')} 2>/dev/null; then rm -rf {q(d)}; fi")


RELEASED_MARK = "@@lock-released"


def append_then_release(append: Command, state_path: str, run_id: str) -> Command:
    """A run's last ledger append, then its lock released, in one round trip: the ledger has the
    run whole before anyone can take the lock. The release runs whatever the append did (as two
    calls would); it says RELEASED_MARK when done; the exit status is the append's."""
    rel = release(state_path, run_id)
    return raw(f"{{ {append.script}\n}}; rc=$?; {{ {rel.script}\n}} && echo {RELEASED_MARK}; exit $rc")


LEDGER_MARK = "@@ledger-follows"


def acquire_then_read(state_path: str, run_id: str, read_ledger: Command) -> Command:
    """`acquire`, then (when its script ran through: taken or held) the ledger after
    LEDGER_MARK, in one round trip: a run that gets the lock reads the history under it."""
    acq = acquire(state_path, run_id)
    return raw(f"{{ {acq.script}\n}} || exit $?; echo {LEDGER_MARK}; {read_ledger.script}")


def split_ledger(output: str) -> tuple[str, str | None]:
    """(the lock's answer, the ledger's text or None) from `acquire_then_read`'s output."""
    head, mark, tail = output.partition("\n" + LEDGER_MARK + "\n")
    if not mark and output.startswith(LEDGER_MARK + "\n"):
        return "", output[len(LEDGER_MARK) + 1:]
    return head, (tail if mark else None)


def read(state_path: str) -> Command:
    d = lock_dir(state_path)
    return raw(
        f"if [ -d {q(d)} ]; then echo {HELD_MARK}; cat {q(d + '/info.json')} 2>/dev/null; echo; "
        f"echo heartbeat_age=$(( $(date +%s) - $(stat -c %Y {q(d + '/heartbeat')} 2>/dev/null || date +%s) )); "
        f"if [ -e {q(d + '/paused')} ]; then echo paused=1; fi; fi"
    )


def force_release(state_path: str) -> Command:
    return argv("rm", "-rf", lock_dir(state_path))


@dataclass
class LockInfo:
    holder: str = "?"
    host: str = "?"
    pid: int | None = None
    reason: str = ""
    started: str = ""
    run: str = ""
    heartbeat_age: int | None = None
    paused: bool = False

    def describe(self) -> str:
        age = f", last heartbeat {self.heartbeat_age}s ago" if self.heartbeat_age is not None else ""
        if self.paused:
            age = ", PAUSED rollout (promote or abort it)"
        return (f"{self.holder}@{self.host} pid {self.pid} since {self.started} "
                f"({self.reason or 'no reason given'}; run {self.run}{age})")


def parse_held(output: str) -> LockInfo | None:
    """None when the lock was acquired / is free, else who holds it."""
    if HELD_MARK not in output:
        return None
    body = output.split(HELD_MARK, 1)[1]
    info = LockInfo()
    for line in body.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            info = LockInfo(**{k: data.get(k) for k in ("holder", "host", "pid", "reason", "started", "run")
                               if data.get(k) is not None})
        elif line == "paused=1":
            info.paused = True
        elif line.startswith("heartbeat_age="):
            value = line.split("=", 1)[1]
            info.heartbeat_age = int(value) if value.lstrip("-").isdigit() else None
    return info


def mark_paused(state_path: str, run_id: str) -> Command:
    """A paused rollout keeps the lock; the mark tells it is not stale."""
    d = lock_dir(state_path)
    return raw(f"grep -qF {q(run_id)} {q(d + '/info.json')} && touch {q(d + '/paused')}")


def adopt(state_path: str, run_id: str) -> Command:
    """Take over the lock of a paused run (promote/abort from another machine); details on stdin.
    The `paused` mark is claimed by a rename: of two takers at once, exactly one wins. The taker
    gets a new fencing token (a `token=N` line): the paused run's is stale from now on."""
    d = lock_dir(state_path)
    claimed = d + "/paused.taken.$$"
    return raw(f"grep -qF {q(run_id)} {q(d + '/info.json')} && mv {q(d + '/paused')} {claimed} 2>/dev/null && "
               f"cat > {q(d + '/info.json.new')} && mv -f {q(d + '/info.json.new')} {q(d + '/info.json')} "
               f"&& rm -f {claimed} && touch {q(d + '/heartbeat')} && "
               f"{{ {_token_into(state_path, 'true')} echo {FN.TOKEN_PREFIX}$t; }}")
