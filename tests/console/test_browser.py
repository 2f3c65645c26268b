"""The console in a real browser (Debian's chromium, driven by Playwright): every wait is
Playwright's own (expect / wait_for on the page), never a sleep."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from skit_pipelines.domain import Run, RunState, Step, StepState
from skit_pipelines.runs import CreateRunInput
from skit_pipelines.server import Application
from skit_testing.console import (
    WIDE_STEPS,
    chromium_or_skip,
    wait_for_state,
    wait_step_running,
)
from skit_testing.console_screenshots import take

# One worker for the browser tests, another for the API's (xdist loadgroup): each
# compiles the project's pipelines once.
pytestmark = pytest.mark.xdist_group("console-browser")

TIMEOUT_MS = 20_000


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    executable = chromium_or_skip()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            await launched.close()


async def new_page(browser, errors: list[str]):  # type: ignore[no-untyped-def]
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: errors.append(message.text) if message.type == "error" else None,
    )
    return page


async def test_a_run_created_from_the_form_goes_green_live_and_shows_its_report(
    app: Application, browser
) -> None:
    from playwright.async_api import expect

    assert app.console is not None
    errors: list[str] = []
    page = await new_page(browser, errors)
    await page.goto(f"{app.console.url}/pipelines/console-demo")
    await page.wait_for_selector("#main h1", timeout=5000)
    await page.fill("#param-rows", "500")
    await page.fill("#param-title", "Browser report")
    await page.click("#create-run")
    # The controller's field violation, shown by its field.
    await expect(page.locator('[data-error-for="rows"]')).to_contain_text("100")
    await page.fill("#param-rows", "4")
    await page.click("#create-run")
    await page.wait_for_url("**/runs/console-demo-*")
    # The same page, no reload: the DAG's nodes turn green from the event stream.
    for node in ("prepare", "report", "hold"):
        await expect(page.locator(f'g.node[data-node="{node}"]')).to_have_attribute(
            "data-state", "SUCCEEDED"
        )
    await expect(page.locator("#run-state .badge")).to_have_text("SUCCEEDED")
    await page.click('[data-output="report/report"]')
    await page.click('[data-file="report.md"]')
    plot = page.locator("#preview .markdown img")
    await expect(plot).to_have_attribute("alt", "the plot")
    # The image really loaded (a decoded PNG has a width), and the raw <script> is text.
    await page.wait_for_function(
        "() => { const i = document.querySelector('#preview .markdown img');"
        " return i && i.complete && i.naturalWidth === 40; }"
    )
    await expect(page.locator("#preview .markdown")).to_contain_text("<script>")
    await page.click('[data-output="report/report"]')
    await page.click('[data-file="report.html"]')
    frame = page.locator("#preview iframe")
    await expect(frame).to_have_attribute("sandbox", "")
    inline = page.frame_locator("#preview iframe").locator("img")
    await expect(inline).to_have_attribute("alt", "inline plot")
    assert await inline.evaluate("i => i.naturalWidth") == 40
    # The report's script did not run: scripts are off in the sandbox.
    assert await page.title() != "escaped"
    await page.click('g.node[data-node="prepare"]')
    await expect(page.locator("#log")).to_contain_text("prepared")
    await expect(page.locator("#log-status")).to_have_text("end of log")
    # Expected: the refused form (400), and the report's script blocked by the sandbox.
    assert any("sandboxed" in e and "allow-scripts" in e for e in errors), errors
    unexpected = [e for e in errors if "400 (Bad Request)" not in e and "sandboxed" not in e]
    assert not unexpected, unexpected


async def sign_in(page, url: str, token: str) -> None:  # type: ignore[no-untyped-def]
    await page.goto(url)
    await page.fill("#token", token)
    await page.click("#sign-in button[type=submit]")
    await page.wait_for_selector("#sign-in", state="detached")


async def test_a_runner_follows_a_step_log_live_and_cancels_the_running_run(
    start_service, tokens, browser
) -> None:
    from playwright.async_api import expect

    app = await start_service(tokens_file=tokens.file)
    errors: list[str] = []
    page = await new_page(browser, errors)
    await sign_in(page, f"{app.console.url}/pipelines/console-demo", tokens.runner)
    await expect(page.locator("#who")).to_have_text("rita (runner)")
    await page.fill("#param-hold_seconds", "600")
    await page.click("#create-run")
    await page.wait_for_url("**/runs/console-demo-*")
    run_id = page.url.rsplit("/", 1)[-1]
    hold = page.locator('g.node[data-node="hold"]')
    await expect(hold).to_have_attribute("data-state", "RUNNING")
    await expect(page.locator("#retry")).to_be_hidden()
    # The hold step's log, followed while it runs.
    await hold.click()
    await expect(page.locator("#log")).to_contain_text("holding 600.0s")
    await expect(page.locator("#log-status")).to_have_text("following…")
    await page.go_back()
    await page.click("#cancel")
    await expect(page.locator("#run-state .badge")).to_have_text("CANCELLED")
    await expect(hold).to_have_attribute("data-state", "CANCELLED")
    await expect(page.locator("#retry")).to_be_visible()
    await expect(page.locator("#cancel")).to_be_hidden()
    run = await wait_for_state(app, run_id, "CANCELLED")
    assert run.creator == "rita"
    # Retry: a new run that reuses the steps that succeeded.
    await page.click("#retry")
    await page.wait_for_url(lambda url: "/runs/console-demo-" in url and run_id not in url)
    retried = page.url.rsplit("/", 1)[-1]
    await expect(page.locator('g.node[data-node="prepare"]')).to_have_attribute(
        "data-state", "CACHED"
    )
    await expect(page.locator(f'a[href="/runs/{run_id}"]')).to_be_visible()
    await app.controller.cancel_run(f"runs/{retried}")
    # Expected: the page's first look at /api/session, before signing in.
    assert not [e for e in errors if "401 (Unauthorized)" not in e], errors


async def test_a_viewer_sees_runs_but_is_refused_creating_and_cancelling(
    start_service, tokens, browser
) -> None:
    from playwright.async_api import expect

    app = await start_service(tokens_file=tokens.file)
    errors: list[str] = []
    page = await new_page(browser, errors)
    await page.goto(f"{app.console.url}/runs")
    await expect(page.locator("#sign-in")).to_be_visible()
    await page.fill("#token", "skp_not-a-token")
    await page.click("#sign-in button[type=submit]")
    await expect(page.locator("#sign-in .error-box")).to_contain_text("not valid")
    await page.fill("#token", tokens.viewer)
    await page.click("#sign-in button[type=submit]")
    await expect(page.locator("#who")).to_have_text("vera (viewer)")
    await page.goto(f"{app.console.url}/pipelines/console-demo")
    await expect(page.locator("#create-run")).to_be_disabled()
    # Past the page, the API refuses the viewer as the gRPC API does.
    refused = await page.evaluate(
        """async () => {
            const s = await (await fetch('/api/session')).json();
            const r = await fetch('/api/runs', {method: 'POST', headers: {
                'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf},
                body: JSON.stringify({pipeline: 'pipelines/console-demo'})});
            return [r.status, (await r.json()).error.reason];
        }"""
    )
    assert refused == [403, "PERMISSION_DENIED"]
    # A running run of someone else's: no cancel button for a viewer.
    run = await app.controller.create_run(
        CreateRunInput(
            pipeline="pipelines/console-demo", parameters={"hold_seconds": 600}, creator="rita"
        )
    )
    await wait_step_running(app, run.id, "hold")
    await page.goto(f"{app.console.url}/runs/{run.id}")
    await expect(page.locator("#run-state .badge")).to_have_text("RUNNING")
    await expect(page.locator("#cancel")).to_be_hidden()
    await app.controller.cancel_run(run.name)


async def test_the_runs_page_shows_new_runs_and_their_states_live(app, browser) -> None:
    from playwright.async_api import expect

    errors: list[str] = []
    page = await new_page(browser, errors)
    first = await app.controller.create_run(
        CreateRunInput(pipeline="pipelines/console-demo", labels={"team": "slu"})
    )
    await wait_for_state(app, first.id, "SUCCEEDED")
    await page.goto(f"{app.console.url}/runs")
    await expect(page.locator(f'tr[data-run="{first.id}"] .badge')).to_have_text("SUCCEEDED")
    await expect(page.locator("#main")).not_to_contain_text("null")
    second = await app.controller.create_run(
        CreateRunInput(pipeline="pipelines/console-demo", parameters={"rows": 2})
    )
    # No reload: the new run comes in at the top and turns green.
    await expect(page.locator("#runs tbody tr").first).to_have_attribute("data-run", second.id)
    await expect(page.locator(f'tr[data-run="{second.id}"] .badge')).to_have_text("SUCCEEDED")
    # Filters as ListRuns: by label.
    await page.fill("input[name=label]", "team=slu")
    await page.click("#run-filters button[type=submit]")
    await expect(page.locator("#runs tbody tr")).to_have_count(1)
    await expect(page.locator("#runs tbody tr")).to_have_attribute("data-run", first.id)
    # Compare two runs, picked in the list.
    await page.goto(f"{app.console.url}/runs")
    await page.check(f'tr[data-run="{first.id}"] input.pick')
    await expect(page.locator("#compare")).to_be_disabled()
    await page.check(f'tr[data-run="{second.id}"] input.pick')
    await page.click("#compare")
    rows = page.locator("#compare-parameters tr", has_text="rows")
    await expect(rows.locator("td.diff")).to_have_count(2)
    assert not errors, errors


async def test_screenshots_of_the_main_pages(app, browser, tmp_path) -> None:
    """The screenshot helper (skit_testing.console_screenshots, which makes docs/console
    from the demo pipelines) on this project's runs."""
    errors: list[str] = []
    page = await new_page(browser, errors)
    runs = []
    for rows in (3, 8):
        run = await app.controller.create_run(
            CreateRunInput(pipeline="pipelines/console-demo", parameters={"rows": rows})
        )
        runs.append((await wait_for_state(app, run.id, "SUCCEEDED")).id)
    shots = await take(page, app.console.url, tmp_path, runs, pipeline="console-demo")
    assert {p.name for p in shots} == {
        "pipelines.png",
        "pipeline.png",
        "runs.png",
        "run.png",
        "report.png",
        "step-log.png",
        "compare.png",
    }
    for path in shots:
        assert path.read_bytes().startswith(b"\x89PNG"), path
    assert not errors, errors


LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longTasks.push(entry.duration);
}).observe({ type: "longtask", buffered: true });
"""


async def test_a_200_step_run_page_stays_smooth_while_every_step_changes(
    app: Application, browser
) -> None:
    """The steps' changes come the way a backend reports them (the controller's RunSink
    calls); the page draws 200 nodes and follows 400 changes without a long stall."""
    from playwright.async_api import expect

    pipeline = app.controller.get_pipeline("pipelines/wide")
    now = datetime.now(UTC)
    run = Run(
        id="wide-0123456789ab",
        pipeline="wide",
        pipeline_version=pipeline.version,
        parameters={},
        labels={},
        state=RunState.QUEUED,
        create_time=now,
        update_time=now,
        revision=1,
        backend="local",
    )
    await app.store.create_run(run, "hash")
    errors: list[str] = []
    page = await new_page(browser, errors)
    await page.add_init_script(LONG_TASKS)
    await page.goto(f"{app.console.url}/runs/{run.id}")
    nodes = page.locator("g.node")
    await expect(nodes).to_have_count(WIDE_STEPS)
    await expect(page.locator("#run-state .badge")).to_have_text("QUEUED")
    first_draw = await page.evaluate("window.__longTasks.splice(0)")
    await app.controller.run_started(run.id)
    names = [f"s{i:03d}" for i in range(WIDE_STEPS)]
    for name in names:
        await app.controller.step_changed(
            run.id, Step(name=name, state=StepState.RUNNING, start_time=datetime.now(UTC))
        )
    for name in names:
        await app.controller.step_changed(
            run.id, Step(name=name, state=StepState.SUCCEEDED, end_time=datetime.now(UTC))
        )
    await app.controller.run_succeeded(run.id, (), {})
    await expect(page.locator("#run-state .badge")).to_have_text("SUCCEEDED")
    await expect(page.locator('g.node[data-state="SUCCEEDED"]')).to_have_count(WIDE_STEPS)
    await expect(page.locator("#steps tbody tr")).to_have_count(WIDE_STEPS)
    long_tasks = await page.evaluate("window.__longTasks")
    # The browser's long tasks (> 50 ms) while 400 changes streamed in: none a user would
    # notice as a stall (the first draw of 200 nodes and rows is apart).
    print("long tasks: first draw", first_draw, "updates", long_tasks)
    assert max(long_tasks, default=0) < 250, long_tasks
    assert not errors, errors
