"""Domain values as the console's JSON (the browser's counterpart of convert.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from skit_pipelines.auth import required_role
from skit_pipelines.console.dag import Layout, node_states
from skit_pipelines.domain import (
    Artifact,
    ErrorInfo,
    LogLine,
    Pipeline,
    PipelineParameter,
    Principal,
    Run,
    RunState,
    Step,
)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def error(item: ErrorInfo | None) -> dict[str, Any] | None:
    if item is None:
        return None
    return {"code": item.code, "message": item.message, "reason": item.reason}


def parameter(item: PipelineParameter) -> dict[str, Any]:
    return {
        "name": item.name,
        "type": item.type.name,
        "required": item.required,
        "default": item.default,
        "description": item.description,
        "rules": [{"description": r.description, **r.to_json()} for r in item.rules],
    }


def pipeline(item: Pipeline) -> dict[str, Any]:
    return {
        "name": item.name,
        "id": item.id,
        "display_name": item.display_name,
        "description": item.description,
        "version": item.version,
        "parameters": [parameter(p) for p in item.parameters],
    }


def artifact(item: Artifact) -> dict[str, Any]:
    return {
        "name": item.name,
        "uri": item.uri,
        "step": item.step,
        "type": item.type,
        "size_bytes": item.size_bytes,
    }


def step(item: Step) -> dict[str, Any]:
    return {
        "name": item.name,
        "component": item.component,
        "image": item.image,
        "state": item.state.name,
        "attempt": item.attempt,
        "cached": item.cached,
        "start_time": _time(item.start_time),
        "end_time": _time(item.end_time),
        "outputs": [artifact(a) for a in item.output_artifacts],
        "output_parameters": dict(item.output_parameters),
        "metrics": [
            {"name": m.name, "value": m.value, "artifact": m.artifact} for m in item.metrics
        ],
        "error": error(item.error),
    }


def run_summary(item: Run) -> dict[str, Any]:
    """What a row of the runs page shows: no steps, no outputs."""
    return {
        "name": item.name,
        "id": item.id,
        "pipeline": item.pipeline,
        "state": item.state.name,
        "labels": dict(item.labels),
        "create_time": _time(item.create_time),
        "start_time": _time(item.start_time),
        "end_time": _time(item.end_time),
        "creator": item.creator,
        "revision": item.revision,
        "retry_of": item.retry_of,
        "steps_done": sum(1 for s in item.steps if s.state.terminal),
        "steps": len(item.steps),
    }


def permissions(principal: Principal, item: Run) -> dict[str, bool]:
    """The buttons the run page shows: the API's role table plus the controller's
    ownership rule (runners act on their own runs); the controller checks again."""
    owner = principal.may_act_on(item.creator)
    return {
        "cancel": principal.role >= required_role("CancelRun")
        and owner
        and not item.state.terminal
        and item.state is not RunState.CANCELLING,
        "retry": principal.role >= required_role("RetryRun")
        and owner
        and item.state in (RunState.FAILED, RunState.CANCELLED),
    }


def run(item: Run, principal: Principal, layout: Layout | None) -> dict[str, Any]:
    return {
        **run_summary(item),
        "pipeline_version": item.pipeline_version,
        "parameters": dict(item.parameters),
        "update_time": _time(item.update_time),
        "steps": [step(s) for s in item.steps],
        "steps_total": len(item.steps),
        "outputs": [artifact(a) for a in item.outputs],
        "output_parameters": dict(item.output_parameters),
        "error": error(item.error),
        "backend": item.backend,
        "backend_run_id": item.backend_run_id,
        "backend_run_url": item.backend_run_url,
        "disable_cache": item.disable_cache,
        "node_states": node_states(layout.nodes, item.steps) if layout else {},
        "allowed": permissions(principal, item),
    }


def log_line(item: LogLine) -> dict[str, Any]:
    return {
        "time": _time(item.time),
        "stream": item.stream,
        "text": item.text,
        "attempt": item.attempt,
    }
