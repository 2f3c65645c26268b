"""deploy/: the Kubernetes manifests are valid for the Kubernetes API (offline schemas) and
agree with each other, with the image deploy/Dockerfile builds, with the `serve` flags and
with the README's list of the secrets an operator provides."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from skit_pipelines.server import SERVICE_NAME
from skit_pipelines_cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
"""The oldest version with gRPC probes (GA in 1.27), and the newest schemas bundled."""


def _kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return data


def _generated_config_maps() -> Iterator[dict[str, Any]]:
    """The ConfigMaps kustomize's configMapGenerator makes (without the hash suffix)."""
    for generator in _kustomization().get("configMapGenerator", []):
        data = {}
        for entry in generator.get("files", []):
            key, _, path = entry.partition("=")
            source = DEPLOY / (path or key)
            data[key if path else source.name] = source.read_text()
        yield {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": generator["name"]},
            "data": data,
        }


def _documents() -> list[dict[str, Any]]:
    documents = []
    for resource in _kustomization()["resources"]:
        documents += [d for d in yaml.safe_load_all((DEPLOY / resource).read_text()) if d]
    return documents + list(_generated_config_maps())


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [
        d for d in _documents() if d["kind"] == kind and name in (None, d["metadata"]["name"])
    ]
    return found


def _pod() -> dict[str, Any]:
    spec: dict[str, Any] = _one("Deployment")["spec"]["template"]["spec"]
    return spec


def _server() -> dict[str, Any]:
    containers: list[dict[str, Any]] = _pod()["containers"]
    (container,) = containers
    return container


def _flags(container: Mapping[str, Any]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in container["args"] if "=" in arg)


def _readme_deployment() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Deployment\n", 1)[1]
    return section.split("\n## ", 1)[0]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_for_the_kubernetes_api(version: str) -> None:
    documents = _documents()
    assert {d["kind"] for d in documents} >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "ServiceAccount",
    }
    for document in documents:
        # strict: unknown fields (a typo in a probe, say) are errors too.
        kubernetes_validate.validate(document, version, strict=True)


def test_selectors_match_the_pods() -> None:
    deployment = _one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert _one("Service")["spec"]["selector"].items() <= labels.items()
    assert _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_ports_and_probes_agree_with_the_serve_flags() -> None:
    server = _server()
    ports = {port["name"]: port["containerPort"] for port in server["ports"]}
    flags = _flags(server)
    assert ports["grpc"] == int(flags["port"])
    assert ports["health"] == int(flags["health-port"])
    (service_port,) = _one("Service")["spec"]["ports"]
    assert service_port["targetPort"] in ports
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        # The kubelet's grpc probe speaks no TLS: it must use the plaintext health port.
        assert server[probe]["grpc"]["port"] == ports["health"], probe
    assert server["readinessProbe"]["grpc"]["service"] == SERVICE_NAME
    # Every argument is one `serve` accepts.
    args = build_parser({}).parse_args(server["args"])
    assert (args.host, args.port, args.health_port) == ("0.0.0.0", 50051, ports["health"])


def test_every_file_the_flags_name_is_mounted() -> None:
    server, pod = _server(), _pod()
    mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts.keys() <= volumes.keys()
    generated = {c["metadata"]["name"]: c for c in _generated_config_maps()}
    for flag in ("tokens-file", "tls-cert", "tls-key", "kfp-images-lock"):
        path = Path(_flags(server)[flag])
        (volume,) = [name for name, where in mounts.items() if Path(where) == path.parent]
        config_map = volumes[volume].get("configMap")
        if config_map is not None:
            assert path.name in generated[config_map["name"]]["data"], flag


def test_the_images_lock_config_map_carries_the_projects_lock() -> None:
    (lock,) = [c for c in _generated_config_maps() if "images.lock.json" in c["data"]]
    assert lock["data"]["images.lock.json"] == (ROOT / "images/images.lock.json").read_text()


def _referenced(pod: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    config_maps, secrets = set(), set()
    for container in pod["containers"]:
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                config_maps.add(source["configMapRef"]["name"])
            if "secretRef" in source:
                secrets.add(source["secretRef"]["name"])
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                config_maps.add(ref["configMapKeyRef"]["name"])
            if "secretKeyRef" in ref:
                secrets.add(ref["secretKeyRef"]["name"])
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            config_maps.add(volume["configMap"]["name"])
        if "secret" in volume:
            secrets.add(volume["secret"]["secretName"])
    return config_maps, secrets


def test_every_config_map_and_secret_exists_or_is_documented() -> None:
    config_maps, secrets = _referenced(_pod())
    defined = {d["metadata"]["name"] for d in _documents() if d["kind"] == "ConfigMap"}
    assert config_maps <= defined
    # Secrets are never in the repository: the README lists what the operator creates.
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", _readme_deployment(), re.MULTILINE))
    assert secrets <= documented, secrets - documented
    assert _pod()["serviceAccountName"] == _one("ServiceAccount")["metadata"]["name"]


def test_step_secrets_name_documented_secrets() -> None:
    from skit_pipelines.backends.kubeflow_platform import parse_step_secrets

    mapping = parse_step_secrets(
        _one("ConfigMap", "skit-pipelines-config")["data"]["SKIT_KFP_STEP_SECRETS"]
    )
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", _readme_deployment(), re.MULTILINE))
    assert mapping
    for ref in mapping.values():
        assert ref.secret in documented, ref


def _dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def _image_tool() -> Any:
    """deploy/image.py, which builds and tags the image (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("deploy_image", DEPLOY / "image.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_image_is_the_one_the_dockerfile_builds() -> None:
    tool = _image_tool()
    REPOSITORY = tool.REPOSITORY
    with (ROOT / "pyproject.toml").open("rb") as handle:
        version = tomllib.load(handle)["project"]["version"]
    assert f'org.opencontainers.image.title="{REPOSITORY}"' in _dockerfile()
    (override,) = _kustomization()["images"]
    assert _server()["image"] == f"{override['name']}:{version}"
    assert override["name"] == REPOSITORY
    assert override.get("newTag", version) == version
    assert tool.local_ref(tool.project_version()) == f"localhost/{REPOSITORY}:{version}"


def test_the_pod_runs_the_image_as_its_non_root_user_on_a_read_only_root() -> None:
    dockerfile = _dockerfile()
    (uid,) = re.findall(r"^USER (\d+)$", dockerfile, re.MULTILINE)
    pod, server = _pod(), _server()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    assert server["securityContext"]["allowPrivilegeEscalation"] is False
    assert server["resources"]["requests"] and server["resources"]["limits"]
    # What the service writes is on volumes: SKIT_HOME (the image's) and /tmp.
    (home,) = re.findall(r"SKIT_HOME=(\S+)", dockerfile)
    writable = {m["mountPath"] for m in server["volumeMounts"] if not m.get("readOnly", False)}
    assert {home, "/tmp"} <= writable


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_valid_manifests() -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(DEPLOY)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    assert len(documents) == len(_documents())
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSIONS[-1], strict=True)
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    (lock,) = [v["configMap"]["name"] for v in volumes if v["name"] == "images-lock"]
    # The generated name (with its content hash) is what the pods mount.
    assert lock.startswith("skit-pipelines-images-lock-")
    assert lock in {d["metadata"]["name"] for d in documents if d["kind"] == "ConfigMap"}
