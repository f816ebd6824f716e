"""Facts: what the plan is built from, read once per host in one batched command.

Each host: its state (current release, releases on disk, free disk, maintenance flag). The first
app host also resolves the ref to a commit (`git ls-remote`), the migrate host reads the schema
version with the code it currently serves. `command()` builds the reads, `parse()` is pure.
`Facts.assumed` makes them up instead, for a plan without any host (`--dry-run --offline`).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .commands import git as GIT
from .commands import releases as R
from .config import Config, Host
from .errors import Refused
from .shell import Command, batch, raw, step_outputs

SCHEMA_STEP = "schema"
COMMIT_STEP = "commit"
#: the commit an offline plan shows when the ref cannot be resolved here (git's null id)
UNRESOLVED_COMMIT = "0" * 40


@dataclass(frozen=True)
class PendingMigration:
    """One object of the JSON list the playbook's migrate.pending step prints."""

    name: str | None  # its "name", else its "version", as text (None: it has neither)
    online_safe: bool  # runs without maintenance mode (false unless it says true)

    @classmethod
    def of(cls, d: dict) -> PendingMigration:
        label = d["name"] if "name" in d else d.get("version")
        named = "name" in d or "version" in d
        return cls(name=str(label) if named else None, online_safe=bool(d.get("online_safe")))


def pending_migrations(data: object) -> list[PendingMigration]:
    """migrate.pending's decoded JSON: a list of objects (else ValueError)."""
    if not isinstance(data, list):
        raise ValueError("not a JSON list")
    if not all(isinstance(m, dict) for m in data):
        raise ValueError("not a JSON list of objects")
    return [PendingMigration.of(m) for m in data]


@dataclass
class Facts:
    hosts: dict[str, R.HostState] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)
    commit: str | None = None
    schema: int | None = None  # the database's schema version, read with the served code
    pending: list[PendingMigration] | None = None  # of the new code (None: not read)
    assumptions: tuple[str, ...] = ()  # what was assumed instead of read (an offline plan)

    @classmethod
    def assumed(cls, cfg: Config, ref: str) -> Facts:
        """Facts made up without contacting anything, for `--dry-run --offline`: every host
        empty (no release, free disk, no maintenance), the schema unknown, the commit of `ref`
        from the repository when it is on this machine. `assumptions` says each of these."""
        commit, about_commit = local_commit(cfg.repo, ref)
        return cls(
            hosts={h.name: R.HostState() for h in cfg.hosts}, commit=commit,
            assumptions=(
                f"hosts: assumed to serve no release, with no release on disk and maintenance off "
                f"(the ledger on {ledger_place(cfg)} and the hosts were not read)",
                "schema version: assumed unknown (not read from the migrate host)",
                about_commit,
            ))

    @property
    def is_assumed(self) -> bool:
        return bool(self.assumptions)

    def require_reachable(self, what: str, *, trusted: bool = False) -> None:
        """Refused (naming each host and why) unless every host read answered; `what` names the
        command refused. With `trusted` (preflight), one host a line: a host key not trusted
        fails the connection too."""
        if not self.unreachable:
            return
        pairs = [f"{h}: {e}" for h, e in sorted(self.unreachable.items())]
        if trusted:
            raise Refused(f"{what}: hosts not reachable or not trusted:\n" + "\n".join(f"  {p}" for p in pairs))
        raise Refused(f"{what}: hosts not reachable: " + "; ".join(pairs))

    def current(self, host: str) -> str | None:
        st = self.hosts.get(host)
        return st.current if st else None

    def snapshot_hosts(self, hosts: list[Host]) -> dict[str, str | None]:
        return {h.name: self.current(h.name) for h in hosts}


def ledger_place(cfg: Config) -> str:
    """Where the env's ledger lives, in words (it is never on this machine)."""
    state = cfg.state
    if state is not None and state.backend == "s3":
        return f"s3://{state.bucket}/{state.prefix}".rstrip("/")
    return cfg.ledger_host.name


def local_commit(repo: str, ref: str) -> tuple[str, str]:
    """(commit, note): the commit `ref` names in `repo` when the repository is a directory on
    this machine (`git rev-parse`, nothing contacted), else UNRESOLVED_COMMIT."""
    if _is_full_sha(ref):
        return ref, f"commit: {ref} (given as --ref)"
    path = Path(repo.removeprefix("file://"))
    if not (path.is_absolute() and path.is_dir()):
        why = f"{repo} is not a repository on this machine"
    else:
        sha = _rev_parse(path, ref)
        if sha is not None:
            return sha, f"commit: {ref} is {sha[:12]} in the local repository {repo}"
        why = f"not found in the local repository {repo}"
    return UNRESOLVED_COMMIT, f"commit: {ref} unresolved (shown as {UNRESOLVED_COMMIT[:7]}): {why}"


def _rev_parse(repo: Path, ref: str) -> str | None:
    """The commit `ref` names in the local repository `repo` (None: not found, or no git)."""
    try:
        found = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet",
                                "--end-of-options", ref + "^{commit}"],
                               capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    sha = found.stdout.strip()
    return sha if found.returncode == 0 and _is_full_sha(sha) else None


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
        current = cfg.layout.current
        values = cfg.template_values(host, release_path=current)
        probe = version[0].command(values)
        parts.append(_tolerant(Command(f"test -e {_q(current)} && {{ {probe.script}\n}}",
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
    mirror = cfg.layout.repo
    values = cfg.template_values(host, release_path=probe, release="probe", commit=commit)
    body = batch(GIT.fetch(cfg.repo, mirror, commit), GIT.export(mirror, commit, probe),
                 R.prepare(cfg.deploy_to, "probe", cfg.playbook.shared_files, cfg.playbook.shared_dirs,
                           release_path=probe),
                 steps[0].command(values))
    return Command(f"{{ {body.script}\n}}; rc=$?; rm -rf {_q(probe)}; exit $rc", body.display)


def parse_pending(output: str) -> list[PendingMigration]:
    steps = step_outputs(output)
    text = steps.get(max(steps), "") if steps else output
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return []
    return pending_migrations(json.loads(lines[-1]))


__all__ = ["Facts", "PendingMigration", "command", "parse", "pending_command", "parse_pending",
           "parse_schema", "raw"]
