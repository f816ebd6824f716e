"""Release directories, the `current` symlink, shared links, host state."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field

from ..layout import Layout
from ..shell import Command, argv, q, raw

STATE_MARK = "@@deployer-state"


def read_state(deploy_to: str, flag: str | None = "storage/maintenance.json") -> Command:
    """One command that prints everything deployer needs to know about a host. `flag`: the
    maintenance flag file, relative to shared/ (its JSON, when it is JSON, tells the expiry).
    `now` is the host's own clock: the flag's expiry is judged by it, and `status` compares it
    with the orchestrator's."""
    lay = Layout(deploy_to)
    flag_path = lay.shared_file(flag or ".deployer-no-maintenance-flag")
    # Shell builtins wherever they do (read, test, a glob): on a hundred hosts, every process
    # this spawns is spawned a hundred times before the deploy starts.
    return raw(
        f"echo {STATE_MARK}; "
        f"echo current=$(readlink {q(lay.current)} 2>/dev/null); "
        f"read -r h 2>/dev/null </proc/sys/kernel/hostname || h=$(hostname); echo hostname=$h; "
        f"{{ df -Pk {q(deploy_to)} 2>/dev/null || df -Pk /; }} | {{ read -r _; read -r _ _ _ a _; echo disk_kb=$a; }}; "
        f"if [ -e {q(flag_path)} ]; then echo maintenance=on; "
        f"echo maintenance_json=$(head -c 2000 {q(flag_path)} 2>/dev/null | tr -d '\\n'); "
        f"else echo maintenance=off; fi; echo now=$(date +%s); "
        f"for r in {q(lay.releases)}/*; do [ -e \"$r\" ] && echo \"release=${{r##*/}}\"; done; "
        f"for a in {q(lay.artifacts)}/*.tar; do [ -e \"$a\" ] && a=${{a##*/}} && echo \"artifact=${{a%.tar}}\"; done; true"
    )


@dataclass
class HostState:
    current: str | None = None  # release id the current symlink points to
    releases: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)  # releases whose artifact the host keeps
    hostname: str = ""
    disk_kb: int | None = None
    maintenance: bool = False
    maintenance_info: dict | None = None  # the flag file: message, retry, expires_at
    maintenance_expired: bool = False
    now: int | None = None  # the host's clock (unix seconds) when it was read


def parse_state(output: str) -> HostState:
    st = HostState()
    seen = False
    for line in output.splitlines():
        if line == STATE_MARK:
            seen = True
            continue
        key, _, value = line.partition("=")
        if key == "current" and value:
            st.current = posixpath.basename(value.rstrip("/"))
        elif key == "release" and value:
            st.releases.append(value)
        elif key == "artifact" and value:
            st.artifacts.append(value)
        elif key == "hostname":
            st.hostname = value
        elif key == "disk_kb" and value.isdigit():
            st.disk_kb = int(value)
        elif key == "maintenance":
            st.maintenance = value == "on"
        elif key == "maintenance_json" and value:
            try:
                st.maintenance_info = json.loads(value)
            except ValueError:
                st.maintenance_info = {"unreadable": True}
        elif key == "now" and value.isdigit():
            st.now = int(value)
    if not seen:
        raise ValueError("host state: marker missing from output")
    expires = (st.maintenance_info or {}).get("expires_at")
    if st.maintenance and isinstance(expires, (int, float)) and st.now is not None and expires <= st.now:
        st.maintenance = False  # expired: the app serves again (dead-man expiry)
        st.maintenance_expired = True
    st.releases.sort()
    st.artifacts.sort()
    return st


def link_shared(release_path: str, shared_path: str, shared_files: list[str],
                shared_dirs: list[str]) -> list[str]:
    parts = []
    for d in shared_dirs:
        target, link = posixpath.join(shared_path, d), posixpath.join(release_path, d)
        parts.append(f"mkdir -p {q(target)} {q(posixpath.dirname(link))} && rm -rf {q(link)} "
                     f"&& ln -s {q(target)} {q(link)}")
    for f in shared_files:
        target, link = posixpath.join(shared_path, f), posixpath.join(release_path, f)
        parts.append(f"mkdir -p {q(posixpath.dirname(link))} && rm -f {q(link)} && ln -s {q(target)} {q(link)}")
    return parts


