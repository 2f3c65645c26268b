"""deploy/slackbot/: the bot's manifest is valid for the Kubernetes API and agrees with its
Dockerfile and its configuration; its image lock comes from the root lock; the bot imports
nothing of the service, and its image carries every module it imports."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from skit_slackbot.config import EVENTS_PATH, HEALTH_PATH, SlackBotConfig

ROOT = Path(__file__).resolve().parents[2]
SLACKBOT = ROOT / "deploy" / "slackbot"
KUBERNETES_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.MULTILINE)


def _documents() -> list[dict[str, Any]]:
    text = (SLACKBOT / "deployment.yaml").read_text()
    return [d for d in yaml.safe_load_all(text) if d]


def _one(kind: str) -> dict[str, Any]:
    (found,) = [d for d in _documents() if d["kind"] == kind]
    return found


def _container() -> dict[str, Any]:
    (container,) = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _env() -> dict[str, str]:
    return {e["name"]: e["value"] for e in _container()["env"]}


def _dockerfile() -> str:
    return (SLACKBOT / "Dockerfile").read_text()


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_for_the_kubernetes_api(version: str) -> None:
    documents = _documents()
    assert {d["kind"] for d in documents} == {"Deployment", "Service"}
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def test_selectors_ports_and_probes_agree() -> None:
    deployment, service = _one("Deployment"), _one("Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (deployment["spec"]["selector"]["matchLabels"], service["spec"]["selector"]):
        assert selector.items() <= labels.items()
    container = _container()
    (port,) = container["ports"]
    assert str(port["containerPort"]) == _env()["SKIT_SLACKBOT_PORT"]
    assert f"EXPOSE {port['containerPort']}" in _dockerfile()
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == HEALTH_PATH
    assert EVENTS_PATH == "/slack/events"


def test_the_manifest_env_makes_a_working_config(tmp_path: Path) -> None:
    # Every path the env names is mounted; with those files present, from_env accepts it.
    mounts = [m["mountPath"] for m in _container()["volumeMounts"]]
    env = dict(_env())
    for name, value in env.items():
        if value.startswith("/etc/"):
            assert any(value.startswith(mount + "/") for mount in mounts), name
            local = tmp_path / value.lstrip("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(f"secret-{name.lower()}\n")
            env[name] = str(local)
    Path(env["SKIT_SLACKBOT_USERS_FILE"]).write_text("users:\n  U1: {principal: a, token: t}\n")
    config = SlackBotConfig.from_env(env)
    assert config.service_target == "skit-pipelines:50051"
    assert config.slack_bot_token == "secret-slack_bot_token_file"
    assert config.slack_signing_secret == "secret-slack_signing_secret_file"
    assert "secret-slack" not in repr(config)  # secrets never print


def test_the_image_is_the_one_the_dockerfile_builds_and_runs_as_its_user() -> None:
    title = re.search(r'org\.opencontainers\.image\.title="([^"]+)"', _dockerfile())
    assert title is not None
    assert _container()["image"].rpartition(":")[0] == title.group(1)
    uid = re.search(r"useradd .*--uid (\d+)", _dockerfile())
    assert uid is not None
    pod = _one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid.group(1))
    assert re.search(rf"^USER {uid.group(1)}$", _dockerfile(), re.MULTILINE)


def _first_party_imports() -> set[str]:
    modules = set()
    for path in (ROOT / "service" / "skit_slackbot").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module)
            elif isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
    return {m for m in modules if m.startswith("skit")}


def test_the_bot_uses_the_client_not_the_service_and_its_image_has_what_it_imports() -> None:
    imports = _first_party_imports()
    assert not {m for m in imports if m == "skit_pipelines" or m.startswith("skit_pipelines.")}
    outside = {
        m
        for m in imports
        if not m.startswith(("skit_slackbot", "skit_pipelines_client", "skit.pipelines"))
    }
    assert outside == {"skit_pipelines_cli.values"}
    assert "service/skit_pipelines_cli/values.py" in _dockerfile()
    # And at run time: importing the whole bot loads no module of the service.
    script = (
        "import sys, skit_slackbot.app, skit_slackbot.main;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('skit_pipelines', 'kfp')];"
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_the_image_lock_comes_from_the_root_lock_with_hashes() -> None:
    lock = (SLACKBOT / "requirements.lock").read_text()
    image = dict(_PIN.findall(lock))
    root = dict(_PIN.findall((ROOT / "requirements.lock").read_text()))
    assert {"aiohttp", "slack-sdk", "grpcio", "protobuf", "pyyaml"} <= image.keys()
    assert {name: root.get(name) for name in image} == image
    for entry in re.split(r"\n(?=[A-Za-z0-9])", lock):
        if "==" in entry.split("\n", 1)[0]:
            assert "--hash=sha256:" in entry, entry.split("\n", 1)[0]


def test_make_lock_relocks_the_bots_lock() -> None:
    assert "deploy/slackbot/requirements.in" in (ROOT / "Makefile").read_text()
