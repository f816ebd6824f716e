"""Release ids (``20261121T120501Z-3f8cb52``) and validation of user-given git refs."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from deployer.errors import ConfigError

RELEASE_ID_FORMAT = "YYYYMMDDTHHMMSSZ-<7 hex digits>, e.g. 20261121T120501Z-3f8cb52"
RELEASE_ID_RE = re.compile(r"\A(\d{8}T\d{6}Z)-([0-9a-f]{7})\Z")
_COMMIT_RE = re.compile(r"\A[0-9a-fA-F]{7,40}\Z")
_REF_RE = re.compile(r"\A[A-Za-z0-9._/-]{1,200}\Z")
_TIME_FORMAT = "%Y%m%dT%H%M%SZ"


def new_release_id(now: datetime, commit: str) -> str:
    """The id of a release built at `now` (timezone-aware) from `commit`."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if not _COMMIT_RE.match(commit):
        raise ValueError(f"commit {commit!r}: expected 7 to 40 hex digits")
    return f"{now.astimezone(UTC).strftime(_TIME_FORMAT)}-{commit[:7].lower()}"


def validate_release_id(release_id: str) -> str:
    """Return `release_id` unchanged, or raise ConfigError."""
    match = RELEASE_ID_RE.match(release_id) if isinstance(release_id, str) else None
    if match:
        try:
            datetime.strptime(match.group(1), _TIME_FORMAT)
        except ValueError:
            match = None
    if not match:
        raise ConfigError(f"release id {release_id!r}: expected {RELEASE_ID_FORMAT}")
    return release_id


def release_time(release_id: str) -> datetime:
    """The UTC time encoded in a release id."""
    stamp = validate_release_id(release_id).split("-", 1)[0]
    return datetime.strptime(stamp, _TIME_FORMAT).replace(tzinfo=UTC)


def validate_ref(ref: str) -> str:
    """Return a git ref/branch/tag/sha given with --ref unchanged, or raise ConfigError."""
    if not _is_ref(ref):
        raise ConfigError(
            f"--ref {ref!r}: not a valid git ref (allowed: letters, digits, . _ / -)"
        )
    return ref


def validate_target(target: str) -> str:
    """Return a rollback target (a release id, a prefix of one, or the git ref a release was
    deployed from) unchanged, or raise ConfigError: checked before anything is contacted."""
    if not _is_ref(target):
        raise ConfigError(f"--to {target!r}: not a release id ({RELEASE_ID_FORMAT}), a prefix of "
                          "one, or a git ref (allowed: letters, digits, . _ / -)")
    return target


def _is_ref(ref: object) -> bool:
    return (
        isinstance(ref, str)
        and bool(_REF_RE.match(ref))
        and not ref.startswith(("-", "/"))
        and not ref.endswith((".lock", "/", "."))
        and ".." not in ref
        and "//" not in ref
        and "@{" not in ref
        and "/." not in ref
        and not ref.startswith(".")
    )
