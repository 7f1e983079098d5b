// The dashboard page: state from the `snapshot` event, then merged with each pushed event.
import { drawRevenue } from "./chart.js";

const MAX_WINDOWS = 24 * 4; // per all currencies; the chart shows the newest 24 window starts
const MAX_ALERTS = 20;

const state = { windows: new Map(), totals: {}, alerts: [], health: new Map(), vitals: new Map() };
const $ = (selector) => document.querySelector(selector);

function node(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) element.setAttribute(key, String(value));
  }
  for (const child of children) element.append(child ?? "");
  return element;
}

const windowKey = (w) => `${w.currency}|${w.window_start}`;
const fmtNumber = (value, digits = 0) =>
  value === null || value === undefined ? "–" : Number(value).toLocaleString("en-US", { maximumFractionDigits: digits });

function mergeWindows(windows, batchId) {
  for (const w of windows) state.windows.set(windowKey(w), { ...w, batch_id: batchId });
  const keys = [...state.windows.keys()].sort((a, b) => b.split("|")[1].localeCompare(a.split("|")[1]));
  for (const key of keys.slice(MAX_WINDOWS)) state.windows.delete(key);
}

function mergeAlert(alert) {
  state.alerts = [alert, ...state.alerts.filter((a) => a.alert_id !== alert.alert_id)].slice(0, MAX_ALERTS);
}

function renderOrders() {
  const windows = [...state.windows.values()];
  drawRevenue($("#revenue-chart"), windows);
  const totals = $("#totals");
  totals.replaceChildren(...Object.entries(state.totals).sort().map(([currency, t]) =>
    node("div", { class: "total", "data-total": currency },
      node("div", { class: "value" }, `${t.revenue} ${currency}`),
      node("div", { class: "label" }, `${fmtNumber(t.order_count)} orders · ${fmtNumber(t.item_count)} items in total`))));
  const rows = windows.sort((a, b) => b.window_start.localeCompare(a.window_start) || a.currency.localeCompare(b.currency));
  $("#windows tbody").replaceChildren(...rows.map((w) =>
    node("tr", { "data-window": windowKey(w) },
      node("td", {}, w.window_start.slice(0, 19).replace("T", " ")),
      node("td", {}, w.currency),
      node("td", { class: "num order-count" }, String(w.order_count)),
      node("td", { class: "num item-count" }, String(w.item_count)),
      node("td", { class: "num revenue" }, w.revenue),
      node("td", { class: "num" }, w.batch_id ?? "–"))));
}

function renderAlerts() {
  $("#alerts-empty").hidden = state.alerts.length > 0;
  $("#alert-list").replaceChildren(...state.alerts.map((a) =>
    node("li", { "data-alert-id": a.alert_id, "data-level": a.level },
      node("div", {}, node("strong", {}, a.level), ` ${a.service ?? "any service"} · `,
        node("span", { class: "event-count" }, String(a.event_count)), " events"),
      node("div", { class: "meta" }, `${a.rule_id} · ${(a.window_start || "").slice(11, 19)}–${(a.window_end || "").slice(11, 19)} UTC`),
      node("div", { class: "sample" }, a.sample_message ?? ""))));
}

function renderHealth() {
  const rows = [...state.health.values()].sort((a, b) =>
    `${a.pipeline}/${a.query_name}`.localeCompare(`${b.pipeline}/${b.query_name}`));
  $("#health-table tbody").replaceChildren(...rows.map((h) =>
    node("tr", { "data-query": `${h.pipeline}/${h.query_name}` },
      node("td", {}, h.pipeline), node("td", {}, h.query_name),
      node("td", { class: `status status-${h.status}`, title: h.error_class ?? h.detail ?? "" }, h.status),
      node("td", { class: "num rate" }, fmtNumber(h.processed_rows_per_second, 1)),
      node("td", { class: "num lag" }, fmtNumber(h.lag)),
      node("td", { class: "num batch" }, h.batch_id ?? "–"),
      node("td", { class: "num" }, h.heartbeat_age_seconds === null ? "–" : `${fmtNumber(h.heartbeat_age_seconds)} s ago`))));
}

