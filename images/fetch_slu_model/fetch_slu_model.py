"""fetch_slu_model: copy an SLU model out of the model registry (a version, or the current
production model) as the step's model artifact, after checking it is intact."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from skit_components import cli
from skit_components.model_registry import REGISTRY_ENV, ModelRegistry, RegistryError
from skit_components.outputs import output_path, write_parameter
from skit_components.slu import MODEL_FILE, MODEL_KIND, DataError, file_sha256, read_metadata

logger = logging.getLogger("fetch_slu_model")


def fetch(registry_url: str, version: str, out: Path) -> str:
    """Copies the model `version` ("" for production) to `out`; returns its version.

    Raises:
        cli.BadInput: no such version, or no production model.
        cli.ComponentError: the registry is unusable or the model damaged.
    """
    try:
        registry = ModelRegistry.from_url(registry_url)
        known = registry.versions(MODEL_KIND)
        shown = ", ".join(known[-10:]) or "none"
        if version and version not in known:
            raise cli.BadInput(
                f"no SLU model version {version!r} in {registry.url} (it has {shown})"
            )
        model = registry.get(MODEL_KIND, version) if version else registry.production(MODEL_KIND)
        if model is None:
            raise cli.BadInput(
                f"there is no production SLU model in {registry.url}; give a version "
                f"(it has {shown})"
            )
    except RegistryError as exc:
        raise cli.ComponentError(f"model registry: {exc}") from exc
    try:
        metadata = read_metadata(model.path)
        if file_sha256(model.path / MODEL_FILE) != metadata.sha256:
            raise DataError(f"{model.path / MODEL_FILE} does not match its recorded SHA-256")
    except (DataError, OSError) as exc:
        raise cli.ComponentError(f"model {model.version} is damaged: {exc}") from exc
    target = output_path(out)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(model.path, target)
    logger.info("fetched SLU model %s%s", model.version, "" if version else " (production)")
    return model.version


def _parse_args(argv: list[str] | None) -> Any:
    parser = cli.ArgumentParser(prog="fetch_slu_model", description=__doc__)
    parser.add_argument("--version", default="")
    parser.add_argument("--model", type=Path, required=True, help="output: model directory")
    parser.add_argument("--model-version", type=Path, required=True, help="output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    def body() -> None:
        args = _parse_args(argv)
        registry_url = cli.required_env(REGISTRY_ENV, "the model registry URL")
        version = fetch(registry_url, args.version.strip(), args.model)
        write_parameter(args.model_version, version)

    return cli.run("fetch_slu_model", body)


if __name__ == "__main__":
    # Progress goes to stdout: stderr carries only the one-line failure reason.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
