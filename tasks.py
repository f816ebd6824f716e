"""Invoke tasks: `inv deploy --env prod`, `inv rollback --env prod --to v1`, `inv fleet.up`, ...

The same verbs as the `deployer` CLI (deployer/cli.py); both call deployer/verbs.py.
"""

from __future__ import annotations

from invoke import Collection, Exit, task

from deployer import verbs


def _exit(code: int) -> None:
    if code:
        raise Exit(code=code)


@task(help={"env": "environment (hosts/<env>.yaml)", "ref": "git ref to deploy",
            "dry-run": "print every stage x host x command; touch nothing",
            "yes": "never prompt", "lock-wait": "seconds to wait for the lock",
            "maintenance": "force maintenance mode on (--maintenance) or off (--no-maintenance)",
            "inventory": "inventory file instead of hosts/<env>.yaml", "output": "text or json"})
def deploy(c, env, ref="main", dry_run=False, yes=False, maintenance=None, lock_wait=0.0, reason="",
           force=False, inventory=None, output="text", verbose=False):
    """The whole pipeline, with automatic rollback when a gate fails."""
    if isinstance(maintenance, str):
        maintenance = maintenance.lower() in ("1", "true", "on", "yes")
    _exit(verbs.deploy(env, ref, dry_run=dry_run, inventory=inventory, output=output,
                       maintenance=maintenance, lock_wait=float(lock_wait), reason=reason,
                       verbose=verbose, force=force))


@task(help={"to": "release id, unique prefix, or the git ref it was deployed from",
            "restore-db": "restore the backup taken when the target was left",
            "keep-db": "switch the code only"})
def rollback(c, env, to=None, restore_db=False, keep_db=False, inventory=None, output="text",
             lock_wait=0.0, dry_run=False):
    """Back to the previous good release, or to a named one."""
    _exit(verbs.rollback(env, to=to, restore_db=restore_db, keep_db=keep_db, inventory=inventory,
                         output=output, lock_wait=float(lock_wait), dry_run=dry_run))


@task
def promote(c, env, inventory=None, output="text"):
    """Continue a paused progressive rollout (from any machine, cron included)."""
    _exit(verbs.resume(env, "promote", inventory=inventory, output=output))


@task
def abort(c, env, inventory=None, output="text"):
    """Abort a paused rollout: every host back to its snapshot."""
    _exit(verbs.resume(env, "abort", inventory=inventory, output=output))


@task
def releases(c, env, inventory=None, output="text"):
    """The history: id, ref, commit, who, when, outcome, which hosts serve it."""
    _exit(verbs.releases(env, inventory=inventory, output=output))


@task(help={"app-env": "the APP_ENV value the app's .env must have (default production)"})
def preflight(c, env, app_env="production", inventory=None, output="text"):
    """The go-live checklist as checks, with a pass/fail table (exit 3 on a failure)."""
    _exit(verbs.preflight(env, inventory=inventory, output=output, expect_app_env=app_env))


@task(help={"release": "release id, prefix or ref (default: the newest)", "out": "file to write"})
def report(c, env, release=None, out=None, inventory=None):
    """Write a self-contained HTML report of a deploy (timeline, gate samples, outcome)."""
    _exit(verbs.report(env, release=release, out=out, inventory=inventory))


@task
def status(c, env, inventory=None, output="text"):
    """What each host serves, the lock, in-flight deploys, maintenance state."""
    _exit(verbs.status(env, inventory=inventory, output=output))


@task
def unlock(c, env, force=False, inventory=None, output="text"):
    """Break a stale lock (--force), printing who held it."""
    _exit(verbs.unlock(env, force=force, inventory=inventory, output=output))


@task(help={"force": "recover even if the lock holder looks alive, or the database may be mid-migration"})
def recover(c, env, force=False, inventory=None, output="text"):
    """After any crash: read the journal, the ledger and the hosts; converge (finish or undo), free the lock."""
    _exit(verbs.recover(env, force=force, inventory=inventory, output=output))


@task(name="up", help={"web": "number of web hosts (default 3)",
                       "keep-data": "keep the hosts' /srv, database and ledger"})
def fleet_up(c, web=3, keep_data=False):
    """Bring the local fleet up (clears what a crash left first)."""
    _exit(verbs.fleet_up(int(web), keep_data))


@task(name="down")
def fleet_down(c):
    """Tear the local fleet down: no namespace, mount, bridge or process left."""
    _exit(verbs.fleet_down())


@task(name="status")
def fleet_status(c):
    """Each fleet host: alive, SSH answering."""
    _exit(verbs.fleet_status())


@task(help={"keep": "leave the fleet up afterwards"})
def demo(c, keep=False):
    """The main job: fleet up, deploy v1 then v2, then a bad release that rolls back by itself."""
    from deployer.demo import run_demo

    _exit(run_demo(keep=keep))


@task(name="on", help={"ttl": "switch itself off after SECONDS (default: never)"})
def maintenance_on(c, env, message="Down for maintenance", retry=60, ttl=None, inventory=None,
                   output="text"):
    """Maintenance mode on, by hand."""
    _exit(verbs.maintenance_mode(env, True, message=message, retry=int(retry),
                                 ttl=float(ttl) if ttl else None, inventory=inventory, output=output))


@task(name="off")
def maintenance_off(c, env, inventory=None, output="text"):
    """Maintenance mode off, by hand."""
    _exit(verbs.maintenance_mode(env, False, inventory=inventory, output=output))


@task(name="run", help={"promote": "also promote a paused rollout"})
def maintenance_run(c, env, promote=False, force=False, reason="", inventory=None, output="text"):
    """The scheduled maintenance job (cron): window, lock, backup + retention, tasks, gate."""
    _exit(verbs.maintenance_run(env, promote=promote, force=force, reason=reason,
                                inventory=inventory, output=output))


@task(name="show")
def cron_show(c, env, inventory=None):
    """The crontab lines of the env's scheduled jobs."""
    _exit(verbs.cron(env, "show", inventory=inventory))


@task(name="install")
def cron_install(c, env, inventory=None):
    """Install them in this machine's crontab (a marked block, idempotent)."""
    _exit(verbs.cron(env, "install", inventory=inventory))


@task(name="remove")
def cron_remove(c, env, inventory=None):
    """Remove the env's block from this machine's crontab."""
    _exit(verbs.cron(env, "remove", inventory=inventory))


maintenance = Collection("maintenance")
for t in (maintenance_on, maintenance_off, maintenance_run):
    maintenance.add_task(t)
cron = Collection("cron")
for t in (cron_show, cron_install, cron_remove):
    cron.add_task(t)

fleet = Collection("fleet")
fleet.add_task(fleet_up)
fleet.add_task(fleet_down)
fleet.add_task(fleet_status)

ns = Collection(deploy, rollback, promote, abort, releases, status, unlock, recover, preflight, report, demo,
                fleet, maintenance, cron)
