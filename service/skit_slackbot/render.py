"""The bot's replies, as Slack mrkdwn text (https://api.slack.com/reference/surfaces/formatting).

Anything that came from a person or the service is escaped (`&`, `<`, `>`), so a value
can never turn into a mention or a link.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import grpc

from skit_pipelines_client import (
    FieldViolation,
    Pipeline,
    RPCError,
    Run,
    RunState,
    Step,
    StepState,
)

MAX_STEPS_SHOWN = 20
"""A progress message lists at most this many steps (loops can make hundreds)."""
MAX_VALUE_CHARS = 200

_RUN_ICONS = {
    RunState.QUEUED: ":hourglass_flowing_sand:",
    RunState.RUNNING: ":arrows_counterclockwise:",
    RunState.SUCCEEDED: ":white_check_mark:",
    RunState.FAILED: ":x:",
    RunState.CANCELLING: ":no_entry_sign:",
    RunState.CANCELLED: ":no_entry_sign:",
}
_STEP_ICONS = {
    StepState.PENDING: ":white_circle:",
    StepState.RUNNING: ":large_blue_circle:",
    StepState.SUCCEEDED: ":white_check_mark:",
    StepState.CACHED: ":recycle:",
    StepState.SKIPPED: ":fast_forward:",
    StepState.FAILED: ":x:",
    StepState.CANCELLED: ":no_entry_sign:",
}

HELP = """\
I run skit-pipelines for you. Mention me in a channel or message me directly:
• `run <pipeline> key=value ...` starts a run; or give the parameters as a JSON block:
  `run <pipeline>` followed by ```{"call_quantity": 20}```
• `status <run>` shows a run; `cancel <run>` stops it; `retry <run>` reruns a failed or \
cancelled run (its succeeded steps are reused)
• `pipelines` lists what can be run, with their parameters
I reply in the thread with the run, follow it there, and post the outcome."""


def escape(text: object) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(text: object) -> str:
    inner = escape(text).replace("`", "'")
    return f"`{inner}`"


def _value(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 1] + "…"
    return code(text)


def _pipeline_id(name: str) -> str:
    return name.removeprefix("pipelines/")


def duration(run: Run) -> str:
    start = run.start_time or run.create_time
    end = run.end_time
    if start is None or end is None:
        return ""
    return format_seconds((end - start).total_seconds())


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def created(run: Run, principal: str, retry_of: str = "") -> str:
    what = f"Retrying {code(retry_of)} as run" if retry_of else "Started run"
    return (
        f"{what} {code(run.id)} of {code(_pipeline_id(run.pipeline))} as {code(principal)}. "
        "I'll post its progress here and the outcome when it ends." + _parameters_line(run)
    )


def _parameters_line(run: Run) -> str:
    if not run.parameters:
        return ""
    shown = ", ".join(f"{escape(k)}={_value(v)}" for k, v in run.parameters.items())
    return f"\nParameters: {shown}"


def progress(run: Run) -> str:
    """One message, updated in place: the run's state and its steps, one icon each."""
    icon = _RUN_ICONS.get(run.state, ":grey_question:")
    done = sum(1 for s in run.steps if s.state.terminal)
    head = f"{icon} Run {code(run.id)} is *{run.state.name}*"
    if run.steps:
        head += f" · {done}/{len(run.steps)} steps done"
    lines = [head]
    steps = list(run.steps)
    for step in steps[:MAX_STEPS_SHOWN]:
        lines.append(_step_line(step))
    if len(steps) > MAX_STEPS_SHOWN:
        lines.append(f"… and {len(steps) - MAX_STEPS_SHOWN} more steps")
    return "\n".join(lines)


def _step_line(step: Step) -> str:
    icon = _STEP_ICONS.get(step.state, ":grey_question:")
    extra = ""
    if step.attempt > 1:
        extra += f" (attempt {step.attempt})"
    if step.start_time and step.end_time:
        extra += f" {format_seconds((step.end_time - step.start_time).total_seconds())}"
    if step.error is not None:
        extra += f" — {escape(step.error.message)}"
    return f"{icon} {code(step.name)} {step.state.name.lower()}{extra}"


