"""What the user sees: a quiet human view, or one JSON event per line (`--output json`)."""

from __future__ import annotations

import json
import sys
import threading
import time

from .ledger import now_iso

EVENT_SCHEMA = 1


class Reporter:
    """Receives events from the engine. `kind` is e.g. run, stage, host, gate, rollback, outcome."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()
        self.t0 = time.monotonic()

    def event(self, kind: str, **fields) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _write(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        """The command is over: stop anything live (idempotent)."""


class TextReporter(Reporter):
    """A quiet, line-per-transition view for humans (colours on a terminal, via rich): stages
    as they start, waves and their hosts, gate verdicts, the failing host's stderr tail."""

    def __init__(self, stream=None, verbose: bool = False):
        super().__init__(stream)
        self.verbose = verbose
        from rich.console import Console

        self.console = Console(file=self.stream, highlight=False, soft_wrap=True)

    def _say(self, markup: str) -> None:
        with self._lock:
            self.console.print(markup)

    def event(self, kind: str, **f) -> None:
        from rich.markup import escape

        t = f"[dim]{time.monotonic() - self.t0:6.1f}s[/dim]"
        e = {k: escape(str(v)) for k, v in f.items()}
        if kind == "stage" and f.get("state") == "start":
            self._say(f"{t}  [bold]{e['stage']:<14}[/bold] {e.get('detail', '')}".rstrip())
        elif kind == "stage" and f.get("state") == "failed":
            self._say(f"{t}  [bold red]{e['stage']:<14} FAILED[/bold red]: {e.get('error', '')}")
        elif kind == "host" and (self.verbose or f.get("state") == "failed"):
            self._say(f"{t}    {e['host']:<10} {e.get('state')}: {e.get('detail', '')}")
        elif kind == "plan":
            self._say(f"[cyan]{e['stage']:<14}[/cyan] {e['host']:<10} {e['command']}")
        elif kind == "outcome":
            colour = "green" if f.get("outcome") == "success" else "yellow"
            self._say(f"{t}  [bold {colour}]{e.get('message', '')}[/bold {colour}]")
        elif kind == "rollback":
            self._say(f"{t}  [bold yellow]{e.get('message', '')}[/bold yellow]")
        elif kind in ("run", "notice"):
            self._say(f"{t}  {e.get('message', '')}")
        elif kind == "gate" and (self.verbose or not f.get("passed", True)):
            verdict = "[green]passed[/green]" if f.get("passed") else "[red]FAILED[/red]"
            self._say(f"{t}    {e['host']:<10} gate {verdict}: {e.get('detail', '')}")


class JsonReporter(Reporter):
    def event(self, kind: str, **fields) -> None:
        self._write(json.dumps({"schema": EVENT_SCHEMA, "event": kind, "at": now_iso(), **fields},
                               default=str, sort_keys=True))


class Recorder(Reporter):
    """Forwards every event to the user's reporter, keeps them (for the CI step summary), and
    sends notifications on start, success, failure, rollback and pause. A failing notifier is
    reported as a notice; it never changes the outcome."""

    def __init__(self, inner: Reporter):
        super().__init__(inner.stream)
        self.inner = inner
        self.events: list[dict] = []
        self.notifiers: list = []
        self.context: dict = {"env": "", "ref": "", "release": ""}
        self._rolled_back_notified = False

    def event(self, kind: str, **fields) -> None:
        self.inner.event(kind, **fields)
        self.events.append({"schema": EVENT_SCHEMA, "event": kind, "at": now_iso(), **fields})
        if kind == "run":
            self._notify("start", fields.get("message", ""))
        elif kind == "rollback" and not self._rolled_back_notified:
            self._rolled_back_notified = True
            self._notify("rollback", fields.get("message", ""))
        elif kind == "outcome":
            self.context["release"] = fields.get("release", "")
            event = {"success": "success", "paused": "pause"}.get(fields.get("outcome"))
            if event:
                self._notify(event, fields.get("message", ""))

    def close(self) -> None:
        self.inner.close()

    def failed(self, exit_code: int, message: str) -> None:
        if exit_code in (1, 4, 130):
            self._notify("failure", f"exit {exit_code}: {message}")

    def _notify(self, event: str, text: str) -> None:
        if not self.notifiers:
            return
        from .notify import Message, notify_all

        msg = Message(event=event, env=self.context["env"], release=self.context.get("release", ""),
                      ref=self.context.get("ref", ""), text=text)
        for name, error in notify_all(self.notifiers, msg, timeout=15):
            self.inner.event("notice", message=f"notification via {name} failed: {error}")


def reporter_for(output: str, verbose: bool = False) -> Recorder:
    return Recorder(JsonReporter() if output == "json" else TextReporter(verbose=verbose))
