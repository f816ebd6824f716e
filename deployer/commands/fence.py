"""Fencing tokens: numbers that only grow, handed out with the env's lock and checked by every
host before a run changes it.

- The lock's host keeps a counter (`<state>/lock-token`); each acquisition (and each take-over
  of a paused rollout) increments it under `flock` and hands the new value to the run.
- Every host keeps the largest token it has seen in its fence record,
  `$HOME/.deployer/fence-<env>-<key>` of the SSH user (`record`): under the home directory,
  which that user can always write, since a host without the app (the load balancer, the
  database) may have no `deploy_to`, nor the right to make one. Each host script of a plan
  starts with `guard(...)`, in the same script (no extra round trip): under `flock`, a host
  that has seen a larger token refuses (exit FENCED_EXIT, "fenced: host has seen token N > M"),
  else it records max(seen, mine) and the script goes on. A host without `flock` fails the
  check, saying so.

A run frozen past its lock's staleness while another run broke the lock and deployed wakes up
with the smaller token: the first host it touches that the newer run has touched refuses it.
The check is made when a script starts: a script already past it finishes (as with any fence
kept by the host itself, not by what the script changes).
"""

from __future__ import annotations

import hashlib
import posixpath
import re

from ..shell import Command, q, raw

COUNTER = "lock-token"  # on the lock's host: the last token handed out
SEEN = "fence"  # on every host: the largest token it has seen (`record`)
#: where a host keeps its fence records: shell text, expanded by the host's shell
RECORD_DIR = '"${HOME:?fence: HOME is not set}/.deployer"'
RECORD_DIR_SHOWN = "$HOME/.deployer"
#: exit status of a host script refused by its token check
FENCED_EXIT = 86
#: the token of a plan built without the lock (`--dry-run`): shown as DRY_RUN_SHOWN; the
#: executor never runs such a plan (its token is not the lock's)
DRY_RUN = 0
DRY_RUN_SHOWN = "<token>"
TOKEN_PREFIX = "token="

_REFUSED_RE = re.compile(r"fenced: host has seen token (\d+) > (\d+)")
_RECORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


def next_token(state_path: str, unwritable: int = 1) -> str:
    """Shell text printing the next token (the counter incremented under flock); it fails, and
    prints nothing, when the counter cannot be read or written (exit status `unwritable` when
    the new value could not be written). Meant for `t=$(...)`."""
    c = posixpath.join(state_path, COUNTER)
    return (f"exec 9>>{q(c + '.lock')} && flock -w 30 9 || exit 1; n=$(cat {q(c)} 2>/dev/null); "
            f"case ${{n:-0}} in *[!0-9]*) echo \"lock: token counter {c} holds '$n'\" >&2; exit 1;; esac; "
            f"n=$(( ${{n:-0}} + 1 )); {{ echo $n > {q(c + '.new')} && mv -f {q(c + '.new')} {q(c)}; }} || exit {unwritable}; "
            f"echo $n")


def parse_token(output: str) -> int | None:
    """The token of an acquire or take-over answer (a `token=N` line), None without one."""
    for word in output.split():
        if word.startswith(TOKEN_PREFIX) and word[len(TOKEN_PREFIX):].isdigit():
            return int(word[len(TOKEN_PREFIX):])
    return None


def record(env: str, deploy_to: str, lock: str = "") -> str:
    """The file name of a host's fence record for `env` (under RECORD_DIR): one per env, deploy
    tree and lock, as each lock hands out its own tokens (an env moved to another state backend,
    or to another ledger host, starts again at 1 with a record of its own instead of being
    refused by the old one's larger tokens), and two projects sharing a host (a load balancer, a
    database) may have an env of the same name: `<key>` is the first 8 hex digits of the SHA-256
    of `deploy_to` and `lock` (where the lock lives, `Config.lock_place`)."""
    key = deploy_to + (f"\n{lock}" if lock else "")
    name = f"{SEEN}-{env}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    if not _RECORD_RE.match(name):
        raise ValueError(f"fence record name {name!r} is not a plain file name")
    return name


def record_path(name: str) -> str:
    """Where the host keeps fence record `name`, as told to a user."""
    return posixpath.join(RECORD_DIR_SHOWN, name)


def guard(name: str, token: int) -> Command:
    """The token check a host script starts with (`name`: the host's fence record, `record`).
    POSIX sh; the record and its `.lock` are made by the SSH user under its home directory."""
    shown = DRY_RUN_SHOWN if token == DRY_RUN else str(token)

    def text(t: str) -> str:
        return (f"(command -v flock >/dev/null 2>&1 || {{ echo \"fence: flock is not installed on this host "
                f"(the fencing token check needs it)\" >&2; exit 1; }}; d={RECORD_DIR}; f=\"$d\"/{q(name)}; "
                f"{{ [ -d \"$d\" ] || mkdir -p \"$d\"; }} && exec 9>>\"$f.lock\" && flock -w 30 9 || {{ echo \"fence: cannot lock $f.lock\" >&2; "
                f"exit 1; }}; s=; [ ! -e \"$f\" ] || {{ read -r s < \"$f\"; }} 2>/dev/null; case ${{s:-0}} in *[!0-9]*) echo \"fence: $f holds '$s'\" >&2; "
                f"exit 1;; esac; if [ ${{s:-0}} -gt {t} ]; then echo \"fenced: host has seen token $s > {t}\" >&2; "
                f"exit {FENCED_EXIT}; fi; [ ${{s:-0}} -eq {t} ] || {{ echo {t} > \"$f.new\" && mv -f \"$f.new\" \"$f\"; }})")

    return Command(text(str(int(token))), text(shown))


def fenced(cmd: Command, check: Command) -> Command:
    """`cmd` run only when the token check `check` lets it: one script, one round trip."""
    return Command(f"{check.script} || exit $?\n{cmd.script}", f"{check.display} || exit $?; {cmd.display}",
                   cmd.timeout)


def refusal(exit_status: int | None, stderr: str) -> tuple[int, int] | None:
    """(token the host has seen, the run's token) when a host refused a script by its token."""
    if exit_status != FENCED_EXIT:
        return None
    m = _REFUSED_RE.search(stderr)
    return (int(m.group(1)), int(m.group(2))) if m else None


def reset_hint(where: str, name: str) -> str:
    """What to check when hosts refuse every run: the lock's tokens (kept at `where`) started
    again (its state lost, or the env moved to another state backend); `name`: the hosts'
    fence record."""
    return (f"if no other run is at work, the lock's tokens on {where} started again (its state lost, or "
            f"another state backend): remove {record_path(name)} of the SSH user on the hosts that refuse")


def seen(name: str) -> Command:
    """The largest token a host has seen in fence record `name` (empty output: none)."""
    return raw(f"cat {RECORD_DIR}/{q(name)} 2>/dev/null; true")