const range = (v) =>
  v.low !== null && v.high !== null ? `normal ${v.low}–${v.high} ${v.unit}`
    : v.low !== null ? `normal ≥ ${v.low} ${v.unit}` : v.high !== null ? `normal ≤ ${v.high} ${v.unit}` : "";

function renderVitals() {
  const tiles = [...state.vitals.values()].sort((a, b) => String(a.patient_id).localeCompare(String(b.patient_id)));
  $("#vitals-empty").hidden = tiles.length > 0;
  $("#patient-tiles").replaceChildren(...tiles.map((t) =>
    node("div", { class: "tile", "data-patient": t.patient_id, "data-out-of-range": t.out_of_range },
      node("h3", {}, t.patient_id),
      ...t.vitals.map((v) => node("div", {
        class: v.out_of_range ? "vital out" : "vital", "data-vital": v.name,
        title: range(v) + (v.flag ? ` · last flag: ${v.flag.reason} ${(v.flag.window_start || "").slice(11, 19)}` : ""),
      }, node("span", {}, v.label, v.flag ? node("sup", { class: `flag flag-${v.flag.reason}` }, " ⚑") : ""),
        node("span", { class: "value" }, `${fmtNumber(v.value, 1)} ${v.unit}`))),
      t.no_signal_since ? node("div", { class: "no-signal" }, `no signal since ${t.no_signal_since.slice(11, 19)}`) : "",
      node("div", { class: "meta" }, `${(t.event_time ?? "").slice(0, 19).replace("T", " ")} ${t.device_id ?? ""}`))));
}

// The state folder's disk: ok below 80 % used, warning from 80 %, critical from 90 %.
function renderDisk(disk) {
  if (!disk) return;
  const badge = $("#disk");
  const freeGiB = disk.free_bytes / 1024 ** 3;
  badge.textContent = `disk ${disk.level}: ${disk.used_percent.toFixed(1)} % used · ${fmtNumber(freeGiB, 1)} GiB free`;
  badge.dataset.level = disk.level;
  badge.title = disk.message;
}

function setConnection(label, stateName) {
  const badge = $("#connection");
  badge.textContent = label;
  badge.dataset.state = stateName;
}

const handlers = {
  snapshot(data) {
    state.windows.clear();
    mergeWindows(data.orders.windows, data.orders.batch_id);
    state.totals = data.orders.totals;
    state.alerts = [];
    for (const alert of [...data.alerts.alerts, ...data.alerts.platform].reverse()) mergeAlert(alert);
    state.health = new Map(data.health.map((h) => [`${h.pipeline}/${h.query_name}`, h]));
    state.vitals = new Map(data.vitals.map((t) => [t.patient_id, t]));
    renderOrders(); renderAlerts(); renderHealth(); renderVitals(); renderDisk(data.disk);
    document.body.dataset.ready = "true";
  },
  orders(data) {
    mergeWindows(data.windows, data.batch_id);
    state.totals = { ...state.totals, ...data.totals };
    renderOrders();
  },
  alert(data) { mergeAlert(data); renderAlerts(); },
  health(data) { state.health.set(`${data.pipeline}/${data.query_name}`, data); renderHealth(); },
  vitals(data) { state.vitals.set(data.patient_id, data); renderVitals(); },
  vitals_removed(data) { state.vitals.delete(data.patient_id); renderVitals(); },
  disk(data) { renderDisk(data); },
  status(data) { setConnection(data.redis === "connected" ? "live" : "Redis reconnecting…", data.redis === "connected" ? "live" : "down"); },
};

const source = new EventSource("api/events");
for (const [name, handle] of Object.entries(handlers)) {
  source.addEventListener(name, (event) => handle(JSON.parse(event.data)));
}
// The chart is drawn in pixels of its element: redraw when the window changes size.
window.addEventListener("resize", () => drawRevenue($("#revenue-chart"), [...state.windows.values()]));
// EventSource reconnects by itself; the server then sends a fresh snapshot. It gives up for good
// on a refusal (e.g. 401 when Airflow's login expired): then only a reload, after logging in, helps.
source.onerror = () => {
  if (source.readyState === EventSource.CLOSED) setConnection("stopped: reload the page (log in?)", "down");
  else setConnection("reconnecting…", "down");
};
