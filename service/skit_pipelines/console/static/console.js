// The skit-pipelines web console: plain DOM, no framework, no inline script (the page's
// Content-Security-Policy allows only this file). Every value from the server is put in
// the page as text (el()/textContent); only the server's sanitized Markdown is HTML.
"use strict";

const STATES = ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLING", "CANCELLED"];
let session = null;
let cleanup = [];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

function badge(state) { return el("span", { class: `badge ${state}`, "data-state": state, text: state }); }
function when(iso) { return iso ? new Date(iso).toLocaleString() : ""; }
function show(value) { return typeof value === "string" ? value : JSON.stringify(value); }

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

async function api(path, options = {}) {
  const init = { credentials: "same-origin", headers: {} };
  if (options.body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.headers["X-CSRF-Token"] = session ? session.csrf : "";
    init.body = JSON.stringify(options.body);
  }
  const response = await fetch(path, init);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    if (response.status === 401 && path !== "/api/session") { signInPage(); }
    throw new ApiError(response.status, body.error);
  }
  return body;
}

function stream(path, handlers) {
  const source = new EventSource(path);
  for (const [name, handler] of Object.entries(handlers)) {
    source.addEventListener(name, (event) => handler(JSON.parse(event.data), event));
  }
  // "end" is the server's last event: without closing, EventSource would reconnect.
  source.addEventListener("end", () => source.close());
  cleanup.push(() => source.close());
  return source;
}

function errorBox(error) {
  return el("div", { class: "error-box", role: "alert", text: error.message || String(error) });
}

function mount(...children) {
  for (const done of cleanup) done();
  cleanup = [];
  const main = document.getElementById("main");
  main.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== ""));
  for (const link of document.querySelectorAll("header nav a")) {
    link.classList.toggle("active", location.pathname.startsWith(`/${link.dataset.nav}`));
  }
}

function go(url) { history.pushState(null, "", url); route(); }

document.addEventListener("click", (event) => {
  const link = event.target.closest("a");
  if (!link || event.defaultPrevented || link.target || event.ctrlKey || event.metaKey || event.button !== 0) return;
  const url = new URL(link.href);
  if (url.origin !== location.origin || url.pathname.startsWith("/api/")) return;
  event.preventDefault();
  go(url.pathname + url.search);
});
window.addEventListener("popstate", () => route());

// Sign-in

function signInPage(message) {
  const token = el("input", { type: "password", id: "token", autocomplete: "off", placeholder: "skp_…" });
  const problem = el("div");
  const form = el("form", { class: "card signin", id: "sign-in" },
    el("h1", { text: "Sign in" }),
    el("p", { class: "muted", text: "Paste an API token (skit-pipelines token add …)." }),
    token, el("div", { class: "actions" }, el("button", { type: "submit", text: "Sign in" })), problem);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      session = await api("/api/session", { body: { token: token.value } });
      showWho();
      route();
    } catch (error) {
      problem.replaceChildren(errorBox(error));
    }
  });
  mount(message ? errorBox({ message }) : "", form);
}

function showWho() {
  const who = document.getElementById("who");
  const signOut = document.getElementById("sign-out");
  if (!session) { who.textContent = ""; signOut.hidden = true; return; }
  who.textContent = session.auth ? `${session.principal.name} (${session.principal.role})` : "authentication off";
  signOut.hidden = !session.auth;
}

document.getElementById("sign-out").addEventListener("click", async () => {
  await api("/api/session/end", { body: {} }).catch(() => null);
  session = null;
  showWho();
  signInPage();
});

// Pipelines

async function pipelinesPage() {
  const { pipelines } = await api("/api/pipelines");
  const rows = pipelines.map((p) => el("tr", {},
    el("td", {}, el("a", { href: `/pipelines/${p.id}`, text: p.id })),
    el("td", { text: p.description }),
    el("td", {}, p.parameters.map((x) => el("div", {}, el("code", { text: x.name }), ` ${x.type.toLowerCase()}`))),
  ));
  mount(el("h1", { text: "Pipelines" }),
    el("table", { id: "pipelines" }, el("tr", {}, el("th", { text: "Pipeline" }), el("th", { text: "Description" }), el("th", { text: "Parameters" })), rows));
}

