"""Remote commands as data: quoting and secret masking happen here and nowhere else.

Templates come from our own playbooks (trusted shell text); every *value* substituted into a
template is shell-quoted, so user input such as ``$(touch /tmp/pwned)`` stays inert.
"""

from __future__ import annotations

import os
import re
import shlex
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from deployer.errors import ConfigError

MASK = "***"

_OPERATORS = {"&&": " && ", "||": " || ", ";": "; "}
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class Secret:
    """A secret string: prints as ``***`` everywhere; ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


class Privileged:
    """The `{sudo}` template value: how this host's user gets root for the one simple command
    that follows it (``sudo -n --``; nothing when the SSH user is root). Inserted verbatim, never
    quoted: deployer makes it, no user input ever reaches it."""

    __slots__ = ("prefix",)

    def __init__(self, user: str):
        self.prefix = "" if user == "root" else "sudo -n --"

    def __repr__(self) -> str:
        return f"Privileged({self.prefix!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Privileged) and other.prefix == self.prefix

    def __hash__(self) -> int:
        return hash((Privileged, self.prefix))


@dataclass(frozen=True, slots=True)
class HostDeadline:
    """A time `seconds` from now by the clock of the host that runs the command: the shell
    arithmetic `$(( $(date +%s) + seconds ))`, evaluated there, never a number computed on the
    orchestrator (whose clock may be off). Inserted verbatim (one double-quoted word); deployer
    makes it from a number, no user input ever reaches it."""

    seconds: int

    def __post_init__(self) -> None:
        seconds = self.seconds
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise TypeError(f"HostDeadline takes a number of seconds, not {seconds!r}")
        object.__setattr__(self, "seconds", int(round(seconds)))

    @property
    def shell(self) -> str:
        return f'"$(( $(date +%s) + {self.seconds} ))"'


Value = str | int | float | Secret | os.PathLike | Privileged | HostDeadline


@dataclass(frozen=True)
class Command:
    """One shell script run remotely, and the same text with secrets masked."""

    script: str
    display: str
    timeout: float | None = None

    def with_timeout(self, timeout: float | None) -> Command:
        return replace(self, timeout=timeout)

    def __str__(self) -> str:
        return self.display


def quote(value: Value) -> tuple[str, str]:
    """Return (quoted real value, quoted displayed value); a Secret displays as ``***``."""
    if isinstance(value, Secret):
        return shlex.quote(value.reveal()), MASK
    if isinstance(value, Privileged):
        return value.prefix, value.prefix
    if isinstance(value, HostDeadline):
        return value.shell, value.shell
    if isinstance(value, bool) or value is None:
        raise TypeError(f"cannot quote {value!r} as a shell word")
    if isinstance(value, (int, float)):
        text = str(value)
    elif isinstance(value, os.PathLike):
        text = os.fspath(value)
        if isinstance(text, bytes):
            raise TypeError("bytes paths are not supported")
    elif isinstance(value, str):
        text = value
    else:
        raise TypeError(f"cannot quote {type(value).__name__} as a shell word")
    quoted = shlex.quote(text)
    return quoted, quoted


def q(value: object) -> str:
    """One word quoted for the shell (str() of the value; never a Secret: use quote())."""
    if isinstance(value, Secret):
        raise TypeError("q() does not take secrets; use quote() to keep them masked")
    return shlex.quote(str(value))


def argv(*parts: Value) -> Command:
    """A command from argv words, each one quoted."""
    if not parts:
        raise ValueError("argv() needs at least one word")
    words = [quote(p) for p in parts]
    return Command(" ".join(w[0] for w in words), " ".join(w[1] for w in words))


def raw(text: str) -> Command:
    """Trusted literal shell text, written in our own code (never user input)."""
    return Command(text, text)


def _parse(template: str, where: str) -> list[tuple[str, str | None]]:
    """Split a template into (literal text, placeholder name or None) pairs."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"{_prefix(where)}invalid template: {exc}") from None
    parts: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parsed:
        if field is not None and (not _NAME_RE.match(field) or spec or conversion):
            body = field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ConfigError(
                f"{_prefix(where)}bad placeholder {{{body}}}: use {{name}}; write {{{{ and }}}} "
                "for literal braces"
            )
        parts.append((literal, field))
    return parts


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


def placeholders(template: str) -> set[str]:
    """Names of the ``{name}`` placeholders in a template."""
    return {name for _, name in _parse(template, "") if name is not None}


def _tokens(template: str, where: str):
    """The template as ("char", c, quoted) for each literal character, quoted telling whether it
    sits inside shell quotes or after a backslash, and ("name", n, quoted) for each placeholder."""
    state: str | None = None  # None, "'" or '"'
    escaped = False
    for literal, name in _parse(template, where):
        for ch in literal:
            yield "char", ch, state is not None or escaped
            if escaped:
                escaped = False
            elif state == "'":
                state = None if ch == "'" else state
            elif ch == "\\":
                escaped = True
            elif state == '"':
                state = None if ch == '"' else state
            elif ch in "'\"":
                state = ch
        if name is not None:
            yield "name", name, state is not None or escaped


_STOPS = set(";&|<>()\n")


