"""Signals during a rollback: noted by a relay thread, never inside the handler."""

import subprocess
import sys
import textwrap

SCENARIO = textwrap.dedent("""
    import os, signal, threading, time
    from deployer.signals import deferred

    lock = threading.Lock()  # as the reporter's: held by the main thread while it prints
    seen = []

    def on_signal(signum):
        with lock:
            seen.append(signal.Signals(signum).name)

    with deferred(on_signal):
        with lock:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    print(",".join(seen))
    os.kill(os.getpid(), signal.SIGTERM)  # the previous handler (the default: end) is back
    time.sleep(5)
    print("still here")
""")


def test_two_signals_while_the_main_thread_holds_a_lock_are_reported_without_hanging():
    p = subprocess.run([sys.executable, "-c", SCENARIO], capture_output=True, text=True, timeout=20)
    assert p.stdout.splitlines() == ["SIGINT,SIGTERM"], p.stderr
    assert p.returncode == -15


def test_outside_the_main_thread_it_changes_nothing():
    import signal
    import threading

    from deployer.signals import deferred

    before = signal.getsignal(signal.SIGINT)
    out = []

    def inside():
        with deferred(out.append):
            out.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=inside)
    t.start()
    t.join(5)
    assert out == [before]
