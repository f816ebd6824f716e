"""deployer's Invoke collection: `inv deploy --env prod`, `inv rollback --env prod --to v1`, ...

A project's tasks.py (`deployer init` writes it) makes every verb an Invoke task in one line,
and may add its own tasks to the collection::

    from deployer.tasks import ns
    from invoke import task

    @task
    def smoke(c):
        c.run("curl -fsS https://shop.example.com/up")

    ns.add_task(smoke)

The tasks are generated from the click commands of deployer/cli.py, the one definition of every
verb: each task has the command's name (a click group is a collection: `maintenance.on`), its
options (flags, `--x/--no-x` pairs, repeatable options, short names) and its docstring; running
it runs the click command with the same arguments, so `inv X --help` prints the click help and
validation, errors and exit codes are the click command's own. A command's trailing arguments
(`exec`) are the words after `--`: `inv exec --env prod --roles web -- uptime`.

What only Invoke parses: a flag the task does not know, or a flag without its value. Invoke
reports those itself ("No idea what '--bogus' is!"); they exit 2 here, as click's usage errors
do (Invoke's own code is 1).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import click
from invoke import Collection, Exit, Task
from invoke.exceptions import ParseError
from invoke.parser import Argument
from invoke.program import Program

from .cli import cli


@dataclass(frozen=True)
class Flag:
    """One Invoke argument and the click option text it turns back into."""

    attr: str  # the Invoke argument's name (the long flag with _ for -)
    flag: str  # --dry-run
    kind: type  # bool (a flag), list (repeatable) or str (a value)


def flags(command: click.Command) -> list[Flag]:
    out: list[Flag] = [Flag("help", "--help", bool)]
    for p in command.params:
        if not isinstance(p, click.Option) or p.hidden:
            continue
        longs = [o for o in p.opts if o.startswith("--")]
        if p.is_flag:
            out += [Flag(o[2:].replace("-", "_"), o, bool) for o in longs + list(p.secondary_opts)]
        else:
            out.append(Flag(longs[0][2:].replace("-", "_"), longs[0], list if p.multiple else str))
    return out


def arguments(command: click.Command) -> list[Argument]:
    """Invoke arguments for a click command's options (its help text and default included)."""
    args = [Argument(names=("help", "h"), kind=bool, default=False, help="show this help and exit")]
    for p in command.params:
        if not isinstance(p, click.Option) or p.hidden:
            continue
        longs = [o[2:] for o in p.opts if o.startswith("--")]
        shorts = [o[1:] for o in p.opts if not o.startswith("--")]
        text = p.help or ""
        if p.show_default and p.default not in (None, False, (), ""):
            text += f" (default: {p.default})"
        if p.required:
            text += " (required)"
        attr = longs[0].replace("-", "_") if "-" in longs[0] else None  # (an alias of itself loops)
        if p.is_flag:
            args.append(Argument(names=(longs[0], *shorts), kind=bool, default=False, help=text,
                                 attr_name=attr))
            for o in p.secondary_opts:
                args.append(Argument(names=(o[2:],), kind=bool, default=False, help=f"the opposite of "
                                     f"--{longs[0]}", attr_name=o[2:].replace("-", "_")))  # no-x
        else:
            args.append(Argument(names=(longs[0], *shorts), kind=list if p.multiple else str,
                                 default=[] if p.multiple else None, help=text, attr_name=attr))
    return args


def click_argv(command: click.Command, values: dict, remainder: list[str]) -> list[str]:
    """The click command line for the values Invoke parsed (options not given are left out, so
    that click applies its own defaults)."""
    argv: list[str] = []
    for f in flags(command):
        value = values.get(f.attr)
        if f.kind is bool and value:
            argv.append(f.flag)
        elif f.kind is list:
            for item in value or []:
                argv += [f.flag, item]
        elif f.kind is str and value is not None:
            argv += [f.flag, value]
    if any(isinstance(p, click.Argument) for p in command.params) and remainder:
        argv += ["--", *remainder]
    return argv


def remainder(argv: list[str] | None = None) -> list[str]:
    """The words after `--` on the command line (Invoke keeps them only as one joined string)."""
    argv = sys.argv if argv is None else argv
    return argv[argv.index("--") + 1:] if "--" in argv else []


class ClickTask(Task):
    """An Invoke task that runs a click command."""

    def __init__(self, command: click.Command, name: str, path: str):
        self.command = command
        self.path = path

        def body(c, **values):
            code = run(command, f"inv {path}", click_argv(command, values, remainder()))
            if code:
                raise Exit(code=code)

        body.__name__ = name
        body.__doc__ = command.help
        super().__init__(body, name=name, positional=[], auto_shortflags=False)

    def get_arguments(self, ignore_unknown_help=None) -> list[Argument]:
        return arguments(self.command)


def run(command: click.Command, prog: str, argv: list[str]) -> int:
    """Run a click command as `prog argv...`; its exit code."""
    try:
        command.main(args=argv, prog_name=prog)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def collection(group: click.Group, name: str | None = None, prefix: str = "") -> Collection:
    coll = Collection(name) if name else Collection()
    for cmd_name, command in group.commands.items():
        path = f"{prefix}{cmd_name}"
        if isinstance(command, click.Group):
            coll.add_collection(collection(command, cmd_name, f"{path}."))
        else:
            coll.add_task(ClickTask(command, cmd_name, path))
    return coll


def _usage_errors_exit_2() -> None:
    """Invoke exits 1 on what its parser rejects; deployer's contract says 2 (bad input)."""
    original = Program.parse_tasks
    if getattr(original, "deployer", False):
        return

    def parse_tasks(self) -> None:
        try:
            original(self)
        except ParseError as exc:
            raise Exit(f"error: {exc} (see 'inv --list', 'inv TASK --help')", code=2) from None

    parse_tasks.deployer = True
    Program.parse_tasks = parse_tasks


_usage_errors_exit_2()
ns = collection(cli)
