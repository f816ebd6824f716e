"""The go-live checklist as checks (`inv preflight --env E`): pure definitions, no I/O.

Each `Check` has a name, the remote `Command` it runs (built like deployer/commands: every
value quoted), the roles it is meant for, the hosts it runs on (resolved from the config),
and a pure ``parse(stdout, exit_status) -> (ok, detail)``. A runner (not here) runs
``check.command`` on each of ``check.hosts`` through the transport and turns the answer into
`Result` rows with ``check.results(host, stdout, exit_status)`` (one row, ``check.result``,
unless the check has ``rows``); a connection or timeout failure becomes
``check.error(host, message)``. A check whose ``command`` is None is local (the deploy
window): ``check.run_local()`` gives its results.

A failed check is FAIL, or WARN when the check is not ``blocking`` (informational ones).
``exit_code(results)`` is 0 when nothing FAILed, 3 (refused) otherwise.

Checks: ``ssh`` (``true``; the caller verifies the host key when it connects), ``disk``
(free MiB from ``df -Pk``), ``binaries`` (per role), ``rights`` (for a non-root SSH user: the
playbook's sudo rules, the load balancer's socket, the database role, the trees deployer writes;
one script per host answering one row per right, `Check.rows`), ``app_env`` (the shared ``.env``:
APP_DEBUG, APP_ENV unless the playbook's ``preflight.app_env`` is false, mode, not in git; never
prints its content; missing is no failure when the inventory's ``secret_files`` writes it),
``shared`` (the other shared files and dirs: present, or created by the next deploy, or a FAIL
naming the path nobody creates), ``app_check`` (the playbook's ``preflight.checks``),
``pending_migrations`` (informational), ``lock`` (free or held) and ``window`` (deploy windows
and freezes).

Modules: `model` (Check, Result, the statuses, table, exit_code), `remote` (the commands and
parsers of the checks that run on hosts), `shared` (what shared/ holds and who creates it),
`rights` and `fixes` (the rights check's script and its rows), `checklist` (`checks_for` and
the local window check).
"""

from __future__ import annotations

# deployer.preflight keeps every name it had as a single module.
from .checklist import (  # noqa: F401
    APP_BINARIES,
    DB_BINARIES,
    DB_TOOLS,
    DEFAULT_MIN_FREE_MIB,
    FENCE_BINARIES,
    LB_BINARIES,
    checks_for,
    rights_checks,
    window_parse,
)
from .model import ALL, FAIL, LOCAL, PASS, WARN, Check, Parse, Result, exit_code, table  # noqa: F401
from .remote import (  # noqa: F401
    NO_RELEASE,
    app_env_command,
    binaries_command,
    disk_command,
    parse_app_check,
    parse_app_env,
    parse_binaries,
    parse_disk,
    parse_lock,
    parse_pending,
    parse_ssh,
    pending_command,
    ssh_command,
)

__all__ = ["Check", "DEFAULT_MIN_FREE_MIB", "FAIL", "LOCAL", "PASS", "Result", "WARN",
           "checks_for", "exit_code", "table"]
