"""Shared deploy state in S3 (optional backend): the env lock, the ledger and backup copies.

Pure boto3, no SSH. Layout under `s3://<bucket>/<prefix>/<env>/`:

    lock.json               the lock (conditional writes; fencing token)     -> lock.S3Lock
    ledger/<time>-<run>-<seq>.json   one JSON list of events per batch        -> ledger.S3Ledger
    backups/<backup file name>       database dumps, sha256 in metadata       -> backups

Credentials come from boto3's standard chain (environment, profile, instance role).
"""

from .backups import (
           BackupCorrupt,
           BackupObject,
           apply_retention,
           backup_key,
           download,
           ensure_local,
           list_backups,
           upload,
)
from .ledger import LedgerRead, S3Ledger
from .lock import LockHeld, LockLost, S3Lock
from .s3 import S3Location, StateError, client

__all__ = ["BackupCorrupt", "BackupObject", "LedgerRead", "LockHeld", "LockLost", "S3Ledger", "S3Location",
           "S3Lock", "StateError", "apply_retention", "backup_key", "client", "download", "ensure_local",
           "list_backups", "upload"]
