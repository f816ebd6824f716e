"""What a playbook runs as root on each host, and the sudo rules that allow exactly that.

A playbook marks each command that needs root with `{sudo}` (see deployer.shell.Privileged).
`commands(cfg, host)` gives those of the steps that run on `host`, filled in with the host's
values, as argv words; `sudoers(cfg, user)` writes the sudoers snippet that lets `user` run
them, and nothing else, as root without a password; `rule(user, argv)` is one self-contained
rule line (what preflight prints for a missing right). Pure: nothing here runs anything.

A rule must name the exact words of a command: the config refuses a `{sudo}` command that uses a
value changing at every deploy (`{release}`, ...), and this module refuses one whose words the
shell would expand (`$x`, a glob) or whose program is not an absolute path (sudoers matches
paths, not names looked up in a PATH).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from .config import Config, Host
from .errors import ConfigError
from .shell import render

_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\Z")
_PATH_RE = re.compile(r"/[A-Za-z0-9_./+@%-]*\Z")
#: sudoers' own special characters in a command's arguments: the backslash is dropped when
#: the file is read (a backslash itself is doubled twice: once for sudoers, once for fnmatch)
_SUDOERS_SPECIAL = set(",:= \t#")
#: wildcards of fnmatch(3), which sudo matches arguments with: escaped, matched literally
_WILDCARDS = set("*?[]!")


@dataclass(frozen=True)
class RootCommand:
    """One command a playbook runs as root on a host: its words, and the steps that run it."""

    argv: tuple[str, ...]
    #: where each step running it is defined (``playbooks/demo.yaml: stages.reload[0]``)
    steps: tuple[str, ...]

    @property
    def text(self) -> str:
        """The command as a shell would print it."""
        return shlex.join(self.argv)


def commands(cfg: Config, host: Host) -> list[RootCommand]:
    """The commands the playbook runs as root on `host`: the `{sudo}` commands of the steps
    that run there (by role, `once` steps on their one host, as the engine runs them; app hosts
    only), rendered with the host's values, each once, in playbook order."""
    if not (host.has("web") or host.has("worker")):
        return []
    values = cfg.template_values(host)
    found: dict[tuple[str, ...], list[str]] = {}
    for step in cfg.playbook.all_steps():
        if not cfg.runs_step(step, host):
            continue
        for where, template in step.privileged():
            words = _words(render(template, values, where=where).script, where)
            found.setdefault(words, [])
            if where not in found[words]:
                found[words].append(where)
    return [RootCommand(words, tuple(steps)) for words, steps in found.items()]


def fleet_commands(cfg: Config, hosts: Iterable[Host] | None = None) -> list[RootCommand]:
    """`commands` of several hosts (default: every host of `cfg`), each command once."""
    merged: dict[tuple[str, ...], list[str]] = {}
    for host in cfg.hosts if hosts is None else hosts:
        for cmd in commands(cfg, host):
            steps = merged.setdefault(cmd.argv, [])
            steps += [w for w in cmd.steps if w not in steps]
    return [RootCommand(words, tuple(steps)) for words, steps in merged.items()]


def spec(cmd: RootCommand) -> str:
    """The command as a sudoers Cmnd: its absolute path, then its arguments escaped (`""` when
    it has none: a Cmnd without arguments would allow any)."""
    program, args = cmd.argv[0], cmd.argv[1:]
    if not program.startswith("/"):
        raise ConfigError(f"{cmd.steps[0]}: {{sudo}} runs `{cmd.text}`: a sudo rule needs the "
                          f"program's absolute path, not {program!r} (write the path, or a var "
                          f"holding it, e.g. /usr/bin/{program})")
    if not _PATH_RE.match(program):
        raise ConfigError(f"{cmd.steps[0]}: {{sudo}} runs `{cmd.text}`: the program's path "
                          f"{program!r} has characters a sudo rule cannot name")
    for arg in args:
        if not arg or "\n" in arg:
            raise ConfigError(f"{cmd.steps[0]}: {{sudo}} runs `{cmd.text}`: an empty argument "
                              "or one with a newline cannot be written in a sudo rule")
    return " ".join([program] + [_escape(a) for a in args] if args else [program, '""'])


