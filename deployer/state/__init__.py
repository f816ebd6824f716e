"""Shared deploy state in S3 (optional backend): the env lock, the ledger and backup copies.

Pure boto3, no SSH. Layout under `s3://<bucket>/<prefix>/<env>/`:

    lock.json               the lock (conditional writes; fencing token)     -> lock.S3Lock
    ledger/t<token>-<time>-<run>-<seq>.json   one JSON list of events per batch -> ledger.S3Ledger
    backups/<backup file name>       database dumps, sha256 in metadata       -> backups
    files/<archive name>             archives of the app's files (backup.files) -> backups

Credentials come from boto3's standard chain (environment, profile, instance role).

The default backend is `ssh.SshState` (lock and ledger on the ledger host). Nothing here is
imported eagerly: boto3 is loaded only by runs whose inventory keeps state in S3.
"""
