"""Fencing tokens: numbers that only grow, handed out with the env's lock and checked by every
host before a run changes it.

- The lock's host keeps a counter (`<state>/lock-token`); each acquisition (and each take-over
  of a paused rollout) increments it under `flock` and hands the new value to the run.
- Every host keeps the largest token it has seen (`<deploy_to>/.deployer/fence`). Each host
  script of a plan starts with `guard(...)`, in the same script (no extra round trip): under
  `flock`, a host that has seen a larger token refuses (exit FENCED_EXIT, "fenced: host has
  seen token N > M"), else it records max(seen, mine) and the script goes on.

A run frozen past its lock's staleness while another run broke the lock and deployed wakes up
with the smaller token: the first host it touches that the newer run has touched refuses it.
The check is made when a script starts: a script already past it finishes (as with any fence
kept by the host itself, not by what the script changes).
"""

from __future__ import annotations

import posixpath
import re

from ..shell import Command, q, raw

COUNTER = "lock-token"  # on the lock's host: the last token handed out
SEEN = "fence"  # on every host: the largest token it has seen
#: exit status of a host script refused by its token check
FENCED_EXIT = 86
#: the token of a plan built without the lock (`--dry-run`): shown as DRY_RUN_SHOWN; the
#: executor never runs such a plan (its token is not the lock's)
DRY_RUN = 0
DRY_RUN_SHOWN = "<token>"
TOKEN_PREFIX = "token="

_REFUSED_RE = re.compile(r"fenced: host has seen token (\d+) > (\d+)")


def next_token(state_path: str) -> str:
    """Shell text printing the next token (the counter incremented under flock); it fails, and
    prints nothing, when the counter cannot be read or written. Meant for `t=$(...)`."""
    c = posixpath.join(state_path, COUNTER)
    return (f"exec 9>>{q(c + '.lock')} && flock -w 30 9 || exit 1; n=$(cat {q(c)} 2>/dev/null); "
            f"case ${{n:-0}} in *[!0-9]*) echo \"lock: token counter {c} holds '$n'\" >&2; exit 1;; esac; "
            f"n=$(( ${{n:-0}} + 1 )); echo $n > {q(c + '.new')} && mv -f {q(c + '.new')} {q(c)} && echo $n")


def parse_token(output: str) -> int | None:
    """The token of an acquire or take-over answer (a `token=N` line), None without one."""
    for word in output.split():
        if word.startswith(TOKEN_PREFIX) and word[len(TOKEN_PREFIX):].isdigit():
            return int(word[len(TOKEN_PREFIX):])
    return None


def guard(state_dir: str, token: int) -> Command:
    """The token check a host script starts with (`state_dir`: the host's `.deployer`)."""
    f = posixpath.join(state_dir, SEEN)
    shown = DRY_RUN_SHOWN if token == DRY_RUN else str(token)

    def text(t: str) -> str:
        return (f"(f={q(f)}; mkdir -p {q(state_dir)} && exec 9>>\"$f.lock\" && flock -w 30 9 || exit 1; "
                f"s=$(cat \"$f\" 2>/dev/null); case ${{s:-0}} in *[!0-9]*) echo \"fence: $f holds '$s'\" >&2; "
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


def reset_hint(where: str, state_dir: str) -> str:
    """What to check when hosts refuse every run: the lock's tokens (kept at `where`) started
    again (its state lost, or the env moved to another state backend)."""
    return (f"if no other run is at work, the lock's tokens on {where} started again (its state lost, or "
            f"another state backend): remove {posixpath.join(state_dir, SEEN)} on the hosts that refuse")


def seen(state_dir: str) -> Command:
    """The largest token a host has seen (empty output: none)."""
    return raw(f"cat {q(posixpath.join(state_dir, SEEN))} 2>/dev/null; true")
