"""What a preflight check is and what it gives: `Check`, `Result`, the PASS/FAIL/WARN
statuses, and the table and exit code of a list of results (see deployer.preflight)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..shell import Command

PASS, FAIL, WARN = "PASS", "FAIL", "WARN"
LOCAL = "(local)"
#: `Check.roles` of the checks that run on every host
ALL = ("*",)

Parse = Callable[[str, "int | None"], tuple[bool, str]]
#: a check answering several rows from one command: (row name, ok, detail) each
Rows = Callable[[str, "int | None"], list[tuple[str, bool, str]]]


@dataclass(frozen=True)
class Result:
    host: str
    check: str
    status: str  # PASS, FAIL or WARN
    detail: str


@dataclass(frozen=True)
class Check:
    name: str
    command: Command | None
    roles: tuple[str, ...]
    parse: Parse
    hosts: tuple[str, ...] = ()
    blocking: bool = True
    #: what the check is about, for --help style listings
    about: str = ""
    #: when set, the check's one command answers several rows (each right of `rights`), each
    #: named by itself; `parse` is then unused
    rows: Rows | None = None

    @property
    def local(self) -> bool:
        return self.command is None

    def result(self, host: str, stdout: str, exit_status: int | None) -> Result:
        ok, detail = self.parse(stdout, exit_status)
        return Result(host, self.name, PASS if ok else (FAIL if self.blocking else WARN), detail)

    def results(self, host: str, stdout: str, exit_status: int | None) -> list[Result]:
        """The rows of this check on `host`: one, or those of `rows` when the check has them."""
        if self.rows is None:
            return [self.result(host, stdout, exit_status)]
        bad = FAIL if self.blocking else WARN
        return [Result(host, name, PASS if ok else bad, detail)
                for name, ok, detail in self.rows(stdout, exit_status)]

    def error(self, host: str, message: str) -> Result:
        """The check could not run on `host` (unreachable, timeout, ...)."""
        first = message.strip().splitlines()[0] if message.strip() else "error"
        return Result(host, self.name, FAIL if self.blocking else WARN, f"could not run: {first}")

    def run_local(self) -> list[Result]:
        if not self.local:
            raise ValueError(f"check {self.name!r} runs on hosts; use result()")
        return [self.result(LOCAL, "", 0)]


def table(results: Iterable[Result]) -> list[list[str]]:
    """Rows [host, check, PASS/FAIL/WARN, detail], in the order given."""
    return [[r.host, r.check, r.status, r.detail] for r in results]


def exit_code(results: Iterable[Result]) -> int:
    """0 when no check FAILed (WARN is fine), 3 (refused) otherwise."""
    return 3 if any(r.status == FAIL for r in results) else 0
