"""The documentation reaches an installed deployer: docs/*.md are package data (the deployer/docs
link), `deployer docs [TOPIC]` lists and prints them, what `init` writes points there, and shell
completion works as docs/cli.md says."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from deployer import manual, verbs
from deployer.init import write_project
from deployer.output import JsonReporter

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted(p.stem for p in (ROOT / "docs").glob("*.md"))


def test_the_docs_are_package_data():
    assert (ROOT / "deployer" / "docs").resolve() == (ROOT / "docs").resolve()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "docs/*.md" in data["deployer"]
    assert sorted(manual.topics()) == DOCS and len(DOCS) >= 5


def test_docs_lists_the_topics_with_their_titles_and_where_they_are(capsys):
    assert verbs.docs() == 0
    out = capsys.readouterr().out
    for name in DOCS:
        title = (ROOT / "docs" / f"{name}.md").read_text().splitlines()[0].removeprefix("# ")
        assert re.search(rf"^  {name} +{re.escape(title)}$", out, re.M), (name, out)
    assert out.rstrip().endswith(f"Files: {(ROOT / 'docs').resolve()}")


def test_docs_prints_one_topic_and_names_its_file(capsys):
    assert verbs.docs("configuration") == 0
    out, err = capsys.readouterr()
    assert out == (ROOT / "docs" / "configuration.md").read_text()
    assert err == f"(Configuration: {(ROOT / 'docs' / 'configuration.md').resolve()})\n"


def test_an_unknown_topic_is_bad_input_naming_the_topics(capsys):
    assert verbs.docs("confg") == 2
    assert capsys.readouterr().err == f"error: docs: no topic 'confg' (topics: {', '.join(DOCS)})\n"


@pytest.mark.parametrize("kind", ["laravel", "demo"])
def test_what_init_writes_points_to_installed_docs(kind, tmp_path):
    import io

    assert write_project(tmp_path, JsonReporter(io.StringIO()), kind=kind, env="production", app="shop") == 0
    text = "".join(p.read_text() for p in sorted(tmp_path.rglob("*")) if p.is_file())
    assert "deployer's repository" not in text and "in its repository" not in text
    mentioned = set(re.findall(r"`deployer docs (\w+)`", text))
    assert {"configuration", "servers", "playbooks"} <= mentioned <= set(DOCS)


def this_tree_on_path(tmp_path: Path) -> str:
    """A PATH whose `deployer` runs this tree's deployer with this Python."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    program = bindir / "deployer"
    program.write_text(f"#!/bin/sh\nPYTHONPATH='{ROOT}' exec '{sys.executable}' -m deployer \"$@\"\n")
    program.chmod(0o755)
    return f"{bindir}:/usr/bin:/bin"


def test_bash_completion_as_docs_cli_md_says(tmp_path):
    cli_md = (ROOT / "docs" / "cli.md").read_text()
    assert 'eval "$(_DEPLOYER_COMPLETE=bash_source deployer)"' in cli_md
    assert "_DEPLOYER_COMPLETE=zsh_source" in cli_md and "_DEPLOYER_COMPLETE=fish_source" in cli_md
    assert "inv --print-completion-script bash" in cli_md
    script = """
eval "$(_DEPLOYER_COMPLETE=bash_source deployer)"
complete -p deployer
for words in "deployer mainte" "deployer maintenance r" "deployer deploy --dry" "deployer docs conf"; do
  COMP_WORDS=($words); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=()
  _deployer_completion deployer; echo "${COMPREPLY[*]}"
done
"""
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                          env={"PATH": this_tree_on_path(tmp_path), "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["complete -o nosort -F _deployer_completion deployer",
                                        "maintenance", "run", "--dry-run", "configuration"]
