"""What a notification is, how it is redacted, and `notify_all` (parallel, bounded, never raises)."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..redact import MASK, Redactor
from ..shell import Secret

EVENTS = ("start", "success", "failure", "rollback", "pause")
EVENT_COLOURS = {"start": "#0969da", "success": "#2da44e", "failure": "#cf222e",
                 "rollback": "#bf8700", "pause": "#8250df"}
DEFAULT_TOTAL_TIMEOUT = 15.0


@dataclass
class Message:
    event: str  # start | success | failure | rollback | pause
    env: str
    release: str
    ref: str
    text: str
    fields: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"Message.event must be one of {', '.join(EVENTS)}, got {self.event!r}")

    @property
    def subject(self) -> str:
        return f"[deployer] {self.env}: {self.event} {self.release} ({self.ref})"

    def as_dict(self) -> dict:
        return {"event": self.event, "env": self.env, "release": self.release, "ref": self.ref,
                "text": self.text, "fields": dict(self.fields)}


@runtime_checkable
class Notifier(Protocol):
    def send(self, msg: Message) -> None: ...


def _reveal(value: str | Secret | None) -> str:
    if value is None:
        return ""
    return value.reveal() if isinstance(value, Secret) else str(value)


Secrets = Iterable[str | Secret] | Redactor


def _redactor(secrets: Secrets) -> Redactor:
    """A Redactor of its own: a copy of the one given, or one of the values given."""
    if isinstance(secrets, Redactor):
        return secrets.copy()
    return Redactor(secrets or ())


def redact(text: str, secrets: Secrets) -> str:
    """`text` with every secret value (of at least 4 characters) and every secret-looking value
    (deployer.redact's patterns) replaced by ***."""
    return _redactor(secrets).redact(text)


def mask_url(url: str) -> str:
    """scheme://host[:port]/*** : enough to tell webhooks apart, no path, query or userinfo."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        return MASK
    return f"{parts.scheme or '?'}://{host}/{MASK}"


def _redact_value(value: Any, r: Redactor) -> Any:
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, str):
        return r.redact(value)
    if isinstance(value, Mapping):
        return {r.redact(str(k)): _redact_value(v, r) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(v, r) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return r.redact(str(value))


def redact_message(msg: Message, secrets: Secrets) -> Message:
    r = _redactor(secrets)
    return dataclasses.replace(msg, env=r.redact(msg.env), release=r.redact(msg.release),
                               ref=r.redact(msg.ref), text=r.redact(msg.text),
                               fields=_redact_value(msg.fields, r))


# ------------------------------------------------------------------ notifiers


class NotifyError(Exception):
    """A notifier failed; the message never contains a secret."""


class NotifyConfigError(ValueError):
    """A notifier's configuration is wrong (also raised by the notifiers' constructors)."""


def notifier_name(n: object) -> str:
    return str(getattr(n, "name", None) or type(n).__name__)


def notify_all(notifiers: Iterable[Notifier], msg: Message, *, log=None,
               secrets: Secrets = (),
               timeout: float = DEFAULT_TOTAL_TIMEOUT) -> list[tuple[str, str]]:
    """Send `msg` through every notifier in parallel; never raises.

    `secrets`: the run's Redactor (copied, never changed) or secret values; the message and
    the errors are redacted with them, the notifiers' own secrets and the generic patterns.

    Returns the failures as (notifier name, error); each is also logged through `log` (a
    logging.Logger, or any callable taking one string). Notifiers still running after
    `timeout` seconds in total are reported as timed out (their daemon threads are abandoned).
    """
    notifiers = list(notifiers)
    redactor = _redactor(secrets)
    for n in notifiers:
        try:
            redactor.update(getattr(n, "secret_values", list)())
        except Exception as exc:  # noqa: BLE001 - a broken notifier must not stop the others
            _log(log, f"notification via {notifier_name(n)}: secret_values() failed: "
                      f"{type(exc).__name__}")
    try:
        safe = redact_message(msg, redactor)
    except Exception as exc:  # noqa: BLE001 - e.g. unprintable fields: say so, send the text only
        safe = dataclasses.replace(msg, env=redactor.redact(str(msg.env)),
                                   release=redactor.redact(str(msg.release)),
                                   ref=redactor.redact(str(msg.ref)),
                                   text=redactor.redact(str(msg.text)),
                                   fields={"fields": f"unprintable: {type(exc).__name__}"})

    results: dict[int, str | None] = {}
    lock = threading.Lock()

    def run(i: int, n: Notifier) -> None:
        try:
            n.send(safe)
            err = None
        except Exception as exc:  # noqa: BLE001 - report, never raise
            err = str(exc) if isinstance(exc, NotifyError) else f"{type(exc).__name__}: {exc}"
        with lock:
            results[i] = err

    threads = []
    for i, n in enumerate(notifiers):
        th = threading.Thread(target=run, args=(i, n), name=f"notify-{notifier_name(n)}",
                              daemon=True)
        th.start()
        threads.append(th)
    deadline = time.monotonic() + timeout
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))

    failures: list[tuple[str, str]] = []
    with lock:
        for i, n in enumerate(notifiers):
            err = results.get(i, f"timed out after {timeout:g}s")
            if err is not None:
                failures.append((notifier_name(n), redactor.redact(err)))
    for name, err in failures:
        _log(log, f"notification via {name} failed: {err}")
    return failures


def _log(log, line: str) -> None:
    if log is None:
        return
    with contextlib.suppress(Exception):  # logging must not break notifying
        if hasattr(log, "warning"):
            log.warning("%s", line)
        else:
            log(line)
