"""What the user sees: a quiet human view, or one JSON event per line (`--output json`).

On a terminal (and without NO_COLOR or TERM=dumb) the human view is live: a table of hosts x
stages with each host's wave, redrawn as events arrive, and the failing host's stdout and stderr
tails under it (`LiveReporter`). Otherwise (a pipe, a CI log, NO_COLOR) it prints one plain line per
transition (`TextReporter`). NO_COLOR is honoured by every rich console deployer opens."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time

from .errors import TAIL_LINES
from .ledger import now_iso
from .stages import LIVE_STAGES

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
            # a failed step: its headline (the stage's failure below shows both streams' tails)
            self._say(f"{t}    {e['host']:<10} {e.get('state')}: {e.get('error') or e.get('detail', '')}")
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


#: stages shown as columns of the live table are LIVE_STAGES, in pipeline order (others are added
#: as they come)
#: column headers (short: the table fits 80 columns with its glyphs)
LIVE_LABELS = {"maintenance": "maint", "cache_warm": "warm", "worker_restart": "workers",
               "finalize": "final"}
#: lines of a failed stage's error under the live table: the headline and both streams' tails
FAILURE_LINES = 2 * TAIL_LINES + 3
_WAVE_RE = re.compile(r"wave (\d+)/(\d+)(?::\s*(.*))?")
_GLYPH = {"run": "[yellow]…[/yellow]", "ok": "[green]✓[/green]", "fail": "[bold red]✗[/bold red]"}


def live_capable(stream) -> bool:
    """Whether a live view can be drawn on `stream`: a terminal, not TERM=dumb, no NO_COLOR."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM", "") != "dumb"


