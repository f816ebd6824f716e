"""The verbs shared by the click CLI and the Invoke tasks; each returns the exit code.

Every verb that reads an environment takes the same scope keywords, passed on to `config()`:
`inventory` (a file instead of hosts/<env>.yaml), `root` (the project root), `sets` (``--set
key=value`` items), and, for the verbs that work on hosts, `hosts` / `roles` (comma-separated
names that narrow the app hosts: `Config.narrow`).
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from .config import Config, parse_set
from .config.loading import load_layered
from .errors import ConfigError, DeployerError, Refused, interrupted
from .output import Reporter, reporter_for


def _sigterm_as_interrupt() -> None:
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        pass


def unexpected(exc: BaseException, verbose: bool = False) -> str:
    """One line for an error deployer did not expect (a bug, or the machine): type and the
    first line of the message; the traceback goes to stderr only with --verbose."""
    text = str(exc).strip().splitlines()
    line = f"error: {type(exc).__name__}" + (f": {text[0]}" if text else "")
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    else:
        line += " (--verbose shows the traceback)"
    return line


def guarded(fn: Callable[[Reporter], int], output: str = "text", verbose: bool = False,
            command: str = "") -> int:
    """Run a verb; turn errors into their exit code and a message on stderr (never a traceback,
    unless --verbose). On GitHub Actions ($GITHUB_STEP_SUMMARY), the run's summary is appended
    to the job's page."""
    reporter = reporter_for(output, verbose)
    _sigterm_as_interrupt()
    code = 0

    def record_error(exit_code: int, message: str, hint: str | None) -> None:
        if output == "json":
            reporter.event("error", exit_code=exit_code, message=message, hint=hint)
        else:
            reporter.events.append({"event": "error", "exit_code": exit_code, "message": message,
                                    "hint": hint})

    try:
        code = fn(reporter)
        return code
    except DeployerError as exc:
        code = exc.exit_code
        reporter.close()
        record_error(exc.exit_code, exc.message, exc.hint)
        reporter.failed(exc.exit_code, exc.message)
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - the last line of defence
        reporter.close()
        if interrupted(exc):
            code = 130
            print("interrupted", file=sys.stderr)
            return 130
        code = 4  # one line, exit 4
        line = unexpected(exc, verbose)
        record_error(4, line.removeprefix("error: "), None)
        reporter.failed(4, line)
        print(line, file=sys.stderr)
        return 4
    finally:
        reporter.close()
        if command and os.environ.get("GITHUB_STEP_SUMMARY"):
            from .summary import markdown, write_step_summary

            write_step_summary(markdown(reporter.events, env=reporter.context.get("env", ""),
                                        command=command, exit_code=code))


