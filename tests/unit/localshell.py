"""A transport whose every host is this machine: each command's shell text runs in `sh -c`, as
the ledger host would run it over SSH (the lock and the ledger, on a temporary directory)."""

from __future__ import annotations

import subprocess

from deployer.errors import CommandFailed
from deployer.transport import GroupResult, Result


class LocalShell:
    parallel = 10

    def run(self, ep, cmd, *, timeout=None, stdin=None, check=True):
        proc = subprocess.run(["sh", "-c", cmd.script], input=stdin or "", capture_output=True, text=True,
                              timeout=timeout or 30)
        if check and proc.returncode:
            raise CommandFailed(ep.name, cmd.display, proc.returncode, proc.stdout, proc.stderr)
        return Result(ep.name, cmd.display, proc.stdout, proc.stderr, proc.returncode, 0.0)

    def each(self, items, fn, **kw) -> GroupResult:
        group = GroupResult()
        for item in items:
            try:
                group.results[item.name] = fn(item)
            except Exception as exc:  # noqa: BLE001
                group.failures[item.name] = exc
        return group

    def cancel(self) -> list[str]:
        return []

    def close(self) -> None:
        pass


def local_config(tmp_path):
    """hosts/local.yaml with its state under `tmp_path/app` (key and known_hosts never read)."""
    from pathlib import Path

    from deployer.config import load_config

    key, known = tmp_path / "id", tmp_path / "known_hosts"
    key.write_text("not used: the commands run locally\n")
    known.write_text("")
    return load_config("local", root=Path(__file__).resolve().parents[2],
                       overrides={"ssh.key": str(key), "ssh.known_hosts": str(known),
                                  "deploy_to": str(tmp_path / "app")})