def prepare(deploy_to: str, release: str, shared_files: list[str], shared_dirs: list[str],
            release_path: str | None = None) -> Command:
    """Link shared files and dirs into a fresh release (after the code is in place), write REVISION."""
    lay = Layout(deploy_to)
    rp = release_path or lay.release(release)
    parts = link_shared(rp, lay.shared, shared_files, shared_dirs)
    parts.append(f"printf '%s\\n' {q(release)} > {q(rp + '/REVISION')}")
    return raw(" && ".join(parts))


def remove_path(path: str) -> Command:
    return argv("rm", "-rf", "--", path)


def switch(deploy_to: str, release: str) -> Command:
    """Atomic switch: a symlink under a temporary name, renamed over `current` (rename(2))."""
    lay = Layout(deploy_to)
    path, tmp = lay.release(release), lay.current_tmp(release)
    return raw(f"test -d {q(path)} && ln -sfn {q(path)} {q(tmp)} && mv -T {q(tmp)} {q(lay.current)}")


def remove(deploy_to: str, releases: list[str]) -> Command:
    """Each release out of `releases/` at once (a rename into a bin of the trash, on the same
    filesystem), its files deleted in the background: a release with node_modules or a virtualenv
    takes seconds to delete, and the deploy does not wait for it. Bins an hour old (a deletion cut
    short by a reboot) go too."""
    if not releases:
        return argv("true")
    lay = Layout(deploy_to)
    trash = q(lay.trash)
    # deleted in place, as before, when the trash cannot take them (a full disk: no mkdir;
    # another filesystem under .deployer: no rename)
    paths = [q(lay.release(r)) for r in releases]
    moves = " && ".join(f"{{ [ ! -e {p} ] || mv -T {p} {trash}/$$/{q(r)} 2>/dev/null || rm -rf -- {p}; }}"
                        for r, p in zip(releases, paths, strict=True))
    sweep = f'rm -rf -- "$1"; find {trash} -mindepth 1 -maxdepth 1 -mmin +60 -exec rm -rf -- {{}} + 2>/dev/null'
    # with them, their manifests (`artifact.build`), unless the host keeps their artifact (the
    # build host: `artifact.keep`, pruned apart)
    arts = "; ".join(f"[ -e {q(lay.artifact(r, '.tar'))} ] || rm -f -- {q(lay.artifact(r, '.manifest'))} "
                     f"{q(lay.artifact(r, '.sha256'))}" for r in releases)
    return raw(f"if mkdir -p {trash}/$$ 2>/dev/null; then {moves} && "
               f"{{ setsid sh -c {q(sweep)} sh {trash}/$$ </dev/null >/dev/null 2>&1 & }}; "
               f"else rm -rf -- {' '.join(paths)}; fi && {{ {arts}; }}")


def in_order(releases, order) -> list[str]:
    """`releases` oldest first: those in `order` (the ledger's, first-deploy order) as they are
    there, after the ones it does not know, which only their ids order (their timestamps come
    from the clock of whichever machine made them)."""
    rank = {r: i for i, r in enumerate(order)}
    unknown = sorted(r for r in set(releases) if r not in rank)
    return unknown + sorted((r for r in set(releases) if r in rank), key=rank.__getitem__)


def to_remove(releases: list[str], keep: int, protected: set[str]) -> list[str]:
    """Releases to delete, from `releases` oldest first (`in_order`): beyond the newest `keep`,
    never a protected one (current, previous good, referenced by a snapshot)."""
    keepers = set(releases[-keep:] if keep > 0 else []) | protected
    return [r for r in releases if r not in keepers]


def file_size(path: str) -> Command:
    return raw(f"stat -c %s {q(path)} 2>/dev/null || echo 0")