def exit_now(code: int) -> None:
    """End the program once its verb has ended (journal shipped, lock released, connections
    closed, worker threads joined): the exit handlers run (private files removed, logs
    flushed), then the process exits without the interpreter's teardown, which takes 0.1 s for
    nothing. The usual exit when a thread is still at work (it is waited for) or a tracer or
    profiler is on (coverage and cProfile write their data at exit)."""
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is None or sys.gettrace() is not None or sys.getprofile() is not None or any(
            t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    run_exit_handlers()  # what was registered to run at exit: private files removed, logs flushed
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`): nothing more can be written
            pass
    os._exit(code)


def with_notifiers(rep: Reporter, cfg: Config, ref: str = "") -> None:
    rep.context.update(env=cfg.env, ref=ref)
    if not cfg.notify:
        rep.notifiers = []
        return
    from .notify import notifiers_from_config  # (smtplib, ssl, http: only when configured)

    rep.notifiers = notifiers_from_config(cfg.notify, os.environ)


def names(text: str | Iterable[str] | None, option: str) -> list[str]:
    """``web1,web2`` (or several such items) as a list of names; an empty name is an error."""
    if text is None:
        return []
    items = [text] if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in items:
        parts = [p.strip() for p in item.split(",")]
        if not all(parts):
            raise ConfigError(f"{option} {item!r}: expected names separated by commas, e.g. "
                              f"{option} web1,web2")
        out += parts
    return out


def config(env: str, inventory: str | None = None, overrides: dict | None = None, *,
           root: str | None = None, sets: Iterable[str] = (), hosts: str | None = None,
           roles: str | None = None, rep: Reporter | None = None, migrates: bool = False) -> Config:
    """Load the environment (``--set`` items as the top layer) and narrow it to ``--hosts`` /
    ``--roles``; with `rep`, say which app hosts are left (and, for a command that `migrates`,
    that leaving the migrate host out means no migration)."""
    layered = {**(overrides or {}), **parse_set(sets)}
    cfg = _load_layered(env, inventory=inventory, root=root, overrides=layered).config
    narrowed = cfg.narrow(names(hosts, "--hosts"), names(roles, "--roles"))
    if rep is not None and narrowed is not cfg:
        rep.event("notice", message=f"{cfg.env}: narrowed to app hosts "
                                    f"{', '.join(h.name for h in narrowed.app_hosts) or '(none)'}")
        if migrates and cfg.migrate_host is not None and narrowed.migrate_host is None:
            rep.event("notice", message=f"{cfg.env}: the migrate host {cfg.migrate_host.name} is not "
                                        "selected: this run runs no migration")
    return narrowed


def confirm(question: str, yes: bool = False) -> None:
    """Ask before changing the fleet, when a human is at a terminal (stdin and stdout are TTYs)
    and --yes was not given; anything but y/yes refuses (exit 3, nothing touched)."""
    if yes or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline()
    except (EOFError, OSError):
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise Refused("not confirmed: nothing was changed", hint="--yes skips this question")


def check_lock_wait(lock_wait: float) -> float:
    """--lock-wait is a number of seconds, never negative (bad input: exit 2)."""
    if not lock_wait >= 0:
        raise ConfigError(f"--lock-wait {lock_wait:g}: expected a number of seconds >= 0")
    return lock_wait


def check_forced(force: bool, reason: str, skips: str) -> None:
    """--force skips a safety (`skips` says which): it needs a --reason, recorded with the run."""
    if force and not reason.strip():
        raise ConfigError(f"--force ({skips}): --reason is required (it is recorded in the lock "
                          "and the ledger)")


def check_offline(offline: bool, dry_run: bool) -> None:
    if offline and not dry_run:
        raise ConfigError("--offline needs --dry-run: only a plan can be shown without the hosts")


def _hosts_line(cfg: Config) -> str:
    app = [h.name for h in cfg.app_hosts]
    shown = ", ".join(app[:8]) + (f", ... ({len(app)} in all)" if len(app) > 8 else "")
    return f"{len(app)} app host{'s' if len(app) != 1 else ''} ({shown})"


def deploy(env: str, ref: str = "main", *, dry_run: bool = False, offline: bool = False,
           yes: bool = False, maintenance: bool | None = None, lock_wait: float = 0.0,
           reason: str = "", force: bool = False, output: str = "text", verbose: bool = False,
           **scope) -> int:
    def go(rep: Reporter) -> int:
        from .engine.deploy import DeployRun
        from .release_id import validate_ref

        check_offline(offline, dry_run)
        check_lock_wait(lock_wait)
        check_forced(force, reason, "deploys outside a window or in a freeze")
        validate_ref(ref)
        cfg = config(env, rep=rep, migrates=True, **scope)
        with_notifiers(rep, cfg, ref)
        if not dry_run:
            confirm(f"deploy {ref} to {cfg.env}: {_hosts_line(cfg)}?", yes)
        d = DeployRun(cfg, rep, ref=ref, maintenance=maintenance, lock_wait=lock_wait, reason=reason,
                      force=force or dry_run)
        if offline:
            return d.offline_dry_run()
        return d.dry_run() if dry_run else d.run()

    return guarded(go, output, verbose, command="deploy")


def secrets_set(env: str, name: str, *, from_env: str | None = None, lock_wait: float = 0.0,
                dry_run: bool = False, yes: bool = False, output: str = "text", verbose: bool = False,
                **scope) -> int:
    """`secrets set`: a secret file rotated as a release (deployer.engine.rotate)."""

    def go(rep: Reporter) -> int:
        from .engine import rotate

        check_lock_wait(lock_wait)
        cfg = config(env, rep=rep, migrates=True, **scope)
        rotate.check_name(cfg, name)
        value = rotate.read_value(name, from_env, os.environ, sys.stdin)
        with_notifiers(rep, cfg, f"secret {name}")
        from .session import Session

        s = Session(cfg, rep, reason=rotate.reason(name))  # one session: the check, then the deploy
        try:
            commit = rotate.served_commit(cfg, s)
            if not dry_run:
                confirm(f"rotate {name} on {cfg.env} (a release of {commit[:7]} through the gate): "
                        f"{_hosts_line(cfg)}?", yes)
        except BaseException:
            s.close()
            raise
        d = rotate.run(cfg, rep, name=name, value=value, commit=commit, lock_wait=lock_wait, session=s)
        return d.dry_run() if dry_run else d.run()

    return guarded(go, output, verbose, command="secrets set")


def rollback(env: str, *, to: str | None = None, restore_db: bool = False, keep_db: bool = False,
             restore_files: bool = False, lock_wait: float = 0.0, dry_run: bool = False, offline: bool = False, yes: bool = False,
             output: str = "text", verbose: bool = False, **scope) -> int:
    def go(rep: Reporter) -> int:
        from .engine.rollback import Rollback
        from .release_id import validate_target

        check_offline(offline, dry_run)
        check_lock_wait(lock_wait)
        if to is not None:
            validate_target(to)
        cfg = config(env, rep=rep, migrates=True, **scope)
        with_notifiers(rep, cfg, to or "")
        if not dry_run:
            confirm(f"roll {cfg.env} back to {to or 'the previous good release'}: {_hosts_line(cfg)}"
                    + (", database restored" if restore_db else "")
                    + (", files restored" if restore_files else "") + "?", yes)
        rb = Rollback(cfg, rep, to=to, restore_db=restore_db, keep_db=keep_db,
                      lock_wait=lock_wait, dry_run=dry_run, restore_files=restore_files)
        return rb.offline_dry_run() if offline else rb.run()

    return guarded(go, output, verbose, command="rollback")


def resume(env: str, action: str, *, output: str = "text", verbose: bool = False, **scope) -> int:
    def go(rep: Reporter) -> int:
        from .engine.rollback import Resume

        cfg = config(env, **scope)
        with_notifiers(rep, cfg)
        return Resume(cfg, rep, action).run()

    return guarded(go, output, verbose, command=action)


def preflight(env: str, *, expect_app_env: str | None = "production", output: str = "text",
              verbose: bool = False, **scope) -> int:
    from . import inspect

    return guarded(lambda rep: inspect.preflight(config(env, rep=rep, **scope), rep,
                                                 expect_app_env=expect_app_env), output, verbose)


def report(env: str, *, release: str | None = None, out: str | None = None, output: str = "text",
           verbose: bool = False, **scope) -> int:
    """The HTML report goes to --out, else reports/<env>-<release>.html in the CURRENT directory
    (inspect.report writes under cfg.root: the root is the current directory for this)."""
    from . import inspect

    def go(rep: Reporter) -> int:
        cfg = config(env, **scope)
        if out is None:
            cfg = replace(cfg, root=Path.cwd())
        return inspect.report(cfg, rep, release=release, out=out)

    return guarded(go, output, verbose)


def status(env: str, *, output: str = "text", verbose: bool = False, **scope) -> int:
    from . import inspect

    return guarded(lambda rep: inspect.status(config(env, rep=rep, **scope), rep), output, verbose)


def releases(env: str, *, output: str = "text", verbose: bool = False, **scope) -> int:
    from . import inspect

    return guarded(lambda rep: inspect.releases(config(env, rep=rep, **scope), rep), output, verbose)


def unlock(env: str, *, force: bool = False, reason: str = "", output: str = "text", verbose: bool = False,
           **scope) -> int:
    from . import inspect

    return guarded(lambda rep: inspect.unlock(config(env, **scope), rep, force, reason), output, verbose)


def restore(env: str, *, files: bool, stamp: str | None = None, dry_run: bool = False, yes: bool = False,
            output: str = "text", verbose: bool = False, **scope) -> int:
    """`restore --files`: the app's files from a nightly archive (deployer.engine.restore)."""

    def go(rep: Reporter) -> int:
        from .engine.restore import run_restore

        cfg = config(env, **scope)
        if not files:
            raise ConfigError("restore: say what to restore: --files (the app's files; the database is "
                              "restored by `rollback --to <release> --restore-db`)")
        if stamp is not None and not re.fullmatch(r"\d{8}T\d{6}Z", stamp):
            raise ConfigError(f"--at {stamp!r}: expected a UTC time like 20261207T020000Z (see `inv status`)")
        with_notifiers(rep, cfg)
        if not dry_run:
            confirm(f"restore the app's files of {cfg.env} ({', '.join(cfg.file_backups) or 'none listed'}) "
                    f"from {'the archives of ' + stamp if stamp else 'their newest archives'}: "
                    f"{_hosts_line(cfg)}?", yes)
        return run_restore(cfg, rep, stamp=stamp, dry_run=dry_run)

    return guarded(go, output, verbose, command="restore")


def recover(env: str, *, force: bool = False, reason: str = "", output: str = "text",
            verbose: bool = False, **scope) -> int:
    def go(rep: Reporter) -> int:
        from .engine.recover import Recover

        check_forced(force, reason, "recovers past a live-looking lock holder or a database "
                                    "that may be mid-migration")
        cfg = config(env, **scope)
        with_notifiers(rep, cfg)
        return Recover(cfg, rep, force=force, reason=reason).run()

    return guarded(go, output, verbose, command="recover")


def exec_(env: str, command: Iterable[str], *, output: str = "text", verbose: bool = False,
          hosts: str | None = None, roles: str | None = None, **scope) -> int:
    """`exec`: an ad-hoc command on the selected hosts (every host when none is selected)."""
    from .execute import run_exec

    def go(rep: Reporter) -> int:
        cfg = config(env, **scope)
        targets = cfg.select(names(hosts, "--hosts"), names(roles, "--roles"))
        return run_exec(cfg, rep, targets, list(command))

    return guarded(go, output, verbose)


def init(*, kind: str = "demo", env: str = "production", app: str | None = None, force: bool = False,
         root: str | None = None, verbose: bool = False) -> int:
    """`init`: a commented inventory and playbook in the project (the current directory)."""
    from .init import write_project

    return guarded(lambda rep: write_project(Path(root) if root else Path.cwd(), rep, kind=kind,
                                             env=env, app=app, force=force), "text", verbose)


def config_show(env: str, *, output: str = "text", verbose: bool = False, inventory: str | None = None,
                root: str | None = None, sets: Iterable[str] = ()) -> int:
    """`config show`: every merged setting with the layer that set it, secrets masked."""
    from .config.provenance import settings
    from .inspect import _rows_table

    def go(rep: Reporter) -> int:
        loaded = _load_layered(env, inventory=inventory, root=root, overrides=parse_set(sets))
        rows = [[s.key, s.value, s.source] for s in settings(loaded)]
        _rows_table(f"{env}: configuration", ["key", "value", "source"], rows, rep)
        return 0

    return guarded(go, output, verbose)


def config_check(env: str, *, output: str = "text", verbose: bool = False, inventory: str | None = None,
                 root: str | None = None, sets: Iterable[str] = ()) -> int:
    """`config check`: load and validate everything, contacting nothing; one line when valid."""
    def go(rep: Reporter) -> int:
        cfg = _load_layered(env, inventory=inventory, root=root, overrides=parse_set(sets)).config
        app = len(cfg.app_hosts)
        rep.event("notice", message=(
            f"{cfg.env}: OK: {_rel(cfg.inventory_path, cfg.root)} with playbook {cfg.playbook.name} "
            f"({_rel(cfg.playbook_path, cfg.root)}): {len(cfg.hosts)} hosts ({app} app), "
            f"{len(cfg.schedules)} schedules; nothing contacted"))
        return 0

    return guarded(go, output, verbose)


def _load_layered(env: str, *, inventory: str | None, root: str | None, overrides: dict):
    """The environment with its layers (`--root`, `--inventory` and `--set` as given)."""
    if root is not None and not Path(root).is_dir():
        raise ConfigError(f"--root {root}: no such directory")
    return load_layered(env, root=Path(root) if root is not None else None,
                        inventory=Path(inventory) if inventory else None, overrides=overrides)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
def docs(topic: str | None = None, *, verbose: bool = False) -> int:
    """`docs`: the installed documentation's topics, or one topic (paged on a terminal), and
    where its file is."""
    from . import manual

    def go(rep: Reporter) -> int:
        if topic is None:
            print(manual.listing(), end="")
            return 0
        found = manual.topic(topic)
        _page(found.path.read_text(encoding="utf-8"))
        print(f"({found.title}: {found.path})", file=sys.stderr)
        return 0

    return guarded(go, "text", verbose)


def _page(text: str) -> None:
    if sys.stdout.isatty():
        import click

        click.echo_via_pager(text)
    else:
        print(text, end="")


def fleet_up(web: int = 3, keep_data: bool = False, *, verbose: bool = False) -> int:
    from .fleet.harness import Fleet

    return guarded(lambda rep: (Fleet().up(web, keep_data=keep_data), 0)[1], verbose=verbose)


def fleet_down(*, verbose: bool = False) -> int:
    from .fleet.harness import Fleet

    return guarded(lambda rep: (Fleet().down(), 0)[1], verbose=verbose)


def fleet_status(*, verbose: bool = False) -> int:
    from .fleet.harness import Fleet

    def go(rep: Reporter) -> int:
        rows = Fleet().status()
        if not rows:
            print("fleet: down")
            return 0
        for r in rows:
            print(f"{r['name']:<8} {r['address']:<14} {','.join(r['roles']):<20} "
                  f"{'up' if r['alive'] else 'DEAD':<5} ssh {'ok' if r['ssh'] else 'NO'}")
        return 0 if all(r["alive"] and r["ssh"] for r in rows) else 4

    return guarded(go, verbose=verbose)


def maintenance_mode(env: str, on: bool, *, message: str = "Down for maintenance", retry: int = 60,
                     ttl: float | None = None, output: str = "text", verbose: bool = False,
                     **scope) -> int:
    from . import maintenance as M

    return guarded(lambda rep: M.set_mode(config(env, rep=rep, **scope), rep, on=on, message=message,
                                          retry=retry, ttl=ttl), output, verbose)


def maintenance_run(env: str, *, promote: bool = False, force: bool = False, reason: str = "",
                    output: str = "text", verbose: bool = False, **scope) -> int:
    from . import maintenance as M

    def go(rep: Reporter) -> int:
        check_forced(force, reason, "runs outside a window")
        cfg = config(env, rep=rep, **scope)
        with_notifiers(rep, cfg)
        return M.run_window(cfg, rep, promote=promote, force=force, reason=reason)

    return guarded(go, output, verbose, command="maintenance.run")


def cron(env: str, action: str, *, verbose: bool = False, **scope) -> int:
    from . import maintenance as M

    def go(rep: Reporter) -> int:
        cfg = config(env, **scope)
        if action == "show":
            from .cron import render_block

            print(render_block(env, M.cron_block(cfg)), end="")
            return 0
        return (M.cron_install if action == "install" else M.cron_remove)(cfg, rep)

    return guarded(go, verbose=verbose)


def demo(keep: bool = False, *, verbose: bool = False) -> int:
    import sys

    from .demo import run_demo

    return guarded(lambda rep: run_demo(sys.modules[__name__], keep=keep), verbose=verbose)
