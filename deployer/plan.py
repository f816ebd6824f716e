"""The plan of a deploy as a value: every stage x host x command, for `--dry-run` and tests.

Built from the same builders the pipeline runs, without connecting anywhere. Values that only
the fleet knows (the commit a ref names, each host's current release) appear as placeholders.
"""

from __future__ import annotations

from dataclasses import dataclass

from .commands import backup as B
from .commands import git as GIT
from .commands import lb as LB
from .commands import releases as R
from .config import Config, Host
from .pipeline import plan_waves

DRY_COMMIT = "0000000"


@dataclass(frozen=True)
class PlanStep:
    stage: str
    host: str
    command: str


def deploy_plan(cfg: Config, ref: str, release: str | None = None) -> list[PlanStep]:
    release = release or f"<UTC time>-<commit of {ref}>"
    commit = ref if GIT.SHA_RE.match(ref) else DRY_COMMIT
    p = R.paths(cfg.deploy_to, release)
    mirror = cfg.deploy_to + "/repo"
    app_hosts = cfg.app_hosts
    steps: list[PlanStep] = []
    pb = cfg.playbook

    def values(h: Host, **extra) -> dict:
        return cfg.template_values(h, release=release, release_path=p["release_path"], commit=commit,
                                   ref=ref, previous_release="<previous>", previous_path="<previous>",
                                   **extra)

    def add(stage: str, hosts: list[Host], cmd_for) -> None:
        for h in hosts:
            steps.append(PlanStep(stage, h.name, cmd_for(h).display))

    def playbook_steps(stage: str, pb_steps, hosts: list[Host], **extra) -> None:
        for step in pb_steps:
            targets = [h for h in hosts if any(h.has(r) for r in (step.roles or []))]
            if step.once:
                targets = targets[:1]
            add(stage, targets, lambda h, step=step: step.command(values(h, **extra)))

    def hooks(when: str, stage: str) -> None:
        playbook_steps(f"{when}:{stage}", pb.hooks_for(when, stage), app_hosts)

    add("preflight", cfg.hosts, lambda h: R.read_state(cfg.deploy_to, cfg.playbook.stages.maintenance.flag))
    if cfg.ledger_host:
        from .commands import lock as LK
        add("lock", [cfg.ledger_host], lambda h: LK.acquire(p["state_path"]))
    hooks("before", "maintenance")
    when = pb.stages.maintenance.when
    label = "maintenance" if when == "always" else f"maintenance ({when})"
    playbook_steps(label, pb.steps("maintenance", "on"), app_hosts,
                   message="Deploying, back shortly", retry=60, expires_at="<now+900>")
    hooks("after", "maintenance")
    if cfg.database and cfg.db_host:
        db = B.Database.of(cfg.database)
        add("backup", [cfg.db_host], lambda h: B.dump(db, B.backup_path(db, cfg.env, release)))
    hooks("before", "pull")
    add("pull", app_hosts, lambda h: GIT.fetch(cfg.repo, mirror))
    add("pull", app_hosts, lambda h: GIT.export(mirror, commit, p["release_path"]))
    add("pull", app_hosts, lambda h: R.prepare(cfg.deploy_to, release, pb.shared_files, pb.shared_dirs))
    playbook_steps("build", pb.steps("build"), app_hosts)
    hooks("after", "pull")
    if cfg.migrate_host:
        hooks("before", "migrate")
        playbook_steps("migrate", pb.steps("migrate", "run"), [cfg.migrate_host])
        hooks("after", "migrate")
    playbook_steps("cache_warm", pb.steps("cache_warm"), app_hosts)
    for i, wave in enumerate(plan_waves(app_hosts, cfg.waves), 1):
        web = [h for h in wave if h.has("web")]
        if cfg.lb and cfg.lb_host:
            for h in web:
                steps.append(PlanStep(f"switch w{i}", cfg.lb_host.name,
                                      LB.drain(cfg.lb.socket, cfg.lb.backend, cfg.lb_server_name(h)).display))
        add(f"switch w{i}", wave, lambda h: R.switch(cfg.deploy_to, release))
        playbook_steps(f"reload w{i}", pb.steps("reload"), web)
        if cfg.lb and cfg.lb_host:
            for h in web:
                steps.append(PlanStep(f"switch w{i}", cfg.lb_host.name,
                                      LB.ready(cfg.lb.socket, cfg.lb.backend, cfg.lb_server_name(h)).display))
        playbook_steps(f"workers w{i}", pb.steps("worker_restart"), wave)
        playbook_steps(f"workers w{i}", pb.steps("worker_verify"), wave)
        for h in web:
            vals = cfg.health_values(h, release)
            steps.append(PlanStep(f"gate w{i}", h.name, f"GET {cfg.health.url_for(vals)} "
                                  f"(expect {cfg.health.expect_status}, "
                                  f"{cfg.health.passes} consecutive passes)"))
    playbook_steps("finalize", pb.steps("maintenance", "off"), app_hosts,
                   message="", retry=0, expires_at="0")
    playbook_steps("finalize", pb.steps("finalize"), app_hosts)
    add("finalize", app_hosts, lambda h: R.remove(cfg.deploy_to, ["<releases beyond keep_releases>"]))
    return steps
