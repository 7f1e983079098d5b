"""The pipelines page: one HTML document with its CSS and a plain ES module, no build step.

The script polls ``api/pipelines`` (relative to the page, so it works under any Airflow base URL
and inside the Airflow UI's iframe) and renders one row per pipeline; the buttons POST to
``api/pipelines/<name>/<action>``. The browser sends Airflow's session cookie with both.
"""

from __future__ import annotations

REFRESH_SECONDS = 5

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>streamops pipelines</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  :root { color-scheme: light dark; --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e;
          --muted: #6e7781; --line: #d0d7de; --head: #f6f8fa; }
  @media (prefers-color-scheme: dark) {
    :root { --line: #30363d; --head: #161b22; --muted: #8b949e; }
  }
  body { font: 13px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 16px; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  .sub { color: var(--muted); margin-bottom: 12px; }
  table { border-collapse: collapse; width: 100%; }
  th, td { border-bottom: 1px solid var(--line); padding: 6px 8px; text-align: left;
           vertical-align: top; }
  th, td.num, td.nowrap { white-space: nowrap; }
  th { background: var(--head); font-weight: 600; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  td.detail { color: var(--muted); min-width: 180px; max-width: 300px; font-size: 12px; }
  td.actions { min-width: 150px; }
  .badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff;
           font-weight: 600; font-size: 12px; white-space: nowrap; }
  .running { background: var(--ok); }
  .starting, .backing_off, .waiting, .overloaded { background: var(--warn); }
  .stalled, .failed, .breaker_open { background: var(--bad); }
  .stopped { background: var(--muted); }
  .open { color: var(--bad); font-weight: 600; }
  button { margin: 0 2px 2px 0; padding: 2px 8px; cursor: pointer; }
  #message { margin: 8px 0; min-height: 1.4em; }
  #message.error, .warn { color: var(--bad); }
  .queries { color: var(--muted); font-size: 12px; white-space: nowrap; }
</style>
</head>
<body>
<h1>Streaming pipelines</h1>
<div class="sub">Supervised by Airflow (DAGs <code>streamops_supervise_&lt;name&gt;</code>).
  Refreshes every __REFRESH__ s. <span id="updated"></span></div>
<div id="message" role="status"></div>
<table id="pipelines">
  <thead><tr>
    <th>pipeline</th><th>state</th><th>uptime</th><th>last batch</th><th>input rows/s</th>
    <th>processed rows/s</th><th>watermark (UTC)</th><th>Kafka lag</th><th>restarts</th>
    <th>breaker</th><th>detail</th><th>actions</th>
  </tr></thead>
  <tbody><tr><td colspan="12">loading…</td></tr></tbody>
</table>
<div id="warnings" class="warn"></div>
<script type="module">
const base = new URL(".", location.href.endsWith("/") ? location.href : location.href + "/");
const api = (path) => new URL("api/pipelines" + path, base);
const $ = (selector) => document.querySelector(selector);
let busy = false;

function text(value, fallback = "–") {
  return value === null || value === undefined || value === "" ? fallback : String(value);
}
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.floor(seconds), d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
  const m = Math.floor(s % 3600 / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  return m ? `${m}m ${String(s % 60).padStart(2, "0")}s` : `${s % 60}s`;
}
function ago(iso) {
  if (!iso) return "–";
  return `${duration(Math.max(0, (Date.now() - Date.parse(iso)) / 1000))} ago`;
}
function time(iso) {
  return iso ? iso.replace("T", " ").replace(/\\.\\d+Z$/, "Z") : "–";
}
function rate(value) {
  return value === null || value === undefined ? "–" : value.toFixed(1);
}
function cell(content, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (content instanceof Node) td.append(content); else td.textContent = content;
  return td;
}
function badge(state) {
  const span = document.createElement("span");
  span.className = `badge ${state}`;
  span.textContent = state.replace("_", " ");
  return span;
}
function actions(row) {
  const box = document.createElement("span");
  const up = ["running", "starting", "overloaded", "stalled", "backing_off"].includes(row.state);
  const buttons = [
    ["start", "Start", up || row.breaker === "open"],
    ["stop", "Stop", !up && !row.active_run_id],
    ["restart", "Restart", row.breaker === "open"],
    ["reset-breaker", "Reset breaker", row.breaker !== "open" && !row.consecutive_failures],
  ];
  for (const [action, label, disabled] of buttons) {
    const button = document.createElement("button");
    button.textContent = label;
    button.dataset.action = action;
    button.dataset.pipeline = row.name;
    button.disabled = disabled || busy;
    button.addEventListener("click", () => act(row.name, action));
    box.append(button);
  }
  return box;
}
function render(data) {
  const body = document.createElement("tbody");
  for (const row of data.pipelines) {
    const tr = document.createElement("tr");
    tr.dataset.pipeline = row.name;
    tr.dataset.state = row.state;
    const name = document.createElement("div");
    name.innerHTML = `<strong></strong><div class="queries"></div>`;
    name.querySelector("strong").textContent = row.name;
    for (const q of row.queries) {
      const line = document.createElement("div");
      line.textContent = `${q.name}: batch ${text(q.batch_id)}, lag ${text(q.kafka_lag)}`;
      name.querySelector(".queries").append(line);
    }
    const breaker = document.createElement("span");
    breaker.textContent = row.breaker;
    if (row.breaker === "open") breaker.className = "open";
    tr.append(
      cell(name), cell(badge(row.state)), cell(duration(row.uptime_seconds), "num"),
      cell(ago(row.last_batch_at), "nowrap"), cell(rate(row.input_rows_per_second), "num"),
      cell(rate(row.processed_rows_per_second), "num"), cell(time(row.watermark), "nowrap"),
      cell(text(row.kafka_lag), "num"), cell(text(row.restarts_total), "num"), cell(breaker),
      cell([row.detail, ...row.warnings].join(" — "), "detail"), cell(actions(row), "actions"),
    );
    tr.children[3].title = text(row.last_batch_at);
    for (const [i, key] of [[2, "uptime"], [3, "last-batch"], [4, "input-rate"],
        [5, "processed-rate"], [6, "watermark"], [7, "lag"], [8, "restarts"], [9, "breaker"]]) {
      tr.children[i].dataset.field = key;
    }
    body.append(tr);
  }
  $("#pipelines tbody").replaceWith(body);
  $("#warnings").textContent = data.warnings.join(" — ");
  $("#updated").textContent = `Updated ${new Date(data.generated_at * 1000).toISOString()}.`;
}
function say(message, error = false) {
  $("#message").textContent = message;
  $("#message").className = error ? "error" : "";
}
async function refresh() {
  try {
    const response = await fetch(api(""), {credentials: "same-origin"});
    if (!response.ok) throw new Error(`${response.status}: ${await response.text()}`);
    render(await response.json());
  } catch (error) {
    say(`Could not read the pipelines: ${error.message}`, true);
  }
}
async function act(pipeline, action) {
  busy = true;
  say(`${pipeline}: ${action}…`);
  document.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  try {
    const response = await fetch(api(`/${pipeline}/${action}`),
                                 {method: "POST", credentials: "same-origin"});
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || response.statusText);
    say(body.message);
  } catch (error) {
    say(`${pipeline}: ${action} failed: ${error.message}`, true);
  } finally {
    busy = false;
    await refresh();
  }
}
refresh();
setInterval(() => { if (!busy) refresh(); }, __REFRESH__ * 1000);
</script>
</body>
</html>
""".replace("__REFRESH__", str(REFRESH_SECONDS))
