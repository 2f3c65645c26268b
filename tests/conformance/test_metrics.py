"""Artifact metadata and metrics: what components log (Metrics, ClassificationMetrics,
SlicedClassificationMetrics, HTML, Markdown) reaches the step's artifacts and metrics;
`.metadata` placeholders read an input's metadata; executor output files are honoured."""

# No `from __future__ import annotations`: kfp reads component signatures' real types.

import json
import math

from kfp import dsl

from skit_pipelines.domain import Metric, StepState

BASE = "python:3.11"
SHELL = "skit-pipelines/t-shell:0.1.0"


@dsl.component(base_image=BASE)
def output_metrics(seed: int, metrics: dsl.Output[dsl.Metrics]):
    metrics.log_metric("accuracy", 0.5 + seed / 10)
    metrics.log_metric("examples", 120)


@dsl.component(base_image=BASE)
def classification(
    confusion: dsl.Output[dsl.ClassificationMetrics],
    sliced: dsl.Output[dsl.SlicedClassificationMetrics],
    page: dsl.Output[dsl.HTML],
    notes: dsl.Output[dsl.Markdown],
    odd: dsl.Output[dsl.Metrics],
):
    confusion.log_confusion_matrix(["cat", "dog"], [[9, 1], [2, 8]])
    confusion.log_roc_curve(fpr=[0.0, 0.5, 1.0], tpr=[0.0, 0.8, 1.0], threshold=[1.0, 0.5, 0.0])
    sliced._sliced_metrics = {}  # kfp 2.17 never sets it (its own tests do the same)
    sliced.set_confusion_matrix_categories("overall", ["cat", "dog"])
    sliced.log_confusion_matrix_row("overall", "cat", [9, 1])
    with open(page.path, "w") as f:
        f.write("<h1>Report</h1>")
    with open(notes.path, "w") as f:
        f.write("# Notes\n")
    odd.log_metric("nan", float("nan"))
    odd.log_metric("ok", 1)


async def test_metrics_reach_the_step_typed(kfp_local):
    """Adapted from pipeline_with_metrics_outputs.py: log_metric at the top and in a loop."""

    @dsl.pipeline(name="metrics")
    def pipeline():
        output_metrics(seed=1)
        with dsl.ParallelFor([2, 3]) as seed:
            output_metrics(seed=seed)

    ran = await kfp_local.succeed(pipeline)

    top = ran.steps["output-metrics"]
    assert top.metrics == (
        Metric(name="accuracy", value=0.6, artifact="metrics"),
        Metric(name="examples", value=120.0, artifact="metrics"),
    )
    artifact = ran.artifact("output-metrics", "metrics")
    assert artifact.type == "system.Metrics"
    assert artifact.metadata == {"accuracy": 0.6, "examples": 120}
    # log_metric writes no file: the metadata is stored as the artifact's content.
    assert json.loads(kfp_local.content(artifact)) == {"accuracy": 0.6, "examples": 120}
    looped = {
        name: step.metrics[0].value for name, step in ran.steps.items() if name.startswith("for")
    }
    assert sorted(looped.values()) == [0.7, 0.8]


async def test_classification_metrics_html_and_markdown(kfp_local):
    @dsl.pipeline(name="reports")
    def pipeline():
        classification()

    ran = await kfp_local.succeed(pipeline)

    confusion = ran.artifact("classification", "confusion")
    assert confusion.type == "system.ClassificationMetrics"
    matrix = confusion.metadata["confusionMatrix"]
    assert [s["displayName"] for s in matrix["annotationSpecs"]] == ["cat", "dog"]
    assert [r["row"] for r in matrix["rows"]] == [[9, 1], [2, 8]]
    assert [c["recall"] for c in confusion.metadata["confidenceMetrics"]] == [0.0, 0.8, 1.0]
    sliced = ran.artifact("classification", "sliced")
    assert sliced.type == "system.SlicedClassificationMetrics"
    assert [s["slice"] for s in sliced.metadata["evaluationSlices"]] == ["overall"]
    page, notes = ran.artifact("classification", "page"), ran.artifact("classification", "notes")
    assert (page.type, kfp_local.content(page)) == ("system.HTML", "<h1>Report</h1>")
    assert (notes.type, kfp_local.content(notes)) == ("system.Markdown", "# Notes\n")
    # NaN is kept as JSON and protobuf can (protojson's "NaN"); only numbers are metrics.
    odd = ran.artifact("classification", "odd")
    assert odd.metadata == {"nan": "NaN", "ok": 1}
    assert ran.steps["classification"].metrics == (Metric("ok", 1.0, "odd"),)
    assert not any(isinstance(v, float) and math.isnan(v) for v in odd.metadata.values())


