"""The `deployer` command line, and the one definition of every verb.

The Invoke tasks (tasks.py) are generated from these click commands: same names, options, help
and exit codes (`inv deploy --help` prints this help). Each command returns its exit code
(deployer/verbs.py); `Verb.main` exits with it. Errors are one line on stderr: usage errors
exit 2, DeployerErrors their own code, anything unexpected 4 (the traceback with --verbose).
"""

from __future__ import annotations

import logging
import sys

import click

from . import DISTRIBUTION, __version__, verbs
from .errors import DeployerError, interrupted

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# paramiko logs the tracebacks of failed handshakes from its own threads; deployer reports the
# failure itself, in one line (`--verbose` lets the library's logs through).
logging.getLogger("paramiko").addHandler(logging.NullHandler())


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    return value if isinstance(value, int) else 1


class _OneLineErrors:
    """`main` for commands and groups: run without click's standalone handling, then exit with
    the command's return value; a usage error is ONE line (`error: ... (see 'X --help')`), exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # a group without its subcommand
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
            rv = 2
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else (prog_name or "deployer")
            click.echo(f"error: {exc.format_message()} (see '{where} --help')", err=True)
            rv = exc.exit_code
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            rv = exc.exit_code
        except click.Abort:
            click.echo("interrupted", err=True)
            rv = 130
        if not standalone_mode:
            return rv
        sys.exit(_exit_code(rv))


class Verb(_OneLineErrors, click.Command):
    """A command whose errors never show a traceback (unless --verbose). Its context settings
    are its own (-h, --help), also when Invoke runs it without its group."""

    def __init__(self, *args, context_settings=None, **kwargs):
        super().__init__(*args, context_settings={**CONTEXT, **(context_settings or {})}, **kwargs)

    def invoke(self, ctx: click.Context):
        verbose = bool(ctx.params.get("verbose"))
        if verbose:
            logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except DeployerError as exc:  # raised outside verbs.guarded
            click.echo(f"error: {exc.message}", err=True)
            return exc.exit_code
        except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - one line, exit 130 or 4
            if interrupted(exc):
                click.echo("interrupted", err=True)
                return 130
            click.echo(verbs.unexpected(exc, verbose), err=True)
            return 4


class VerbGroup(_OneLineErrors, click.Group):
    command_class = Verb
    group_class = type  # subgroups are VerbGroups too


# -- options shared by the commands ------------------------------------------------------------

OFFLINE = click.option("--offline", is_flag=True,
                       help="with --dry-run: contact nothing (no host, no ledger); the plan is built from "
                            "assumed facts, each one listed")
ENV = click.option("--env", "-e", required=True, metavar="ENV",
                   help="the environment: its inventory is hosts/<ENV>.yaml")
VERBOSE = click.option("--verbose", "-v", is_flag=True,
                       help="more detail: every host step and gate verdict; tracebacks of unexpected errors")
OUTPUT = click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True,
                      help="text for humans (live on a terminal), json: one event per line (`deployer docs events`)")
ROOT = click.option("--root", metavar="DIR", default=None,
                    help="the project root, with hosts/ and playbooks/ (default: $DEPLOYER_ROOT, else "
                         "the nearest of the current directory and its parents with hosts/)")
INVENTORY = click.option("--inventory", metavar="FILE", default=None,
                         help="this inventory file instead of hosts/<ENV>.yaml")
SET = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                   help="set a config key above every other layer (dotted key, YAML value; repeatable), "
                        "e.g. --set parallel=5")
HOSTS = click.option("--hosts", metavar="H1,H2", default=None,
                     help="only these hosts (comma-separated names from the inventory)")
ROLES = click.option("--roles", metavar="R1,R2", default=None,
                     help="only the hosts with one of these roles (comma-separated)")


def common(*, hosts: bool = False, output: bool = True):
    """The options every command that reads an environment has: --root, --inventory, --set,
    [--hosts, --roles,] [--output,] --verbose (listed after the command's own options)."""
    options = [ROOT, INVENTORY, SET] + ([HOSTS, ROLES] if hosts else []) + ([OUTPUT] if output else [])
    options.append(VERBOSE)

    def apply(f):
        for option in reversed(options):
            f = option(f)
        return f

    return apply


@click.group(cls=VerbGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="deployer",
                      message=f"%(prog)s %(version)s (pip: {DISTRIBUTION})")
def cli() -> None:
    """Deploy and roll back web apps over SSH, safely.

    Exit codes, for every command: 0 done; 1 the deploy failed and was rolled back; 2 bad input
    or config, nothing touched; 3 refused (lock held, outside a window, unreachable host, not
    confirmed), nothing touched; 4 needs a human (`status` says what to do); 130 interrupted.
    """


@cli.command()
@ENV
@click.option("--ref", default="main", show_default=True, help="git ref to deploy (branch, tag or commit)")
@click.option("--dry-run", is_flag=True, help="print every stage x host x command; change nothing")
@OFFLINE
@click.option("--yes", "-y", is_flag=True,
              help="do not ask for confirmation (asked only when stdin and stdout are a terminal)")
@click.option("--maintenance/--no-maintenance", default=None,
              help="force maintenance mode on, or off (default: only when a migration needs it)")
@click.option("--lock-wait", type=float, default=0.0, show_default=True, metavar="SECONDS",
              help="wait this long for the env's lock instead of refusing")
@click.option("--reason", default="", help="why (recorded in the lock and the ledger)")
@click.option("--force", is_flag=True, help="deploy outside a window or in a freeze (needs --reason)")
@common(hosts=True)
def deploy(env, ref, dry_run, yes, maintenance, **kw):
    """The whole pipeline, with automatic rollback when a gate fails.

    `--dry-run --offline` prints the plan without any host: from assumed facts (no release served,
    the ref's commit from the repository when it is on this machine), each assumption listed."""
    return verbs.deploy(env, ref, dry_run=dry_run, yes=yes, maintenance=maintenance, **kw)


@cli.command()
@ENV
@click.option("--to", default=None, metavar="RELEASE",
              help="release id, unique prefix, or the git ref it came from (default: the previous good one)")
@click.option("--restore-db", is_flag=True, help="restore the backup taken when the target was left")
@click.option("--keep-db", is_flag=True, help="switch the code only, leave the database as it is")
@click.option("--restore-files", is_flag=True,
              help="put back the app's files (backup.files) from each host's archive taken while the target served")
@click.option("--lock-wait", type=float, default=0.0, show_default=True, metavar="SECONDS",
              help="wait this long for the env's lock instead of refusing")
@click.option("--dry-run", is_flag=True, help="print every stage x host x command; change nothing")
@OFFLINE
@click.option("--yes", "-y", is_flag=True,
              help="do not ask for confirmation (asked only when stdin and stdout are a terminal)")
@common(hosts=True)
def rollback(env, **kw):
    """Back to the previous good release, or to a named one.

    `--dry-run --offline` prints the plan to `--to RELEASE` (a full release id) without any host."""
    return verbs.rollback(env, **kw)


@cli.command()
@ENV
@common()
def promote(env, **kw):
    """Continue a paused progressive rollout (from any machine).

    It works on the hosts the paused run recorded: no --hosts/--roles."""
    return verbs.resume(env, "promote", **kw)


@cli.command()
@ENV
@common()
def abort(env, **kw):
    """Abort a paused rollout: every host back to its snapshot.

    It works on the hosts the paused run recorded: no --hosts/--roles."""
    return verbs.resume(env, "abort", **kw)


@cli.command()
@ENV
@common(hosts=True)
def releases(env, **kw):
    """The history: id, ref, commit, who, when, outcome, which hosts serve it."""
    return verbs.releases(env, **kw)


@cli.command()
@ENV
@click.option("--app-env", default="production", show_default=True,
              help="the APP_ENV value the app's .env must have")
@common(hosts=True)
def preflight(env, app_env, **kw):
    """The go-live checklist as checks, with a pass/fail table (exit 3 on a failure)."""
    return verbs.preflight(env, expect_app_env=app_env, **kw)


@cli.command()
@ENV
@click.option("--release", default=None, metavar="RELEASE",
              help="release id, prefix or ref (default: the newest)")
@click.option("--out", default=None, metavar="FILE",
              help="file to write (default: reports/<env>-<release>.html in the current directory)")
@common()
def report(env, **kw):
    """Write a self-contained HTML report of a deploy: timeline, gate samples, outcome."""
    return verbs.report(env, **kw)


@cli.command()
@ENV
@click.option("--files", is_flag=True, required=True, help="the app's own files (backup.files): the one kind so far")
@click.option("--at", "stamp", default=None, metavar="STAMP",
              help="the nightly archive of that UTC time, e.g. 20261207T020000Z (default: each host's newest)")
@click.option("--dry-run", is_flag=True, help="print every stage x host x command; change nothing")
@click.option("--yes", "-y", is_flag=True,
              help="do not ask for confirmation (asked only when stdin and stdout are a terminal)")
@common()
def restore(env, **kw):
    """Put back the app's files (backup.files) on each app host from a nightly archive.

    Under the env's lock; each path is swapped in whole (never half-extracted)."""
    return verbs.restore(env, **kw)


@cli.command()
@ENV
@common(hosts=True)
def status(env, **kw):
    """What each host serves, the lock, any in-flight deploy, maintenance state."""
    return verbs.status(env, **kw)


@cli.command()
@ENV
@click.option("--force", is_flag=True, help="really break the lock")
@click.option("--reason", default="", help="why: needed to break the lock of a run alive on this machine "
                                           "(recorded in the ledger)")
@common()
def unlock(env, **kw):
    """Break a stale lock, printing who held it (holder, run, pid).

    `inv recover --env E` is the usual way out of a dead run's lock: it converges what the run
    left, then frees it. A holder alive on this machine is refused unless --reason is given.
    """
    return verbs.unlock(env, **kw)


@cli.command()
@ENV
@click.option("--force", is_flag=True,
              help="recover even if the lock holder looks alive, or the database may be mid-migration "
                   "(needs --reason)")
@click.option("--reason", default="", help="why (recorded in the lock and the ledger)")
@common()
def recover(env, **kw):
    """After any crash: read the journal, the ledger and the hosts, then converge.

    Finishes a rollback, rolls a half-done deploy back to its snapshot, puts drained servers
    back, ends maintenance unless the database may be mid-migration (then says what to check
    and to run it again with --force), frees the dead run's lock. Running it twice changes
    nothing the second time. Exit 0 consistent; 3 a live run holds the lock; 4 needs a human.
    It works on every host of the env: no --hosts/--roles.
    """
    return verbs.recover(env, **kw)


@cli.command("exec", context_settings={**CONTEXT, "allow_interspersed_args": False})
@ENV
@common(hosts=True)
@click.argument("command", nargs=-1, required=True, metavar="-- COMMAND...")
def exec_(env, command, **kw):
    """Run an ad-hoc command on the selected hosts, in parallel, output per host.

    Without --hosts/--roles: every host of the env. Each output line is prefixed `host | `.
    Several words are run as that argv, each word quoted; a single word with shell syntax in it
    (`'df -h | tail -1'`) is run by the remote shell. Exit 0 when it succeeded everywhere, 1 when
    it failed somewhere (the last line names the hosts and their exit codes), 3 when no host
    could be reached.
    """
    return verbs.exec_(env, command, **kw)


@cli.command()
@click.option("--kind", type=click.Choice(["laravel", "django", "node", "demo"]), default="demo",
              show_default=True, help="the shipped playbook your app's playbook extends")
@click.option("--env", "-e", default="production", show_default=True, metavar="ENV",
              help="the environment whose inventory to write: hosts/<ENV>.yaml")
@click.option("--app", default=None, metavar="NAME",
              help="your app's playbook name: playbooks/<NAME>.yaml (default: the directory's name)")
@click.option("--force", is_flag=True, help="overwrite files that exist")
@ROOT
@VERBOSE
def init(**kw):
    """Write a commented inventory and playbook into the project (the current directory).

    hosts/<ENV>.yaml (every key explained, placeholder addresses), hosts/known_hosts (empty: fill
    it with your hosts' keys), playbooks/<NAME>.yaml (extends the shipped playbook of --kind,
    with commented override examples) and deploy/sudoers (the sudo rules of the SSH user: what
    the playbook runs as root, and nothing else). Refuses to overwrite the inventory or the
    playbook without --force (exit 3).
    """
    return verbs.init(**kw)


def _topics(ctx, param, incomplete: str) -> list[str]:
    from .manual import topics

    return [name for name in topics() if name.startswith(incomplete)]


@cli.command()
@click.argument("topic", required=False, metavar="[TOPIC]", shell_complete=_topics)
@VERBOSE
def docs(**kw):
    """The documentation installed with deployer: its topics, or one topic.

    Without TOPIC: each topic and its title, and the directory of the files. With it (e.g.
    `deployer docs configuration`): the topic's Markdown, paged on a terminal, then its file's
    path on stderr. An unknown topic is exit 2, naming the topics.
    """
    return verbs.docs(**kw)


@cli.group(cls=VerbGroup, context_settings=CONTEXT)
def maintenance() -> None:
    """Maintenance mode by hand, and the scheduled maintenance job."""


@maintenance.command("on")
@ENV
@click.option("--message", default="Down for maintenance", show_default=True,
              help="what the maintenance page says")
@click.option("--retry", type=int, default=60, show_default=True, metavar="SECONDS",
              help="the Retry-After the app answers with")
@click.option("--ttl", type=float, default=None, metavar="SECONDS",
              help="switch itself off after this long (default: never)")
@common(hosts=True)
def maintenance_on(env, **kw):
    """Maintenance mode on, by hand, on the web hosts."""
    return verbs.maintenance_mode(env, True, **kw)


@maintenance.command("off")
@ENV
@common(hosts=True)
def maintenance_off(env, **kw):
    """Maintenance mode off, by hand, on the web hosts."""
    return verbs.maintenance_mode(env, False, **kw)


@maintenance.command("run")
@ENV
@click.option("--promote", is_flag=True, help="also promote a paused rollout")
@click.option("--force", is_flag=True, help="run outside a window (needs --reason)")
@click.option("--reason", default="", help="why (recorded in the lock and the ledger)")
@common(hosts=True)
def maintenance_run(env, **kw):
    """The job cron runs inside a window: backup + retention, maintenance tasks, gate."""
    return verbs.maintenance_run(env, **kw)


@cli.group("secrets", cls=VerbGroup, context_settings=CONTEXT)
def secrets_group() -> None:
    """Secret files: rotate one as a release, through the gate."""


@secrets_group.command("set")
@ENV
@click.argument("name", metavar="NAME")
@click.option("--from-env", "from_env", default=None, metavar="VAR",
              help="the new content is this environment variable's value (default: read from stdin)")
@click.option("--lock-wait", type=float, default=0.0, show_default=True, metavar="SECONDS",
              help="wait this long for the env's lock instead of refusing")
@click.option("--dry-run", is_flag=True, help="print every stage x host x command; change nothing")
@click.option("--yes", "-y", is_flag=True,
              help="do not ask for confirmation (asked only when stdin and stdout are a terminal)")
@common()
def secrets_set(env, name, **kw):
    """Rotate the secret file NAME, one the releases link from shared/ (e.g. .env).

    A new release of the commit every app host serves, with NAME's new content as its own file,
    rolled out in waves through the gate; a failing gate gives back the previous release with
    the previous content. Passed, the content becomes shared/NAME. The content comes from stdin
    or --from-env, never from the command line, and is never printed. With inv: `inv secrets.set
    --env prod -- .env < new.env`."""
    return verbs.secrets_set(env, name, **kw)


@cli.group("cron", cls=VerbGroup, context_settings=CONTEXT)
def cron_group() -> None:
    """Crontab lines of an env's scheduled jobs (`schedules:` in the inventory)."""


@cron_group.command("show")
@ENV
@common(output=False)
def cron_show(env, **kw):
    """Print the crontab lines of the env's scheduled jobs."""
    return verbs.cron(env, "show", **kw)


@cron_group.command("install")
@ENV
@common(output=False)
def cron_install(env, **kw):
    """Install them in this machine's crontab (a marked block, idempotent)."""
    return verbs.cron(env, "install", **kw)


@cron_group.command("remove")
@ENV
@common(output=False)
def cron_remove(env, **kw):
    """Remove the env's block from this machine's crontab."""
    return verbs.cron(env, "remove", **kw)


@cli.group("config", cls=VerbGroup, context_settings=CONTEXT)
def config_group() -> None:
    """An environment's configuration, read and validated here: no host is contacted."""


@config_group.command("show")
@ENV
@common()
def config_show(env, **kw):
    """Every setting of the env, merged, with the layer that set it (a playbook's defaults, the
    inventory, an environment variable, --set, or the built-in default). Secrets are masked:
    only the names and paths they come from are shown."""
    return verbs.config_show(env, **kw)


@config_group.command("check")
@ENV
@common()
def config_check(env, **kw):
    """Validate the env's inventory and playbook (exit 2 naming the file and key of each error),
    else print one line saying what was checked."""
    return verbs.config_check(env, **kw)


@cli.group(cls=VerbGroup, context_settings=CONTEXT)
def fleet() -> None:
    """The local fleet of real SSH hosts used by the demo and the tests (needs root)."""


@fleet.command("up")
@click.option("--web", type=int, default=3, show_default=True, metavar="N", help="number of web hosts")
@click.option("--keep-data", is_flag=True, help="keep the hosts' /srv, database and ledger")
@VERBOSE
def fleet_up(web, keep_data, verbose):
    """Bring the local fleet up (clears what a crash left first)."""
    return verbs.fleet_up(web, keep_data, verbose=verbose)


@fleet.command("down")
@VERBOSE
def fleet_down(verbose):
    """Tear the local fleet down: no namespace, mount, bridge or process left."""
    return verbs.fleet_down(verbose=verbose)


@fleet.command("status")
@VERBOSE
def fleet_status(verbose):
    """Each fleet host: alive, SSH answering."""
    return verbs.fleet_status(verbose=verbose)


@cli.command()
@click.option("--keep", is_flag=True, help="leave the fleet up afterwards")
@VERBOSE
def demo(keep, verbose):
    """The main job: fleet up, deploy v1 then v2, then bad releases that roll back by themselves."""
    return verbs.demo(keep, verbose=verbose)


def main() -> None:
    verbs.exit_now(_exit_code(cli.main(prog_name="deployer", standalone_mode=False)))


if __name__ == "__main__":
    main()
