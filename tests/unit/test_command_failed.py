"""A failed command's error: the tails of both streams, bounded, labelled and masked."""

from __future__ import annotations

from deployer.errors import ELLIPSIS, TAIL_BYTES, TAIL_LINES, CommandFailed, OutputTail, message_of
from deployer.redact import Redactor


def test_the_message_shows_both_streams_labelled():
    exc = CommandFailed("web1", "php artisan migrate --force", 1,
                        "Migrating: 2026_03_01_add_orders\nSQLSTATE[42P01]: relation missing\n",
                        "PHP Warning: something\n")
    assert exc.message == (
        "web1: `php artisan migrate --force` exited 1\n"
        "stdout:\n"
        "  Migrating: 2026_03_01_add_orders\n"
        "  SQLSTATE[42P01]: relation missing\n"
        "stderr:\n"
        "  PHP Warning: something")
    assert exc.headline == "web1: `php artisan migrate --force` exited 1"
    assert exc.output == OutputTail("Migrating: 2026_03_01_add_orders\nSQLSTATE[42P01]: relation missing",
                                    "PHP Warning: something", 2, 1)
    # the raw streams stay what the command printed (parsers read them)
    assert exc.stdout.endswith("relation missing\n") and exc.exit_status == 1


def test_an_empty_stream_is_left_out_and_a_silent_failure_is_one_line():
    assert CommandFailed("web1", "false", 1, "\n\n", "").message == "web1: `false` exited 1"
    assert CommandFailed("web1", "x", 2, "", "boom\n").message == "web1: `x` exited 2\nstderr:\n  boom"
    assert CommandFailed("web1", "sleep 9", None, "waiting\n", timed_out=True).message == (
        "web1: `sleep 9` timed out\nstdout:\n  waiting")


def test_each_tail_keeps_the_last_lines_and_says_how_many_there_were():
    out = "\n".join(f"out {i}" for i in range(100))
    tail = OutputTail.of(out, "")
    assert tail.stdout.splitlines() == [f"out {i}" for i in range(100 - TAIL_LINES, 100)]
    assert tail.stdout_lines == 100
    assert tail.render().splitlines()[0] == f"stdout (last {TAIL_LINES} of 100 lines):"


def test_each_tail_is_bounded_in_bytes_at_a_line_start():
    wide = "\n".join(f"{i:03d} " + "é" * 300 for i in range(TAIL_LINES))  # ~600 bytes a line
    tail = OutputTail.of(wide, "")
    assert len(tail.stdout.encode()) <= TAIL_BYTES
    assert tail.stdout.splitlines()[-1].startswith(f"{TAIL_LINES - 1:03d} ")
    assert all(line[:3].isdigit() for line in tail.stdout.splitlines())  # whole lines only
    one = "x" * (3 * TAIL_BYTES) + "END"
    cut = OutputTail.of(one, "").stdout
    assert cut.startswith(ELLIPSIS) and cut.endswith("END") and len(cut.encode()) <= TAIL_BYTES


def test_secrets_are_masked_in_the_tails_and_the_message():
    # without the run's redactor: the generic patterns
    exc = CommandFailed("web1", "migrate", 1, "connecting with DB_PASSWORD=hunter2hunter2\n",
                        "dsn postgres://app:pa55word-x@db1/app\n")
    assert "hunter2hunter2" not in exc.message and "pa55word-x" not in exc.message
    assert "DB_PASSWORD=***" in exc.output.stdout and "postgres://app:***@db1/app" in exc.output.stderr
    # with it: the values it knows, also a multi-line one whose tail shows only its last lines
    key = "-----BEGIN KEY-----\nAAAAsecretline1\nBBBBsecretline2\n-----END KEY-----"
    after = "\n".join(f"noise {i} Canary-Value-42" for i in range(TAIL_LINES - 2))
    run = Redactor(["Canary-Value-42", key])
    exc = CommandFailed("web2", "build", 1, f"{key}\n{after}\n", "Canary-Value-42", redact=run.redact)
    # the tail starts inside the key: its last two lines, each masked on its own
    assert exc.output.stdout.splitlines()[:3] == ["***", "***", "noise 0 ***"]
    for secret in ("Canary-Value-42", "AAAAsecretline1", "BBBBsecretline2"):
        assert secret not in exc.message and secret not in exc.output.stdout + exc.output.stderr
    assert exc.output.stderr == "***"


def test_message_of_any_error():
    exc = CommandFailed("db1", "true", 1)
    exc.message += "\nthe lock may be held"  # added to after it was raised: the message is told
    assert message_of(exc) == "db1: `true` exited 1\nthe lock may be held"
    assert message_of(ValueError("bad value")) == "bad value"
    assert message_of(KeyboardInterrupt()) == "KeyboardInterrupt"