function parameterInput(parameter) {
  const id = `param-${parameter.name}`;
  const value = parameter.default;
  const oneOf = parameter.rules.find((r) => r.values && !r.each_item);
  if (parameter.type === "BOOLEAN") return el("input", { type: "checkbox", id, name: parameter.name, checked: value === true });
  if (oneOf) {
    return el("select", { id, name: parameter.name },
      parameter.required && value == null ? el("option", { value: "", text: "— choose —" }) : null,
      oneOf.values.map((v) => el("option", { value: v, text: v, selected: v === value })));
  }
  if (parameter.type === "LIST" || parameter.type === "STRUCT") {
    const text = value == null ? "" : JSON.stringify(value, null, 1);
    return el("textarea", { id, name: parameter.name, placeholder: parameter.type === "LIST" ? "[…] JSON" : "{…} JSON" }, text);
  }
  const numeric = parameter.type === "INTEGER" || parameter.type === "DOUBLE";
  return el("input", { type: numeric ? "number" : "text", step: parameter.type === "DOUBLE" ? "any" : null, id, name: parameter.name, value: value == null ? "" : String(value) });
}

function readParameter(parameter, input) {
  // Typed as the API wants them; a value that does not parse goes as typed, so the
  // controller's field violation says what is wrong with it.
  if (parameter.type === "BOOLEAN") return input.checked;
  const raw = input.value;
  if (raw === "") return undefined;
  if (parameter.type === "INTEGER" || parameter.type === "DOUBLE") {
    const number = Number(raw);
    return Number.isNaN(number) ? raw : number;
  }
  if (parameter.type === "LIST" || parameter.type === "STRUCT") {
    try { return JSON.parse(raw); } catch { return raw; }
  }
  return raw;
}

async function pipelinePage(id) {
  const pipeline = await api(`/api/pipelines/${encodeURIComponent(id)}`);
  const errors = {};
  const inputs = {};
  const fields = pipeline.parameters.map((p) => {
    inputs[p.name] = parameterInput(p);
    errors[p.name] = el("div", { class: "field-error", "data-error-for": p.name });
    const rules = p.rules.map((r) => r.description).join("; ");
    return [
      el("label", { for: `param-${p.name}` }, p.name, p.required ? " *" : ""),
      el("div", {}, inputs[p.name],
        el("div", { class: "help" }, `${p.type.toLowerCase()}${p.required ? ", required" : ""}${p.description ? " — " + p.description : ""}`),
        rules ? el("div", { class: "help", text: `must be: ${rules}` }) : null,
        errors[p.name]),
    ];
  });
  const labels = el("input", { type: "text", id: "labels", placeholder: "team=slu, ticket=42" });
  const problem = el("div");
  const submit = el("button", { type: "submit", id: "create-run", text: "Create run", disabled: !session.may_create });
  const form = el("form", { class: "grid card", id: "run-form", novalidate: true }, fields,
    el("label", { for: "labels", text: "labels" }), el("div", {}, labels, errors.__labels = el("div", { class: "field-error" })),
    el("span"), el("div", {}, submit, session.may_create ? null : el("span", { class: "muted", text: " (your role may not create runs)" }), problem));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const box of Object.values(errors)) box.textContent = "";
    problem.replaceChildren();
    const parameters = {};
    for (const p of pipeline.parameters) {
      const value = readParameter(p, inputs[p.name]);
      if (value !== undefined) parameters[p.name] = value;
    }
    const labelMap = {};
    for (const pair of labels.value.split(",").map((s) => s.trim()).filter(Boolean)) {
      const [key, ...rest] = pair.split("=");
      labelMap[key.trim()] = rest.join("=").trim();
    }
    submit.disabled = true;
    try {
      const run = await api("/api/runs", { body: { pipeline: pipeline.name, parameters, labels: labelMap } });
      go(`/runs/${run.id}`);
    } catch (error) {
      submit.disabled = false;
      let placed = false;
      for (const v of (error.body.violations || [])) {
        const name = v.field.replace(/^run\.parameters\./, "").split(/[.[]/)[0];
        const box = v.field.startsWith("run.labels") ? errors.__labels : errors[name];
        if (box) { box.textContent = v.description; placed = true; }
      }
      if (!placed || !(error.body.violations || []).length) problem.replaceChildren(errorBox(error));
    }
  });
  const dag = el("div", { class: "dag" });
  if (pipeline.dag) dag.append(drawDag(pipeline.dag, null).svg);
  mount(el("h1", {}, "Pipeline ", el("code", { text: pipeline.id })),
    el("p", { text: pipeline.description }),
    el("p", { class: "muted" }, "version ", el("code", { text: pipeline.version.slice(0, 19) })),
    el("h2", { text: "New run" }), form, el("h2", { text: "Steps" }), dag,
    el("p", {}, el("a", { href: `/runs?pipeline=${encodeURIComponent(pipeline.id)}`, text: "Runs of this pipeline" })));
}

