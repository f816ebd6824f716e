"""The deploy tree on a host: where releases, shared files, `current`, the repo mirror and
deployer's own state live under `deploy_to`. The one place these paths are spelled."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

RELEASES = "releases"
SHARED = "shared"
CURRENT = "current"
REPO = "repo"
STATE = ".deployer"
BACKUPS = "backups"  # archives of the app's files (`backup.files`)
#: what deployer writes under deploy_to (`current` is a symlink, replaced by rename)
ENTRIES = (RELEASES, SHARED, REPO, STATE, BACKUPS)
#: the files of a release's artifact (`artifact.build`): the tar, its manifest, their sha256
ARTIFACT_FILES = (".tar", ".manifest", ".sha256")


@dataclass(frozen=True)
class Layout:
    """The paths of the deploy tree rooted at `deploy_to` (an absolute POSIX path)."""

    deploy_to: str

    def _at(self, name: str) -> str:
        return posixpath.join(self.deploy_to, name)

    @property
    def releases(self) -> str:
        return self._at(RELEASES)

    @property
    def shared(self) -> str:
        return self._at(SHARED)

    @property
    def current(self) -> str:
        return self._at(CURRENT)

    @property
    def repo(self) -> str:
        """The bare mirror of the repository every release is exported from."""
        return self._at(REPO)

    @property
    def state(self) -> str:
        """deployer's own files on the host: the lock, the ledger, log marks, the watchdog."""
        return self._at(STATE)

    @property
    def backups(self) -> str:
        """The host's archives of the app's files (`backup.files`)."""
        return self._at(BACKUPS)

    @property
    def trash(self) -> str:
        """Where removed releases are moved (one rename) before their files are deleted in the
        background: out of `releases/`, so nothing ever sees a half-deleted release."""
        return posixpath.join(self.state, "trash")

    @property
    def artifacts(self) -> str:
        """Release artifacts (`artifact.build`): packed on the build host, and each release's
        manifest on every host (what the next release hard-links from)."""
        return posixpath.join(self.state, "artifacts")

    def artifact(self, release: str, ext: str) -> str:
        """`release`'s artifact file: one of ARTIFACT_FILES (`.tar`, `.manifest`, `.sha256`)."""
        return posixpath.join(self.artifacts, release + ext)

    def release(self, release: str) -> str:
        return posixpath.join(self.releases, release)

    def shared_file(self, rel: str) -> str:
        """A file or dir under shared/ (`rel` relative to it)."""
        return posixpath.join(self.shared, rel)

    def current_tmp(self, release: str) -> str:
        """The temporary symlink a switch renames over `current`."""
        return self._at(f".current.{release}.tmp")

    def log_mark(self, release: str) -> str:
        """Where the size of `release`'s log at the switch is kept."""
        return posixpath.join(self.state, f"log-offset-{release}")
