"""Where the shared state lives in S3, and a boto3 client to reach it.

`S3Location(bucket, prefix)` names a bucket and a key prefix; every env's state is under
`<prefix>/<env>/`. `client(location)` builds an S3 client from boto3's standard credential
chain (environment, shared config/credentials profile, container or instance role): no key
is ever read from deployer's own configuration. Timeouts are short and retries few, so a
dead endpoint fails a command in seconds instead of hanging a deploy.

A retried conditional write can see its own first attempt: the helpers here only classify
errors; the lock and the ledger re-read after a 412 to tell "someone else won" from "my
earlier attempt won".
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from ..errors import DeployerError

DEFAULT_REGION = "us-east-1"
_CHAIN_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
              "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")
_sessions: dict[tuple, Any] = {}
_sessions_lock = threading.Lock()


class StateError(DeployerError):
    """The S3 state backend could not do what was asked (not a lost lock: see LockLost)."""

    exit_code = 4


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None

    def __post_init__(self) -> None:
        if not self.bucket or "/" in self.bucket:
            raise ValueError(f"S3 bucket: expected a bucket name, got {self.bucket!r}")
        object.__setattr__(self, "prefix", self.prefix.strip("/"))

    def key(self, *parts: str) -> str:
        """`<prefix>/<part>/<part>...`: parts are joined with '/', empty ones dropped."""
        clean = [p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/")]
        return "/".join(clean)

    def env_prefix(self, env: str, *parts: str) -> str:
        """The folder of one env's state (with a trailing '/'): `<prefix>/<env>/<parts>/`."""
        if not env or "/" in env:
            raise ValueError(f"env: expected a name without '/', got {env!r}")
        return self.key(env, *parts) + "/"

    @classmethod
    def parse(cls, url: str, endpoint_url: str | None = None, region: str | None = None) -> S3Location:
        """`s3://bucket/some/prefix` -> S3Location("bucket", "some/prefix")."""
        if not url.startswith("s3://"):
            raise ValueError(f"S3 location: expected s3://bucket[/prefix], got {url!r}")
        bucket, _, prefix = url[5:].partition("/")
        return cls(bucket, prefix, endpoint_url, region)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")


def client(location: S3Location, *, connect_timeout: float = 3.0, read_timeout: float = 10.0,
           max_attempts: int = 3) -> Any:
    """An S3 client for `location`, credentials from boto3's standard chain."""
    import boto3
    from botocore.config import Config

    region = location.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region and location.endpoint_url:
        region = DEFAULT_REGION  # S3-compatible servers sign with any region; SigV4 needs one
    config = Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                    retries={"max_attempts": max_attempts, "mode": "standard"},
                    s3={"addressing_style": "path"} if location.endpoint_url else None,
                    max_pool_connections=16)
    # One boto3 session per process and credential environment: building the first client
    # loads the service model (~0.15 s), later ones reuse it; refreshable credentials (roles)
    # refresh themselves. Clients are thread-safe, sessions are not: create under a lock.
    chain = (os.getpid(),) + tuple(os.environ.get(k) for k in _CHAIN_ENV)
    with _sessions_lock:
        session = _sessions.get(chain)
        if session is None:
            session = _sessions[chain] = boto3.session.Session()
        return session.client("s3", endpoint_url=location.endpoint_url, region_name=region, config=config)


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def is_precondition_failed(exc: BaseException) -> bool:
    """412: the If-Match / If-None-Match condition did not hold (someone else wrote first)."""
    return error_code(exc) == "PreconditionFailed" or http_status(exc) == 412


def is_conflict(exc: BaseException) -> bool:
    """409 ConditionalRequestConflict: a concurrent conditional write is in progress (AWS)."""
    return error_code(exc) == "ConditionalRequestConflict" or http_status(exc) == 409


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in ("NoSuchKey", "404", "NotFound") or http_status(exc) == 404


def lost_race(exc: BaseException) -> bool:
    """A conditional write that lost to another writer (or found the key gone)."""
    return is_precondition_failed(exc) or is_conflict(exc) or is_not_found(exc)