// DAG

function drawDag(layout, onClick) {
  const root = svg("svg", { width: layout.width, height: layout.height, viewBox: `0 0 ${layout.width} ${layout.height}`, id: "dag" });
  for (const edge of layout.edges) root.append(svg("path", { class: "edge", d: edge.path }));
  const nodes = new Map();
  for (const node of layout.nodes) {
    const group = svg("g", { class: node.group ? "node group" : "node", "data-node": node.id, "data-state": "PENDING", transform: `translate(${node.x},${node.y})` });
    const title = svg("title");
    title.textContent = `${node.id} (${node.component})`;
    const text = svg("text", { x: 10, y: layout.node_height / 2 });
    text.textContent = node.label;
    group.append(title, svg("rect", { width: layout.node_width, height: layout.node_height, rx: 6 }), text);
    if (onClick) group.addEventListener("click", () => onClick(node.id));
    root.append(group);
    nodes.set(node.id, group);
  }
  return {
    svg: root,
    update(states) {
      // Only the nodes whose state changed are touched.
      for (const [id, group] of nodes) {
        const state = states[id] || "PENDING";
        if (group.dataset.state !== state) group.dataset.state = state;
      }
    },
  };
}

// Runs

function filterFromQuery(params) {
  const query = new URLSearchParams();
  for (const key of ["pipeline", "created_after", "created_before"]) if (params.get(key)) query.set(key, params.get(key));
  for (const state of params.getAll("state")) query.append("state", state);
  for (const label of params.getAll("label")) query.append("label", label);
  return query;
}

function runRow(run) {
  return el("tr", { "data-run": run.id },
    el("td", {}, el("input", { type: "checkbox", class: "pick", value: run.id, "aria-label": `pick ${run.id} to compare` })),
    el("td", {}, el("a", { href: `/runs/${run.id}`, text: run.id })),
    el("td", { text: run.pipeline }),
    el("td", { class: "state" }, badge(run.state)),
    el("td", { class: "progress", text: run.steps ? `${run.steps_done}/${run.steps}` : "" }),
    el("td", { text: when(run.create_time) }),
    el("td", { text: run.creator }),
    el("td", { text: Object.entries(run.labels).map(([k, v]) => `${k}=${v}`).join(", ") }));
}

