"""The KFP stand-in's API, through kfp.Client (as the backend calls it) and raw HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import kfp_server_api
import pytest
import yaml

from skit_testing.kfp import KfpServer

Http = Callable[..., Any]


def _filter(name: str) -> str:
    return json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "string_value": name}]}
    )


def _upload(client: Any, path: Path, name: str = "v1") -> tuple[str, str]:
    pipeline = client.pipelines.pipeline_service_create_pipeline(
        kfp_server_api.V2beta1Pipeline(display_name=f"p-{name}-{path.stem}")
    )
    version = client.pipeline_uploads.upload_pipeline_version(
        str(path), name=name, pipelineid=pipeline.pipeline_id
    )
    return pipeline.pipeline_id, version.pipeline_version_id


def _experiment(client: Any, name: str = "exp") -> str:
    return str(
        client.experiments.experiment_service_create_experiment(
            kfp_server_api.V2beta1Experiment(display_name=name)
        ).experiment_id
    )


def _run(
    client: Any,
    pipeline_id: str,
    version_id: str,
    experiment_id: str,
    name: str = "run",
    parameters: dict[str, Any] | None = None,
) -> Any:
    return client.runs.run_service_create_run(
        kfp_server_api.V2beta1Run(
            display_name=name,
            experiment_id=experiment_id,
            pipeline_version_reference=kfp_server_api.V2beta1PipelineVersionReference(
                pipeline_id=pipeline_id, pipeline_version_id=version_id
            ),
            runtime_config=kfp_server_api.V2beta1RuntimeConfig(parameters=parameters or {}),
        )
    )


def _error(exc: pytest.ExceptionInfo[kfp_server_api.ApiException]) -> dict[str, Any]:
    return dict(json.loads(exc.value.body))


# Health, pipelines, versions


def test_healthz_answers_like_the_2_17_plain_handler(
    server: KfpServer, client: Any, http: Http
) -> None:
    assert client.get_kfp_healthz().multi_user is False
    answer = http(server.url + "/apis/v2beta1/healthz")
    assert answer.json() == {
        "commit_sha": "unknown",
        "tag_name": "unknown",
        "multi_user": False,
        "pipeline_store": "database",
    }


def test_pipelines_are_created_listed_by_name_and_unique(client: Any) -> None:
    created = client.pipelines.pipeline_service_create_pipeline(
        kfp_server_api.V2beta1Pipeline(display_name="alpha", description="d")
    )
    # v2beta1 fills name from display_name (api_converter.go toModelPipeline).
    assert (created.name, created.display_name) == ("alpha", "alpha")
    client.pipelines.pipeline_service_create_pipeline(
        kfp_server_api.V2beta1Pipeline(display_name="beta")
    )
    listed = client.pipelines.pipeline_service_list_pipelines(filter=_filter("alpha"), page_size=1)
    assert [p.pipeline_id for p in listed.pipelines] == [created.pipeline_id]
    assert listed.total_size == 1
    got = client.pipelines.pipeline_service_get_pipeline(created.pipeline_id)
    assert got.description == "d"

    with pytest.raises(kfp_server_api.ApiException) as exc:
        client.pipelines.pipeline_service_create_pipeline(
            kfp_server_api.V2beta1Pipeline(display_name="alpha")
        )
    assert exc.value.status == 409
    body = _error(exc)
    assert body["code"] == 6
    assert body["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.Status",
            "code": 6,
            "message": "Failed to create a new pipeline. The name alpha already exists. Please"
            " specify a new name",
        }
    ]


def test_upload_version_keeps_the_package_and_its_platform_spec(
    server: KfpServer, client: Any, packages: dict[str, Path]
) -> None:
    pipeline_id, version_id = _upload(client, packages["secrets"])
    (version,) = server.versions()
    assert (version.pipeline_version_id, version.name, version.display_name) == (
        version_id,
        "v1",
        "v1",
    )
    # A spec with a platform spec travels as {"pipeline_spec", "platform_spec"}.
    assert set(version.pipeline_spec) == {"pipeline_spec", "platform_spec"}
    assert server.package(version_id) == packages["secrets"].read_text()
    assert server.pipeline_spec(version_id)["pipelineInfo"] == {"name": "secrets"}
    platform = server.platform_spec(version_id)
    assert platform is not None
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    (secret,) = executors["exec-produce"]["secretAsEnv"]
    assert secret["secretName"] == "creds"
    assert secret["keyToEnv"] == [{"secretKey": "k", "envVar": "TOKEN"}]

    listed = client.pipelines.pipeline_service_list_pipeline_versions(
        pipeline_id, filter=_filter("v1"), page_size=1
    )
    assert [v.pipeline_version_id for v in listed.pipeline_versions] == [version_id]
    assert (
        client.pipelines.pipeline_service_list_pipeline_versions(
            pipeline_id, filter=_filter("v2")
        ).pipeline_versions
        is None
    )


def test_upload_pipeline_creates_pipeline_and_version(
    server: KfpServer, client: Any, packages: dict[str, Path]
) -> None:
    pipeline = client.pipeline_uploads.upload_pipeline(str(packages["chain"]), name="chained")
    assert (pipeline.name, pipeline.display_name) == ("chained", "chained")
    (version,) = server.versions()
    assert (version.pipeline_id, version.name) == (pipeline.pipeline_id, "chained")


def test_duplicate_version_is_409_and_unknown_pipeline_400(
    client: Any, packages: dict[str, Path]
) -> None:
    pipeline_id, _ = _upload(client, packages["chain"])
    with pytest.raises(kfp_server_api.ApiException) as exc:
        client.pipeline_uploads.upload_pipeline_version(
            str(packages["chain"]), name="v1", pipelineid=pipeline_id
        )
    assert exc.value.status == 409
    assert _error(exc)["error_message"] == "Failed to create a pipeline version"
    with pytest.raises(kfp_server_api.ApiException) as exc:
        client.pipeline_uploads.upload_pipeline_version(
            str(packages["chain"]), name="v2", pipelineid="no-such-pipeline"
        )
    # pipeline_upload_server.go: a namespace lookup failure is a 400, not a 404.
    assert exc.value.status == 400


V1_COMPONENT = """
name: Echo
inputs:
- {name: text, type: String}
implementation:
  container:
    image: alpine
    command: [echo, {inputValue: text}]
