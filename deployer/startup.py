"""The program's startup and the garbage collector. Imports nothing of deployer.

The `deployer` program's startup (click, pydantic and the config models, paramiko, the engine)
allocates a few hundred thousand objects that live until it exits. The cyclic garbage collector
walks them again at each of its full collections on the way: about a tenth of a second of every
command, for nothing. The program (deployer.program) pauses the collector before its first
import; the startup is over when the first host is contacted (the SSH connector calls `over`):
what it allocated is then frozen out of the collector's view (`gc.freeze`) and the collector
runs as usual for the rest of the command. Imported as a library (the tests, tasks.py),
deployer never pauses it.
"""

from __future__ import annotations

import gc
import threading

_paused = False
_lock = threading.Lock()


def pause() -> None:
    """The collector off for the startup (the program calls this first)."""
    global _paused
    with _lock:
        if gc.isenabled():
            gc.disable()
            _paused = True


def over() -> None:
    """The startup's objects frozen and the collector back on; nothing when `pause` did not turn
    it off (deployer imported as a library) or it is already back."""
    global _paused
    if not _paused:
        return
    with _lock:
        if _paused:
            _paused = False
            gc.freeze()
            gc.enable()