@dsl.component(base_image=BASE)
def tagged(text: str, out: dsl.Output[dsl.Dataset]):
    with open(out.path, "w") as f:
        f.write(text)
    out.metadata.update({"rows": len(text.split()), "lang": "en", "nested": {"k": [1, 2]}})


@dsl.container_component
def metadata_placeholders(data: dsl.Input[dsl.Dataset], out: dsl.OutputPath(str)):
    return dsl.ContainerSpec(
        image=SHELL,
        command=["sh", "-c", 'printf "%s|%s|%s|%s" "$0" "$1" "$2" "$3" > "$4"'],
        args=[data.metadata, data.metadata["lang"], data.metadata["rows"], data.uri, out],
    )


@dsl.component(base_image=BASE)
def read_metadata(data: dsl.Input[dsl.Dataset]) -> str:
    return f"{data.metadata['rows']} {data.metadata['nested']}"


async def test_metadata_reaches_placeholders_and_downstream_components(kfp_local):
    @dsl.pipeline(name="metadata")
    def pipeline(text: str = "a b c"):
        made = tagged(text=text)
        metadata_placeholders(data=made.outputs["out"])
        read_metadata(data=made.outputs["out"])

    ran = await kfp_local.succeed(pipeline)

    made = ran.artifact("tagged", "out")
    assert made.metadata == {"rows": 3, "lang": "en", "nested": {"k": [1, 2]}}
    whole, lang, rows, uri = ran.parameter("metadata-placeholders", "out").split("|")
    assert json.loads(whole) == made.metadata
    assert (lang, rows, uri) == ("en", "3", made.uri)
    assert ran.parameter("read-metadata") == "3 {'k': [1, 2]}"


@dsl.container_component
def writes_executor_output(report: dsl.Output[dsl.HTML], count: dsl.OutputPath(int)):
    """A container component writing KFP's executor output file itself: a parameter, and
    an artifact's metadata and content at a path of its own choosing."""
    script = (
        "import json, os, sys\n"
        "spec = json.loads(sys.argv[1])\n"
        "out = spec['outputs']\n"
        "report = out['artifacts']['report']['artifacts'][0]\n"
        "moved = os.path.join(os.path.dirname(out['outputFile']), 'elsewhere.html')\n"
        "open(moved, 'w').write('<p>moved</p>')\n"
        "written = {'parameterValues': {'count': 3}, 'artifacts': {'report': {'artifacts': [\n"
        "    dict(report, uri=moved, metadata={'title': 'hi', 'score': 0.5})]}}}\n"
        "open(out['outputFile'], 'w').write(json.dumps(written))\n"
    )
    return dsl.ContainerSpec(
        image=SHELL, command=["python3", "-c", script], args=["{{$}}", report.path, count]
    )


async def test_executor_output_artifacts_are_honoured(kfp_local):
    @dsl.pipeline(name="executor-output")
    def pipeline() -> int:
        return writes_executor_output().outputs["count"]

    ran = await kfp_local.succeed(pipeline)

    report = ran.artifact("writes-executor-output", "report")
    assert report.metadata == {"title": "hi", "score": 0.5}
    assert kfp_local.content(report) == "<p>moved</p>"
    assert ran.output_parameters == {"Output": 3}
    assert ran.steps["writes-executor-output"].state is StepState.SUCCEEDED