def _escape(arg: str) -> str:
    out = []
    for i, ch in enumerate(arg):
        if ch == "\\":
            out.append("\\\\\\\\")
        elif ch in _SUDOERS_SPECIAL or ch in _WILDCARDS or (ch == "^" and i == 0):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def rule(user: str, cmd: RootCommand) -> str:
    """One self-contained sudoers line letting `user` run `cmd` as root without a password."""
    return f"{_user(user)} ALL=(root) NOPASSWD: {spec(cmd)}"


def alias(cfg: Config) -> str:
    """The Cmnd_Alias of the playbook's commands: DEPLOYER_<PLAYBOOK>."""
    return "DEPLOYER_" + re.sub(r"[^A-Z0-9]", "_", cfg.playbook.name.upper())


def sudoers(cfg: Config, user: str, hosts: Iterable[Host] | None = None) -> str:
    """A sudoers snippet (for /etc/sudoers.d/) letting `user` run as root, without a password,
    exactly the commands the playbook runs through `{sudo}` on `hosts` (default: every host),
    and nothing else. Comments name the steps that need them."""
    cmds = fleet_commands(cfg, hosts)
    name = cfg.playbook.name
    if not cmds:
        return f"# The {name} playbook runs no command as root: {_user(user)} needs no sudo rule.\n"
    specs = [spec(c) for c in cmds]
    steps = list(dict.fromkeys(w for c in cmds for w in c.steps))
    lines = [f"# What the {name} playbook runs as root ({{sudo}} in these steps), and nothing else:"]
    lines += [f"#   {_short(w)}" for w in steps]
    lines.append(f"Cmnd_Alias {alias(cfg)} = \\")
    lines += [f"    {s}, \\" for s in specs[:-1]] + [f"    {specs[-1]}"]
    lines.append(f"{_user(user)} ALL=(root) NOPASSWD: {alias(cfg)}")
    return "\n".join(lines) + "\n"


def _short(where: str) -> str:
    """A step's place without the directory of a playbook outside the project (a shipped one:
    a path of the machine that wrote the file): ``playbooks/laravel.yaml: stages.reload[0]``."""
    path, sep, key = where.partition(": ")
    if path.startswith("/"):
        path = "/".join(path.split("/")[-2:])
    return path + sep + key


def _user(user: str) -> str:
    if not _USER_RE.match(user):
        raise ValueError(f"invalid user name {user!r}")
    return user


def _words(script: str, where: str) -> tuple[str, ...]:
    """The argv of one rendered simple command; a word the shell would expand is an error."""
    found = _expansion(script)
    if found:
        raise ConfigError(f"{where}: {{sudo}} runs `{script}`, which the shell expands ({found}): "
                          "a sudo rule needs the exact words")
    words = tuple(shlex.split(script))
    if not words:
        raise ConfigError(f"{where}: {{sudo}} must be followed by the command it runs as root")
    return words


def _expansion(script: str) -> str | None:
    """The first unquoted `$`, backquote, glob character or leading `~` of a script."""
    state: str | None = None
    escaped = False
    word_start = True
    for ch in script:
        if escaped:
            escaped, word_start = False, False
        elif state == "'":
            state = None if ch == "'" else state
        elif ch == "\\":
            escaped = True
        elif ch in "$`":
            return ch
        elif state == '"':
            state = None if ch == '"' else state
        elif ch in "'\"":
            state, word_start = ch, False
        elif ch in "*?[" or (ch == "~" and word_start):
            return ch
        else:
            word_start = ch in " \t"
    return None


def sudoers_rules(cfg: Config, host: Host | str) -> str:
    """One host's rules, for its own /etc/sudoers.d (the local fleet writes them so): what the
    playbook runs as root there, for the host's SSH user; a comment alone for root."""
    if isinstance(host, str):
        host = cfg.host(host)
    if host.user == "root":
        return f"# {host.name}: deployer logs in as root: no sudo rule needed\n"
    return sudoers(cfg, host.user, [host])
