"""The `deployer` command line: the same verbs as the Invoke tasks (tasks.py)."""

from __future__ import annotations

import sys

import click

from . import verbs

OUTPUT = click.option("--output", type=click.Choice(["text", "json"]), default="text",
                      help="text for humans, json: one event per line")
ENV = click.option("--env", "-e", required=True, help="environment: hosts/<env>.yaml")
INVENTORY = click.option("--inventory", default=None, help="inventory file instead of hosts/<env>.yaml")


@click.group()
@click.version_option(package_name="deployer")
def cli() -> None:
    """Deploy and roll back web apps over SSH, safely."""


@cli.command()
@ENV
@click.option("--ref", default="main", show_default=True, help="git ref to deploy")
@click.option("--dry-run", is_flag=True, help="print every stage x host x command; touch nothing")
@click.option("--yes", "-y", is_flag=True, help="never prompt (implied without a TTY)")
@click.option("--maintenance/--no-maintenance", default=None, help="force maintenance mode on/off")
@click.option("--lock-wait", type=float, default=0.0, help="seconds to wait for the lock")
@click.option("--reason", default="", help="why (recorded in the lock and the ledger)")
@click.option("--force", is_flag=True, help="deploy outside a window or in a freeze (needs --reason)")
@click.option("--verbose", "-v", is_flag=True)
@INVENTORY
@OUTPUT
def deploy(env, ref, dry_run, yes, maintenance, lock_wait, reason, force, verbose, inventory, output):
    """The whole pipeline, with automatic rollback when a gate fails."""
    sys.exit(verbs.deploy(env, ref, dry_run=dry_run, inventory=inventory, output=output,
                          maintenance=maintenance, lock_wait=lock_wait, reason=reason, verbose=verbose,
                          force=force))


@cli.command()
@ENV
@click.option("--to", default=None, help="release id, unique prefix, or the git ref it came from")
@click.option("--restore-db", is_flag=True, help="restore the backup taken when the target was left")
@click.option("--keep-db", is_flag=True, help="switch the code only, leave the database as it is")
@click.option("--lock-wait", type=float, default=0.0)
@click.option("--dry-run", is_flag=True, help="print every stage x host x command; touch nothing")
@INVENTORY
@OUTPUT
def rollback(env, to, restore_db, keep_db, lock_wait, dry_run, inventory, output):
    """Back to the previous good release, or to a named one."""
    sys.exit(verbs.rollback(env, to=to, restore_db=restore_db, keep_db=keep_db, inventory=inventory,
                            output=output, lock_wait=lock_wait, dry_run=dry_run))


@cli.command()
@ENV
@INVENTORY
@OUTPUT
def promote(env, inventory, output):
    """Continue a paused progressive rollout (from any machine)."""
    sys.exit(verbs.resume(env, "promote", inventory=inventory, output=output))


@cli.command()
@ENV
@INVENTORY
@OUTPUT
def abort(env, inventory, output):
    """Abort a paused rollout: every host back to its snapshot."""
    sys.exit(verbs.resume(env, "abort", inventory=inventory, output=output))


@cli.command()
@ENV
@INVENTORY
@OUTPUT
def releases(env, inventory, output):
    """The history: id, ref, commit, who, when, outcome, which hosts serve it."""
    sys.exit(verbs.releases(env, inventory=inventory, output=output))


@cli.command()
@ENV
@click.option("--app-env", default="production", show_default=True,
              help="the APP_ENV value the app's .env must have")
@INVENTORY
@OUTPUT
def preflight(env, app_env, inventory, output):
    """The go-live checklist as checks, with a pass/fail table (exit 3 on a failure)."""
    sys.exit(verbs.preflight(env, inventory=inventory, output=output, expect_app_env=app_env))


@cli.command()
@ENV
@click.option("--release", default=None, help="release id, prefix or ref (default: the newest)")
@click.option("--out", default=None, help="file to write (default: reports/<env>-<release>.html)")
@INVENTORY
def report(env, release, out, inventory):
    """Write a self-contained HTML report of a deploy: timeline, gate samples, outcome."""
    sys.exit(verbs.report(env, release=release, out=out, inventory=inventory))


