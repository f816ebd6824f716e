"""Redaction of secrets in text that leaves a run: failure output, notifications, reports.

A `Redactor` holds the secret values the run knows (the app's ``.env`` values, passwords,
tokens: added with `add`, values shorter than `MIN_LENGTH` characters are ignored; a value of
``KEY=value`` lines also masks the value of each line whose key looks secret) and applies
generic patterns that catch secrets nobody listed:

- ``KEY=value`` (also ``KEY = value``, ``--key=value``, ``"key": "value"``) where the key
  contains PASSWORD, PASSWD, SECRET, TOKEN, KEY or DSN, in any case: the value becomes ***;
- credentials in a URL, ``scheme://user:password@host``: the password becomes ***.

`redact(text)` is pure (the text in, a new text out) and a Redactor may be shared between
threads: `add` and `redact` run concurrently. A Redactor never shows its values (repr, str).
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from collections.abc import Iterable

MASK = "***"
MIN_LENGTH = 4
SECRET_KEY_WORDS = ("PASSWORD", "PASSWD", "SECRET", "TOKEN", "KEY", "DSN")

_KEY = r"[A-Za-z_][\w.-]*"
# KEY=value, KEY = value, export KEY=value, --some-key=value; the value is quoted or runs to
# whitespace, & or ; (query strings, connection strings). Not ==, !=, <=.
_ASSIGNMENT = re.compile(
    rf"(?<![\w.])(?P<key>{_KEY})(?P<sep>[ \t]*(?<![=!<>])=(?!=)[ \t]*)"
    r"""(?P<value>"[^"\n]*"|'[^'\n]*'|[^\s&;"']+)""")
# "key": "value" (JSON and the like)
_JSON_PAIR = re.compile(rf'"(?P<key>{_KEY})"(?P<sep>\s*:\s*)"(?P<value>(?:[^"\\\n]|\\.)*)"')
# scheme://user:password@host: the password up to the last @ before the path
_URL_CREDENTIALS = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)(?P<value>[^\s/]+)(?P<at>@)")


def _secret_key(key: str) -> bool:
    upper = key.upper()
    return any(word in upper for word in SECRET_KEY_WORDS)


def _assignment(m: re.Match) -> str:
    if not _secret_key(m["key"]):
        return m[0]
    return f"{m['key']}{m['sep']}{MASK}"


def _json_pair(m: re.Match) -> str:
    if not _secret_key(m["key"]) or not m["value"]:
        return m[0]
    return f'"{m["key"]}"{m["sep"]}"{MASK}"'


def _reveal(value: object) -> str:
    reveal = getattr(value, "reveal", None)  # deployer.shell.Secret
    if callable(reveal):
        value = reveal()
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _assigned(line: str) -> str | None:
    """The value of a ``KEY=value`` line whose key looks secret (a .env's DB_PASSWORD), unquoted;
    None for any other line."""
    m = _ASSIGNMENT.match(line.strip().removeprefix("export").strip())
    if m is None or not _secret_key(m["key"]):
        return None
    value = m["value"]
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return value


def _forms(value: str) -> set[str]:
    """The strings to look for: the value, trimmed, URL-encoded, each line of a multi-line value
    (a private key's stderr tail may show only a line of it), and the value of each of its
    secret-looking ``KEY=value`` lines (a .env's password, printed without its key)."""
    forms = {value, value.strip()}
    forms |= {urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value, safe="")}
    lines = value.splitlines()
    if "\n" in value:
        forms |= {line.strip() for line in lines}
    for line in lines:
        assigned = _assigned(line)
        if assigned:
            forms |= {assigned, urllib.parse.quote(assigned, safe="")}
    return {f for f in forms if len(f.strip()) >= MIN_LENGTH}


class Redactor:
    """Known secret values plus generic patterns; `redact(text)` masks them with ***."""

    def __init__(self, values: Iterable[object] = (), *, patterns: bool = True):
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._forms: set[str] = set()
        self._compiled: re.Pattern | None = None
        self._stale = False
        self.patterns = patterns
        self.update(values)

    def add(self, value: object) -> bool:
        """Remember one secret value (a str, or a Secret); False when it is ignored (shorter
        than MIN_LENGTH characters once trimmed, or empty)."""
        text = _reveal(value)
        if len(text.strip()) < MIN_LENGTH:
            return False
        forms = _forms(text)
        with self._lock:
            self._values.add(text)
            if not forms <= self._forms:
                self._forms |= forms
                self._stale = True
        return True

    def update(self, values: Iterable[object]) -> None:
        for value in values or ():
            self.add(value)

    def copy(self) -> Redactor:
        other = Redactor(patterns=self.patterns)
        with self._lock:
            other._values, other._forms = set(self._values), set(self._forms)
        other._stale = bool(other._forms)
        return other

    def _pattern(self) -> re.Pattern | None:
        with self._lock:
            if self._stale:
                # one alternation, longest first: a value containing another is masked whole
                alternatives = sorted(self._forms, key=lambda f: (-len(f), f))
                self._compiled = re.compile("|".join(map(re.escape, alternatives)))
                self._stale = False
            return self._compiled

    def redact(self, text: object) -> str:
        """`text` with every known value and every secret-looking value replaced by ***."""
        out = _reveal(text)
        if not out:
            return out
        pattern = self._pattern()
        if pattern is not None:
            out = pattern.sub(MASK, out)
        if self.patterns:
            out = _ASSIGNMENT.sub(_assignment, out)
            out = _JSON_PAIR.sub(_json_pair, out)
            out = _URL_CREDENTIALS.sub(lambda m: f"{m['head']}{MASK}{m['at']}", out)
        return out

    __call__ = redact

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def __repr__(self) -> str:
        return f"Redactor({len(self)} values, patterns={'on' if self.patterns else 'off'})"

    __str__ = __repr__


def redact(text: object, secrets: Iterable[object] = (), *, patterns: bool = True) -> str:
    """One-off: `text` redacted with the given secret values and the generic patterns."""
    return Redactor(secrets, patterns=patterns).redact(text)


__all__ = ["MASK", "MIN_LENGTH", "SECRET_KEY_WORDS", "Redactor", "redact"]