def privileged_commands(template: str, *, where: str = "") -> list[str]:
    """The simple commands a template runs through `{sudo}`, as template text: what follows each
    `{sudo}` up to the next unquoted `;`, `&`, `|`, redirection, parenthesis or newline (a
    redirection's file descriptor number left out). These are the commands the host's sudo rules
    must allow; `preflight` checks them and `init` writes the rules."""
    out: list[str] = []
    current: list[str] | None = None

    def close(stop: str = "") -> None:
        if current is None:
            return
        text = "".join(current)
        if stop in "<>" and stop and text == text.rstrip() and len(text.split()) > 1 \
                and text.split()[-1].isdigit():  # `2>/dev/null`: the 2 is the redirection's
            text = text.rstrip().rsplit(None, 1)[0]
        if not text.strip():
            raise ConfigError(f"{_prefix(where)}{{sudo}} must be followed by the command it runs as root")
        out.append(text.strip())

    for kind, value, quoted in _tokens(template, where):
        if kind == "char" and value in _STOPS and not quoted:
            close(value)
            current = None
        elif kind == "name" and value == "sudo":
            close()
            current = []
        elif current is not None:  # literal braces stay escaped: the result is a template
            current.append((value * 2 if value in "{}" else value) if kind == "char" else "{" + value + "}")
    close()
    return out


def check_template(template: str, known: Iterable[str], *, where: str = "") -> None:
    """Raise ConfigError unless every placeholder is known and none sits inside shell quotes."""
    known_set = set(known)
    for kind, name, quoted in _tokens(template, where):
        if kind != "name":
            continue
        if name not in known_set:
            raise ConfigError(
                f"{_prefix(where)}unknown placeholder {{{name}}}; known: "
                + ", ".join(sorted(known_set))
            )
        if quoted:
            raise ConfigError(
                f"{_prefix(where)}placeholder {{{name}}} is inside quotes or after a backslash; "
                "values are quoted for you, remove the quoting"
            )


def render(template: str, values: Mapping[str, object], *, where: str = "") -> Command:
    """Fill ``{name}`` placeholders with shell-quoted values (secrets masked in the display)."""
    check_template(template, values.keys(), where=where)
    script: list[str] = []
    display: list[str] = []
    for literal, name in _parse(template, where):
        script.append(literal)
        display.append(literal)
        if name is not None:
            real, shown = quote(values[name])  # type: ignore[arg-type]
            script.append(real)
            display.append(shown)
    return Command("".join(script), "".join(display))


def fill(template: str, values: Mapping[str, object], *, where: str = "") -> str:
    """Fill placeholders WITHOUT shell quoting, for non-shell text (URLs, names, JSON values)."""
    out: list[str] = []
    for literal, name in _parse(template, where):
        out.append(literal)
        if name is None:
            continue
        if name not in values:
            raise ConfigError(
                f"{_prefix(where)}unknown placeholder {{{name}}}; known: "
                + ", ".join(sorted(values))
            )
        value = values[name]
        if isinstance(value, Secret):
            raise TypeError("secrets cannot be used in plain text templates")
        if isinstance(value, HostDeadline):
            raise TypeError("a host-side deadline is shell arithmetic: not in plain text templates")
        out.append(str(value))
    return "".join(out)


def _is_compound(script: str) -> bool:
    """True if the script has an unquoted list operator (&&, ||, ;, newline)."""
    state: str | None = None
    escaped = False
    prev = ""
    for ch in script:
        if escaped:
            escaped = False
        elif state == "'":
            state = None if ch == "'" else state
        elif ch == "\\":
            escaped = True
        elif state == '"':
            state = None if ch == '"' else state
        elif ch in "'\"":
            state = ch
        elif ch in ";\n" or (ch in "&|" and prev == ch):
            return True
        prev = ch
    return False


def _group(text: str, compound: bool) -> str:
    return f"{{ {text}; }}" if compound else text


def chain(*cmds: Command, op: str = "&&") -> Command:
    """Join commands with ``&&``, ``||`` or ``;``; compound parts are wrapped in ``{ ...; }``.

    The result has no timeout of its own (the runner's default applies).
    """
    if op not in _OPERATORS:
        raise ValueError(f"op must be one of {', '.join(_OPERATORS)}")
    if not cmds:
        raise ValueError("chain() needs at least one command")
    if len(cmds) == 1:
        return cmds[0]
    sep = _OPERATORS[op]
    flags = [_is_compound(c.script) for c in cmds]
    return Command(
        sep.join(_group(c.script, f) for c, f in zip(cmds, flags, strict=True)),
        sep.join(_group(c.display, f) for c, f in zip(cmds, flags, strict=True)),
    )


def sh(cmd: Command) -> Command:
    """Wrap as ``sh -c '<script>'`` (e.g. to run under sudo -u), keeping the display masked."""
    return Command(
        f"sh -c {shlex.quote(cmd.script)}", f"sh -c {shlex.quote(cmd.display)}", cmd.timeout
    )


STEP_MARK = "@@deployer-step"


def batch(*cmds: Command) -> Command:
    """Several commands as ONE remote script (one round trip): each runs in order in its own
    subshell, preceded by a marker line on stdout and on stderr; the first failure ends the
    script with that step's exit code. `step_outputs` splits the output back per step, so a
    failure still names its step and shows that step's own stderr tail.
    """
    if not cmds:
        raise ValueError("batch() needs at least one command")
    if len(cmds) == 1:
        return cmds[0]
    script = []
    for i, c in enumerate(cmds):
        script.append(f"echo {STEP_MARK} {i}; echo {STEP_MARK} {i} >&2; ( {c.script}\n) || exit $?")
    return Command("\n".join(script), " ;; ".join(c.display for c in cmds))


def step_outputs(text: str) -> dict[int, str]:
    """Output of a batch() script, per step index (text before the first marker goes to -1)."""
    out: dict[int, list[str]] = {}
    current = -1
    for line in text.splitlines():
        if line.startswith(STEP_MARK + " "):
            tail = line[len(STEP_MARK) + 1:].strip()
            if tail.isdigit():
                current = int(tail)
                out.setdefault(current, [])
                continue
        out.setdefault(current, []).append(line)
    return {k: "\n".join(v) for k, v in out.items()}
