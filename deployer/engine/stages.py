"""The fixed, named stages of a deploy, in order (DESIGN.md). Plans fill them; hooks run
before and after any of them; nothing reorders them."""

from ..config import HOOK_STAGES as STAGES

PER_WAVE = ("switch", "worker_restart", "gate")

__all__ = ["STAGES", "PER_WAVE"]