@cli.command()
@ENV
@INVENTORY
@OUTPUT
def status(env, inventory, output):
    """What each host serves, the lock, any in-flight deploy, maintenance state."""
    sys.exit(verbs.status(env, inventory=inventory, output=output))


@cli.command()
@ENV
@click.option("--force", is_flag=True, help="really break the lock")
@INVENTORY
@OUTPUT
def unlock(env, force, inventory, output):
    """Break a stale lock, printing who held it."""
    sys.exit(verbs.unlock(env, force=force, inventory=inventory, output=output))


@cli.command()
@ENV
@click.option("--force", is_flag=True,
              help="recover even if the lock holder looks alive, or the database may be mid-migration")
@INVENTORY
@OUTPUT
def recover(env, force, inventory, output):
    """After any crash: read the journal, the ledger and the hosts, then converge.

    Finishes a rollback, rolls a half-done deploy back to its snapshot, puts drained servers
    back, ends maintenance unless the database may be mid-migration (then says what to check
    and to run it again with --force), frees the dead run's lock. Running it twice changes
    nothing the second time. Exit 0 consistent; 3 a live run holds the lock; 4 needs a human.
    """
    sys.exit(verbs.recover(env, force=force, inventory=inventory, output=output))


@cli.group()
def maintenance() -> None:
    """Maintenance mode by hand, and the scheduled maintenance job."""


@maintenance.command("on")
@ENV
@click.option("--message", default="Down for maintenance", show_default=True)
@click.option("--retry", type=int, default=60, show_default=True, help="Retry-After seconds")
@click.option("--ttl", type=float, default=None, help="switch itself off after SECONDS")
@INVENTORY
@OUTPUT
def maintenance_on(env, message, retry, ttl, inventory, output):
    sys.exit(verbs.maintenance_mode(env, True, message=message, retry=retry, ttl=ttl,
                                    inventory=inventory, output=output))


@maintenance.command("off")
@ENV
@INVENTORY
@OUTPUT
def maintenance_off(env, inventory, output):
    sys.exit(verbs.maintenance_mode(env, False, inventory=inventory, output=output))


@maintenance.command("run")
@ENV
@click.option("--promote", is_flag=True, help="also promote a paused rollout")
@click.option("--force", is_flag=True, help="run outside a window (needs --reason)")
@click.option("--reason", default="")
@INVENTORY
@OUTPUT
def maintenance_run(env, promote, force, reason, inventory, output):
    """The job cron runs inside a window: backup + retention, maintenance tasks, gate."""
    sys.exit(verbs.maintenance_run(env, promote=promote, force=force, reason=reason,
                                   inventory=inventory, output=output))


@cli.group("cron")
def cron_group() -> None:
    """Crontab lines of an env's scheduled jobs."""


@cron_group.command("show")
@ENV
@INVENTORY
def cron_show(env, inventory):
    sys.exit(verbs.cron(env, "show", inventory=inventory))


@cron_group.command("install")
@ENV
@INVENTORY
def cron_install(env, inventory):
    sys.exit(verbs.cron(env, "install", inventory=inventory))


@cron_group.command("remove")
@ENV
@INVENTORY
def cron_remove(env, inventory):
    sys.exit(verbs.cron(env, "remove", inventory=inventory))


@cli.group()
def fleet() -> None:
    """The local fleet of real SSH hosts (needs root)."""


@fleet.command("up")
@click.option("--web", type=int, default=3, show_default=True)
@click.option("--keep-data", is_flag=True, help="keep the hosts' /srv, database and ledger")
def fleet_up(web, keep_data):
    sys.exit(verbs.fleet_up(web, keep_data))


@fleet.command("down")
def fleet_down():
    sys.exit(verbs.fleet_down())


@fleet.command("status")
def fleet_status():
    sys.exit(verbs.fleet_status())


def main() -> None:
    cli(prog_name="deployer")


if __name__ == "__main__":
    main()
