"""Release artifacts in S3 (`artifact.store: bucket`): the three files of a release's artifact
(`layout.ARTIFACT_FILES`: the tar, its manifest, their sha256) under
`<prefix>/<env>/artifacts/<release><ext>`.

The hosts move the bytes themselves, never the orchestrator: the build host uploads with
presigned PUT URLs and the other hosts download with presigned GET URLs (`presigned`: signed
here, locally, with the orchestrator's credentials; the hosts hold none). Those URLs are
capabilities: they go to the hosts on stdin only, never in a command line, the output or a
dry run. The `.sha256` file goes last, so an artifact whose `.sha256` is in the bucket is whole;
`sha256_of` reads its first field (the tar's sha256, the ledger's `artifact`), which the hosts
check again before they unpack anything. `prune` keeps the artifacts of the releases it is
given and deletes the others.
"""

from __future__ import annotations

from typing import Any

from ..commands.artifact import FETCH_ORDER, UPLOAD_ORDER
from ..layout import ARTIFACT_FILES
from .s3 import S3Location, client, is_not_found

FOLDER = "artifacts"


def key(location: S3Location, env: str, release: str, ext: str) -> str:
    if not release or "/" in release or ext not in ARTIFACT_FILES:
        raise ValueError(f"artifact: expected a release name and one of {ARTIFACT_FILES}, got {release!r}{ext!r}")
    return location.env_prefix(env, FOLDER) + release + ext


def presigned(location: S3Location, env: str, release: str, *, put: bool, ttl: int, s3: Any = None) -> str:
    """The presigned URLs of `release`'s three files, one per line: PUT in UPLOAD_ORDER, else GET
    in FETCH_ORDER (valid `ttl` seconds)."""
    s3 = s3 or client(location)
    op, order = ("put_object", UPLOAD_ORDER) if put else ("get_object", FETCH_ORDER)
    return "".join(s3.generate_presigned_url(op, Params={"Bucket": location.bucket,
                                                         "Key": key(location, env, release, ext)},
                                             ExpiresIn=ttl) + "\n" for ext in order)


def sha256_of(location: S3Location, env: str, release: str, s3: Any = None) -> str:
    """The tar's sha256 the bucket's `.sha256` file of `release` names ("" when the bucket has no
    whole artifact of it)."""
    s3 = s3 or client(location)
    try:
        body = s3.get_object(Bucket=location.bucket, Key=key(location, env, release, ".sha256"))["Body"].read()
    except Exception as e:
        if is_not_found(e):
            return ""
        raise
    first = body.decode("ascii", "replace").split()
    return first[0] if first else ""


def releases(location: S3Location, env: str, s3: Any = None) -> dict[str, list[str]]:
    """release -> the keys of its files in the bucket."""
    s3 = s3 or client(location)
    prefix = location.env_prefix(env, FOLDER)
    out: dict[str, list[str]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            name = o["Key"][len(prefix):]
            for ext in ARTIFACT_FILES:
                if name.endswith(ext) and "/" not in name and len(name) > len(ext):
                    out.setdefault(name[:-len(ext)], []).append(o["Key"])
    return out


def prune(location: S3Location, env: str, keep: set[str], s3: Any = None) -> list[str]:
    """Delete the artifacts of every release not in `keep` (refused with an empty `keep`); the
    releases deleted."""
    if not keep:
        raise ValueError("artifact retention with nothing to keep would delete every artifact; refused")
    s3 = s3 or client(location)
    gone = []
    for release, keys in sorted(releases(location, env, s3).items()):
        if release in keep:
            continue
        for k in keys:
            s3.delete_object(Bucket=location.bucket, Key=k)
        gone.append(release)
    return gone