def outcome(run: Run) -> str:
    """The message posted when a run ends: outputs on success, the error otherwise."""
    icon = _RUN_ICONS.get(run.state, ":grey_question:")
    took = duration(run)
    lines = [
        f"{icon} Run {code(run.id)} of {code(_pipeline_id(run.pipeline))} "
        f"*{run.state.name}*{f' in {took}' if took else ''}."
    ]
    lines.extend(_details(run))
    return "\n".join(lines)


def _details(run: Run) -> Iterable[str]:
    if run.error is not None:
        yield f"Error: {escape(run.error.message)}"
        for step in run.steps:
            if step.state is StepState.FAILED and step.error is not None:
                yield f"• step {code(step.name)}: {escape(step.error.message)}"
        if run.state is RunState.FAILED:
            yield f"`retry {escape(run.id)}` reruns it, reusing the steps that succeeded."
    if run.outputs:
        yield "Outputs:"
        for artifact in run.outputs:
            yield f"• {escape(artifact.name)}: {code(artifact.uri)}"
    if run.output_parameters:
        yield "Output values:"
        for key, value in run.output_parameters.items():
            yield f"• {escape(key)} = {_value(value)}"
    if run.backend_run_url:
        yield f"<{run.backend_run_url}|Open in Kubeflow>"


def status(run: Run) -> str:
    """`status <run>`: what the run is, where it is, and what it produced."""
    lines = [progress(run), f"Pipeline {code(_pipeline_id(run.pipeline))}"]
    if run.creator:
        lines[-1] += f", created by {code(run.creator)}"
    if run.create_time:
        lines[-1] += f" at {_time(run.create_time)}"
    if run.retry_of:
        lines.append(f"Retry of {code(run.retry_of.removeprefix('runs/'))}")
    took = duration(run)
    if took:
        lines.append(f"Took {took}")
    if run.parameters:
        lines.append(_parameters_line(run).strip())
    lines.extend(_details(run))
    return "\n".join(lines)


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def pipelines(items: Iterable[Pipeline]) -> str:
    lines = ["Pipelines you can run (`run <pipeline> key=value ...`):"]
    for pipeline in items:
        lines.append(f"• {code(_pipeline_id(pipeline.name))} — {escape(pipeline.description)}")
        for p in pipeline.parameters:
            default = "required" if p.required else f"default {_value(p.default)}"
            lines.append(f"    ◦ {escape(p.name)} ({p.type.name.lower()}, {default})")
    return "\n".join(lines)


def violations(items: Iterable[FieldViolation]) -> str:
    """BadRequest field violations, one line each, named as the person typed them."""
    lines = []
    for violation in items:
        name = violation.field.removeprefix("run.").removeprefix("parameters.")
        lines.append(f"• {code(name)}: {escape(violation.description)}")
    return "\n".join(lines)


def rpc_error(error: RPCError, doing: str) -> str:
    """A failed call, readable: field violations listed, the code said in words."""
    if error.violations:
        return f":warning: Can't {doing}:\n{violations(error.violations)}"
    reason = {
        grpc.StatusCode.NOT_FOUND: "not found",
        grpc.StatusCode.PERMISSION_DENIED: "you are not allowed to",
        grpc.StatusCode.UNAUTHENTICATED: "the service refused my credentials for you",
        grpc.StatusCode.UNAVAILABLE: "the pipelines service is unavailable; try again shortly",
        grpc.StatusCode.FAILED_PRECONDITION: "not now",
        grpc.StatusCode.ALREADY_EXISTS: "it already exists",
        grpc.StatusCode.DEADLINE_EXCEEDED: "the pipelines service did not answer in time",
    }.get(error.code, error.code.name)
    return f":warning: Can't {doing}: {reason} — {escape(error.message)}"


def refused(slack_user: str) -> str:
    return (
        f"Sorry <@{slack_user}>, you're not set up to run pipelines from Slack. "
        "Ask an operator to map your Slack user to a service principal."
    )


def unknown(word: str) -> str:
    return f"I don't know {code(word)}.\n{HELP}"
