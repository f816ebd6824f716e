"""Facts: what the plan is built from, read once per host in one batched command.

Each host: its state (current release, releases on disk, free disk, maintenance flag). The first
app host also resolves the ref to a commit (`git ls-remote`), the migrate host reads the schema
version with the code it currently serves. `command()` builds the reads, `parse()` is pure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .commands import git as GIT
from .commands import releases as R
from .config import Config, Host
from .shell import Command, batch, raw, step_outputs

SCHEMA_STEP = "schema"
COMMIT_STEP = "commit"


@dataclass
class Facts:
    hosts: dict[str, R.HostState] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)
    commit: str | None = None
    schema: int | None = None  # the database's schema version, read with the served code
    pending: list[dict] | None = None  # pending migrations of the new code (None: not read)

    def current(self, host: str) -> str | None:
        st = self.hosts.get(host)
        return st.current if st else None

    def snapshot_hosts(self, hosts: list[Host]) -> dict[str, str | None]:
        return {h.name: self.current(h.name) for h in hosts}


def _tolerant(cmd: Command) -> Command:
    """A read that must not fail the batch: its failure is an empty answer."""
    return Command(f"{{ {cmd.script}\n}} 2>/dev/null || true", cmd.display)


def command(cfg: Config, host: Host, ref: str | None = None) -> Command:
    """The one command that reads everything the plan needs from `host`."""
    flag = cfg.playbook.stages.maintenance.flag
    parts = [R.read_state(cfg.deploy_to, flag)]
    app = cfg.app_hosts
    if ref is not None and app and host.name == app[0].name and not _is_full_sha(ref):
        parts.append(_tolerant(GIT.ls_remote(cfg.repo, ref)))
    version = cfg.playbook.steps("migrate", "version")
    if version and cfg.migrate_host is not None and host.name == cfg.migrate_host.name:
        values = cfg.template_values(host, release_path=cfg.current_path)
        probe = version[0].command(values)
        parts.append(_tolerant(Command(f"test -e {_q(cfg.current_path)} && {{ {probe.script}\n}}",
                                       probe.display)))
    return batch(*parts) if len(parts) > 1 else parts[0]


def _q(text: str) -> str:
    from .shell import q

    return q(text)


def _is_full_sha(ref: str) -> bool:
    return bool(GIT.SHA_RE.match(ref)) and len(ref) == 40


def parse(cfg: Config, host: Host, output: str, ref: str | None = None) -> tuple[R.HostState, dict]:
    """(host state, extras) from the output of `command()`; extras: commit, schema."""
    steps = step_outputs(output) if "@@deployer-step" in output else {0: output}
    state = R.parse_state(steps.get(0, output))
    extras: dict = {}
    i = 1
    app = cfg.app_hosts
    if ref is not None and app and host.name == app[0].name and not _is_full_sha(ref):
        extras[COMMIT_STEP] = GIT.parse_ls_remote(steps.get(i, ""), ref)
        i += 1
    version = cfg.playbook.steps("migrate", "version")
    if version and cfg.migrate_host is not None and host.name == cfg.migrate_host.name:
        extras[SCHEMA_STEP] = parse_schema(steps.get(i, ""))
    return state, extras


def parse_schema(text: str) -> int | None:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return int(last) if last.lstrip("-").isdigit() else None


def pending_command(cfg: Config, commit: str, probe: str) -> Command | None:
    """Pending migrations of the new code, read in a scratch export (removed afterwards)."""
    steps = cfg.playbook.steps("migrate", "pending")
    host = cfg.migrate_host
    if not steps or host is None:
        return None
    mirror = cfg.deploy_to + "/repo"
    values = cfg.template_values(host, release_path=probe, release="probe", commit=commit)
    body = batch(GIT.fetch(cfg.repo, mirror), GIT.export(mirror, commit, probe),
                 R.prepare(cfg.deploy_to, "probe", cfg.playbook.shared_files, cfg.playbook.shared_dirs,
                           release_path=probe),
                 steps[0].command(values))
    return Command(f"{{ {body.script}\n}}; rc=$?; rm -rf {_q(probe)}; exit $rc", body.display)


def parse_pending(output: str) -> list[dict]:
    steps = step_outputs(output)
    text = steps.get(max(steps), "") if steps else output
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return []
    data = json.loads(lines[-1])
    if not isinstance(data, list):
        raise ValueError("not a JSON list")
    return data


__all__ = ["Facts", "command", "parse", "pending_command", "parse_pending", "parse_schema", "raw"]
