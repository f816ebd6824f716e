"""Backups in S3 (database dumps, and archives of the app's files): upload after the local copy
is verified, fetch back verified.

Keys: `<prefix>/<env>/backups/<dump file name>` and `<prefix>/<env>/files/<archive name>`
(`backup_key`, by `Kind`: each kind is listed and pruned apart). `upload()` checks the local
file's sha256 against the one the dump step recorded, then sends it (multipart above 8 MiB,
through boto3's managed transfer) with the sha256 in the object's metadata (`x-amz-meta-sha256`)
and an S3 SHA256 checksum that the server verifies on arrival where it supports that (AWS,
SeaweedFS >= 3.x); a server that rejects the checksum gets the upload again without it.
Uploading a backup already there with the same sha256 is a no-op; with another sha256 it is
refused (a backup is never overwritten).

`download()` writes next to `dest` and renames only after the sha256 of what arrived matches:
a mismatch removes the download and raises BackupCorrupt. `apply_retention()` deletes the
backups that are not in `keep` (names or keys, computed by the caller's planner, which puts
protected backups in it), never one in `keep`, never a name that is not a finished backup's
(as `retention.plan` never removes those), and refuses an empty `keep`.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..retention import parse_backup_name
from .s3 import S3Location, StateError, client, error_code, is_not_found

log = logging.getLogger(__name__)
MULTIPART_THRESHOLD = 8 * 1024 * 1024
_CHECKSUM_UNSUPPORTED = {"NotImplemented", "InvalidArgument", "InvalidRequest", "UnsupportedOperation"}


class Kind(enum.Enum):
    """What a backup holds; its value is the bucket folder that keeps that kind."""

    DATABASE = "backups"  # the database's dumps
    FILES = "files"  # archives of the app's own files (`backup.files`), one per app host


class BackupCorrupt(StateError):
    """A backup's bytes do not match its sha256."""


@dataclass
class BackupObject:
    key: str
    name: str
    size: int
    last_modified: datetime | None = None
    sha256: str = ""  # from the object's metadata (list_backups fills it only when asked)
    etag: str = ""
    checksum_sha256: str = ""  # the server's own SHA256 checksum (base64; "-N" for multipart)


def backup_key(location: S3Location, env: str, name: str, kind: Kind = Kind.DATABASE) -> str:
    if not name or "/" in name:
        raise ValueError(f"backup name: expected a file name, got {name!r}")
    return location.env_prefix(env, kind.value) + name


def sha256_file(path: Path, chunk: int = 1024 * 1024) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD,
                          max_concurrency=4, use_threads=True)


def head(location: S3Location, key: str, s3: Any = None) -> BackupObject | None:
    s3 = s3 or client(location)
    try:
        h = s3.head_object(Bucket=location.bucket, Key=key, ChecksumMode="ENABLED")
    except Exception as e:
        if is_not_found(e):
            return None
        raise
    return BackupObject(key=key, name=key.rsplit("/", 1)[-1], size=int(h.get("ContentLength", 0)),
                        last_modified=h.get("LastModified"), sha256=h.get("Metadata", {}).get("sha256", ""),
                        etag=h.get("ETag", ""), checksum_sha256=h.get("ChecksumSHA256", "") or "")


