"""What the example apps' installers (django.py, node.py, laravel.py) share: their supervisord
programs, written between markers into the web hosts' supervisord config, applied with one
`supervisorctl update` per host in parallel, and taken out again."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

UPDATE = "/srv/bin/supervisorctl -c /srv/supervisor/supervisord.conf update >/dev/null"


class Programs:
    """One app's supervisord programs on the web hosts of a fleet that is up."""

    def __init__(self, fleet, begin: str, end: str):
        self.fleet, self.begin, self.end = fleet, begin, end

    def conf(self, host: str) -> Path:
        return self.fleet.hostdir(host) / "srv" / "supervisor" / "supervisord.conf"

    def add(self, host: str, text: str) -> None:
        conf = self.conf(host)
        conf.write_text(conf.read_text() + text)

    def remove(self) -> bool:
        """Take the programs out of every web host's config; True when some host had them."""
        changed = False
        for h in self.fleet.spec.web_hosts:
            conf = self.conf(h.name)
            text = conf.read_text() if conf.exists() else ""
            if self.begin in text:
                head, _, rest = text.partition(self.begin)
                conf.write_text(head + rest.partition(self.end + "\n")[2])
                changed = True
        return changed

    def update(self) -> None:
        """supervisord re-reads its config on every web host (in parallel): programs added are
        started, programs removed are stopped."""
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda name: self.fleet.sh(name, UPDATE), [h.name for h in self.fleet.spec.web_hosts]))


def deploy_owned(fleet, host: str, *paths: str, mode: str | None = None) -> None:
    """Directories on `host` made (when missing) and given, with what is in them, to the
    deploy user: an app's deploy tree (releases, shared, the ledger's state), its backups."""
    from . import spec as S

    chmod = f" && chmod {mode} {' '.join(paths)}" if mode else ""
    fleet.sh(host, f"mkdir -p {' '.join(paths)} && chown -R {S.DEPLOY_USER}: {' '.join(paths)}{chmod}")


def grant(fleet, hosts, inventory) -> None:
    """Each host's sudo rules: the demo playbook's and those of an app's playbook (`inventory`:
    a function of the fleet directory giving the app's inventory text); None: the demo's only."""
    from .harness import fleet_config

    spec = fleet.spec
    configs = [fleet_config(fleet, spec)]
    if inventory is not None:
        configs.append(fleet_config(fleet, spec, inventory))
    for h in hosts:
        fleet.write_sudoers(h.name, *configs)