async function runsPage() {
  const params = new URLSearchParams(location.search);
  const filter = filterFromQuery(params);
  const tokens = (params.get("pages") || "").split(",").filter(Boolean);
  const query = new URLSearchParams(filter);
  if (tokens.length) query.set("page_token", tokens[tokens.length - 1]);
  query.set("page_size", params.get("page_size") || "50");
  const [{ runs, next_page_token }, { pipelines }] = await Promise.all([api(`/api/runs?${query}`), api("/api/pipelines")]);

  const pipelineSelect = el("select", { name: "pipeline" }, el("option", { value: "", text: "any" }),
    pipelines.map((p) => el("option", { value: p.id, text: p.id, selected: p.id === params.get("pipeline") })));
  const states = STATES.map((s) => el("label", {}, el("input", { type: "checkbox", name: "state", value: s, checked: params.getAll("state").includes(s) }), s.toLowerCase()));
  const label = el("input", { type: "text", name: "label", value: params.getAll("label").join(","), placeholder: "key=value" });
  const after = el("input", { type: "text", name: "created_after", value: params.get("created_after") || "", placeholder: "2026-01-01T00:00:00Z" });
  const before = el("input", { type: "text", name: "created_before", value: params.get("created_before") || "", placeholder: "2026-02-01T00:00:00Z" });
  const form = el("form", { class: "filters", id: "run-filters" },
    el("label", {}, "pipeline", pipelineSelect), el("div", { class: "states" }, states),
    el("label", {}, "label", label), el("label", {}, "created after", after), el("label", {}, "created before", before),
    el("button", { type: "submit", text: "Filter" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    if (pipelineSelect.value) next.set("pipeline", pipelineSelect.value);
    for (const box of form.querySelectorAll("input[name=state]:checked")) next.append("state", box.value);
    for (const pair of label.value.split(",").map((s) => s.trim()).filter(Boolean)) next.append("label", pair);
    if (after.value) next.set("created_after", after.value);
    if (before.value) next.set("created_before", before.value);
    go(`/runs?${next}`);
  });

  const body = el("tbody", {}, runs.map(runRow));
  const table = el("table", { id: "runs" }, el("thead", {}, el("tr", {}, ["", "Run", "Pipeline", "State", "Steps", "Created", "Creator", "Labels"].map((t) => el("th", { text: t })))), body);
  const compare = el("button", { type: "button", class: "secondary", id: "compare", text: "Compare two runs", disabled: true });
  body.addEventListener("change", () => {
    compare.disabled = body.querySelectorAll("input.pick:checked").length !== 2;
  });
  compare.addEventListener("click", () => {
    const [a, b] = [...body.querySelectorAll("input.pick:checked")].map((box) => box.value);
    go(`/compare?${new URLSearchParams({ a, b })}`);
  });
  const pager = el("div", { class: "pager" }, compare);
  if (tokens.length) {
    const prev = new URLSearchParams(params); const rest = tokens.slice(0, -1);
    if (rest.length) prev.set("pages", rest.join(",")); else prev.delete("pages");
    pager.append(el("a", { href: `/runs?${prev}`, text: "← Newer" }));
  }
  if (next_page_token) {
    const next = new URLSearchParams(params); next.set("pages", [...tokens, next_page_token].join(","));
    pager.append(el("a", { href: `/runs?${next}`, id: "next-page", text: "Older →" }));
  }
  mount(el("h1", { text: "Runs" }), form, table, runs.length ? null : el("p", { class: "muted", id: "no-runs", text: "No runs match yet." }), pager);
  let newest = runs.length ? runs[0].create_time : "";
  // Live: rows change state in place; on the first page new runs come in at the top.
  stream(`/api/runs/events?${filter}`, {
    run(run) {
      const row = body.querySelector(`tr[data-run="${CSS.escape(run.id)}"]`);
      if (row) row.replaceWith(runRow(run));
      // A row not shown is new when it is newer than the newest shown (an older run
      // changing off this page is not).
      else if (!tokens.length && run.create_time >= newest) { body.prepend(runRow(run)); newest = run.create_time; }
    },
  });
}

// A run

function kvTable(entries, id) {
  return el("table", { class: "kv", id }, entries.map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", {}, v instanceof Node ? v : el("code", { text: show(v) })))));
}

async function previewInto(box, runId, step, output, path) {
  const query = new URLSearchParams({ step, output });
  if (path) query.set("path", path);
  box.replaceChildren(el("p", { class: "muted", text: "Loading preview…" }));
  try {
    const p = await api(`/api/runs/${runId}/preview?${query}`);
    const title = el("p", { class: "muted" }, el("code", { text: `${step} / ${output}${p.path ? " / " + p.path : ""}` }), " ", el("a", { href: p.raw_url, target: "_blank", rel: "noopener", text: "raw" }));
    let content;
    if (p.kind === "directory") {
      content = el("ul", { class: "files" }, p.files.map((f) => el("li", {}, el("a", { href: "#", "data-file": f.path, onclick: (e) => { e.preventDefault(); previewInto(box, runId, step, output, f.path); } }, f.path), ` (${f.size_bytes} bytes)`)));
    } else if (p.kind === "table") {
      content = el("table", { class: "csv" }, el("tr", {}, p.columns.map((c) => el("th", { text: c }))), p.rows.map((r) => el("tr", {}, r.map((c) => el("td", { text: c })))));
      if (p.more) content = el("div", {}, content, el("p", { class: "muted", text: "first rows only" }));
    } else if (p.kind === "markdown") {
      content = el("div", { class: "markdown card" });
      content.innerHTML = p.html; // sanitized by the server (console/markdown.py)
    } else if (p.kind === "image") {
      content = el("img", { src: p.raw_url, alt: p.path || output });
    } else if (p.kind === "html") {
      // No allow-scripts, no allow-same-origin: the report can neither run code nor reach the console.
      content = el("iframe", { src: p.raw_url, sandbox: "", referrerpolicy: "no-referrer", title: `${output} report` });
    } else if (p.kind === "json" || p.kind === "text") {
      content = el("pre", { text: p.text });
    } else {
      content = el("p", { class: "muted", text: "No preview: download it with the raw link." });
    }
    box.replaceChildren(title, content);
  } catch (error) {
    box.replaceChildren(errorBox(error));
  }
}

async function runPage(id) {
  const first = await api(`/api/runs/${encodeURIComponent(id)}`);
  const header = el("div", { class: "actions" });
  const problem = el("div");
  const errorSlot = el("div");
  const dagBox = el("div", { class: "dag" });
  const stepsBody = el("tbody");
  const outputs = el("div");
  const metrics = el("div");
  const preview = el("div", { class: "preview", id: "preview" });
  const cancel = el("button", { type: "button", class: "danger", id: "cancel", text: "Cancel", hidden: true });
  const retry = el("button", { type: "button", id: "retry", text: "Retry", hidden: true });
  const stateSlot = el("span", { id: "run-state" });
  const dag = first.pipeline && first.node_states !== undefined ? await api(`/api/pipelines/${encodeURIComponent(first.pipeline)}`).catch(() => null) : null;
  const drawn = dag && dag.dag && dag.version === first.pipeline_version
    ? drawDag(dag.dag, (node) => { const step = current.steps.find((s) => s.name === node || s.name.startsWith(node + "/") || s.name.startsWith(node + "[")); if (step) go(stepUrl(id, step.name)); })
    : null;
  if (drawn) dagBox.append(drawn.svg); else dagBox.append(el("p", { class: "muted", text: "This run's pipeline version is no longer loaded: no graph." }));
  const compareInput = el("input", { type: "text", id: "compare-with", placeholder: "another run's id" });
  const compareForm = el("form", { class: "actions" }, "Compare with ", compareInput, el("button", { type: "submit", class: "secondary", text: "Compare" }));
  compareForm.addEventListener("submit", (e) => { e.preventDefault(); if (compareInput.value) go(`/compare?a=${id}&b=${encodeURIComponent(compareInput.value.replace(/^runs\//, ""))}`); });
  let current = first;
  const rows = new Map();
  let outputsKey = "";

  async function act(button, verb) {
    button.disabled = true;
    problem.replaceChildren();
    try {
      const run = await api(`/api/runs/${id}/${verb}`, { body: {} });
      if (verb === "retry") go(`/runs/${run.id}`); else render(run);
    } catch (error) { problem.replaceChildren(errorBox(error)); }
    button.disabled = false;
  }
  cancel.addEventListener("click", () => act(cancel, "cancel"));
  retry.addEventListener("click", () => act(retry, "retry"));

  function stepRow(step) {
    return el("tr", { "data-step": step.name },
      el("td", {}, el("a", { href: stepUrl(id, step.name), text: step.name })),
      el("td", {}, badge(step.state), step.cached ? " cached" : ""),
      el("td", { text: step.attempt }), el("td", { text: when(step.start_time) }), el("td", { text: when(step.end_time) }),
      el("td", { text: step.error ? step.error.message : "" }));
  }

  function render(run) {
    current = run;
    stateSlot.replaceChildren(badge(run.state));
    cancel.hidden = !run.allowed.cancel;
    retry.hidden = !run.allowed.retry;
    errorSlot.replaceChildren(run.error ? el("div", { class: "error-box", id: "run-error", text: `${run.error.reason}: ${run.error.message}` }) : "");
    if (drawn) drawn.update(run.node_states);
    // Incremental: a step's row is rebuilt only when something it shows changed.
    for (const step of run.steps) {
      const key = JSON.stringify([step.state, step.attempt, step.start_time, step.end_time, step.error, step.cached]);
      const known = rows.get(step.name);
      if (known && known.key === key) continue;
      const row = stepRow(step);
      if (known) known.row.replaceWith(row); else stepsBody.append(row);
      rows.set(step.name, { key, row });
    }
    const withOutputs = run.steps.filter((s) => s.outputs.length || s.metrics.length);
    const nextKey = JSON.stringify(withOutputs.map((s) => [s.name, s.outputs.map((a) => a.uri), s.metrics]));
    if (nextKey !== outputsKey) {
      outputsKey = nextKey;
      outputs.replaceChildren(withOutputs.length ? el("table", { id: "outputs" }, withOutputs.flatMap((s) => s.outputs.map((a) => el("tr", {},
        el("td", { text: s.name }), el("td", {}, el("a", { href: "#", "data-output": `${s.name}/${a.name}`, onclick: (e) => { e.preventDefault(); previewInto(preview, id, s.name, a.name, ""); } }, a.name)),
        el("td", { text: a.type }), el("td", { text: `${a.size_bytes} bytes` }))))) : el("p", { class: "muted", text: "No outputs yet." }));
      const all = run.steps.flatMap((s) => s.metrics.map((m) => [`${s.name} · ${m.name}`, m.value]));
      metrics.replaceChildren(all.length ? kvTable(all, "metrics") : el("p", { class: "muted", text: "No metrics." }));
    }
  }

  header.append(...[stateSlot, cancel, retry,
    first.backend_run_url ? el("a", { href: first.backend_run_url, target: "_blank", rel: "noopener noreferrer", id: "kfp-link", text: "Kubeflow run ↗" }) : null,
    first.retry_of ? el("span", {}, "retry of ", el("a", { href: `/${first.retry_of}`, text: first.retry_of })) : null].filter(Boolean));
  mount(el("h1", {}, "Run ", el("code", { text: first.id })),
    el("p", { class: "muted" }, "pipeline ", el("a", { href: `/pipelines/${first.pipeline}`, text: first.pipeline }), ` · created ${when(first.create_time)}${first.creator ? " by " + first.creator : ""} · backend ${first.backend}`),
    header, problem, errorSlot, dagBox,
    el("h2", { text: "Steps" }), el("table", { id: "steps" }, el("thead", {}, el("tr", {}, ["Step", "State", "Attempt", "Started", "Ended", "Error"].map((t) => el("th", { text: t })))), stepsBody),
    el("div", { class: "cols" },
      el("div", {}, el("h2", { text: "Parameters" }), kvTable(Object.entries(first.parameters), "parameters")),
      el("div", {}, el("h2", { text: "Metrics" }), metrics)),
    el("h2", { text: "Outputs" }), outputs, preview, compareForm);
  render(first);
  // Live: snapshots from the run's watch; EventSource resumes with Last-Event-ID (the revision).
  if (!["SUCCEEDED", "FAILED", "CANCELLED"].includes(first.state)) {
    stream(`/api/runs/${id}/events?after=${first.revision}`, { run: render, error: (e) => problem.replaceChildren(errorBox(e)) });
  }
}

function stepUrl(runId, step) { return `/step?${new URLSearchParams({ run: runId, name: step })}`; }

async function stepPage() {
  const params = new URLSearchParams(location.search);
  const runId = params.get("run");
  const name = params.get("name");
  const attempt = params.get("attempt") || "0";
  const log = el("pre", { class: "log", id: "log" });
  const info = el("div");
  const status = el("p", { class: "muted", id: "log-status", text: "following…" });
  const attempts = el("div", { class: "actions" });
  mount(el("h1", {}, "Step ", el("code", { text: name })),
    el("p", {}, el("a", { href: `/runs/${runId}`, text: `← run ${runId}` })), info, attempts, status, log);
  let shown = false;
  stream(`/api/runs/${encodeURIComponent(runId)}/logs?${new URLSearchParams({ step: name, follow: "1", attempt })}`, {
    step(step) {
      info.replaceChildren(kvTable([["state", badge(step.state)], ["component", step.component], ["image", step.image], ["attempt", step.attempt], ["cached", step.cached], ["started", when(step.start_time)], ["ended", when(step.end_time)], ...(step.error ? [["error", step.error.message]] : [])], "step-info"));
      if (!shown && step.attempt > 1) {
        shown = true;
        attempts.append("attempts: ", el("a", { href: stepUrl(runId, name), text: "all" }));
        for (let n = 1; n <= step.attempt; n++) attempts.append(" ", el("a", { href: `${stepUrl(runId, name)}&attempt=${n}`, text: String(n) }));
      }
    },
    lines(lines) {
      const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      const fragment = document.createDocumentFragment();
      for (const line of lines) fragment.append(el("span", { class: line.stream }, line.text + "\n"));
      log.append(fragment);
      if (stick) log.scrollTop = log.scrollHeight;
    },
    end() { status.textContent = "end of log"; },
    error(e) { status.replaceChildren(errorBox(e)); },
  });
}

async function comparePage() {
  const params = new URLSearchParams(location.search);
  const { runs } = await api(`/api/compare?${new URLSearchParams({ a: params.get("a") || "", b: params.get("b") || "" })}`);
  const [a, b] = runs;
  function rowsOf(left, right) {
    const keys = [...new Set([...Object.keys(left), ...Object.keys(right)])].sort();
    return keys.map((k) => {
      const l = show(left[k] ?? ""); const r = show(right[k] ?? "");
      return el("tr", {}, el("td", { text: k }), el("td", { class: l !== r ? "diff" : "", text: l }), el("td", { class: l !== r ? "diff" : "", text: r }));
    });
  }
  const metricsOf = (run) => Object.fromEntries(run.steps.flatMap((s) => s.metrics.map((m) => [`${s.name} · ${m.name}`, m.value])));
  const outputsOf = (run) => Object.fromEntries(run.steps.flatMap((s) => s.outputs.map((o) => [`${s.name} / ${o.name}`, `${o.size_bytes} bytes`])));
  const head = el("tr", {}, el("th", { text: "" }), el("th", {}, el("a", { href: `/runs/${a.id}`, text: a.id })), el("th", {}, el("a", { href: `/runs/${b.id}`, text: b.id })));
  mount(el("h1", { text: `Compare runs of ${a.pipeline}` }),
    el("table", { id: "compare-state" }, head, el("tr", {}, el("td", { text: "state" }), el("td", {}, badge(a.state)), el("td", {}, badge(b.state)))),
    el("h2", { text: "Parameters" }), el("table", { id: "compare-parameters" }, head.cloneNode(true), rowsOf(a.parameters, b.parameters)),
    el("h2", { text: "Metrics" }), el("table", { id: "compare-metrics" }, head.cloneNode(true), rowsOf(metricsOf(a), metricsOf(b))),
    el("h2", { text: "Outputs" }), el("table", { id: "compare-outputs" }, head.cloneNode(true), rowsOf(outputsOf(a), outputsOf(b))));
}

async function route() {
  try {
    if (!session) {
      try { session = await api("/api/session"); } catch (error) { if (error.status === 401) return signInPage(); throw error; }
      showWho();
    }
    const path = location.pathname;
    if (path === "/pipelines") return await pipelinesPage();
    if (path.startsWith("/pipelines/")) return await pipelinePage(decodeURIComponent(path.slice(11)));
    if (path === "/runs") return await runsPage();
    if (path.startsWith("/runs/")) return await runPage(decodeURIComponent(path.slice(6)));
    if (path === "/step") return await stepPage();
    if (path === "/compare") return await comparePage();
    return go("/runs");
  } catch (error) {
    if (error.status === 401) return;
    mount(errorBox(error));
  }
}

route();
