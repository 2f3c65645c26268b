"""Screenshots of the web console's main pages for docs/console/ (the README links them).

`python -m skit_testing.console_screenshots [DIR]` serves this checkout's pipelines with
the demo data in a temporary home, runs retrain-slu (and a second one to compare),
and saves pipelines.png, pipeline.png, runs.png, run.png (the DAG, steps, parameters,
metrics and outputs), report.png (the evaluation report with its confusion matrix),
step-log.png and compare.png in DIR (default
docs/console). Needs chromium and Playwright, as the browser tests do.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from skit_pipelines.config import ServerConfig
from skit_pipelines.runs import CreateRunInput
from skit_pipelines.server import Application, build_application
from skit_testing.console import CHROMIUM_CANDIDATES, wait_for_state

DOCS = Path(__file__).resolve().parents[2] / "docs" / "console"
VIEWPORT = {"width": 1280, "height": 900}
TIMEOUT_MS = 60_000
REPORT_HEIGHT = 1400
"""The report's screenshot: its summary and the first confusion matrix."""


async def take(
    page: Any, base: str, target: Path, runs: list[str], *, pipeline: str = "retrain-slu"
) -> list[Path]:
    """The pages of `runs` of `pipeline` (the first with an output named report holding
    report.md with a plot) and the lists, as PNGs in `target`."""
    from playwright.async_api import expect

    shots: list[Path] = []

    async def shot(name: str, *, full_page: bool = True, clip: Any = None) -> None:
        path = target / f"{name}.png"
        await page.screenshot(path=str(path), full_page=full_page, clip=clip)
        shots.append(path)

    await page.goto(f"{base}/pipelines")
    await expect(page.locator("#pipelines tr").nth(1)).to_be_visible()
    await shot("pipelines")
    await page.goto(f"{base}/pipelines/{pipeline}")
    await expect(page.locator("g.node").first).to_be_visible()
    await shot("pipeline")
    await page.goto(f"{base}/runs")
    await expect(page.locator("#runs tbody tr")).to_have_count(len(runs))
    await shot("runs")
    await page.goto(f"{base}/runs/{runs[0]}")
    await expect(page.locator("#run-state .badge")).to_have_text("SUCCEEDED")
    report = page.locator("[data-output$='/report']").first
    await report.click()
    await page.click('[data-file="report.md"]')
    await page.wait_for_function(
        "() => [...document.querySelectorAll('#preview .markdown img')]"
        ".some(i => i.complete && i.naturalWidth > 0)"
    )
    await page.evaluate("window.scrollTo(0, 0)")
    await shot("run", full_page=False)
    box = await page.locator("#preview").bounding_box()
    assert box is not None
    await shot(
        "report",
        clip={"x": 0, "y": box["y"] - 8, "width": VIEWPORT["width"], "height": REPORT_HEIGHT},
    )
    step = await page.locator("#steps tbody tr").nth(2).get_attribute("data-step")
    await page.goto(f"{base}/step?run={runs[0]}&name={step}")
    await expect(page.locator("#log-status")).to_have_text("end of log")
    await shot("step-log")
    if len(runs) > 1:
        await page.goto(f"{base}/compare?a={runs[0]}&b={runs[1]}")
        await expect(page.locator("#compare-parameters")).to_be_visible()
        await shot("compare")
    return shots


async def _main(target: Path) -> None:
    from playwright.async_api import async_playwright

    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        app: Application = await build_application(
            ServerConfig(port=0, home=Path(home), console_port=0)
        )
        await app.start()
        try:
            ids = []
            for seed, percent in ((0, 15), (1, 20)):
                run = await app.controller.create_run(
                    CreateRunInput(
                        pipeline="pipelines/retrain-slu",
                        parameters={"seed": seed, "test_percent": percent},
                        labels={"team": "slu"},
                    )
                )
                done = await wait_for_state(app, run.id, "SUCCEEDED", "FAILED", "CANCELLED")
                if done.state.name != "SUCCEEDED":
                    raise SystemExit(f"{run.name} ended {done.state.name}: {done.error}")
                ids.append(run.id)
            assert app.console is not None
            executable = next(p for p in CHROMIUM_CANDIDATES if Path(p).exists())
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=executable, args=["--no-sandbox"]
                )
                page = await browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
                page.set_default_timeout(TIMEOUT_MS)
                for path in await take(page, app.console.url, target, ids):
                    print(path)
                await browser.close()
        finally:
            await app.stop(0)


def main(argv: list[str]) -> int:
    asyncio.run(_main(Path(argv[0]) if argv else DOCS))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
