"""evaluate-slu end to end on the demo data: the run controller, the local backend and the
local executor in process, running the real components (fetch_tagged_dataset,
prepare_slu_dataset, fetch_slu_model, evaluate_slu) against the demo annotation store and
model registry."""

# No `from __future__ import annotations`: kfp reads the pipeline signatures' real types.

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

from skit_components.model_registry import ModelRegistry
from skit_components.slu import MODEL_KIND, Example, save_model, train
from skit_pipelines.domain import Run, RunState, StepState

PIPELINE = "evaluate_slu"
WRITES_DEMO_DATA = True


def metrics(run: Run) -> dict:
    (artifact,) = [a for a in run.outputs if a.name == "report"]
    return json.loads((Path(unquote(urlparse(artifact.uri).path)) / "metrics.json").read_text())


def register_weak_model(env: dict[str, str], tmp_path: Path) -> str:
    """A second model in the registry: trained on a handful of English utterances."""
    examples = [
        Example("yes", "_confirm_", "en"),
        Example("yes speaking", "_confirm_", "en"),
        Example("no", "_cancel_", "en"),
        Example("no not now", "_cancel_", "en"),
        Example("i will pay tomorrow", "promise_to_pay", "en"),
        Example("i already paid", "already_paid", "en"),
    ]
    metadata = save_model(train(examples), examples, tmp_path / "weak", name="slu-weak")
    registry = ModelRegistry.from_url(env["MODEL_REGISTRY_URL"])
    registry.register(MODEL_KIND, metadata.version, tmp_path / "weak")
    return metadata.version


async def test_defaults_evaluate_production_on_every_tagged_utterance(run_pipeline, demo_env):
    production = ModelRegistry.from_url(demo_env["MODEL_REGISTRY_URL"]).production(MODEL_KIND)
    run = await run_pipeline()
    assert run.state is RunState.SUCCEEDED, run.error
    assert [s.state for s in run.steps] == [StepState.SUCCEEDED] * 4
    out = run.output_parameters
    assert out["model_version"] == production.version
    assert out["verdict"] == "is-production"
    found = metrics(run)
    assert found["model"]["version"] == production.version and found["production"] is None
    assert found["model"]["macro_f1"] == out["macro_f1"] > 0.7
    # test_percent 100: every tagged utterance of the store is in the evaluation.
    assert found["test_set"]["examples"] > 1000
    assert set(found["model"]["per_language"]) == {"en", "hi", "ta", "te"}
    # The scores as KFP artifacts, in the Run API: typed metrics and a confusion matrix.
    (evaluated,) = [s for s in run.steps if s.name == "evaluate-slu"]
    logged = {m.name: m.value for m in evaluated.metrics}
    assert logged["macro_f1"] == out["macro_f1"] and "production_macro_f1" not in logged
    assert logged["test_examples"] == found["test_set"]["examples"]
    artifacts = {a.name: a for a in evaluated.output_artifacts}
    matrix = artifacts["confusion_matrix"].metadata["confusionMatrix"]
    assert artifacts["confusion_matrix"].type == "system.ClassificationMetrics"
    assert [r["row"] for r in matrix["rows"]] == found["model"]["confusion"]
    assert artifacts["report_html"].type == "system.HTML"


async def test_a_given_version_is_compared_with_production(run_pipeline, demo_env, tmp_path):
    weak = register_weak_model(demo_env, tmp_path)
    run = await run_pipeline(model_version=weak, test_percent=15)
    assert run.state is RunState.SUCCEEDED, run.error
    out = run.output_parameters
    assert out["model_version"] == weak and out["verdict"] == "worse"
    found = metrics(run)
    assert found["production"]["macro_f1"] > found["model"]["macro_f1"] == out["macro_f1"]
    # retrain-slu's default split: the same 15% of every intent.
    assert 150 < found["test_set"]["examples"] < 400


async def test_an_unknown_version_fails_naming_the_known_ones(run_pipeline, demo_env):
    run = await run_pipeline(model_version="slu-nope")
    assert run.state is RunState.FAILED
    assert "no SLU model version 'slu-nope'" in run.error.message
    assert "slu-intents-" in run.error.message
