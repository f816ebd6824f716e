"""deployer.redact: known secret values and generic secret-looking patterns become ***."""

from __future__ import annotations

import threading

import pytest

from deployer.redact import MASK, Redactor, redact
from deployer.shell import Secret

ENV_FILE = """APP_KEY=base64:Zm9vYmFyYmF6cXV4
DB_PASSWORD=s3cr3t-db-pa55
MAIL_FROM=deploy@example.test
"""


def test_known_values_are_masked_wherever_they_appear():
    r = Redactor()
    for line in ENV_FILE.splitlines():
        r.add(line.split("=", 1)[1])
    tail = ("psql: error: connection failed for s3cr3t-db-pa55\n"
            "decrypt(base64:Zm9vYmFyYmF6cXV4) failed; key s3cr3t-db-pa55 again")
    out = r.redact(tail)
    assert "s3cr3t-db-pa55" not in out and "Zm9vYmFyYmF6cXV4" not in out
    assert out == ("psql: error: connection failed for ***\n"
                   "decrypt(***) failed; key *** again")
    assert r.redact("deploy@example.test") == MASK  # any value the run knows, not only keys


def test_short_and_empty_values_are_ignored():
    r = Redactor()
    for value in ("", "abc", None, "   "):
        assert r.add(value) is False
    assert r.add("abcd") is True
    assert r.redact("abc abcd abcde") == "abc *** ***e"


def test_longest_value_wins_and_secret_objects_are_revealed_for_matching():
    r = Redactor(["pass", Secret("password-long")])
    assert r.redact("x password-long y pass z") == "x *** y *** z"


def test_url_encoded_and_multiline_values():
    r = Redactor()
    r.add("p@ss/w0rd")
    assert r.redact("login p%40ss%2Fw0rd rejected") == "login *** rejected"
    r.add("-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0\n-----END KEY-----")
    assert "MIIEvQIBADANBgkqhkiG9w0" not in r.redact("bad key line MIIEvQIBADANBgkqhkiG9w0 here")


def test_a_dotenv_value_masks_its_secret_values_printed_without_their_key():
    r = Redactor(["APP_ENV=production\nDB_PASSWORD='hunter2-x9'\nexport API_TOKEN=tok-abc123\n"])
    assert r.redact("auth failed for hunter2-x9 with tok-abc123 in production") == (
        "auth failed for *** with *** in production")  # APP_ENV's value is no secret


@pytest.mark.parametrize("text, expected", [
    ("DB_PASSWORD=hunter2", "DB_PASSWORD=***"),
    ("export AWS_SECRET_ACCESS_KEY=AKIAabc/def+ghi", "export AWS_SECRET_ACCESS_KEY=***"),
    ("GITHUB_TOKEN='ghp_x y z' next", "GITHUB_TOKEN=*** next"),
    ('SENTRY_DSN="https://k@sentry.example/1"', "SENTRY_DSN=***"),
    ("SECRET_KEY = 'django-insecure'", "SECRET_KEY = ***"),
    ("api_key=abc&user=bob", "api_key=***&user=bob"),
    ("--db-password=hunter2 --verbose", "--db-password=*** --verbose"),
    ('{"password": "hunter2", "user": "bob"}', '{"password": "***", "user": "bob"}'),
    ("postgres://app:hunter2@db:5432/app", "postgres://app:***@db:5432/app"),
    ("redis://:hunter2@cache/0 and https://u:p@ss@h/x", "redis://:***@cache/0 and https://u:***@h/x"),
    # left alone: no secret-looking key, no credentials, comparisons
    ("MAIL_FROM=deploy@example.test", "MAIL_FROM=deploy@example.test"),
    ("https://example.test:8443/path/user@example", "https://example.test:8443/path/user@example"),
    ("ssh://deploy@web1/srv", "ssh://deploy@web1/srv"),
    ("if token == expected:", "if token == expected:"),
    ("DB_PASSWORD=", "DB_PASSWORD="),
])
def test_generic_patterns(text, expected):
    assert Redactor().redact(text) == expected
    assert redact(text) == expected


def test_patterns_can_be_turned_off_and_redact_is_pure():
    r = Redactor(["hunter2-xyz"], patterns=False)
    assert r.redact("DB_PASSWORD=abc hunter2-xyz") == "DB_PASSWORD=abc ***"
    text = "TOKEN=abc hunter2-xyz"
    assert r.redact(text) == r.redact(text) and text == "TOKEN=abc hunter2-xyz"
    assert Redactor().redact("") == "" and Redactor().redact(b"TOKEN=abc") == "TOKEN=***"
    assert redact("a hunter2-xyz b", ["hunter2-xyz"]) == "a *** b"


def test_copy_is_independent_and_nothing_leaks_through_repr():
    r = Redactor(["first-secret"])
    c = r.copy()
    c.add("second-secret")
    assert r.redact("second-secret") == "second-secret" and c.redact("first-secret") == MASK
    assert "secret" not in repr(c) and "secret" not in str(c) and len(c) == 2


def test_thread_safe_add_and_redact():
    r = Redactor()
    values = [f"value-{i:04d}-secret" for i in range(400)]
    errors: list[BaseException] = []

    def adder(chunk):
        try:
            for v in chunk:
                r.add(v)
                assert v not in r.redact(f"x {v} y")  # visible to redact as soon as added
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=adder, args=(values[i::8],)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert not errors and not any(th.is_alive() for th in threads)
    out = r.redact(" ".join(values))
    assert out == " ".join([MASK] * len(values))
