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
