"""Host operations as actions: the parts every plan is built from (deploy, rollback, promote,
abort, maintenance, recover). Pure: they build values, they never run anything."""

from __future__ import annotations

import dataclasses
import math

from ..commands import lb as LB
from ..commands import releases as R
from ..config import Config, Host
from ..shell import Command, HostDeadline, argv, batch, chain
from ..stages import StageName
from .plan import Action, Effect, HttpCheck, Lane, Stage

FAST_POLL = 0.05  # health checks poll this often within the configured budget


def values(cfg: Config, host: Host, release: str = "", **extra) -> dict:
    lay = cfg.layout
    base = dict(release=release, release_path=lay.release(release or "none"), commit="", ref="",
                previous_release="", previous_path=lay.release("none"))
    base.update(extra)
    return cfg.template_values(host, **base)


def step_commands(cfg: Config, steps, host: Host, vals: dict, cwd: str | None = None) -> list[Command]:
    """The playbook steps that apply to `host` (by role), filled in."""
    out = []
    for step in steps:
        if not cfg.runs_step(step, host):
            continue
        cmd = step.command(vals)
        out.append(chain(argv("cd", cwd), cmd).with_timeout(cmd.timeout) if cwd else cmd)
    return out


def run(host: Host, cmds: list[Command], *, what: str, effect: Effect | None = None, timeout: float | None = None,
        records: tuple = (), retry_for: float = 0.0) -> Action | None:
    """One action running `cmds` on `host` as one script; None when there is nothing to run."""
    if not cmds:
        return None
    limits = [c.timeout for c in cmds if c.timeout]
    limit = timeout or (sum(limits) if limits and len(limits) == len(cmds) else None)
    return Action(host=host.name, command=batch(*cmds), timeout=limit, effect=effect,
                  records=records, what=what, retry_for=retry_for)


def lanes(pairs: list[tuple[Host, list[Action | None]]]) -> tuple[Lane, ...]:
    out = []
    for host, actions in pairs:
        acts = tuple(a for a in actions if a is not None)
        if acts:
            out.append(Lane(host.name, acts))
    return tuple(out)


#: the host's clock when a worker action starts, before its restart steps, as `$since` (epoch
#: seconds) and `$since_ms` (epoch milliseconds): a worker_verify step proves the worker alive with
#: evidence newer than it (a heartbeat written after it), never with a file that merely exists.
#: Milliseconds let a heartbeat written in the same second as the restart count.
def since(slack: float = 0) -> str:
    """The shell that sets `$since_ms` and `$since` on the host, `slack` seconds back."""
    back = f" - {int(slack * 1000)}" if slack else ""
    return f"since_ms=$(( $(date +%s%3N){back} )); since=$(( since_ms / 1000 ))"


#: a check alone (no restart: the pre-switch probe, recover) accepts a heartbeat this many seconds
#: old: a live worker writes one every second or so, a wedged one writes none
PROBE_SLACK = 2


def since_taken(cmd: Command, slack: float = 0) -> Command:
    """`cmd` preceded by `since(slack)`, in the same shell: every step of a batch sees `$since`."""
    first = since(slack)
    return Command(f"{first}\n{cmd.script}", f"{first}; {cmd.display}", cmd.timeout)


def workers(cfg: Config, host: Host, vals: dict, *, verify: bool = True, restart: bool = True,
            effect: Effect | None = Effect.WORKERS_RESTARTED, slack: float = 0,
            what: str = "workers") -> Action | None:
    """The playbook's worker_restart steps on `host` (unless not `restart`), then (`verify`) its
    worker_verify steps, after `$since` is taken on the host (`since_taken`)."""
    steps = ((cfg.playbook.steps("worker_restart") if restart else [])
             + (cfg.playbook.steps("worker_verify") if verify else []))
    act = run(host, step_commands(cfg, steps, host, vals), what=what, effect=effect)
    if act is None or not verify:
        return act
    return dataclasses.replace(act, command=since_taken(act.command, slack))


def worker_check(cfg: Config, host: Host, release: str, *, effect: Effect | None = None,
                 slack: float = PROBE_SLACK, what: str = "worker check") -> Action | None:
    """The playbook's worker_verify steps alone on `host`, about `release` (no restart): None
    when the host has no worker to check."""
    return workers(cfg, host, values(cfg, host, release), restart=False, effect=effect, slack=slack,
                   what=what)


# -- the load balancer ------------------------------------------------------------------------
def behind_lb(cfg: Config, host: Host) -> bool:
    return bool(cfg.lb and cfg.lb_host and host.has("web"))


