"""deployer.config: project root, shipped playbooks, extends, ${VAR}, --set, custom roles,
groups, unknown-key suggestions, and docs/configuration.md against the models."""

from __future__ import annotations

import copy
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from deployer.config import (
    Config,
    Inventory,
    Playbook,
    default_root,
    known_playbooks,
    load_config,
    load_playbook,
    parse_set,
    project_root,
)
from deployer.config.inventory import _NOTIFY_REFUSED, NOTIFY_KEYS
from deployer.config.layers import _unwrap
from deployer.config.types import _Model
from deployer.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "playbooks"

INVENTORY: dict[str, Any] = {
    "playbook": "demo",
    "repo": "git@example.com:acme/app.git",
    "ssh": {"known_hosts": "known_hosts"},
    "hosts": [
        {"name": "web1", "address": "10.0.0.1", "roles": ["web", "worker", "migrate"]},
        {"name": "web2", "address": "10.0.0.2", "roles": ["web", "worker"]},
    ],
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user project: hosts/ only, no playbooks/ (the shipped ones are used)."""
    root = tmp_path / "project"
    (root / "hosts").mkdir(parents=True)
    (root / "hosts" / "known_hosts").write_text("10.0.0.1 ssh-ed25519 AAAA\n")
    return root


def inventory(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(INVENTORY)
    data.update(changes)
    return data


def write(root: Path, data: Any, env: str = "prod") -> Path:
    path = root / "hosts" / f"{env}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def playbook(root: Path, name: str, data: Any) -> Path:
    (root / "playbooks").mkdir(exist_ok=True)
    path = root / "playbooks" / f"{name}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def load(root: Path, env: str = "prod", **kwargs: Any) -> Config:
    return load_config(env, root=root, environ=kwargs.pop("environ", {}), **kwargs)


def error_of(root: Path, env: str = "prod", **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as exc:
        load(root, env, **kwargs)
    assert exc.value.exit_code == 2
    return exc.value.message


# ------------------------------------------------------------------ a. project root


def test_root_order(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    other = tmp_path / "other"
    (other / "hosts").mkdir(parents=True)
    monkeypatch.chdir(other)
    env = {"DEPLOYER_ROOT": str(project)}
    assert project_root(tmp_path, env) == tmp_path  # explicit wins
    assert project_root(None, env) == project  # then DEPLOYER_ROOT
    assert project_root(None, {}) == other  # then the current directory with hosts/
    (other / "app" / "src").mkdir(parents=True)
    monkeypatch.chdir(other / "app" / "src")  # below the project: the nearest parent with hosts/
    assert project_root(None, {}) == other
    monkeypatch.chdir(tmp_path)  # no hosts/ here or above
    assert project_root(None, {}) == default_root() == REPO  # a checkout of deployer
    installed = tmp_path / "site-packages"  # deployer installed: no hosts/ beside the package
    installed.mkdir()
    monkeypatch.setattr("deployer.config.project.default_root", lambda: installed)
    assert project_root(None, {}) == tmp_path
    with pytest.raises(ConfigError) as exc:
        load_config("production", environ={})
    assert exc.value.message == (f"hosts/production.yaml: no such inventory: no hosts/ in {tmp_path} or "
                                 "above (`deployer init` writes one; or --root DIR, $DEPLOYER_ROOT)")


def test_current_directory_is_the_root(project: Path, monkeypatch: pytest.MonkeyPatch):
    write(project, inventory())
    monkeypatch.chdir(project)
    cfg = load_config("prod", environ={})
    assert cfg.root == project
    assert cfg.inventory_path == project / "hosts" / "prod.yaml"


def test_shipped_playbook_from_a_user_project(project: Path):
    write(project, inventory())
    cfg = load(project)
    assert cfg.playbook_path == SHIPPED / "demo.yaml"
    assert cfg.playbook.name == "demo"
    assert cfg.health.url == "http://{address}:8000/health"  # the shipped defaults apply
    assert known_playbooks(project) == ["demo", "django", "laravel", "node"]


def test_user_playbook_wins_over_the_shipped_one(project: Path):
    playbook(project, "demo", {"defaults": {"health": {"url": "http://{address}/up"}},
                               "stages": {"build": ["make"]}})
    playbook(project, "mine", {"defaults": {"health": {"url": "http://{address}/"}}})
    write(project, inventory())
    cfg = load(project)
    assert cfg.playbook_path == project / "playbooks" / "demo.yaml"
    assert cfg.health.url == "http://{address}/up"
    assert [s.run for s in cfg.playbook.all_steps()] == ["make"]
    assert known_playbooks(project) == ["demo", "django", "laravel", "mine", "node"]


def test_playbook_as_a_path(project: Path):
    deploy = project / "deploy"
    deploy.mkdir()
    (deploy / "app.yml").write_text("defaults:\n  health: {url: 'http://{address}/'}\n")
    write(project, inventory(playbook="../deploy/app.yml"))
    cfg = load(project)
    assert cfg.playbook_path == deploy / "app.yml"
    assert cfg.playbook.name == "app"
    write(project, inventory(playbook="../deploy/nope.yaml"))
    assert error_of(project) == "hosts/prod.yaml: playbook: no such playbook file deploy/nope.yaml"


def test_unknown_playbook_lists_user_and_shipped(project: Path):
    playbook(project, "mine", {})
    write(project, inventory(playbook="rails"))
    assert error_of(project) == (
        "hosts/prod.yaml: playbook: no such playbook 'rails' "
        "(known: demo, django, laravel, mine, node)"
    )
    write(project, inventory(playbook="Rails"))
    assert error_of(project).splitlines() == [
        ("hosts/prod.yaml: playbook: invalid playbook name 'Rails' (use lowercase letters, "
         "digits and -)"),
        "hosts/prod.yaml: health: required key is missing",  # no playbook, no defaults
    ]


# ------------------------------------------------------------------ b. extends


def test_extends_deep_merges(project: Path):
    playbook(project, "shop", """\
extends: demo
description: the shop
defaults:
  health: {passes: 2}
vars: {python: /usr/bin/python3, color: blue}
stages:
  maintenance: {when: always}
  build: ["make {color}"]
""")
    write(project, inventory(playbook="shop"))
    cfg = load(project)
    pb = cfg.playbook
    demo = load_playbook(SHIPPED / "demo.yaml", root=REPO)
    assert pb.name == "shop" and pb.description == "the shop"
    assert cfg.health.passes == 2  # defaults merged: the rest comes from demo
    assert cfg.health.url == "http://{address}:8000/health" and cfg.health.interval == 0.1
    assert pb.vars == {**demo.vars, "python": "/usr/bin/python3", "color": "blue"}
    assert [s.run for s in pb.steps("build")] == ["make {color}"]  # lists replace
    assert pb.stages.maintenance.when == "always"  # mappings merge...
    assert [s.run for s in pb.steps("maintenance", "on")] == \
        [s.run for s in demo.steps("maintenance", "on")]  # ...keeping demo's steps
    assert pb.steps("build")[0].where == "playbooks/shop.yaml: stages.build[0]"
    assert pb.steps("reload")[0].where == f"{SHIPPED / 'demo.yaml'}: stages.reload[0]"
    assert pb.steps("build")[0].roles == ["web"] and pb.steps("build")[0].cwd == "{release_path}"


def test_extends_the_shipped_playbook_of_the_same_name(project: Path):
    playbook(project, "demo", "extends: demo\nstages:\n  migrate: null\n")
    write(project, inventory())
    cfg = load(project)
    assert cfg.playbook_path == project / "playbooks" / "demo.yaml"
    assert cfg.playbook.stages.migrate is None
    assert cfg.playbook.steps("reload")  # from the shipped demo


def test_extends_by_path_and_chain(project: Path):
    base = project / "lib" / "base.yaml"
    base.parent.mkdir()
    base.write_text("vars: {a: '1', b: '1'}\nstages:\n  build: [one]\n")
    playbook(project, "middle", "extends: ../lib/base.yaml\nvars: {b: '2'}\n")
    top = playbook(project, "top", "extends: middle\nvars: {c: '3'}\n")
    pb = load_playbook(top, root=project, extra_vars=())
    assert pb.vars == {"a": "1", "b": "2", "c": "3"}
    assert pb.steps("build")[0].where == "lib/base.yaml: stages.build[0]"


def test_extends_cycles(project: Path):
    playbook(project, "a", "extends: b\n")
    playbook(project, "b", "extends: a.yaml\n")
    with pytest.raises(ConfigError) as exc:
        load_playbook(project / "playbooks" / "a.yaml", root=project)
    assert exc.value.message == (
        "playbooks/b.yaml: extends: cycle: playbooks/a.yaml -> playbooks/b.yaml -> "
        "playbooks/a.yaml"
    )
    playbook(project, "self", "extends: ./self.yaml\n")
    with pytest.raises(ConfigError) as exc:
        load_playbook(project / "playbooks" / "self.yaml", root=project)
    assert exc.value.message == (
        "playbooks/self.yaml: extends: cycle: playbooks/self.yaml -> playbooks/self.yaml"
    )


def test_extends_errors_name_the_file_that_set_the_key(project: Path):
    playbook(project, "base", "shared_dirs: [../etc]\ndefaults:\n  health: {passes: 0}\n")
    child = playbook(project, "child", "extends: base\nstages: {biuld: [x]}\n")
    with pytest.raises(ConfigError) as exc:
        load_playbook(child, root=project)
    assert exc.value.message.splitlines() == [
        "playbooks/base.yaml: shared_dirs[0]: expected a relative path without '..', got '../etc'",
        "playbooks/child.yaml: stages.biuld: unknown key (did you mean 'build'?)",
    ]
    playbook(project, "base", "defaults:\n  health: {url: 'http://{address}/', passes: 0}\n")
    playbook(project, "child", "extends: base\n")
    write(project, inventory(playbook="child"))
    assert error_of(project) == "playbooks/base.yaml: defaults.health.passes: must be >= 1"
    playbook(project, "child", "extends: rails\n")
    with pytest.raises(ConfigError) as exc:
        load_playbook(child, root=project)
    assert exc.value.message.startswith("playbooks/child.yaml: extends: no such playbook 'rails'")
    playbook(project, "child", "extends: [base]\n")
    with pytest.raises(ConfigError) as exc:
        load_playbook(child, root=project)
    assert exc.value.message == "playbooks/child.yaml: extends: expected a playbook name or a path"


# ------------------------------------------------------------------ c. ${VAR}


def test_interpolation(project: Path):
    data = inventory(vars={"version": "${VERSION}", "literal": "$${HOME} and $$"})
    data["ssh"]["port"] = "${SSH_PORT:-2222}"
    data["hosts"][1]["address"] = "${WEB2_ADDRESS:-10.0.0.2}"
    data["repo"] = "git@${GIT_HOST}:acme/app.git"
    write(project, data)
    cfg = load(project, environ={"VERSION": "10", "GIT_HOST": "git.example.com",
                                 "WEB2_ADDRESS": ""})
    assert cfg.ssh.port == 2222  # exactly one reference: typed
    assert cfg.vars == {"version": "10", "literal": "${HOME} and $$"}  # vars stay strings
    assert cfg.host("web2").address == "10.0.0.2"  # empty: the default
    assert cfg.repo == "git@git.example.com:acme/app.git"
    cfg = load(project, environ={"VERSION": "1", "GIT_HOST": "g", "SSH_PORT": "2200"})
    assert cfg.ssh.port == 2200


def test_interpolation_errors(project: Path):
    data = inventory()
    data["hosts"][1]["address"] = "${FOO}"
    data["repo"] = "${REPO_URL:-x}-${bad name}"
    write(project, data)
    assert error_of(project, environ={}).splitlines() == [
        "hosts/prod.yaml: repo: invalid ${...} reference (use ${VAR} or ${VAR:-default}; $${ "
        "for a literal ${)",
        "hosts/prod.yaml: hosts[1].address: environment variable FOO is not set",
    ]


# ------------------------------------------------------------------ d. --set


def test_set_values_are_yaml(project: Path):
    write(project, inventory(lb={"backend": "web", "socket": "/run/haproxy.sock"},
                             hosts=INVENTORY["hosts"] + [
                                 {"name": "lb1", "address": "10.0.0.9", "roles": ["lb"]}]))
    cfg = load(project, overrides=parse_set([
        "parallel=5", "health.passes=2", 'waves=[1, "100%"]', "lb=null", "ssh.user=deploy",
        "gate.canary=false", "deploy_to=/srv/shop",
    ]))
    assert (cfg.parallel, cfg.health.passes, cfg.waves) == (5, 2, [1, "100%"])
    assert cfg.lb is None and cfg.ssh.user == "deploy" and cfg.gate.canary is False
    assert cfg.deploy_to == "/srv/shop"
    assert cfg.health.url == "http://{address}:8000/health"  # merged, not replaced
    # an option not given (None) is skipped; a value that is not YAML stays a string
    cfg = load(project, overrides={"parallel": None, "health.url": "{address}/up"})
    assert cfg.parallel == 10 and cfg.health.url == "{address}/up"


def test_set_playbook(project: Path, monkeypatch: pytest.MonkeyPatch):
    data = inventory()
    del data["playbook"]
    write(project, data)
    assert load(project, overrides={"playbook": "demo"}).playbook.name == "demo"
    assert error_of(project, overrides={"playbook": "rails"}).startswith(
        "--set playbook: no such playbook 'rails' (known: demo, ")
    monkeypatch.chdir(project)  # a path given with --set is relative to the current directory
    playbook(project, "mine", "extends: demo\n")
    assert load(project, overrides={"playbook": "playbooks/mine.yaml"}).playbook.name == "mine"


def test_set_errors_name_the_option(project: Path):
    write(project, inventory())
    assert error_of(project, overrides={"parallel": "many"}) == \
        "--set parallel: expected an integer"
    assert error_of(project, overrides={"paralel": "5"}) == \
        "--set paralel: unknown key (did you mean 'parallel'?)"
    assert error_of(project, overrides={"ssh.known_hosts": "/nonexistent/kh"}) == \
        "--set ssh.known_hosts: file not found: /nonexistent/kh"
    assert error_of(project, overrides={"ssh": "{user: x}", "ssh.user": "y"}) == \
        "--set ssh.user: conflicts with --set ssh"
    assert error_of(project, overrides={"health..passes": "2"}) == \
        "--set health..passes: invalid key (use names joined by dots, e.g. health.passes)"
    with pytest.raises(ConfigError) as exc:
        parse_set(["parallel"])
    assert exc.value.message == "--set parallel: expected key=value, e.g. --set parallel=5"
    assert parse_set(["a.b=x=y", "c="]) == {"a.b": "x=y", "c": ""}


# ------------------------------------------------------------------ e. custom roles


def test_custom_roles(project: Path):
    data = inventory()
    data["hosts"][1]["roles"] = ["web", "search", "queue_2"]
    write(project, data)
    playbook(project, "demo", "extends: demo\nstages:\n  reload: [{run: reindex, roles: [search]}]\n")
    cfg = load(project)
    assert [h.name for h in cfg.hosts_with("search")] == ["web2"]
    assert cfg.hosts_with("nobody") == []
    assert cfg.playbook.steps("reload")[0].roles == ["search"]
    assert [h.name for h in cfg.web_hosts] == ["web1", "web2"]  # built-ins keep their meaning
    with pytest.raises(ValueError):
        cfg.hosts_with("Bad Role")
    data["hosts"][1]["roles"] = ["web", "9lives"]
    write(project, data)
    assert error_of(project) == (
        "hosts/prod.yaml: hosts[1].roles[1]: invalid role '9lives' (use lowercase letters, "
        "digits, _ and -, starting with a letter; built-in: cron, db, lb, ledger, migrate, web, "
        "worker)"
    )


# ------------------------------------------------------------------ f. groups


def test_groups_add_roles_and_default_vars(project: Path):
    data = inventory(vars={"color": "grey", "size": "s"}, groups={
        "front": {"hosts": ["web1", "web2", "web3"], "roles": ["web", "search"],
                  "vars": {"color": "blue", "tier": "front"}},
        "jobs": {"hosts": ["web3"], "roles": ["worker"], "vars": {"tier": "jobs"}},
    })
    data["hosts"][1]["vars"] = {"color": "red"}
    data["hosts"].append({"name": "web3", "address": "10.0.0.3"})  # roles from groups only
    write(project, data)
    cfg = load(project)
    assert cfg.host("web1").roles == ("web", "worker", "migrate", "search")
    assert cfg.host("web3").roles == ("web", "search", "worker")
    assert cfg.host("web1").vars == {"color": "blue", "tier": "front"}
    assert cfg.host("web2").vars == {"color": "red", "tier": "front"}  # host vars win
    assert cfg.host("web3").vars == {"color": "blue", "tier": "jobs"}  # the later group wins
    values = cfg.template_values("web2")
    assert (values["color"], values["tier"], values["size"]) == ("red", "front", "s")


def test_group_errors(project: Path):
    data = inventory(groups={"front": {"hosts": ["web1", "web9"], "roles": ["migrate"]}})
    data["hosts"].append({"name": "web3", "address": "10.0.0.3"})
    write(project, data)
    assert error_of(project).splitlines() == [
        "hosts/prod.yaml: groups.front.hosts[1]: unknown host 'web9' (hosts: web1, web2, web3)",
        ("hosts/prod.yaml: hosts[2].roles: required key is missing (or put the host in a group "
         "that has roles)"),
    ]
    data = inventory(groups={"front": {"hosts": ["web2"], "roles": ["migrate"]}})
    write(project, data)
    assert error_of(project) == ("hosts/prod.yaml: hosts[1].roles: role 'migrate' is already "
                                 "on hosts[0]; at most one host may have it")
    write(project, inventory(groups={"Front": {"hosts": ["web1"]}, "back": {"hosts": []}}))
    assert error_of(project).splitlines() == [
        ("hosts/prod.yaml: groups.Front: invalid group name 'Front' (use lowercase letters, "
         "digits, _ and -, starting with a letter)"),
        "hosts/prod.yaml: groups.back.hosts: must not be empty",
    ]


# ------------------------------------------------------------------ g. unknown keys


def test_every_model_forbids_unknown_keys():
    def subclasses(cls: type) -> list[type]:
        return [c for s in cls.__subclasses__() for c in (s, *subclasses(s))]

    models = subclasses(_Model)
    assert {m.__name__ for m in models} >= {"Inventory", "Playbook", "Step", "HostEntry", "Group"}
    assert all(m.model_config.get("extra") == "forbid" for m in models)


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(health={"pases": 2}),
     "hosts/prod.yaml: health.pases: unknown key (did you mean 'passes'?)"),
    (lambda d: d["hosts"][0].update(adress="x"),
     "hosts/prod.yaml: hosts[0].adress: unknown key (did you mean 'address'?)"),
    (lambda d: d.update(groups={"g": {"hosts": ["web1"], "role": ["web"]}}),
     "hosts/prod.yaml: groups.g.role: unknown key (did you mean 'roles'?)"),
    (lambda d: d.update(rollout=[{"size": "100%", "puase": True}]),
     "hosts/prod.yaml: rollout[0].puase: unknown key (did you mean 'pause'?)"),
    (lambda d: d.update(zzz=1), "hosts/prod.yaml: zzz: unknown key"),
    (lambda d: d.update(notify={"slack": {"url_evn": "SLACK"}}),
     "hosts/prod.yaml: notify.slack.url_evn: unknown key (did you mean 'url_env'?)"),
])
def test_unknown_keys_suggest_the_closest(project: Path, change: Any, message: str):
    data = inventory()
    change(data)
    write(project, data)
    assert error_of(project).splitlines()[0] == message


def test_unknown_playbook_keys_suggest_the_closest(project: Path):
    path = playbook(project, "x", """\
defaults: {helth: {passes: 1}}
stages:
  build: [{rnu: make}]
hooks:
  before: {switch: [{run: x, rols: [web]}]}
""")
    with pytest.raises(ConfigError) as exc:
        load_playbook(path, root=project)
    assert exc.value.message.splitlines() == [
        "playbooks/x.yaml: stages.build[0].run: required key is missing",
        "playbooks/x.yaml: stages.build[0].rnu: unknown key (did you mean 'run'?)",
        "playbooks/x.yaml: hooks.before.switch[0].rols: unknown key (did you mean 'roles'?)",
    ]
    path.write_text("defaults: {helth: {passes: 1}}\n")
    write(project, inventory(playbook="x", health={"url": "http://{address}/"}))
    assert error_of(project) == \
        "playbooks/x.yaml: defaults.helth: unknown key (did you mean 'health'?)"


# ------------------------------------------------------------------ h. docs


def _models(root: type[BaseModel]) -> list[type[BaseModel]]:
    """`root` and every model reachable from its fields."""
    out: list[type[BaseModel]] = []

    def visit(tp: Any) -> None:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp not in out:
                out.append(tp)
                for f in tp.model_fields.values():
                    visit(f.annotation)
        elif typing.get_origin(tp) in (list, dict):
            visit(typing.get_args(tp)[-1])

    visit(root)
    return out


def _doc_tables() -> dict[str, list[str]]:
    """`<!-- model: X -->` / `<!-- notify: x -->` marker -> the keys of the table after it."""
    text = (REPO / "docs" / "configuration.md").read_text()
    tables: dict[str, list[str]] = {}
    for match in re.finditer(r"<!-- (model|notify): (\w+) -->\n((?:\|.*\n)+)", text):
        rows = match.group(3).splitlines()[2:]
        tables[match.group(2)] = [re.match(r"\| `([^`]+)` \|", row).group(1) for row in rows]
    return tables


def test_docs_list_every_key_of_every_model():
    tables = _doc_tables()
    models = _models(Inventory) + _models(Playbook)
    for model in models:
        documented = tables.get(model.__name__)
        assert documented is not None, f"docs/configuration.md: no table for {model.__name__}"
        expected = list(model.model_fields) + (["extends"] if model is Playbook else [])
        assert sorted(documented) == sorted(expected), model.__name__
    assert sorted(tables) == sorted({m.__name__ for m in models} | set(NOTIFY_KEYS))
    for section, keys in NOTIFY_KEYS.items():
        assert sorted(tables[section]) == sorted(keys)
        assert not set(tables[section]) & set(_NOTIFY_REFUSED.get(section, ()))
