"""Secrets for steps on Kubeflow: the uploaded IR's Kubernetes platform spec.

Locally a step gets the variables its component declares (`skit.ai/env` in its
component.yaml) from SKIT_STEP_ENV_*. On KFP the pod gets them from Kubernetes secrets:
the operator maps each variable to a secret and key (`--kfp-step-secrets`), and the
upload carries, per executor, the `secretAsEnv` entries kfp-kubernetes'
`use_secret_as_env` writes (kfp-kubernetes `kubernetes_executor_config.proto`), as a
second YAML document beside the PipelineSpec, the way KFP reads an upload
(`backend/src/apiserver/template/v2_template.go` NewV2SpecTemplate). Only names ever go
into the IR, never a value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from skit_pipelines.errors import FailedPrecondition

SECRETS_NOT_MAPPED = "STEP_SECRETS_NOT_MAPPED"
_ENTRY = re.compile(
    r"^(?P<env>[A-Za-z_][A-Za-z0-9_]*)=(?P<secret>[a-z0-9][a-z0-9.-]*)/(?P<key>[-._a-zA-Z0-9]+)$"
)


@dataclass(frozen=True)
class SecretRef:
    """A key of a Kubernetes secret in the namespace the KFP runs' pods run in."""

    secret: str
    key: str


class SecretMappingError(ValueError):
    """The operator's mapping cannot be read; the message names the bad entry."""


def parse_step_secrets(text: str) -> dict[str, SecretRef]:
    """`CALLS_DB_URL=skit-step-env/CALLS_DB_URL,LLM_API_KEY=llm/api-key` (commas or
    whitespace between entries) -> env name -> secret and key.

    Raises:
        SecretMappingError: an entry is not ENV=secret/key.
    """
    mapping: dict[str, SecretRef] = {}
    for entry in re.split(r"[\s,]+", text.strip()):
        if not entry:
            continue
        match = _ENTRY.match(entry)
        if match is None:
            raise SecretMappingError(
                f"step secret {entry!r} is not ENV=secret/key (e.g. CALLS_DB_URL=calls-db/url)"
            )
        mapping[match["env"]] = SecretRef(match["secret"], match["key"])
    return mapping


def format_step_secrets(mapping: Mapping[str, SecretRef]) -> str:
    """The text `parse_step_secrets` reads back."""
    return ",".join(f"{env}={ref.secret}/{ref.key}" for env, ref in sorted(mapping.items()))


def declared_env(
    spec: Mapping[str, Any], env_of_image: Callable[[str], tuple[str, ...]]
) -> dict[str, tuple[str, ...]]:
    """Executor label -> the variables its component declares, for executors declaring any."""
    executors: Mapping[str, Any] = (spec.get("deploymentSpec") or {}).get("executors") or {}
    found = {}
    for label, executor in executors.items():
        image = (executor.get("container") or {}).get("image")
        if image:
            names = env_of_image(image)
            if names:
                found[label] = names
    return found


def platform_spec(
    pipeline: str, declared: Mapping[str, tuple[str, ...]], secrets: Mapping[str, SecretRef]
) -> dict[str, Any] | None:
    """The PlatformSpec document giving every executor its declared variables from
    `secrets`; None when no executor declares any.

    Raises:
        FailedPrecondition: STEP_SECRETS_NOT_MAPPED, naming the variables with no secret.
    """
    missing = sorted({env for names in declared.values() for env in names} - set(secrets))
    if missing:
        raise FailedPrecondition(
            f"{pipeline} cannot run on Kubeflow: its steps need {', '.join(missing)}, which"
            " no Kubernetes secret is mapped to. Map them with --kfp-step-secrets"
            " (SKIT_KFP_STEP_SECRETS), e.g. "
            + ",".join(f"{env}=<secret>/<key>" for env in missing),
            reason=SECRETS_NOT_MAPPED,
        )
    if not declared:
        return None
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2 as pb

    executors = {}
    for label, names in sorted(declared.items()):
        by_secret: dict[str, list[tuple[str, str]]] = {}
        for env in names:
            ref = secrets[env]
            by_secret.setdefault(ref.secret, []).append((ref.key, env))
        config = pb.KubernetesExecutorConfig()
        for secret, pairs in sorted(by_secret.items()):
            entry = config.secret_as_env.add(secret_name=secret)
            entry.secret_name_parameter.runtime_value.constant.string_value = secret
            for key, env in pairs:
                entry.key_to_env.add(secret_key=key, env_var=env)
        executors[label] = json_format.MessageToDict(config)
    return {"platforms": {"kubernetes": {"deploymentSpec": {"executors": executors}}}}
