"""What pip and a user see of the package: its distribution name (not PyPI's unrelated
`deployer`), its version in one place, the links of its metadata."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

import deployer
from deployer.cli import cli

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_distribution_name_is_deployers_own():
    assert PROJECT["name"] == deployer.DISTRIBUTION != "deployer"
    assert PROJECT["dynamic"] == ["version"]
    assert PROJECT["scripts"] == {"deployer": "deployer.program:main"}


def test_the_ci_examples_install_that_distribution():
    for example in sorted((ROOT / "examples" / "ci").glob("*.yml")):
        packages = re.findall(r'DEPLOYER_PACKAGE: "([^"]+)"', example.read_text())
        assert packages and all(p.startswith(f"{deployer.DISTRIBUTION} @ ") for p in packages), example


def test_the_metadata_links_docs_changelog_and_source():
    assert set(PROJECT["urls"]) >= {"Documentation", "Changelog", "Source"}
    assert all(url.startswith("https://") for url in PROJECT["urls"].values())


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(args=["--version"], prog_name="deployer")
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"deployer {deployer.__version__} (pip: {deployer.DISTRIBUTION})\n"


def test_the_version_is_released_in_the_changelog_and_pinned_by_the_ci_examples():
    """Keep a Changelog: an [Unreleased] section on top, then one section per version, newest
    first, each dated, with its link; the CI examples install the tag of this version."""
    text = (ROOT / "CHANGELOG.md").read_text()
    sections = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, flags=re.M)
    assert sections[0] == ("Unreleased", "")
    assert sections[1][0] == deployer.__version__ and sections[1][1], sections[:3]
    assert all(date for _, date in sections[1:])
    for name, _ in sections:
        assert re.search(rf"^\[{re.escape(name)}\]: https://", text, flags=re.M), name
    for example in sorted((ROOT / "examples" / "ci").glob("*.yml")):
        packages = re.findall(r'DEPLOYER_PACKAGE: "([^"]+)"', example.read_text())
        assert all(p.endswith(f"@v{deployer.__version__}") for p in packages), (example, packages)
