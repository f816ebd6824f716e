"""Ctrl-C and SIGTERM noted, never acted on inside the signal handler.

A Python signal handler runs in the main thread between two of its bytecodes, possibly while
that thread holds a lock (the terminal's, a journal's, an Event's condition). A handler that
prints or sets an Event can then wait forever for a lock its own thread holds: a cancelled CI
job that sends its signal twice, 50 ms apart, hung a rollback that way. So the handler only
puts the signal number on a `queue.SimpleQueue` (whose `put` is safe in a signal handler) and
a small thread calls `on_signal`, where taking a lock is harmless.
"""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

CAUGHT = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred(on_signal: Callable[[int], None]) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM call `on_signal(signum)` from a helper thread; the
    previous handlers come back on exit. Outside the main thread (where handlers cannot be
    set) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: queue.SimpleQueue[int | None] = queue.SimpleQueue()

    def relay() -> None:
        while (signum := pending.get()) is not None:
            try:
                on_signal(signum)
            except Exception:  # noqa: BLE001 - a report that fails must not end the relay
                pass

    relay_thread = threading.Thread(target=relay, name="signals", daemon=True)
    relay_thread.start()
    saved = {sig: signal.signal(sig, lambda signum, frame: pending.put(signum)) for sig in CAUGHT}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        pending.put(None)
        relay_thread.join(timeout=5)