"""


def _spec(packages: dict[str, Path]) -> dict[str, Any]:
    return dict(yaml.safe_load(packages["chain"].read_text()))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("v1-component", "unknown template format"),
        ("unknown-top-level-field", "unknown template format"),
        ("unknown-component-field", "unknown template format"),
        ("no-pipeline-name", "unknown template format"),
        ("malformed-yaml", "unknown template format"),
        ("schema-2.0.0", "KFP only supports schema version 2.1.0, but the pipeline spec has"),
        ("upper-case-name", "pipeline's name must contain only lowercase alphanumeric"),
        ("two-specs", "multiple pipeline specs provided"),
    ],
)
def test_upload_validation_refuses_like_v2_template_go(
    tmp_path: Path, client: Any, packages: dict[str, Path], case: str, message: str
) -> None:
    spec = _spec(packages)
    if case == "v1-component":
        text = V1_COMPONENT
    elif case == "unknown-top-level-field":
        text = yaml.safe_dump({**spec, "extra": 1})
    elif case == "unknown-component-field":
        spec["components"]["comp-produce"]["executorLabell"] = "x"
        text = yaml.safe_dump(spec)
    elif case == "no-pipeline-name":
        text = yaml.safe_dump({**spec, "pipelineInfo": {}})
    elif case == "malformed-yaml":
        text = "pipelineInfo: [unclosed\n  name: x\n"
    elif case == "schema-2.0.0":
        text = yaml.safe_dump({**spec, "schemaVersion": "2.0.0"})
    elif case == "upper-case-name":
        text = yaml.safe_dump({**spec, "pipelineInfo": {"name": "Chain_1"}})
    else:
        text = yaml.safe_dump(spec) + "---\n" + yaml.safe_dump(spec)
    path = tmp_path / "package.yaml"
    path.write_text(text)
    pipeline = client.pipelines.pipeline_service_create_pipeline(
        kfp_server_api.V2beta1Pipeline(display_name="target")
    )
    with pytest.raises(kfp_server_api.ApiException) as exc:
        client.pipeline_uploads.upload_pipeline_version(
            str(path), name="v1", pipelineid=pipeline.pipeline_id
        )
    assert exc.value.status == 400
    body = _error(exc)
    assert body["error_message"].startswith(message)
    assert set(body) == {"error_message", "error_details"}


def test_unknown_executor_fields_pass_as_on_the_real_server(
    tmp_path: Path, server: KfpServer, client: Any, packages: dict[str, Path]
) -> None:
    # PipelineSpec.deployment_spec is a Struct (not checked on upload), and the Argo
    # compiler reads it with DiscardUnknown (compiler/visitor.go GetDeploymentConfig).
    spec = _spec(packages)
    spec["deploymentSpec"]["executors"]["exec-produce"]["container"]["imagee"] = "x"
    path = tmp_path / "package.yaml"
    path.write_text(yaml.safe_dump(spec))
    pipeline_id, version_id = _upload(client, path)
    run = _run(client, pipeline_id, version_id, _experiment(client))
    assert server.finish(run.run_id) == "SUCCEEDED"


def test_platform_document_without_kubernetes_is_ignored(
    tmp_path: Path, server: KfpServer, client: Any, packages: dict[str, Path]
) -> None:
    path = tmp_path / "package.yaml"
    path.write_text(packages["chain"].read_text() + "---\nplatforms:\n  other: {}\n")
    _, version_id = _upload(client, path)
    assert server.platform_spec(version_id) is None


# Experiments and paging


def _ticking() -> Callable[[], datetime]:
    moments = (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i) for i in count())
    return lambda: next(moments)


def test_experiments_page_sort_and_filter(make_client: Callable[..., Any], http: Http) -> None:
    # Each call a second later: the default order (created_at, then id) is creation order.
    with KfpServer(clock=_ticking()) as server:
        client = make_client(server.url)
        _check_experiment_pages(server, client, http)


def _check_experiment_pages(server: KfpServer, client: Any, http: Http) -> None:
    for name in ["e1", "e2", "e3", "e4", "e5"]:
        _experiment(client, name)
    api = client.experiments
    first = api.experiment_service_list_experiments(page_size=2, sort_by="display_name desc")
    assert [e.display_name for e in first.experiments] == ["e5", "e4"]
    assert first.total_size == 5 and first.next_page_token
    second = api.experiment_service_list_experiments(page_size=2, page_token=first.next_page_token)
    assert [e.display_name for e in second.experiments] == ["e3", "e2"]
    third = api.experiment_service_list_experiments(page_size=2, page_token=second.next_page_token)
    assert [e.display_name for e in third.experiments] == ["e1"]
    assert not third.next_page_token
    assert [e.display_name for e in api.experiment_service_list_experiments().experiments] == [
        "e1",
        "e2",
        "e3",
        "e4",
        "e5",
    ]
    with pytest.raises(kfp_server_api.ApiException) as exc:
        api.experiment_service_create_experiment(
            kfp_server_api.V2beta1Experiment(display_name="e1")
        )
    assert exc.value.status == 409

    base = server.url + "/apis/v2beta1/experiments?"
    token = {"page_token": first.next_page_token}
    mismatch = http(base + urlencode({**token, "sort_by": "display_name"}))
    assert mismatch.status == 400
    assert "page token does not match" in mismatch.json()["message"]
    assert http(base + urlencode({"page_token": "not-base64!"})).status == 400
    assert http(base + "page_size=-1").status == 400
    bad_key = json.dumps({"predicates": [{"operation": "EQUALS", "key": "colour"}]})
    answer = http(base + urlencode({"filter": bad_key}))
    assert answer.status == 400
    assert 'no support for filtering on unrecognized field "colour"' in answer.json()["message"]
    # kfp.Client.get_experiment sends the operation as its enum number; protojson takes it.
    assert client.get_experiment(experiment_name="e3").display_name == "e3"


# Runs


def test_run_from_version_answers_like_to_api_run(
    server: KfpServer, client: Any, packages: dict[str, Path], http: Http
) -> None:
    pipeline_id, version_id = _upload(client, packages["chain"])
    experiment_id = _experiment(client)
    run = _run(client, pipeline_id, version_id, experiment_id, parameters={"msg": "x"})
    assert run.state == "PENDING"
    assert [s.state for s in run.state_history] == ["PENDING"]
    assert run.pipeline_version_reference.pipeline_version_id == version_id
    assert run.pipeline_spec is None
    assert run.service_account == "pipeline-runner"
    assert run.run_details is None
    assert run.error is None

    found = client.runs.run_service_list_runs(
        experiment_id=experiment_id, filter=_filter("run"), page_size=1
    )
    assert [r.run_id for r in found.runs] == [run.run_id]
    assert not client.runs.run_service_list_runs(
        experiment_id=experiment_id, filter=_filter("other")
    ).runs

    raw = http(f"{server.url}/apis/v2beta1/runs/{run.run_id}").json()
    # protojson without unpopulated fields: unset timestamps are the epoch, zero enums absent.
    assert raw["finished_at"] == "1970-01-01T00:00:00Z"
    assert raw["storage_state"] == "AVAILABLE"
    assert raw["runtime_config"] == {"parameters": {"msg": "x"}}
    assert "error" not in raw and "description" not in raw

    assert server.finish(run.run_id) == "SUCCEEDED"
    done = client.runs.run_service_get_run(run.run_id)
    assert done.state == "SUCCEEDED"
    assert [s.state for s in done.state_history] == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert done.finished_at.year > 1970


def test_run_without_experiment_goes_to_default(client: Any, packages: dict[str, Path]) -> None:
    pipeline_id, version_id = _upload(client, packages["chain"])
    run = _run(client, pipeline_id, version_id, "")
    listed = client.experiments.experiment_service_list_experiments(filter=_filter("Default"))
    assert [e.experiment_id for e in listed.experiments] == [run.experiment_id]


def test_run_with_inline_spec_and_platform_spec(
    server: KfpServer, client: Any, packages: dict[str, Path]
) -> None:
    experiment_id = _experiment(client)
    run = client.run_pipeline(
        experiment_id=experiment_id,
        job_name="inline",
        pipeline_package_path=str(packages["secrets"]),
        params={"msg": "x"},
    )
    assert run.pipeline_version_reference is None
    assert set(run.pipeline_spec) == {"pipeline_spec", "platform_spec"}
    assert server.finish(run.run_id) == "SUCCEEDED"


@pytest.mark.parametrize(
    ("change", "status", "code", "message"),
    [
        ("unknown-version", 500, 13, "Failed to create a new run: InternalServerError:"),
        ("missing-parameter", 400, 3, "parameter count is not optional"),
        ("extra-parameter", 400, 3, "parameter(s) provided are not required by pipeline: x"),
        ("wrong-type", 400, 3, "input parameter count requires type double or integer"),
        ("unknown-field", 400, 3, 'unknown field "colour"'),
        ("no-name", 500, 13, "Failed to create a new run: CreateJob(job.ToV2())"),
        ("unknown-experiment", 404, 5, "Failed to create a new run: Failed to create a run"),
    ],
)
def test_create_run_errors(
    server: KfpServer,
    client: Any,
    packages: dict[str, Path],
    http: Http,
    change: str,
    status: int,
    code: int,
    message: str,
) -> None:
    pipeline_id, version_id = _upload(client, packages["required"])
    body: dict[str, Any] = {
        "display_name": "r",
        "experiment_id": _experiment(client),
        "pipeline_version_reference": {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": version_id,
        },
        "runtime_config": {"parameters": {"count": 1}},
    }
    if change == "unknown-version":
        body["pipeline_version_reference"]["pipeline_version_id"] = "nope"
    elif change == "missing-parameter":
        body["runtime_config"] = {}
    elif change == "extra-parameter":
        body["runtime_config"]["parameters"]["x"] = 1
    elif change == "wrong-type":
        body["runtime_config"]["parameters"]["count"] = "one"
    elif change == "unknown-field":
        body["colour"] = "red"
    elif change == "no-name":
        body["display_name"] = ""
    else:
        body["experiment_id"] = "nope"
    answer = http(server.url + "/apis/v2beta1/runs", "POST", body)
    assert (answer.status, answer.json()["code"]) == (status, code)
    assert message in answer.json()["message"]
    assert server.runs() == []


def test_unknown_run_is_404_with_the_grpc_gateway_body(server: KfpServer, http: Http) -> None:
    answer = http(server.url + "/apis/v2beta1/runs/nope")
    assert answer.status == 404
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json() == {
        "code": 5,
        "message": "Failed to get a run: Failed to fetch run nope: ResourceNotFoundError: Run"
        " nope not found",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.Status",
                "code": 5,
                "message": "Run nope not found",
            }
        ],
    }
    terminate = http(server.url + "/apis/v2beta1/runs/nope:terminate", "POST")
    assert terminate.status == 404


def test_terminate_cancels_then_argo_fails_the_run(
    server: KfpServer, client: Any, packages: dict[str, Path], http: Http
) -> None:
    pipeline_id, version_id = _upload(client, packages["chain"])
    run = _run(client, pipeline_id, version_id, _experiment(client))
    server.advance(run.run_id, 5)
    assert client.runs.run_service_get_run(run.run_id).state == "RUNNING"
    assert client.runs.run_service_terminate_run(run.run_id) == {}
    assert client.runs.run_service_get_run(run.run_id).state == "CANCELING"
    assert server.finish(run.run_id) == "FAILED"
    ended = client.runs.run_service_get_run(run.run_id)
    # No CANCELED: the v2 API maps Argo's Failed to FAILED (kubeflow/pipelines#1040).
    assert [s.state for s in ended.state_history] == ["PENDING", "RUNNING", "CANCELING", "FAILED"]
    assert ended.error is None

    again = http(f"{server.url}/apis/v2beta1/runs/{run.run_id}:terminate", "POST")
    assert again.status == 400
    assert again.json()["code"] == 3
    assert again.json()["details"][0]["message"] == (
        f"Failed to terminate a run {run.run_id}. Row not found"
    )


def test_auto_advance_moves_one_node_per_get(
    server: KfpServer, client: Any, packages: dict[str, Path]
) -> None:
    pipeline_id, version_id = _upload(client, packages["chain"])
    run = _run(client, pipeline_id, version_id, _experiment(client))
    server.auto_advance = True
    seen = []
    for _ in range(100):
        got = client.runs.run_service_get_run(run.run_id)
        seen.append((got.state, len(got.run_details.task_details) if got.run_details else 0))
        if got.state == "SUCCEEDED":
            break
    states = [state for state, _ in seen]
    assert states[0] == "RUNNING" and states[-1] == "SUCCEEDED"
    counts = [count for _, count in seen]
    assert counts == sorted(counts) and counts[0] == 1 and counts[-1] == 9


# Auth, faults, routing


def test_bearer_token_is_required(make_client: Callable[..., Any], http: Http) -> None:
    with KfpServer(token="s3cret") as server:
        answer = http(server.url + "/apis/v2beta1/runs")
        assert answer.status == 401
        assert answer.json()["code"] == 16
        assert "WWW-Authenticate" in answer.headers
        client = make_client(server.url, existing_token="s3cret")
        assert client.get_kfp_healthz().multi_user is False
        wrong = make_client(server.url, existing_token="nope", namespace="team")
        with pytest.raises(kfp_server_api.ApiException) as exc:
            wrong.runs.run_service_list_runs()
        assert exc.value.status == 401


def test_cookie_is_required(make_client: Callable[..., Any], http: Http) -> None:
    with KfpServer(cookie="authservice_session=abc") as server:
        client = make_client(server.url, cookies="other=1; authservice_session=abc")
        assert client.runs.run_service_list_runs().runs is None
        answer = http(
            server.url + "/apis/v2beta1/runs", headers={"Cookie": "authservice_session=x"}
        )
        assert answer.status == 401


def test_fail_next_injects_bursts_and_lost_answers(
    server: KfpServer, client: Any, packages: dict[str, Path]
) -> None:
    server.fail_next("GET", r"/experiments", status=503, times=2)
    for _ in range(2):
        with pytest.raises(kfp_server_api.ApiException) as exc:
            client.experiments.experiment_service_list_experiments()
        assert exc.value.status == 503
        assert json.loads(exc.value.body)["code"] == 14
    client.experiments.experiment_service_list_experiments()
    assert [r.status for r in server.calls("GET", r"/experiments")] == [503, 503, 200]

    server.fail_next("POST", r"/experiments", status=429, after=True)
    with pytest.raises(kfp_server_api.ApiException) as exc:
        _experiment(client, "lost")
    assert exc.value.status == 429
    # The experiment exists: only the answer was lost.
    listed = client.experiments.experiment_service_list_experiments(filter=_filter("lost"))
    assert len(listed.experiments) == 1


def test_routing_errors(server: KfpServer, http: Http) -> None:
    unknown = http(server.url + "/apis/v2beta1/nothing")
    assert (unknown.status, unknown.json()) == (404, {"code": 5, "message": "Not Found"})
    wrong_method = http(server.url + "/apis/v2beta1/runs/x:terminate")
    assert (wrong_method.status, wrong_method.json()["code"]) == (501, 12)
    outside = http(server.url + "/index.html")
    assert (outside.status, outside.body) == (404, b"404 page not found\n")
