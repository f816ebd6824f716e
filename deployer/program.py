"""The `deployer` program's entry point: the installed script and `python -m deployer`. The
collector is paused for the startup (deployer.startup), then the command line runs."""

from __future__ import annotations

from . import startup


def main() -> None:
    startup.pause()
    from .cli import main as cli_main

    cli_main()
