"""The ledger: an append-only JSON-lines file on the ledger host, appended under flock."""

from __future__ import annotations

import json
import posixpath

from ..shell import Command, q, raw


def ledger_file(state_path: str) -> str:
    return posixpath.join(state_path, "ledger.jsonl")


def append(state_path: str) -> Command:
    """Append the JSON lines given on stdin, atomically with respect to other writers."""
    f = ledger_file(state_path)
    # A torn last line (a writer killed mid-write) is closed first, so it cannot swallow ours.
    inner = f'if [ -s {q(f)} ] && [ -n "$(tail -c 1 {q(f)})" ]; then echo >> {q(f)}; fi; cat >> {q(f)}'
    return raw(f"mkdir -p {q(state_path)} && flock {q(f + '.lock')} sh -c {q(inner)}")


def read(state_path: str) -> Command:
    return raw(f"cat {q(ledger_file(state_path))} 2>/dev/null; true")


def encode(events: list[dict]) -> str:
    return "".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n" for e in events)


def decode(text: str) -> list[dict]:
    events = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # a torn last line after a crash: ignored, never fatal
    return events