def log_errors(path: str, offset: int, pattern: str) -> Command:
    """Lines matching pattern written to path after byte `offset` (at most 20)."""
    return raw(f"tail -c +{int(offset) + 1} {q(path)} 2>/dev/null | grep -F -- {q(pattern)} | head -n 20; true")


def write_secret(base: str, rel: str) -> Command:
    """Write stdin to <base>/<rel> (a release: its own copy, replacing the link to shared/; or
    shared/ itself): mode 0600 from creation (umask), replaced atomically. The content never
    appears in the command line."""
    path = posixpath.join(base, rel)
    return raw(f"umask 077 && mkdir -p {q(posixpath.dirname(path))} && tmp={q(path + '.tmp.')}$$ && "
               f'cat > "$tmp" && mv -f "$tmp" {q(path)}')


def promote_secret(release_path: str, shared_path: str, rel: str) -> Command:
    """A release's own secret file, once it passed the gate, becomes shared/<rel> (what later
    releases link): copied on the host (the content is not sent again), mode 0600 from creation,
    replaced atomically."""
    src, dest = posixpath.join(release_path, rel), posixpath.join(shared_path, rel)
    return raw(f"umask 077 && mkdir -p {q(posixpath.dirname(dest))} && tmp={q(dest + '.tmp.')}$$ && "
               f'cp -- {q(src)} "$tmp" && mv -f "$tmp" {q(dest)}')


def watchdog_start(state_path: str, seconds: float, off: Command) -> Command:
    """The dead-man switch of maintenance mode, on the host itself: a detached process (its own
    session, so neither the SSH session nor timeout(1) ends it) that runs the playbook's 'off'
    after `seconds` unless it is re-armed or stopped first. Works for any app (artisan up...)."""
    pidfile = posixpath.join(state_path, "maintenance-watchdog.pid")
    body = f"sleep {int(seconds)}; {off.script}; rm -f {q(pidfile)}"
    return raw(
        f"mkdir -p {q(state_path)} || exit 1; "
        f"if [ -f {q(pidfile)} ]; then kill -- -$(cat {q(pidfile)}) 2>/dev/null; fi; "
        f"setsid sh -c {q(body)} </dev/null >/dev/null 2>&1 & "
        f"echo $! > {q(pidfile)}"
    )


def watchdog_stop(state_path: str) -> Command:
    pidfile = posixpath.join(state_path, "maintenance-watchdog.pid")
    return raw(f"if [ -f {q(pidfile)} ]; then kill -- -$(cat {q(pidfile)}) 2>/dev/null; "
               f"rm -f {q(pidfile)}; fi; true")


def mark_log_offset(deploy_to: str, release: str, log_rel: str) -> Command:
    """Remember how long the release's log is at the switch (new lines are judged by the gate)."""
    lay = Layout(deploy_to)
    log, mark = posixpath.join(lay.release(release), log_rel), lay.log_mark(release)
    return raw(f"mkdir -p {q(posixpath.dirname(mark))} && "
               f"{{ stat -L -c %s {q(log)} 2>/dev/null || echo 0; }} > {q(mark)}")


def log_errors_since_mark(deploy_to: str, release: str, log_rel: str, pattern: str) -> Command:
    """Fails, printing up to 20 of them, when lines matching `pattern` were written to the
    release's log since the switch."""
    lay = Layout(deploy_to)
    log, mark = posixpath.join(lay.release(release), log_rel), lay.log_mark(release)
    return raw(
        f"off=$(cat {q(mark)} 2>/dev/null || echo 0); "
        f"found=$(tail -c +$((off + 1)) {q(log)} 2>/dev/null | grep -F -- {q(pattern)} | head -n 20); "
        f"if [ -n \"$found\" ]; then printf '%s new line(s) matching %s in %s since the switch:\\n' "
        f"\"$(printf '%s\\n' \"$found\" | wc -l)\" {q(pattern)} {q(log_rel)} >&2; "
        f"printf '%s\\n' \"$found\" >&2; exit 1; fi"
    )
