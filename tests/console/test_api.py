"""The console's JSON API over a real service (catalog, store, local executor, auth)."""

from __future__ import annotations

import pytest

from skit_pipelines.server import Application
from skit_testing.console import ConsoleClient, wait_for_state

pytestmark = pytest.mark.xdist_group("console")


async def test_a_run_created_through_the_console_succeeds_with_its_outputs(
    app: Application, client: ConsoleClient
) -> None:
    session = await client.sign_in()
    assert session["principal"]["role"] == "admin" and session["auth"] is False
    status, run = await client.post(
        "/api/runs",
        {"pipeline": "pipelines/console-demo", "parameters": {"rows": 3, "title": "Three"}},
    )
    assert status == 201, run
    done = await wait_for_state(app, run["id"], "SUCCEEDED", "FAILED")
    assert done.state.name == "SUCCEEDED", done.error
    status, got = await client.get(f"/api/runs/{run['id']}")
    assert status == 200
    assert got["node_states"] == {
        "prepare": "SUCCEEDED",
        "report": "SUCCEEDED",
        "hold": "SUCCEEDED",
    }
    assert got["parameters"]["rows"] == 3
    assert got["allowed"] == {"cancel": False, "retry": False}


async def test_previews_show_the_report_directory_csv_markdown_and_plot(
    app: Application, client: ConsoleClient
) -> None:
    await client.sign_in()
    _, run = await client.post(
        "/api/runs", {"pipeline": "pipelines/console-demo", "parameters": {"rows": 3}}
    )
    await wait_for_state(app, run["id"], "SUCCEEDED")
    base = f"/api/runs/{run['id']}/preview"
    status, listing = await client.get(base, step="report", output="report")
    assert status == 200, listing
    assert listing["kind"] == "directory"
    assert [f["path"] for f in listing["files"]] == ["plot.png", "report.html", "report.md"]
    status, table = await client.get(base, step="prepare", output="data")
    assert status == 200, table
    assert table["kind"] == "table" and table["columns"] == ["intent", "count"]
    assert table["rows"][:2] == [["intent_0", "0"], ["intent_1", "10"]]
    _, md = await client.get(base, step="report", output="report", path="report.md")
    assert md["kind"] == "markdown"
    assert "&lt;script&gt;" in md["html"] and "<script>" not in md["html"]
    assert (
        f'src="/api/runs/{run["id"]}/artifact?step=report&amp;output=report&amp;path=plot.png"'
        in md["html"]
    )
    async with client.http.get(
        f"/api/runs/{run['id']}/artifact",
        params={"step": "report", "output": "report", "path": "plot.png"},
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "image/png"
        assert (await response.read()).startswith(b"\x89PNG")
    async with client.http.get(
        f"/api/runs/{run['id']}/artifact",
        params={"step": "report", "output": "report", "path": "report.html"},
    ) as response:
        assert response.headers["Content-Security-Policy"].startswith("sandbox;")


@pytest.mark.parametrize(
    "path", ["../prepare/data", "/etc/passwd", "..", "a/../../x", "plot.png/..", "a\\..\\b"]
)
async def test_previews_refuse_paths_leading_out_of_the_artifact(
    app: Application, client: ConsoleClient, path: str
) -> None:
    await client.sign_in()
    _, run = await client.post(
        "/api/runs", {"pipeline": "pipelines/console-demo", "parameters": {"rows": 1}}
    )
    await wait_for_state(app, run["id"], "SUCCEEDED")
    for endpoint in ("preview", "artifact"):
        status, body = await client.get(
            f"/api/runs/{run['id']}/{endpoint}", step="report", output="report", path=path
        )
        assert status in (400, 404), body


async def test_every_page_and_call_carries_a_content_security_policy(
    app: Application, client: ConsoleClient
) -> None:
    paths = ("/runs", "/pipelines", "/static/console.js", "/api/session", "/api/runs", "/nope")
    for path in paths:
        async with client.http.get(path, allow_redirects=False) as response:
            policy = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy, path
            assert response.headers["X-Content-Type-Options"] == "nosniff"
    async with client.http.get("/runs") as response:
        page = await response.text()
    assert "<script>" not in page and "style=" not in page


async def test_posts_need_the_session_csrf_token_and_json(
    app: Application, client: ConsoleClient
) -> None:
    await client.sign_in()
    body = {"pipeline": "pipelines/console-demo"}
    async with client.http.post("/api/runs", json=body) as response:
        assert response.status == 403
        assert (await response.json())["error"]["reason"] == "CSRF"
    async with client.http.post(
        "/api/runs", json=body, headers={"X-CSRF-Token": "forged"}
    ) as response:
        assert response.status == 403
    # A cross-site form can only send form encodings: refused even with the token.
    async with client.http.post(
        "/api/runs", data={"pipeline": "x"}, headers={"X-CSRF-Token": client.csrf}
    ) as response:
        assert response.status == 403
    async with client.http.get("/api/session") as response:
        cookie = response.cookies.get("skit_console") or next(
            c for c in client.http.cookie_jar if c.key == "skit_console"
        )
    assert cookie["httponly"] and cookie["samesite"] == "Strict"


async def test_bad_parameters_come_back_as_field_violations(
    app: Application, client: ConsoleClient
) -> None:
    await client.sign_in()
    status, body = await client.post(
        "/api/runs",
        {"pipeline": "pipelines/console-demo", "parameters": {"rows": 500, "title": 3}},
    )
    assert status == 400
    fields = {v["field"] for v in body["error"]["violations"]}
    assert fields == {"run.parameters.rows", "run.parameters.title"}
    status, body = await client.post("/api/runs", {"pipeline": "pipelines/nope"})
    assert status == 404 and body["error"]["reason"] == "PIPELINE_NOT_FOUND"


async def test_signing_in_with_tokens_and_roles_as_in_the_api(start_service, tokens) -> None:
    app = await start_service(tokens_file=tokens.file)
    assert app.console is not None
    anonymous = ConsoleClient(app.console.url)
    viewer = ConsoleClient(app.console.url)
    rita = ConsoleClient(app.console.url)
    otto = ConsoleClient(app.console.url)
    try:
        status, body = await anonymous.get("/api/runs")
        assert status == 401
        status, body = await anonymous.post("/api/session", {"token": "skp_wrong"}, csrf=False)
        assert status == 401
        assert (await viewer.sign_in(tokens.viewer))["principal"] == {
            "name": "vera",
            "role": "viewer",
        }
        await rita.sign_in(tokens.runner)
        await otto.sign_in(tokens.other_runner)
        status, body = await viewer.post("/api/runs", {"pipeline": "pipelines/console-demo"})
        assert status == 403 and body["error"]["reason"] == "PERMISSION_DENIED"
        status, run = await rita.post(
            "/api/runs",
            {"pipeline": "pipelines/console-demo", "parameters": {"hold_seconds": 600}},
        )
        assert status == 201 and run["creator"] == "rita"
        assert run["allowed"]["cancel"] is True
        status, seen = await otto.get(f"/api/runs/{run['id']}")
        assert seen["allowed"]["cancel"] is False
        # Runners act on their own runs only: the controller's rule, as in the API.
        status, body = await otto.post(f"/api/runs/{run['id']}/cancel", {})
        assert status == 403, body
        status, body = await viewer.post(f"/api/runs/{run['id']}/cancel", {})
        assert status == 403, body
        status, body = await rita.post(f"/api/runs/{run['id']}/cancel", {})
        assert status == 200 and body["state"] in ("CANCELLING", "CANCELLED")
        await wait_for_state(app, run["id"], "CANCELLED")
        status, retried = await rita.post(f"/api/runs/{run['id']}/retry", {})
        assert status == 201 and retried["retry_of"] == f"runs/{run['id']}"
        await rita.post("/api/session/end", {})
        status, _ = await rita.get("/api/runs")
        assert status == 401
    finally:
        for client in (anonymous, viewer, rita, otto):
            await client.close()


async def test_run_events_are_snapshots_that_resume_by_revision(
    app: Application, client: ConsoleClient
) -> None:
    await client.sign_in()
    _, run = await client.post(
        "/api/runs", {"pipeline": "pipelines/console-demo", "parameters": {"rows": 2}}
    )
    events = await client.events(f"/api/runs/{run['id']}/events")
    assert events[-1][0] == "end"
    snapshots = [data for kind, _, data in events if kind == "run"]
    revisions = [int(event_id) for kind, event_id, _ in events if kind == "run"]
    assert revisions == sorted(set(revisions))
    assert snapshots[-1]["state"] == "SUCCEEDED"
    assert snapshots[-1]["node_states"]["report"] == "SUCCEEDED"
    # Resuming from a revision sends only the later ones (Last-Event-ID, as EventSource).
    resumed = await client.events(
        f"/api/runs/{run['id']}/events", **{"Last-Event-ID": str(revisions[-2])}
    )
    later = [int(i) for kind, i, _ in resumed if kind == "run"]
    assert later[-1] == revisions[-1] and all(r > revisions[-2] for r in later), later
    status, _ = await client.get("/api/runs/nope-1/events")
    assert status == 404


async def test_step_logs_stream_with_the_step(app: Application, client: ConsoleClient) -> None:
    await client.sign_in()
    _, run = await client.post(
        "/api/runs", {"pipeline": "pipelines/console-demo", "parameters": {"rows": 2}}
    )
    await wait_for_state(app, run["id"], "SUCCEEDED")
    events = await client.events(f"/api/runs/{run['id']}/logs?step=prepare&follow=1")
    assert events[0][0] == "step" and events[0][2]["state"] == "SUCCEEDED"
    lines = [line for kind, _, data in events if kind == "lines" for line in data]
    # Each stream keeps its order; the two interleave as the step wrote them.
    assert [line["text"] for line in lines if line["stream"] == "stdout"] == [
        "preparing 2 rows",
        "prepared",
    ]
    assert [line["text"] for line in lines if line["stream"] == "stderr"] == ["a warning on stderr"]


async def test_runs_are_listed_with_filters_and_pages_and_compared(
    app: Application, client: ConsoleClient
) -> None:
    await client.sign_in()
    ids = []
    for n in range(3):
        _, run = await client.post(
            "/api/runs",
            {
                "pipeline": "pipelines/console-demo",
                "parameters": {"rows": n + 1},
                "labels": {"batch": "a" if n < 2 else "b"},
            },
        )
        ids.append(run["id"])
    for run_id in ids:
        await wait_for_state(app, run_id, "SUCCEEDED")
    status, page = await client.get("/api/runs", page_size=2)
    assert status == 200 and [r["id"] for r in page["runs"]] == ids[::-1][:2]
    status, rest = await client.get("/api/runs", page_size=2, page_token=page["next_page_token"])
    assert [r["id"] for r in rest["runs"]] == [ids[0]] and rest["next_page_token"] == ""
    status, labelled = await client.get("/api/runs", label="batch=a", state="SUCCEEDED")
    assert {r["id"] for r in labelled["runs"]} == set(ids[:2])
    status, none = await client.get("/api/runs", state="FAILED", pipeline="console-demo")
    assert none["runs"] == []
    status, bad = await client.get("/api/runs", state="SLEEPING")
    assert status == 400 and bad["error"]["violations"][0]["field"] == "states"
    status, compared = await client.get("/api/compare", a=ids[0], b=ids[2])
    assert status == 200
    assert [r["parameters"]["rows"] for r in compared["runs"]] == [1, 3]


async def test_a_browser_that_goes_away_frees_its_watch(
    app: Application, client: ConsoleClient, monkeypatch
) -> None:
    from skit_pipelines.console import app as console_app
    from skit_testing.waiting import until

    monkeypatch.setattr(console_app, "KEEPALIVE_SECONDS", 0.05)
    await client.sign_in()
    _, run = await client.post(
        "/api/runs", {"pipeline": "pipelines/console-demo", "parameters": {"hold_seconds": 600}}
    )
    before = app.store.hub.watcher_count()
    response = await client.http.get(f"/api/runs/{run['id']}/events")
    await response.content.readline()
    assert app.store.hub.watcher_count() == before + 1
    response.close()  # the tab is closed
    await until(lambda: app.store.hub.watcher_count() == before, what="the watch ends")
    await app.controller.cancel_run(f"runs/{run['id']}")


async def test_a_failed_run_shows_its_error_and_may_be_retried(
    app: Application, client: ConsoleClient
) -> None:
    await client.sign_in()
    _, run = await client.post(
        "/api/runs", {"pipeline": "pipelines/console-demo", "parameters": {"rows": 13}}
    )
    await wait_for_state(app, run["id"], "FAILED")
    status, failed = await client.get(f"/api/runs/{run['id']}")
    assert status == 200
    assert failed["error"]["reason"] and failed["error"]["message"]
    assert failed["node_states"]["prepare"] == "FAILED"
    step = next(s for s in failed["steps"] if s["name"] == "prepare")
    assert step["error"] is not None
    assert failed["allowed"] == {"cancel": False, "retry": True}
    events = await client.events(f"/api/runs/{run['id']}/logs?step=prepare")
    lines = [line["text"] for kind, _, data in events if kind == "lines" for line in data]
    assert "13 rows is unlucky" in lines
