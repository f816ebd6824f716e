"""The inventory's `state:` section: where the lock, the ledger and the backup copies live (the
fleet's ledger host over SSH, or an S3 bucket). Credentials never go in a file."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, Strict, model_validator

from .types import (
    Float,
    _fail,
    _Model,
)

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_REGION_RE = re.compile(r"[a-z0-9-]{2,32}\Z")
#: keys refused in `state:` with their own message: credentials never go in a file
_STATE_SECRETS = ("access_key", "aws_access_key_id", "secret_key", "aws_secret_access_key",
                  "secret_access_key", "session_token", "aws_session_token", "password", "credentials",
                  "token")


def _bucket(value: str) -> str:
    if not _BUCKET_RE.match(value) or ".." in value:
        raise _fail(f"invalid bucket name {value!r} (3-63 lowercase letters, digits, '.' and '-')")
    return value


def _prefix(value: str) -> str:
    clean = value.strip("/")
    if any(p in ("", ".", "..") for p in clean.split("/")) and clean:
        raise _fail(f"invalid prefix {value!r} (no empty, '.' or '..' parts)")
    if any(c.isspace() or ord(c) < 32 for c in clean):
        raise _fail(f"invalid prefix {value!r} (no spaces or control characters)")
    return clean


def _endpoint(value: str) -> str:
    from urllib.parse import urlsplit

    u = urlsplit(value)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise _fail(f"expected an http(s) URL like https://s3.example.com, got {value!r}")
    if u.username or u.password:
        raise _fail("must not contain credentials (they come from the environment, a profile or "
                    "an instance role)")
    if u.query or u.fragment or u.path not in ("", "/"):
        raise _fail(f"expected a bare endpoint (scheme, host, port), got {value!r}")
    return value.rstrip("/")


def _region(value: str) -> str:
    if not _REGION_RE.match(value):
        raise _fail(f"invalid region {value!r}")
    return value


class State(_Model):
    """Where the env's lock and ledger live: `ssh` (on the ledger host, the default) or `s3`
    (a bucket; backups are copied there too). Credentials come from boto3's standard chain
    (environment, profile, instance role), never from this file."""

    backend: Literal["ssh", "s3"] = "ssh"
    bucket: Annotated[str, Strict(), AfterValidator(_bucket)] | None = None
    prefix: Annotated[str, Strict(), AfterValidator(_prefix)] = ""
    endpoint_url: Annotated[str, Strict(), AfterValidator(_endpoint)] | None = None
    region: Annotated[str, Strict(), AfterValidator(_region)] | None = None
    #: seconds a lock holder may go without a heartbeat before its lock is stale: SSH, it beats
    #: every min(10, lease/6) s and `recover` treats a remote holder silent that long as dead;
    #: S3, the lease lasts that long without renewal (renewed every lease/3 s)
    lease: Annotated[Float, Field(ge=1, le=3600)] = 60.0

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in data:
                if str(key).lower() in _STATE_SECRETS:
                    raise _fail(f"{key}: credentials cannot be set in the inventory; boto3 reads them "
                                "from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an "
                                "instance role")
        return data

    @model_validator(mode="after")
    def _check(self) -> State:
        if self.backend == "s3" and self.bucket is None:
            raise _fail("bucket: required when backend is s3")
        if self.backend == "ssh" and (self.bucket or self.endpoint_url or self.prefix or self.region):
            raise _fail("bucket, prefix, endpoint_url and region need backend: s3")
        return self
