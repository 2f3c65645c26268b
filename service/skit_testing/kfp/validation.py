"""Pipeline package validation as the KFP 2.17 API server does it.

Sources (kubeflow/pipelines at the 2.17.0 release commit 020857a4):

- backend/src/apiserver/template/template.go: `New` infers the format
  (`inferTemplateFormat`): an Argo Workflow (apiVersion argoproj.io/*, kind Workflow) is a
  v1 template; a YAML stream with a document that protojson-unmarshals *strictly* (unknown
  fields refused) into a PipelineSpec with a non-empty pipelineInfo.name and a root is v2
  (`isV2Spec`/`isPipelineSpec`); anything else is refused as "unknown template format"
  (util.NewInvalidInputErrorWithDetails(ErrorInvalidPipelineSpec, ...), INVALID_ARGUMENT).
  So a v1 component.yaml, a spec with an unknown top-level field and a spec without a
  pipelineInfo name all get "unknown template format".
- backend/src/apiserver/template/v2_template.go: `NewV2SpecTemplate` reads every document:
  one PipelineSpec (schemaVersion must be 2.1.0; "multiple pipeline specs provided"
  otherwise), at most one PlatformSpec holding a "kubernetes" platform
  (`IsPlatformSpecWithKubernetesConfig`, strictly unmarshalled; its executor configs are
  Structs, so their content is not checked here), other mappings ignored, a non-mapping
  document refused ("unable to decode yaml document"). `Bytes()` is what the server
  stores: the spec re-marshalled by protojson (json names, defaults dropped) as YAML, and
  the platform spec after "\\n---\\n". `validatePipelineJobInputs` checks run parameters
  against root.inputDefinitions.parameters.
- backend/src/apiserver/common/utils.go: `ValidatePipelineName` (the spec's
  pipelineInfo.name must match ^[a-z0-9][a-z0-9-]{0,127}$), applied by
  resource_manager.go CreatePipelineVersion / CreatePipelineAndPipelineVersion.
- backend/src/apiserver/server/api_util.go: `YamlStringToPipelineSpecStruct` /
  `pipelineSpecStructToYamlString`: a spec with a platform spec travels in the API as
  {"pipeline_spec": ..., "platform_spec": ...}.
- backend/src/v2/compiler/argocompiler/container.go: at run creation the compiler
  protojson-unmarshals each task's Kubernetes executor config strictly ("failed to
  unmarshal kubernetes config"), a plain (INTERNAL) error.

Differences: PyYAML reads YAML 1.1 (yes/no/on/off are booleans) where Go's yaml.v3 reads
YAML 1.2, and protobuf's Python json_format words its errors differently from Go's
protojson. On a YAML *syntax* error Go's isV2Spec loop keeps asking the failed decoder for
the next document (yaml.v3 repeats the error), which by our reading never ends when no
spec document came before the error; the stand-in answers "unknown template format"
then. After a spec document the error is "unable to decode yaml document: ...".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from skit_testing.kfp.errors import ApiError, invalid_input, invalid_input_with_details, plain

SCHEMA_VERSION = "2.1.0"
KUBERNETES_PLATFORM = "kubernetes"
DOCUMENT_SEPARATOR = "\n---\n"
INVALID_PIPELINE_SPEC = "pipeline spec is invalid"
"""template.ErrorInvalidPipelineSpec, the cause of every spec error."""
INVALID_PLATFORM_SPEC = "platform spec is invalid"
UNKNOWN_FORMAT = "unknown template format"
_ARGO_GROUP = "argoproj.io/"
_ARGO_KIND = "Workflow"
_PIPELINE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
_PIPELINE_NAME_MAX = 128
_V2_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
"""v2_template.go checks this with regexp.MatchString, i.e. anywhere in the name."""


def _pipeline_spec_message() -> Message:
    from kfp.pipeline_spec import pipeline_spec_pb2

    return cast(Message, pipeline_spec_pb2.PipelineSpec())


def _platform_spec_message() -> Message:
    from kfp.pipeline_spec import pipeline_spec_pb2

    return cast(Message, pipeline_spec_pb2.PlatformSpec())


def _kubernetes_executor_config_message() -> Message:
    from kfp.kubernetes import kubernetes_executor_config_pb2

    return cast(Message, kubernetes_executor_config_pb2.KubernetesExecutorConfig())


@dataclass(frozen=True)
class PipelineTemplate:
    """An accepted v2 package: its spec and platform spec as the server stores them."""

    spec: Mapping[str, Any]
    """The PipelineSpec re-marshalled by protojson (json field names, defaults dropped)."""
    platform_spec: Mapping[str, Any] | None
    """The PlatformSpec document, likewise, or None."""

    @property
    def name(self) -> str:
        return str(self.spec.get("pipelineInfo", {}).get("name", ""))

    def manifest(self) -> str:
        """V2Spec.Bytes(): the stored YAML."""
        text = _to_yaml(self.spec)
        if self.platform_spec is not None:
            text += DOCUMENT_SEPARATOR + _to_yaml(self.platform_spec)
        return text

    def api_struct(self) -> dict[str, Any]:
        """The pipeline_spec Struct of API answers (YamlStringToPipelineSpecStruct)."""
        if self.platform_spec is None:
            return dict(self.spec)
        return {"pipeline_spec": dict(self.spec), "platform_spec": dict(self.platform_spec)}

    def kubernetes_executor(self, executor_label: str) -> Mapping[str, Any]:
        """The kfp-kubernetes config of one executor ({} when none)."""
        platform = (self.platform_spec or {}).get("platforms", {}).get(KUBERNETES_PLATFORM, {})
        executors = platform.get("deploymentSpec", {}).get("executors", {})
        return cast(Mapping[str, Any], executors.get(executor_label) or {})


def _to_yaml(data: Mapping[str, Any]) -> str:
    # sigs.k8s.io/yaml JSONToYAML sorts mapping keys.
    return yaml.safe_dump(dict(data), sort_keys=True, default_flow_style=False)


def _strict(document: Mapping[str, Any], message: Message) -> dict[str, Any]:
    """protojson.Unmarshal (unknown fields refused), then protojson.Marshal."""
    json_format.ParseDict(dict(document), message, ignore_unknown_fields=False)
    return json_format.MessageToDict(message)


def _documents(data: bytes) -> tuple[list[Any], str | None]:
    """The YAML documents read before any syntax error, and that error."""
    documents: list[Any] = []
    try:
        for document in yaml.safe_load_all(data):
            documents.append(document)
    except yaml.YAMLError as exc:
        return documents, " ".join(str(exc).split())
    return documents, None


def _is_argo_workflow(data: bytes) -> bool:
    try:
        first = next(iter(yaml.safe_load_all(data)), None)
    except yaml.YAMLError:
        return False
    if not isinstance(first, dict):
        return False
    api_version = str(first.get("apiVersion", ""))
    return api_version.startswith(_ARGO_GROUP) and first.get("kind") == _ARGO_KIND


def _is_pipeline_spec(document: Any) -> bool:
    if not isinstance(document, dict):
        return False
    try:
        spec = _strict(document, _pipeline_spec_message())
    except (json_format.ParseError, TypeError, ValueError):
        return False
    return bool(spec.get("pipelineInfo", {}).get("name")) and "root" in spec


def _is_kubernetes_platform_spec(document: Mapping[str, Any]) -> bool:
    try:
        platform = _strict(document, _platform_spec_message())
    except (json_format.ParseError, TypeError, ValueError):
        return False
    return KUBERNETES_PLATFORM in platform.get("platforms", {})


def _spec_error(detail: str) -> ApiError:
    return invalid_input_with_details(INVALID_PIPELINE_SPEC, detail)


def parse_template(data: bytes) -> PipelineTemplate:
    """template.New for a v2 package.

    Raises:
        ApiError: INVALID_ARGUMENT with the server's external message.
    """
    if not data.strip():
        raise _spec_error(UNKNOWN_FORMAT)
    if _is_argo_workflow(data):
        # The real server accepts v1 (Argo) pipelines unless BLOCK_V1_PIPELINES is set;
        # the stand-in runs v2 IR only.
        raise invalid_input("the KFP stand-in runs v2 pipeline specs only, not Argo workflows")
    documents, syntax_error = _documents(data)
    if not any(_is_pipeline_spec(document) for document in documents):
        raise _spec_error(UNKNOWN_FORMAT)
    spec: dict[str, Any] | None = None
    platform: dict[str, Any] | None = None
    for document in documents:
        if document is None:
            continue
        if not isinstance(document, dict):
            raise _spec_error(
                "unable to decode yaml document: yaml: unmarshal errors: cannot unmarshal"
                f" {type(document).__name__} into map[string]interface {{}}"
            )
        if _is_pipeline_spec(document):
            if spec is not None:
                raise _spec_error("multiple pipeline specs provided")
            spec = _strict(document, _pipeline_spec_message())
            version = str(spec.get("schemaVersion", ""))
            if version != SCHEMA_VERSION:
                raise _spec_error(
                    f"KFP only supports schema version {SCHEMA_VERSION}, but the pipeline spec"
                    f" has version {version}"
                )
            name = str(spec["pipelineInfo"]["name"])
            if not _V2_NAME.search(name):
                raise _spec_error(
                    "invalid v2 pipeline spec: name should consist of lower case alphanumeric"
                    " characters, '-' or '.', and must start and end with an alphanumeric"
                    " character"
                )
        elif _is_kubernetes_platform_spec(document):
            if platform is not None:
                raise invalid_input_with_details(
                    INVALID_PLATFORM_SPEC, "multiple platform specs provided"
                )
            platform = _strict(document, _platform_spec_message())
    if syntax_error is not None:
        # isV2Spec stopped at the spec, before the bad document; NewV2SpecTemplate reads on.
        raise _spec_error(f"unable to decode yaml document: {syntax_error}")
    assert spec is not None  # _is_pipeline_spec found one above
    return PipelineTemplate(spec=spec, platform_spec=platform)


def template_from_struct(struct: Mapping[str, Any]) -> bytes:
    """pipelineSpecStructToYamlString: an inline run pipeline_spec as a package."""
    if "pipeline_spec" in struct:
        text = yaml.safe_dump(struct["pipeline_spec"], sort_keys=True)
        if "platform_spec" in struct:
            text += DOCUMENT_SEPARATOR + yaml.safe_dump(struct["platform_spec"], sort_keys=True)
        return text.encode()
    return yaml.safe_dump(dict(struct), sort_keys=True).encode()


def validate_pipeline_name(name: str) -> None:
    """common.ValidatePipelineName (applied to the spec's pipelineInfo.name on upload)."""
    if not name:
        raise invalid_input("pipeline's name cannot be empty")
    if len(name) > _PIPELINE_NAME_MAX:
        raise invalid_input("pipeline's name must contain no more than 128 characters")
    if not _PIPELINE_NAME.match(name):
        raise invalid_input(
            "pipeline's name must contain only lowercase alphanumeric characters or '-' and"
            " must start with alphanumeric characters"
        )


def _kind_ok(parameter_type: str, value: Any) -> str | None:
    """None when `value` (a JSON value) fits the type, else the error message tail."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    checks: dict[str, tuple[bool, str]] = {
        "NUMBER_DOUBLE": (
            is_number,
            "requires type double or integer, but the parameter value is not of number value type",
        ),
        "NUMBER_INTEGER": (
            is_number,
            "requires type double or integer, but the parameter value is not of number value type",
        ),
        "STRING": (
            isinstance(value, str),
            "requires type string, but the input parameter is not of string value type",
        ),
        "BOOLEAN": (
            isinstance(value, bool),
            "requires type bool, but the input parameter is not of bool value type",
        ),
        "LIST": (
            isinstance(value, list),
            "requires type list, but the input parameter is not of list value type",
        ),
        "STRUCT": (
            isinstance(value, dict),
            "requires type struct, but the input parameter is not of struct value type",
        ),
    }
    if parameter_type in ("", "PARAMETER_TYPE_ENUM_UNSPECIFIED"):
        return "has unspecified type"
    if parameter_type == "TASK_FINAL_STATUS":
        return "requires type TASK_FINAL_STATUS, which is invalid for root component"
    ok, message = checks.get(parameter_type, (False, "requires type unknown"))
    return None if ok else message


def _same_value(left: Any, right: Any) -> bool:
    """proto.Equal of two structpb Values given as JSON values (bool is not a number)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    return bool(left == right)


def validate_job_inputs(spec: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
    """V2Spec.validatePipelineJobInputs.

    Raises:
        ApiError: INVALID_ARGUMENT.
    """
    required: Mapping[str, Any] = (
        spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    )
    for name, definition in required.items():
        if name not in parameters:
            if not definition.get("isOptional") and "defaultValue" not in definition:
                raise invalid_input(
                    f"parameter {name} is not optional, yet has neither default value nor user"
                    " provided value"
                )
            continue
        value = parameters[name]
        problem = _kind_ok(str(definition.get("parameterType", "")), value)
        if problem is not None:
            if problem == "has unspecified type":
                raise invalid_input(f"input parameter {name} has unspecified type")
            raise invalid_input(f"input parameter {name} {problem}")
        literals = definition.get("literals") or []
        if literals and not any(_same_value(value, literal) for literal in literals):
            raise invalid_input(
                f'input parameter "{name}" value {json.dumps(value)} does not match any of the'
                f" allowed literal values: {json.dumps(literals)}"
            )
    extra = [name for name in parameters if name not in required]
    if extra:
        raise invalid_input(
            f"parameter(s) provided are not required by pipeline: {', '.join(extra)}"
        )


def validate_kubernetes_configs(template: PipelineTemplate) -> None:
    """What the Argo compiler refuses in the platform spec when a run is created.

    Raises:
        ApiError: INTERNAL (a plain compiler error).
    """
    platform = (template.platform_spec or {}).get("platforms", {}).get(KUBERNETES_PLATFORM, {})
    for label, config in platform.get("deploymentSpec", {}).get("executors", {}).items():
        try:
            json_format.ParseDict(config, _kubernetes_executor_config_message())
        except json_format.ParseError as exc:
            raise plain(
                f"Failed to compile job: compiling executor {label!r}: failed to unmarshal"
                f" kubernetes config: {exc}"
            ) from None
