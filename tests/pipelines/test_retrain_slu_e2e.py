"""retrain-slu end to end on the demo data: the run controller, the local backend and the
local executor in process, running the real components (fetch_tagged_dataset,
prepare_slu_dataset, train_slu, evaluate_slu, publish_slu_model) against the demo
annotation store and the demo model registry with its production model."""

# No `from __future__ import annotations`: kfp reads the pipeline signatures' real types.

import json
import os
from collections import Counter
from pathlib import Path
from urllib.parse import unquote, urlparse

from skit_components.model_registry import ModelRegistry
from skit_components.slu import MODEL_KIND, load_model, read_metadata
from skit_pipelines.domain import Run, RunState, StepState

PIPELINE = "retrain_slu"
WRITES_DEMO_DATA = True


def artifact_path(run: Run, name: str) -> Path:
    (artifact,) = [a for a in run.outputs if a.name == name]
    return Path(unquote(urlparse(artifact.uri).path))


def registry(env: dict[str, str]) -> ModelRegistry:
    return ModelRegistry.from_url(env["MODEL_REGISTRY_URL"])


async def test_defaults_train_compare_report_and_publish_without_promoting(run_pipeline, demo_env):
    production_before = registry(demo_env).production(MODEL_KIND)
    assert production_before is not None
    run = await run_pipeline()
    assert run.state is RunState.SUCCEEDED, run.error
    assert [s.state for s in run.steps] == [StepState.SUCCEEDED] * 5
    out = run.output_parameters

    report = artifact_path(run, "report")
    assert {p.name for p in report.iterdir()} == {
        "report.md",
        "report.html",
        "metrics.json",
        "confusion_matrix.png",
        "production_confusion_matrix.png",
    }
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["production"]["version"] == production_before.version
    assert metrics["model"]["macro_f1"] == out["macro_f1"]
    assert metrics["production"]["macro_f1"] == out["production_macro_f1"] > 0.5
    # Both models were scored on the same held-out test set: every intent, aliases mapped.
    labels = metrics["model"]["labels"]
    assert labels == metrics["production"]["labels"]
    assert "ptp" not in labels and "promise_to_pay" in labels and len(labels) >= 15
    # Far better than always answering the most frequent intent, whose macro F1 is its
    # own F1 (precision n/N, recall 1) over the number of intents.
    support = [s["support"] for s in metrics["model"]["per_intent"]]
    majority = 2 * max(support) / (sum(support) + max(support)) / len(support)
    assert out["macro_f1"] > 0.7 and out["macro_f1"] > 10 * majority
    markdown = (report / "report.md").read_text()
    assert "## Per intent" in markdown and f"`{production_before.version}`" in markdown
    assert (report / "report.html").read_text().count("data:image/png;base64,") == 2

    # The published model: the trained one with its card (now with the evaluation).
    model = artifact_path(run, "model")
    metadata = read_metadata(model)
    assert metadata.version.startswith("slu-intents-")
    card = (model / "model_card.md").read_text()
    assert f"macro F1 {out['macro_f1']:.4f}" in card and production_before.version in card
    assert (model / "evaluation" / "report.html").is_file()
    classifier, _ = load_model(model)
    assert classifier.predict(["i will pay tomorrow"])[0] == "promise_to_pay"

    # Registered, but production did not move: promote is false by default.
    assert out["promoted"] is False
    assert out["decision"] == "registered, not promoted: promote is false"
    assert metadata.version in registry(demo_env).versions(MODEL_KIND)
    assert registry(demo_env).production(MODEL_KIND).version == production_before.version


async def test_promote_moves_production_when_not_worse(run_pipeline, demo_env):
    before = registry(demo_env).production(MODEL_KIND).version
    run = await run_pipeline(promote=True)
    assert run.state is RunState.SUCCEEDED, run.error
    out = run.output_parameters
    # The demo's production model learnt from fewer and noisier tags than the store has.
    assert out["macro_f1"] > out["production_macro_f1"]
    first = read_metadata(artifact_path(run, "model")).version
    assert out["promoted"] is True
    assert out["decision"].startswith(f"promoted: better than production {before}")
    assert registry(demo_env).production(MODEL_KIND).version == first

    # The same data and seed again: an equally good model, which is not worse, so it wins.
    again = await run_pipeline(promote=True)
    assert again.state is RunState.SUCCEEDED, again.error
    assert again.output_parameters["macro_f1"] == again.output_parameters["production_macro_f1"]
    second = read_metadata(artifact_path(again, "model")).version
    assert again.output_parameters["decision"].startswith(
        f"promoted: as good as production {first}"
    )
    assert registry(demo_env).production(MODEL_KIND).version == second != first


async def test_aliases_removals_and_split_follow_the_parameters(run_pipeline, demo_env):
    aliases = "aliases:\n  promise_to_pay: [ptp]\n  _confirm_: ['yes']\nremove: [_oos_]\n"
    run = await run_pipeline(
        aliases_yaml=aliases, remove_intents=["too_expensive"], test_percent=30
    )
    assert run.state is RunState.SUCCEEDED, run.error
    metrics = json.loads((artifact_path(run, "report") / "metrics.json").read_text())
    labels = set(metrics["model"]["labels"])
    assert not labels & {"_oos_", "too_expensive", "ptp", "yes"}
    # Aliases the file leaves out stay intents of their own.
    assert "callback" in labels and "request_callback" in labels
    support = Counter({s["intent"]: s["support"] for s in metrics["model"]["per_intent"]})
    assert sum(support.values()) == metrics["test_set"]["examples"]


async def test_an_alias_file_naming_unknown_intents_fails_the_run(run_pipeline, demo_env):
    run = await run_pipeline(aliases_yaml="aliases:\n  pay_bill: [pay_the_bill]\n")
    assert run.state is RunState.FAILED
    assert "names intents that are not in the dataset: pay_bill" in run.error.message
    states = {s.name: s.state for s in run.steps}
    assert states["prepare-slu-dataset"] is StepState.FAILED
    assert states["publish-slu-model"] is StepState.SKIPPED


async def test_with_an_s3_model_registry_it_compares_publishes_and_promotes_there(
    run_pipeline, demo_env, bucket, s3_endpoint, monkeypatch
):
    """The registry in S3 (moto's server), as when steps run on other machines: each step
    gets the registry URL and the AWS variables its component declares."""
    aws = {
        name: value
        for name, value in os.environ.items()
        if name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    aws["AWS_ENDPOINT_URL"] = s3_endpoint
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    s3_url = f"s3://{bucket}/models"
    s3 = ModelRegistry.from_url(s3_url)
    production = registry(demo_env).production(MODEL_KIND)
    s3.register(MODEL_KIND, production.version, production.path)
    s3.promote(MODEL_KIND, production.version, expected=None)

    run = await run_pipeline(extra_env={**aws, "MODEL_REGISTRY_URL": s3_url}, promote=True)

    assert run.state is RunState.SUCCEEDED, run.error
    out = run.output_parameters
    assert out["production_macro_f1"] > 0.5, "production was read from S3 and scored"
    published = read_metadata(artifact_path(run, "model")).version
    assert out["promoted"] is True
    assert s3.versions(MODEL_KIND) == sorted([production.version, published])
    assert s3.production(MODEL_KIND).version == published
    card = (s3.get(MODEL_KIND, published).path / "model_card.md").read_text()
    assert production.version in card
    # The demo's file registry was not touched.
    assert registry(demo_env).production(MODEL_KIND).version == production.version
