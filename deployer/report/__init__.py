"""A self-contained HTML report of one deploy, rendered from its ledger events.

One document, no external resources: inline CSS and inline SVG, no scripts. Sections and
charts carry stable ids (`summary`, `timeline`, `latency-chart`, `error-chart`, `verdicts`,
`events`) and `data-*` attributes so that tests and browsers can check them:

- timeline bars: ``<rect class="bar" data-stage data-host data-state="done|failed|running"
  data-start data-end>`` (seconds since the run started); one row per host plus a
  ``fleet`` row for fleet-wide stages; rollback periods: ``<rect class="rollback">``;
  switches: ``<line class="switch" data-host data-release>``.
- latency chart: ``<circle class="point" data-role data-host data-t data-ms data-ok>``.
- error chart: ``<circle class="point" data-role data-t0 data-t1 data-n data-errors data-rate>``.

Gate sample events (written by the gate, one per probe):
``{"type": "gate.sample", "run", "host", "release", "t": seconds since run start,
"ms": latency or null for a timeout, "ok": bool, "role": "canary"|"baseline"}``;
verdicts: ``{"type": "gate.verdict", "run", "wave", "host"?, "status": "pass|warn|fail",
"reasons": [...], "metrics": {...}, "t"?}``.
"""

from __future__ import annotations

from .model import FLEET as FLEET
from .model import events_for
from .page import CSS as CSS
from .page import OUTCOME_COLOURS as OUTCOME_COLOURS
from .page import render
from .svg import ROLE_COLOURS as ROLE_COLOURS
from .svg import STAGE_COLOURS as STAGE_COLOURS
from .svg import esc as esc

__all__ = ["events_for", "render"]