class LiveView:
    """The state behind the live table, folded from events (pure: no I/O, tested alone).

    Rows are hosts in the order they are first seen, columns the stages that ran something
    (in pipeline order), a cell the host's state in that stage: running, done or failed. The
    `wave` column comes from the wave stages' detail (``wave 2/3: web2, web3``). Once a
    rollback starts, what runs on a host goes to a last `rollback` column."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.stages: list[str] = []
        self.cells: dict[tuple[str, str], str] = {}
        self.last: dict[str, str] = {}  # host -> the column of its last command
        self.waves: dict[str, int] = {}
        self.wave_total = 0
        self.stage = ""
        self.detail = ""
        self.rolling_back = False
        self.failure: tuple[str, str] | None = None  # (stage, error text)
        self.verdicts: list[str] = []

    def _host(self, host: str) -> None:
        if host not in self.hosts:
            self.hosts.append(host)

    def _column(self, stage: str) -> str:
        if self.rolling_back:
            base = "rollback"
        else:
            base = stage.split()[0] if stage else "?"
            base = base.split(":")[-1]  # hooks: before:switch -> switch
        if base not in self.stages:
            self.stages.append(base)
            order = {s: i for i, s in enumerate((*LIVE_STAGES, "rollback"))}
            self.stages.sort(key=lambda s: order.get(s, len(LIVE_STAGES)))
        return base

    def _set(self, host: str, column: str, state: str) -> None:
        self._host(host)
        self.cells[(host, column)] = state

    def fold(self, kind: str, f: dict) -> bool:
        """Take one event; True when the table changed."""
        host = str(f.get("host", ""))
        if kind == "stage":
            stage, state = str(f.get("stage", "")), f.get("state")
            if state == "start":
                for key, cell in self.cells.items():
                    if cell == "run":  # the engine moved on: what ran is over
                        self.cells[key] = "ok"
                self.stage, self.detail = stage, str(f.get("detail", ""))
                m = _WAVE_RE.match(self.detail)
                if m and not self.rolling_back:
                    self.wave_total = int(m.group(2))
                    for h in (m.group(3) or "").split(","):
                        if h.strip():
                            self.waves.setdefault(h.strip(), int(m.group(1)))
            elif state == "failed":
                for key, cell in self.cells.items():
                    if cell == "run":
                        self.cells[key] = "fail"
                self.failure = (stage, str(f.get("error", "")))
            elif state == "done":
                for key, cell in self.cells.items():
                    if cell == "run":
                        self.cells[key] = "ok"
            return state in ("start", "failed", "done")
        if kind == "command" and host and f.get("stage") == "snapshot":
            return False  # the snapshot's probes change nothing: no column, no row
        if kind == "command" and host:
            col = self._column(str(f.get("stage", "")))
            if self.cells.get((host, col)) != "fail":
                self._set(host, col, "run")
            self.last[host] = col
            return True
        if kind == "host" and host and f.get("state") in ("done", "failed"):
            col = self.last.get(host)
            if col and self.cells.get((host, col)) == "run":
                self.cells[(host, col)] = "ok" if f.get("state") == "done" else "fail"
                return True
            return False
        if kind == "gate" and host:
            if host.startswith("wave "):
                self.verdicts.append(f"{host}: {'passed' if f.get('passed') else 'FAILED'}: "
                                     f"{f.get('detail', '')}")
                return True
            self._set(host, self._column("gate"), "ok" if f.get("passed") else "fail")
            return True
        if kind == "rollback" and not self.rolling_back:
            self.rolling_back = True
            return True
        if kind == "outcome":
            for key, cell in self.cells.items():
                if cell == "run":
                    self.cells[key] = "ok"
            return True
        return False

    def tail(self, lines: int = FAILURE_LINES) -> str:
        """The failing stage's error, its last lines (the remote stdout and stderr tails are in
        it, labelled)."""
        if not self.failure:
            return ""
        text = self.failure[1].strip().splitlines()
        return "\n".join(text[-lines:])


class LiveReporter(TextReporter):
    """A live table of hosts x stages (with each host's wave) for a terminal, redrawn as the
    engine's `stage`, `command`, `host` and `gate` events arrive; the failing host's stderr tail
    under it. Messages (run, notice, rollback, outcome) print above the table, as TextReporter
    prints them; a dry run's plan prints as lines (no table)."""

    def __init__(self, stream=None, verbose: bool = False):
        super().__init__(stream, verbose)
        self._view_lock = threading.RLock()  # the view's state (the printing lock is another one)
        self.view = LiveView()
        self.live = None
        self._closed = False

    def _render(self):
        from rich.console import Group
        from rich.markup import escape
        from rich.table import Table
        from rich.text import Text

        with self._view_lock:
            v = self.view
            table = Table(box=None, pad_edge=False, header_style="bold")
            table.add_column("host")
            table.add_column("wave", justify="right")
            for s in v.stages:
                table.add_column(LIVE_LABELS.get(s, s.replace("_", " ")), justify="center", no_wrap=True)
            for h in v.hosts:
                wave = f"{v.waves[h]}/{v.wave_total}" if h in v.waves else ""
                table.add_row(escape(h), wave, *(_GLYPH.get(v.cells.get((h, s), ""), "")
                                                  for s in v.stages))
            parts: list = [table] if v.hosts else []
            if v.stage:
                elapsed = time.monotonic() - self.t0
                parts.append(Text.from_markup(f"[dim]{elapsed:6.1f}s[/dim]  [bold]{escape(v.stage)}[/bold] "
                                              f"{escape(v.detail)}"))
            for verdict in v.verdicts[-3:]:
                parts.append(Text(f"        {verdict}"))
            tail = v.tail()
            if tail:
                parts.append(Text.from_markup(f"[bold red]{escape(v.failure[0])} failed:[/bold red]"))
                parts.append(Text(tail, style="red"))
            return Group(*parts)

    def event(self, kind: str, **f) -> None:
        with self._view_lock:
            changed = self.view.fold(kind, f)
        if kind in ("stage", "command", "host", "gate"):
            if kind == "stage" and f.get("state") == "start" and f.get("stage") == "preflight":
                super().event(kind, **f)  # before anything runs: a plain line, then the table
            if changed and not self._closed:
                self._start()
                self.live.refresh()
            return
        super().event(kind, **f)

    def _start(self) -> None:
        if self.live is None:
            from rich.live import Live

            self.live = Live(console=self.console, get_renderable=self._render, refresh_per_second=4,
                             transient=False, redirect_stdout=False, redirect_stderr=False)
            self.live.start()

    def close(self) -> None:
        if self.live is not None and not self._closed:
            self._closed = True
            self.live.stop()


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


def reporter_for(output: str, verbose: bool = False, stream=None) -> Recorder:
    """JSON lines with --output json; else the live view on a terminal, plain lines otherwise
    (and with --verbose, which prints every host step and gate verdict as a line)."""
    stream = stream or sys.stdout
    if output == "json":
        return Recorder(JsonReporter(stream))
    if live_capable(stream) and not verbose:
        return Recorder(LiveReporter(stream, verbose=verbose))
    return Recorder(TextReporter(stream, verbose=verbose))