def drain(cfg: Config, host: Host) -> Action:
    name = cfg.lb_server_name(host)
    return Action(host=cfg.lb_host.name, command=LB.drain_and_wait(cfg.lb.socket, cfg.lb.backend, name),
                  timeout=30, effect=Effect.DRAINED, what=f"drain {name}")


def _up_timeout(wait: float) -> float:
    """The command timeout of a wait for UP servers: the wait, and room for the socket's answers."""
    return max(30.0, wait + 20.0)


def undrain(cfg: Config, host: Host, missing_ok: bool = False, wait_up: bool = True) -> Action:
    """Put the host back and wait until the load balancer itself sees it UP: its own health
    check decides what users get (in maintenance too: its check carries the gate header, so a
    server answering the maintenance page stays UP). missing_ok: a server the load balancer
    does not have is not an error (a drain it refused drained nothing). wait_up=False: only for
    a rollback under maintenance, which must bring the site back even behind a load balancer
    that rejects the maintenance page: it waits for every server once maintenance is off."""
    name = cfg.lb_server_name(host)
    wait = cfg.lb.up_timeout if wait_up else 0
    return Action(host=cfg.lb_host.name,
                  command=LB.ready_and_wait_up(cfg.lb.socket, cfg.lb.backend, name, wait=wait, missing_ok=missing_ok),
                  timeout=_up_timeout(wait), effect=Effect.UNDRAINED, what=f"put back {name}")


def lb_up(cfg: Config, hosts: list[Host], what: str = "load balancer: every server UP") -> Action | None:
    """Wait until the load balancer sees every web host of `hosts` UP (None without one)."""
    names = [cfg.lb_server_name(h) for h in hosts if behind_lb(cfg, h)]
    if not names:
        return None
    wait = cfg.lb.up_timeout
    return Action(host=cfg.lb_host.name, command=LB.wait_all_up(cfg.lb.socket, cfg.lb.backend, names, wait=wait),
                  timeout=_up_timeout(wait), what=what)


def lb_up_stage(cfg: Config, stage: str, hosts: list[Host]) -> list[Stage]:
    """A stage that ends only when the load balancer sees every web host UP (none without one)."""
    act = lb_up(cfg, hosts)
    return [Stage(stage, "the load balancer sees every server UP", (Lane(act.host, (act,)),))] if act else []


def in_rotation(cfg: Config) -> int:
    """How many web hosts the load balancer has."""
    return len([h for h in cfg.app_hosts if behind_lb(cfg, h)])


def switch_limit(cfg: Config) -> int | None:
    """How many web hosts a switch takes out of rotation at once: max_unavailable, never them
    all (the last server in rotation is never drained). None without a load balancer."""
    total = in_rotation(cfg)
    if not total:
        return None
    return max(1, min(max_unavailable(cfg.max_unavailable, total), total - 1))


def switch_stage(cfg: Config, detail: str, lanes: tuple[Lane, ...], **opts) -> Stage:
    """The `switch` stage of `lanes` (`switch_lane`s), at most `switch_limit` of them at once;
    `opts`: the Stage's other fields (wave, stop_on_failure)."""
    return Stage(StageName.SWITCH, detail, lanes, limit=switch_limit(cfg), **opts)


def max_unavailable(value: int | str, total: int) -> int:
    """How many web hosts may be out of rotation at once (at least 1)."""
    if isinstance(value, str):
        return max(1, math.floor(total * int(value.rstrip("%")) / 100))
    return max(1, int(value))


def plan_waves(hosts: list[Host], waves: list[int | str]) -> list[list[Host]]:
    """Split hosts into waves: ints are host counts, 'N%' cumulative percentages (ceil)."""
    result: list[list[Host]] = []
    done = 0
    total = len(hosts)
    for w in waves:
        if isinstance(w, str):
            upto = math.ceil(total * int(w.rstrip("%")) / 100)
        else:
            upto = done + int(w)
        upto = min(max(upto, done + 1 if done < total else done), total)
        if upto > done:
            result.append(hosts[done:upto])
            done = upto
    if done < total:
        result.append(hosts[done:])
    return result


# -- switching --------------------------------------------------------------------------------
def check(cfg: Config, host: Host, release: str) -> Action:
    """The health gate of one host on `release` (through its SSH connection unless
    `health.via: direct`)."""
    hc = cfg.health
    vals = cfg.health_values(host, release)
    budget = hc.max_attempts * hc.interval + hc.passes * hc.timeout
    return Action(host=host.name, what="health", http=HttpCheck(
        url=hc.url_for(vals), release=release, expect_status=hc.expect_status,
        expect_json=hc.expected_json(vals), passes=hc.passes, interval=min(hc.interval, FAST_POLL) or FAST_POLL,
        budget=budget, timeout=hc.timeout, headers=dict(hc.headers), via=hc.via, fail_after=hc.fail_after))


