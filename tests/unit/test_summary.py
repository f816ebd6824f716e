"""Markdown step summaries from recorded JSON events, and the CI examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from deployer import events as E
from deployer import summary as S

ROOT = Path(__file__).resolve().parents[2]
REL = "20261121T120501Z-3f8cb52"
OLD = "20261120T090000Z-1a2b3c4"


def ev(kind: str, t: int = 0, **fields) -> dict:
    return {"schema": 1, "event": kind, "at": f"2026-11-21T12:05:{t:02d}.000000Z", **fields}


def stage(name: str, state: str, **fields) -> dict:
    return ev("stage", stage=name, state=state, **fields)


SUCCESS = [
    stage("preflight", "start", detail="5 hosts, ref v2"),
    ev("run", message="deploying v2 (3f8cb52) to local: 3 app hosts"),
    stage("snapshot", "start", detail=""), stage("snapshot", "done", seconds=0.12),
    stage("maintenance", "start", detail="not needed"), stage("maintenance", "done", seconds=0.0),
    stage("backup", "start", detail=""), stage("backup", "done", seconds=1.84),
    stage("switch", "start", detail="wave 1/2: web1"), stage("switch", "done", seconds=0.31),
    stage("gate", "start", detail="wave 1/2"),
    ev("gate", host="web1", passed=True, detail="200 x3", release=REL),
    stage("gate", "done", seconds=3.05),
    stage("switch", "start", detail="wave 2/2: web2, web3"), stage("switch", "done", seconds=0.4),
    stage("gate", "start", detail="wave 2/2"), stage("gate", "done", seconds=2.5),
    stage("finalize", "start", detail=""),
    ev("notice", message="cleanup: removed 1 old release(s)"),
    stage("finalize", "done", seconds=0.2),
    ev("outcome", outcome="success", release=REL,
       message=f"deployed {REL} (v2) to 3 hosts in 12.3s"),
]

ROLLED_BACK = [
    stage("preflight", "start", detail="5 hosts, ref v3"),
    ev("run", message="deploying v3 (3f8cb52) to local: 3 app hosts"),
    stage("switch", "start", detail="wave 1/2: web1"), stage("switch", "done", seconds=0.3),
    stage("gate", "start", detail="wave 1/2"),
    ev("gate", host="web1", passed=False, detail="HTTP 500 (expected 200) | body <html>",
       release=REL),
    stage("gate", "failed", error="health gate failed on 1 host(s): web1: HTTP 500"),
    ev("rollback", message="deploy failed: health gate failed on 1 host(s): web1: HTTP 500\n"
                           "rolling back to the snapshot"),
    ev("gate", host="web1", passed=True, detail="200 x3", release=OLD),
    ev("rollback", message=f"rolled back 1 switched host(s) in 2.1s; {REL} marked bad"),
    ev("error", exit_code=1, hint=None,
       message=f"deploy of {REL} (v3) failed and was rolled back: health gate failed on 1 "
               "host(s): web1: HTTP 500"),
]

REFUSED = [
    stage("preflight", "start", detail="5 hosts, ref v2"),
    ev("error", exit_code=3, hint="wait, or `inv unlock --env local --force` if it is stale",
       message="local: lock held by alice@laptop pid 4242 since 2026-11-21T11:00:00Z"),
]


@pytest.mark.parametrize("events", [SUCCESS, ROLLED_BACK, REFUSED])
def test_recorded_events_are_valid(events):
    assert [E.validate(e) for e in events] == [[] for _ in events]


def test_success_summary():
    md = S.markdown(SUCCESS, env="local", command="deploy", exit_code=0)
    lines = md.splitlines()
    assert lines[0] == "### deployer deploy local: succeeded (exit 0)"
    assert f"**Release:** `{REL}`  " in lines
    assert "**Run:** deploying v2 (3f8cb52) to local: 3 app hosts  " in lines
    assert "| stage | detail | state | seconds |" in lines
    assert "| backup |  | done | 1.8 |" in lines
    assert "| switch | wave 1/2: web1 | done | 0.3 |" in lines
    assert "| switch | wave 2/2: web2, web3 | done | 0.4 |" in lines
    assert "| gate | wave 2/2 | done | 2.5 |" in lines
    assert "| preflight | 5 hosts, ref v2 | started |  |" in lines  # preflight has no "done"
    assert "Gate failures" not in md and "Rollback" not in md and "Error" not in md
    assert "- cleanup: removed 1 old release(s)" in lines
    assert lines[-1] == f"**Result:** deployed {REL} (v2) to 3 hosts in 12.3s"
    assert md.endswith("\n")


def test_rolled_back_summary():
    md = S.markdown(ROLLED_BACK, env="local", command="deploy", exit_code=1)
    lines = md.splitlines()
    assert lines[0] == "### deployer deploy local: rolled back (exit 1)"
    assert "| gate | wave 1/2 | failed |  |" in lines
    assert "#### Gate failures" in lines
    # markdown and HTML in details are escaped; the passing re-check is not a failure
    assert (f"- **web1** ({REL}): HTTP 500 (expected 200) \\| body &lt;html&gt;") in lines
    assert not any(OLD in line for line in lines)
    assert "#### Rollback" in lines
    assert ("- deploy failed: health gate failed on 1 host(s): web1: HTTP 500<br>"
            "rolling back to the snapshot") in lines
    assert f"- rolled back 1 switched host(s) in 2.1s; {REL} marked bad" in lines
    err = lines.index("#### Error")
    assert lines[err + 2:err + 5] == [
        "```text",
        f"deploy of {REL} (v3) failed and was rolled back: health gate failed on 1 host(s): "
        "web1: HTTP 500",
        "```"]
    assert "Hint" not in md


def test_refused_summary():
    md = S.markdown(REFUSED, env="prod", command="deploy", exit_code=3)
    lines = md.splitlines()
    assert lines[0] == "### deployer deploy prod: refused, nothing touched (exit 3)"
    assert "| preflight | 5 hosts, ref v2 | started |  |" in lines
    assert "local: lock held by alice@laptop pid 4242 since 2026-11-21T11:00:00Z" in lines
    assert ("**Hint:** wait, or \\`inv unlock --env local --force\\` if it is stale") in lines


def test_paused_and_other_exit_codes():
    paused = [ev("outcome", outcome="paused", release=REL, message="paused after wave 1/3")]
    assert S.markdown(paused, env="prod", command="deploy", exit_code=0).startswith(
        "### deployer deploy prod: paused (exit 0)\n")
    assert S.markdown([], env="prod", command="rollback", exit_code=4).splitlines()[0] == \
        "### deployer rollback prod: needs a human (exit 4)"
    md = S.markdown([], env="prod", command="deploy", exit_code=130)
    assert md.splitlines()[0] == "### deployer deploy prod: interrupted (exit 130)"
    assert "no error event was recorded" in md
    assert S.markdown([], env="x", command="deploy", exit_code=9).startswith(
        "### deployer deploy x: failed (exit 9)")


def test_rows_and_plan_become_tables():
    rows = [ev("row", table="prod: releases", release=REL, ref="v2", **{"served by": "web1"}),
            ev("row", table="prod: releases", release=OLD, ref="v1", **{"served by": ""})]
    md = S.markdown(rows, env="prod", command="releases", exit_code=0)
    assert "#### prod: releases\n\n| release | ref | served by |\n|---|---|---|\n" \
           f"| {REL} | v2 | web1 |\n| {OLD} | v1 |  |" in md
    plan = [ev("plan", stage="pull", host=f"web{i}", command="git archive") for i in range(250)]
    md = S.markdown(plan, env="prod", command="deploy --dry-run", exit_code=0)
    assert md.startswith("### deployer deploy --dry-run prod: dry run (exit 0)")
    assert "#### Plan (250 commands)" in md
    assert md.count("| pull | web") == S.MAX_ROWS
    assert "_50 more row(s) not shown._" in md


def test_code_fence_survives_backticks_in_the_message():
    events = [ev("error", exit_code=1, message="web1: `x` exited 1\n```\nstderr", hint=None)]
    lines = S.markdown(events, env="e", command="deploy", exit_code=1).splitlines()
    i = lines.index("````text")
    assert lines[i + 1:i + 5] == ["web1: `x` exited 1", "```", "stderr", "````"]


def test_write_step_summary(tmp_path):
    assert S.write_step_summary("x", environ={}) is False
    target = tmp_path / "summary.md"
    target.write_text("earlier step\n")
    env = {"GITHUB_STEP_SUMMARY": str(target)}
    assert S.write_step_summary("### one", environ=env) is True
    assert S.write_step_summary("### two\n", environ=env) is True
    assert target.read_text() == "earlier step\n### one\n### two\n"


def test_main_reads_json_lines_and_skips_noise(tmp_path, monkeypatch, capsys):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([json.dumps(e) for e in REFUSED] + ["error: lock held", ""]))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    assert S.main([str(path), "--env", "prod", "--exit-code", "3"]) == 0
    out = capsys.readouterr().out
    assert out == S.markdown(REFUSED, env="prod", command="deploy", exit_code=3)
    summary = tmp_path / "step.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert S.main([str(tmp_path / "missing.jsonl"), "--env", "prod", "--exit-code", "2"]) == 0
    assert capsys.readouterr().out == ""
    assert summary.read_text().startswith(
        "### deployer deploy prod: bad input or config, nothing touched (exit 2)")


# ------------------------------------------------------------ CI examples


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / "examples" / "ci" / name).read_text(encoding="utf-8"))


def _deploy_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if "deployer deploy " in line]


def test_github_actions_example():
    wf = _load("github-actions.yml")
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as true
    assert on["push"]["branches"] == ["main"] and on["push"]["tags"] == ["v*"]
    jobs = wf["jobs"]
    assert set(jobs) == {"staging", "prod"}
    for name, env in (("staging", "staging"), ("prod", "prod")):
        job = jobs[name]
        assert job["concurrency"]["group"] == f"deployer-{env}"
        assert job["concurrency"]["cancel-in-progress"] is False
        steps = job["steps"]
        deploy = next(s for s in steps if s.get("id") == "deploy")
        lines = _deploy_lines(deploy["run"])
        assert len(lines) == 1
        assert f"--env {env} " in lines[0]
        assert "--yes --output json --lock-wait 900" in lines[0]
        # the key and known_hosts come from secrets through the environment only
        assert set(deploy["env"]) >= {"DEPLOYER_SSH_KEY_DATA", "DEPLOYER_KNOWN_HOSTS_DATA"}
        assert all("secrets." in deploy["env"][k]
                   for k in ("DEPLOYER_SSH_KEY_DATA", "DEPLOYER_KNOWN_HOSTS_DATA"))
        assert "secrets." not in deploy["run"]
        upload = next(s for s in steps if str(s.get("uses", "")).startswith(
            "actions/upload-artifact"))
        assert upload["if"] == "always()"
        summary = next(s for s in steps if "deployer.summary" in str(s.get("run", "")))
        assert summary["if"].startswith("always()")
    staging = next(s for s in jobs["staging"]["steps"] if s.get("id") == "deploy")
    assert "--ref ${{ github.sha }} " in _deploy_lines(staging["run"])[0]
    prod = next(s for s in jobs["prod"]["steps"] if s.get("id") == "deploy")
    assert prod["env"]["DEPLOY_REF"] == "${{ github.ref_name }}"
    assert jobs["staging"]["if"] == "github.ref == 'refs/heads/main'"
    assert jobs["prod"]["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert jobs["prod"]["environment"] == "production"


def test_gitlab_ci_example():
    ci = _load("gitlab-ci.yml")
    jobs = {k for k, v in ci.items() if isinstance(v, dict) and ("script" in v or "extends" in v)}
    assert jobs == {".deploy", "deploy-staging", "deploy-prod"}
    base = ci[".deploy"]
    lines = _deploy_lines("\n".join(base["script"]))
    assert len(lines) == 1 and "--yes --output json --lock-wait 900" in lines[0]
    assert base["artifacts"]["when"] == "always"
    assert "deploy-events.jsonl" in base["artifacts"]["paths"]
    for name, env in (("deploy-staging", "staging"), ("deploy-prod", "prod")):
        job = ci[name]
        assert job["extends"] == ".deploy"
        assert job["resource_group"] == f"deployer-{env}"
        assert job["variables"]["DEPLOY_ENV"] == env
        assert job["rules"]
    assert ci["deploy-staging"]["rules"][0]["if"] == '$CI_COMMIT_BRANCH == "main"'
    assert ci["deploy-prod"]["rules"][0]["if"] == "$CI_COMMIT_TAG =~ /^v/"
    assert ci["deploy-prod"]["environment"]["name"] == "production"
    text = (ROOT / "examples" / "ci" / "gitlab-ci.yml").read_text()
    assert "DEPLOYER_SSH_KEY_DATA" in text and "DEPLOYER_KNOWN_HOSTS_DATA" in text
