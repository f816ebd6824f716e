"""The verbs shared by the click CLI and the Invoke tasks; each returns the exit code."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from .config import Config, load_config
from .errors import DeployerError
from .output import Reporter, reporter_for


def _sigterm_as_interrupt() -> None:
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        pass


def guarded(fn: Callable[[Reporter], int], output: str = "text", verbose: bool = False,
            command: str = "") -> int:
    """Run a verb; turn errors into their exit code and a message on stderr (never a traceback).
    On GitHub Actions ($GITHUB_STEP_SUMMARY), the run's summary is appended to the job's page."""
    reporter = reporter_for(output, verbose)
    _sigterm_as_interrupt()
    code = 0
    try:
        code = fn(reporter)
        return code
    except DeployerError as exc:
        code = exc.exit_code
        if output == "json":
            reporter.event("error", exit_code=exc.exit_code, message=exc.message, hint=exc.hint)
        else:
            reporter.events.append({"event": "error", "exit_code": exc.exit_code,
                                    "message": exc.message, "hint": exc.hint})
        reporter.failed(exc.exit_code, exc.message)
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        code = 130
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if command and os.environ.get("GITHUB_STEP_SUMMARY"):
            from .summary import markdown, write_step_summary

            write_step_summary(markdown(reporter.events, env=reporter.context.get("env", ""),
                                        command=command, exit_code=code))


def with_notifiers(rep: Reporter, cfg: Config, ref: str = "") -> None:
    from .notify import notifiers_from_config

    rep.context.update(env=cfg.env, ref=ref)
    rep.notifiers = notifiers_from_config(cfg.notify, os.environ)


def config(env: str, inventory: str | None = None, overrides: dict | None = None) -> Config:
    return load_config(env, inventory=Path(inventory) if inventory else None, overrides=overrides)


def deploy(env: str, ref: str, *, dry_run: bool = False, inventory: str | None = None,
           output: str = "text", maintenance: bool | None = None, lock_wait: float = 0.0,
           reason: str = "", verbose: bool = False, force: bool = False) -> int:
    def go(rep: Reporter) -> int:
        from .engine.deploy import DeployRun

        cfg = config(env, inventory)
        with_notifiers(rep, cfg, ref)
        d = DeployRun(cfg, rep, ref=ref, maintenance=maintenance, lock_wait=lock_wait, reason=reason,
                      force=force or dry_run)
        return d.dry_run() if dry_run else d.run()

    return guarded(go, output, verbose, command="deploy")


def rollback(env: str, *, to: str | None = None, restore_db: bool = False, keep_db: bool = False,
             inventory: str | None = None, output: str = "text", lock_wait: float = 0.0,
             dry_run: bool = False) -> int:
    def go(rep: Reporter) -> int:
        from .engine.rollback import Rollback

        cfg = config(env, inventory)
        with_notifiers(rep, cfg, to or "")
        return Rollback(cfg, rep, to=to, restore_db=restore_db, keep_db=keep_db,
                        lock_wait=lock_wait, dry_run=dry_run).run()

    return guarded(go, output, command="rollback")


def resume(env: str, action: str, *, inventory: str | None = None, output: str = "text") -> int:
    def go(rep: Reporter) -> int:
        from .engine.rollback import Resume

        cfg = config(env, inventory)
        with_notifiers(rep, cfg)
        return Resume(cfg, rep, action).run()

    return guarded(go, output, command=action)


def preflight(env: str, *, inventory: str | None = None, output: str = "text",
              expect_app_env: str | None = "production") -> int:
    from . import inspect

    return guarded(lambda rep: inspect.preflight(config(env, inventory), rep,
                                                 expect_app_env=expect_app_env), output)


def report(env: str, *, release: str | None = None, out: str | None = None,
           inventory: str | None = None) -> int:
    from . import inspect

    return guarded(lambda rep: inspect.report(config(env, inventory), rep, release=release, out=out))


def status(env: str, *, inventory: str | None = None, output: str = "text") -> int:
    from . import inspect

    return guarded(lambda rep: inspect.status(config(env, inventory), rep), output)


def releases(env: str, *, inventory: str | None = None, output: str = "text") -> int:
    from . import inspect

    return guarded(lambda rep: inspect.releases(config(env, inventory), rep), output)


def unlock(env: str, *, force: bool = False, inventory: str | None = None, output: str = "text") -> int:
    from . import inspect

    return guarded(lambda rep: inspect.unlock(config(env, inventory), rep, force), output)


def recover(env: str, *, force: bool = False, inventory: str | None = None, output: str = "text") -> int:
    def go(rep: Reporter) -> int:
        from .engine.recover import Recover

        cfg = config(env, inventory)
        with_notifiers(rep, cfg)
        return Recover(cfg, rep, force=force).run()

    return guarded(go, output, command="recover")


def fleet_up(web: int = 3, keep_data: bool = False) -> int:
    from .fleet.harness import Fleet

    return guarded(lambda rep: (Fleet().up(web, keep_data=keep_data), 0)[1])


def fleet_down() -> int:
    from .fleet.harness import Fleet

    return guarded(lambda rep: (Fleet().down(), 0)[1])


def fleet_status() -> int:
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

    return guarded(go)


def maintenance_mode(env: str, on: bool, *, message: str = "Down for maintenance", retry: int = 60,
                     ttl: float | None = None, inventory: str | None = None, output: str = "text") -> int:
    from . import maintenance as M

    return guarded(lambda rep: M.set_mode(config(env, inventory), rep, on=on, message=message,
                                          retry=retry, ttl=ttl), output)


def maintenance_run(env: str, *, promote: bool = False, force: bool = False, reason: str = "",
                    inventory: str | None = None, output: str = "text") -> int:
    from . import maintenance as M

    def go(rep: Reporter) -> int:
        cfg = config(env, inventory)
        with_notifiers(rep, cfg)
        return M.run_window(cfg, rep, promote=promote, force=force, reason=reason)

    return guarded(go, output, command="maintenance.run")


def cron(env: str, action: str, *, inventory: str | None = None) -> int:
    from . import maintenance as M

    def go(rep: Reporter) -> int:
        cfg = config(env, inventory)
        if action == "show":
            from .cron import render_block

            print(render_block(env, M.cron_block(cfg)), end="")
            return 0
        return (M.cron_install if action == "install" else M.cron_remove)(cfg, rep)

    return guarded(go)