def upload(location: S3Location, local_file: Path, key: str, sha256: str, *, s3: Any = None,
           verify_local: bool = True) -> BackupObject:
    """Upload a verified local backup to `key`; what is in S3 afterwards."""
    s3 = s3 or client(location)
    local_file, sha256 = Path(local_file), sha256.lower()
    if verify_local and sha256_file(local_file) != sha256:
        raise BackupCorrupt(f"{local_file}: sha256 differs from the recorded {sha256}; not uploaded")
    there = head(location, key, s3)
    if there is not None:
        if there.sha256 == sha256 and there.size == local_file.stat().st_size:
            return there
        raise StateError(f"s3://{location.bucket}/{key} exists with sha256 {there.sha256 or '?'}; "
                         "a backup is never overwritten")
    extra = {"Metadata": {"sha256": sha256}, "ContentType": "application/octet-stream"}
    try:
        s3.upload_file(str(local_file), location.bucket, key, Config=_transfer_config(),
                       ExtraArgs=extra | {"ChecksumAlgorithm": "SHA256"})
    except Exception as e:
        if error_code(e) not in _CHECKSUM_UNSUPPORTED:
            raise
        log.info("backup upload: server refused a SHA256 checksum (%s); uploading without", error_code(e))
        s3.upload_file(str(local_file), location.bucket, key, Config=_transfer_config(), ExtraArgs=extra)
    done = head(location, key, s3)
    if done is None or done.sha256 != sha256 or done.size != local_file.stat().st_size:
        raise StateError(f"s3://{location.bucket}/{key}: not as uploaded ({done})")
    return done


def download(location: S3Location, key: str, dest: Path, expect_sha256: str, *, s3: Any = None) -> Path:
    """Fetch `key` to `dest`, only if its bytes have `expect_sha256`; else BackupCorrupt."""
    s3 = s3 or client(location)
    dest, expect = Path(dest), expect_sha256.lower()
    there = head(location, key, s3)
    if there is None:
        raise StateError(f"s3://{location.bucket}/{key}: no such backup")
    if there.sha256 and there.sha256 != expect:
        raise BackupCorrupt(f"s3://{location.bucket}/{key} is recorded with sha256 {there.sha256}, "
                            f"not the expected {expect}; not downloaded")
    tmp = dest.with_name(dest.name + ".s3partial")
    try:
        s3.download_file(location.bucket, key, str(tmp), Config=_transfer_config())
        got = sha256_file(tmp)
        if got != expect:
            raise BackupCorrupt(f"s3://{location.bucket}/{key}: downloaded bytes have sha256 {got}, "
                                f"expected {expect}; download removed")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def list_backups(location: S3Location, env: str, *, s3: Any = None, with_sha256: bool = False,
                 kind: Kind = Kind.DATABASE) -> list[BackupObject]:
    """The env's backups of `kind` in S3, in key order (with their metadata sha256 if asked: one
    HEAD each)."""
    s3 = s3 or client(location)
    prefix = location.env_prefix(env, kind.value)
    out: list[BackupObject] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            name = o["Key"][len(prefix):]
            if not name or "/" in name:
                continue
            out.append(BackupObject(key=o["Key"], name=name, size=int(o.get("Size", 0)),
                                    last_modified=o.get("LastModified"), etag=o.get("ETag", "")))
    out.sort(key=lambda b: b.key)
    if with_sha256:
        for b in out:
            full = head(location, b.key, s3)
            b.sha256, b.checksum_sha256 = (full.sha256, full.checksum_sha256) if full else ("", "")
    return out


def apply_retention(location: S3Location, env: str, keep: set[str], *, s3: Any = None,
                    dry_run: bool = False, kind: Kind = Kind.DATABASE) -> list[str]:
    """Delete the env's backups of `kind` whose name or key is not in `keep`; the keys deleted."""
    if not keep:
        raise StateError(f"{env}: retention with nothing to keep would delete every backup; refused")
    s3 = s3 or client(location)
    deleted = []
    for b in list_backups(location, env, s3=s3, kind=kind):
        if b.name in keep or b.key in keep or parse_backup_name(b.name) is None:
            continue
        if not dry_run:
            s3.delete_object(Bucket=location.bucket, Key=b.key)
        deleted.append(b.key)
    return deleted


def ensure_local(location: S3Location, key: str, dest: Path, expect_sha256: str, *,
                 s3: Any = None) -> tuple[Path, bool]:
    """For a restore: `dest` if it is there with the right sha256, else fetched from S3 (and
    verified). (path, fetched). A local copy with the wrong sha256 is replaced, never used."""
    dest = Path(dest)
    if dest.is_file() and sha256_file(dest) == expect_sha256.lower():
        return dest, False
    return download(location, key, dest, expect_sha256, s3=s3), True