def switch_lane(cfg: Config, host: Host, release: str | None, *, drained: bool = False,
                log_mark: str | None = None, effect: Effect = Effect.SWITCHED, gate: bool = True,
                wait_up: bool = True) -> Lane:
    """Drain (unless already drained, or the only server in rotation: then the graceful reload
    alone keeps it serving), switch `current` atomically, reload, check the host itself, put it
    back and wait until the load balancer sees it UP. `release=None`: the host served nothing
    before, so `current` is removed again."""
    lb = behind_lb(cfg, host)
    acts: list[Action | None] = []
    if lb and not drained and in_rotation(cfg) > 1:
        acts.append(drain(cfg, host))
    vals = values(cfg, host, release or "")
    cmds: list[Command] = []
    if log_mark and host.has("web"):
        cmds.append(R.mark_log_offset(cfg.deploy_to, release or "", log_mark))
    if release is None:
        cmds.append(R.remove_path(cfg.layout.current))
    else:
        cmds.append(R.switch(cfg.deploy_to, release))
        if host.has("web"):
            cmds += step_commands(cfg, cfg.playbook.steps("reload"), host, vals)
    acts.append(run(host, cmds, what="switch", effect=effect))
    if host.has("web") and release is not None and gate:
        acts.append(check(cfg, host, release))
    if lb:
        acts.append(undrain(cfg, host, wait_up=wait_up))
    return Lane(host.name, tuple(a for a in acts if a is not None))


# -- maintenance mode -------------------------------------------------------------------------
def maintenance_cmds(cfg: Config, host: Host, on: bool, *, ttl: float | None, message: str = "",
                     retry: int = 60, release: str = "") -> list[Command]:
    """The playbook's on/off steps plus the host-side dead-man switch (armed for `ttl`). The
    flag's expiry is `ttl` seconds from when the host writes it, by the host's own clock (the
    clock its app and its dead-man switch read), never a time computed here."""
    state_path = cfg.layout.state
    web = host.has("web")  # the dead-man switch lives where the site is served
    if not on:
        return ([R.watchdog_stop(state_path)] if web else []) + step_commands(
            cfg, cfg.playbook.steps("maintenance", "off"), host,
            values(cfg, host, release, message="", retry=0, expires_at=""))
    expires = HostDeadline(ttl) if ttl else ""
    vals = values(cfg, host, release, message=message, retry=retry, expires_at=expires)
    cmds = step_commands(cfg, cfg.playbook.steps("maintenance", "on"), host, vals)
    if web:
        cmds.append(watchdog(cfg, host, ttl, release))
    return cmds


def maintenance(cfg: Config, host: Host, on: bool, *, ttl: float | None, what: str = "",
                journaled: bool = True, **opts) -> Action | None:
    """Maintenance mode on (or off) on `host` as one action (`maintenance_cmds`, `opts` its other
    options). Its effect, MAINTENANCE_ON or MAINTENANCE_OFF, is journaled unless `journaled` is
    False; `what` defaults to "maintenance on" or "maintenance off"."""
    effect = (Effect.MAINTENANCE_ON if on else Effect.MAINTENANCE_OFF) if journaled else None
    return run(host, maintenance_cmds(cfg, host, on, ttl=ttl, **opts),
               what=what or f"maintenance {'on' if on else 'off'}", effect=effect)


def maintenance_lanes(cfg: Config, hosts: list[Host], on: bool, *, ttl: float | None,
                      **opts) -> tuple[Lane, ...]:
    """`maintenance` on each of `hosts`, a lane each (`opts`: its options)."""
    return lanes([(h, [maintenance(cfg, h, on, ttl=ttl, **opts)]) for h in hosts])


def watchdog(cfg: Config, host: Host, ttl: float | None, release: str = "") -> Command:
    """Arm (ttl) or disarm (None) the dead-man switch of maintenance mode on one host."""
    state_path = cfg.layout.state
    off = step_commands(cfg, cfg.playbook.steps("maintenance", "off"), host,
                        values(cfg, host, release, message="", retry=0, expires_at=""))
    if ttl is None or not off:
        return R.watchdog_stop(state_path)
    return R.watchdog_start(state_path, ttl, chain(*off, op=";"))
