// The map's early-warning alerts (issue 19): a list of the open alerts the caller may
// see (GET /alerts; a visitor gets the published view, an analyst key adds the sensitive
// monitors), their outlines on the map (the style's `alerts` layer, and `alerts-sensitive`
// with a key), and for the chosen one its series chart (GET /alerts/{id}: the last two
// years with expected and threshold) and, for an analyst, acknowledging it with a note.
//
// The chart is inline SVG built here: no charting library, nothing fetched from elsewhere.
import { ServiceError, clearError, element, getJSON, number, sendJSON, showError } from "./api.js";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const OPEN = ["new", "acknowledged"];
// The style's alerts colours (app/styles/symbology.py ALERT_STATES, outline #7f0000).
const OUTLINE = "#7f0000";
const SELECTED = "#000000";

const alerts = {
  map: null,
  key: () => null,
  items: [],
  geometries: new Map(), // alert id -> GeoJSON geometry (the collections' items)
  places: [], // settlements of /labels.geojson, for naming an H3 group's place
  selected: null,
  layers: [], // the alert fill layers on the map (for clicks)
};

// --- set-up --------------------------------------------------------------------------

// Errors of the alerts are shown in their own section: the rest of the map goes on.
function fail(error, where = "") {
  const message = error instanceof ServiceError ? error.message : `Something went wrong: ${error.message}`;
  showError($("alerts-error"), `${where}${message}`);
}

/** Draw the alert outlines, list the open alerts and wire the panel (after the map
 * loads); ``key`` returns the accepted analyst key or null, ``before`` the layer id the
 * selected alert's outline is drawn under (the place names). Never throws. */
export async function setupAlerts({ map, key, before }) {
  Object.assign(alerts, { map, key });
  try {
    await setup(before);
  } catch (error) {
    fail(error, "Alerts: ");
  }
}

async function setup(before) {
  const map = alerts.map;
  styleAlertLayer("alerts");
  map.addSource("alert-selected", { type: "geojson", data: { type: "FeatureCollection", features: [] } });
  // The chosen alert: black on a white casing, visible on any fill.
  map.addLayer({
    id: "alert-selected-casing",
    type: "line",
    source: "alert-selected",
    layout: { "line-join": "round" },
    paint: { "line-color": "#ffffff", "line-width": 6.5 },
  }, before);
  map.addLayer({
    id: "alert-selected-line",
    type: "line",
    source: "alert-selected",
    layout: { "line-join": "round" },
    paint: { "line-color": SELECTED, "line-width": 3.5 },
  }, before);
  $("show-alerts").addEventListener("change", showAlerts);
  $("alert-close").addEventListener("click", closeAlert);
  $("alert-ack").addEventListener("submit", (event) => {
    event.preventDefault();
    changeState(event.submitter?.value || "acknowledged").catch((e) => fail(e, "Alert: "));
  });
  try {
    const labels = await getJSON("labels.geojson");
    alerts.places = labels.features.filter((f) => f.properties.kind === "settlement");
  } catch {
    alerts.places = []; // H3 groups are then named by their cells only
  }
  await loadAlerts();
}

// The style's `alerts` layers (fill by state, outline): outlines only, of open alerts;
// the fill stays, transparent, so that a click inside a place finds its alert.
function styleAlertLayer(id) {
  const map = alerts.map;
  if (!map.getLayer(`${id}-fill`)) return;
  const open = ["in", ["get", "state"], ["literal", OPEN]];
  map.setFilter(`${id}-fill`, open);
  map.setPaintProperty(`${id}-fill`, "fill-opacity", 0);
  map.setFilter(`${id}-line`, open);
  map.setPaintProperty(`${id}-line`, "line-color", OUTLINE);
  map.setPaintProperty(`${id}-line`, "line-width", ["interpolate", ["linear"], ["zoom"], 6, 1.5, 12, 2.5]);
  alerts.layers.push(`${id}-fill`);
  // A click on the map opens the alert there beside the district panel (which keeps the
  // focus); of overlapping alerts, an H3 group's (the smaller place) before a unit's.
  map.on("click", `${id}-fill`, (event) => {
    const features = alerts.map.queryRenderedFeatures(event.point, { layers: alerts.layers.filter((l) => alerts.map.getLayer(l)) });
    const feature = features.find((f) => !f.properties.unit_code) || features[0];
    if (feature && Number(feature.id) !== alerts.selected) {
      selectAlert(Number(feature.id), { focus: false }).catch((e) => fail(e, "Alert: "));
    }
  });
  map.on("mouseenter", `${id}-fill`, () => (map.getCanvas().style.cursor = "pointer"));
  map.on("mouseleave", `${id}-fill`, () => (map.getCanvas().style.cursor = ""));
}

/** An analyst key was accepted: add the sensitive monitors' layer and list again (the
 * page's transformRequest sends the key with its tiles). Never throws. */
export async function alertsUseKey() {
  try {
    await useKey();
  } catch (error) {
    fail(error, "Alerts: ");
  }
}

async function useKey() {
  const map = alerts.map;
  const key = alerts.key();
  let sensitive = false;
  try {
    await getJSON("collections/alerts-sensitive", {}, key);
    sensitive = true;
  } catch (error) {
    if (!(error instanceof ServiceError) || error.status !== 404) throw error; // 404: no such alert yet
  }
  if (sensitive && !map.getSource("alerts-sensitive")) {
    map.addSource("alerts-sensitive", { type: "vector", url: new URL("tiles/alerts-sensitive.json", document.baseURI).toString() });
    for (const kind of ["fill", "line"]) {
      map.addLayer({
        id: `alerts-sensitive-${kind}`,
        type: kind,
        source: "alerts-sensitive",
        "source-layer": "alerts-sensitive",
        paint: kind === "fill" ? { "fill-color": OUTLINE } : { "line-color": OUTLINE },
      }, "alert-selected-casing");
    }
    styleAlertLayer("alerts-sensitive");
    // Sensitive outlines dashed: the legend tells them apart.
    map.setPaintProperty("alerts-sensitive-line", "line-dasharray", [2, 1]);
    showAlerts();
  }
  await loadAlerts();
}

function showAlerts() {
  const visible = $("show-alerts").checked ? "visible" : "none";
  for (const id of ["alerts-line", "alerts-fill", "alerts-sensitive-line", "alerts-sensitive-fill", "alert-selected-casing", "alert-selected-line"]) {
    if (alerts.map.getLayer(id)) alerts.map.setLayoutProperty(id, "visibility", visible);
  }
}

// --- the list ------------------------------------------------------------------------

async function loadAlerts() {
  const key = alerts.key();
  const list = $("alerts-list");
  clearError($("alerts-error"));
  const answer = await getOpen(key);
  alerts.items = answer.items.filter((a) => OPEN.includes(a.state));
  await loadGeometries(key);
  const title = $("alerts-title");
  title.dataset.count = String(alerts.items.length);
  $("alerts-count").textContent = `(${alerts.items.length})`;
  $("alerts-note").textContent = key
    ? "With your key: every monitor's alerts, sensitive ones (dashed outlines) included."
    : "Public view: alerts of sensitive monitors are for analysts, and counts below the privacy minimum are withheld.";
  if (!alerts.items.length) {
    list.replaceChildren(element("li", { class: "note", text: "No open alert." }));
    return;
  }
  list.replaceChildren(...alerts.items.map(listItem));
  if (alerts.selected !== null) markSelected(alerts.selected);
}

// GET /alerts takes state once per value (state=new&state=acknowledged).
async function getOpen(key) {
  const target = new URL("alerts", document.baseURI);
  for (const s of OPEN) target.searchParams.append("state", s);
  return getJSON(target.toString(), {}, key);
}

async function loadGeometries(key) {
  alerts.geometries.clear();
  const ids = ["alerts", ...(key ? ["alerts-sensitive"] : [])];
  for (const id of ids) {
    if (id === "alerts" && !alerts.map.getSource("alerts")) continue;
    if (id === "alerts-sensitive" && !alerts.map.getSource("alerts-sensitive")) continue;
    try {
      const items = await getJSON(`collections/${id}/items`, { limit: 1000 }, key);
      for (const f of items.features) alerts.geometries.set(Number(f.id), f.geometry);
    } catch {
      // the list still works; places of H3 groups are then named by their cells only
    }
  }
}

function stepName(period, n = 1) {
  const word = period.includes("-W") ? "week" : "month";
  return n === 1 ? word : `${word}s`;
}

function periodText(period) {
  const week = /^(\d{4})-W(\d{2})$/.exec(period);
  if (week) return `week ${Number(week[2])} of ${week[1]}`;
  const month = /^(\d{4})-(\d{2})$/.exec(period);
  if (month) {
    return new Date(Date.UTC(Number(month[1]), Number(month[2]) - 1, 1)).toLocaleString("en", { month: "long", year: "numeric", timeZone: "UTC" });
  }
  return period;
}

function count(value) {
  return value === null || value === undefined ? "withheld (small count)" : number(value, value % 1 ? 1 : 0);
}

// Where an alert is, in words: the unit's name, or the H3 group and its nearest town.
export function placeName(alert) {
  if (alert.place_kind === "unit") return `${alert.unit_name || alert.unit} District`;
  const cells = alert.cells.length === 1 ? "1 H3 cell" : `${alert.cells.length} adjacent H3 cells`;
  const geometry = alerts.geometries.get(alert.id);
  const nearest = geometry ? nearestPlace(centre(geometry)) : null;
  if (!nearest) return cells;
  const km = nearest.km < 1 ? "under 1 km" : `${Math.round(nearest.km)} km`;
  return `${cells}, ${km} from ${nearest.name}`;
}

function coordinates(geometry) {
  const out = [];
  const walk = (c) => (typeof c[0] === "number" ? out.push(c) : c.forEach(walk));
  walk(geometry.coordinates);
  return out;
}

function bbox(geometry) {
  const points = coordinates(geometry);
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  return [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)];
}

function centre(geometry) {
  const [w, s, e, n] = bbox(geometry);
  return [(w + e) / 2, (s + n) / 2];
}

function nearestPlace([lon, lat]) {
  let best = null;
  for (const f of alerts.places) {
    const [x, y] = f.geometry.coordinates;
    // Equirectangular distance: plenty within a territory.
    const dx = (x - lon) * Math.cos((lat * Math.PI) / 180) * 111.32;
    const dy = (y - lat) * 110.57;
    const km = Math.hypot(dx, dy);
    if (!best || km < best.km) best = { name: f.properties.name, km };
  }
  return best;
}

function listItem(alert) {
  const lasted = `${alert.lasted} ${stepName(alert.period, alert.lasted)}`;
  const facts = `observed ${count(alert.observed)} vs expected ${number(alert.expected)} (threshold ${number(alert.threshold)})`;
  const button = element(
    "button",
    { type: "button", class: "alert-item", "data-alert": String(alert.id), "aria-pressed": "false" },
    element("span", { class: "alert-place", text: placeName(alert) }),
    element("span", { class: "alert-monitor", text: `${alert.title || alert.monitor}${alert.sensitive ? " (sensitive)" : ""}` }),
    element("span", { class: "alert-facts", text: `${periodText(alert.period)}: ${facts}` }),
    element("span", { class: "alert-facts", text: `Lasted ${lasted} · ${alert.state}` }),
  );
  button.classList.add(`state-${alert.state}`);
  button.addEventListener("click", () => selectAlert(alert.id).catch((e) => fail(e, "Alert: ")));
  return element("li", {}, button);
}

function markSelected(id) {
  for (const b of document.querySelectorAll("#alerts-list .alert-item")) {
    b.setAttribute("aria-pressed", String(Number(b.dataset.alert) === id));
  }
}

// --- one alert: fly there, chart its series ---------------------------------------------

async function selectAlert(id, { focus = true } = {}) {
  alerts.selected = id;
  markSelected(id);
  const panel = $("alert-panel");
  panel.hidden = false;
  panel.dataset.alert = String(id);
  delete panel.dataset.ready;
  $("alert-body").replaceChildren(element("p", { class: "note", text: "Loading…" }));
  const alert = await getJSON(`alerts/${id}`, {}, alerts.key());
  const geometry = alert.outline || alerts.geometries.get(id);
  if (geometry) {
    alerts.map.getSource("alert-selected").setData({ type: "Feature", geometry, properties: {} });
    const [w, s, e, n] = bbox(geometry);
    // Clear of the alert panel (bottom left, 470 px wide) on a desktop.
    const wide = alerts.map.getContainer().clientWidth > 900;
    const padding = wide ? { left: 520, right: 60, top: 60, bottom: 60 } : 40;
    alerts.map.fitBounds([[w, s], [e, n]], { padding, maxZoom: alert.place_kind === "h3" ? 12 : 9, duration: 800 });
  }
  renderAlert(alert);
  if (focus) panel.focus();
}

function renderAlert(alert) {
  $("alert-title").textContent = placeName(alert);
  const facts = element("dl", {});
  const fact = (term, value, name) => facts.append(element("dt", { text: term }), element("dd", { text: value, "data-field": name }));
  fact("Monitor", `${alert.title || alert.monitor}${alert.sensitive ? " (sensitive: analysts only)" : ""}`, "monitor");
  fact("Period", periodText(alert.period), "period");
  fact("Observed", count(alert.observed), "observed");
  fact("Expected", number(alert.expected), "expected");
  fact("Threshold", number(alert.threshold), "threshold");
  fact("Lasted", `${alert.lasted} ${stepName(alert.period, alert.lasted)} (since ${periodText(alert.first_period)})`, "lasted");
  fact("State", alert.state, "state");
  if (alert.note) fact("Note", alert.note, "note");
  const parts = [facts, element("h3", { text: "Series of the last two years" }), ...seriesChart(alert)];
  $("alert-body").replaceChildren(...parts);
  // Acknowledging: an analyst's, while the alert is open (PATCH /alerts/{id}).
  const form = $("alert-ack");
  form.hidden = !alerts.key() || alert.state === "closed";
  $("alert-ack-status").textContent = "";
  $("alert-note").value = "";
  $("alert-panel").dataset.ready = "true";
}

async function changeState(target) {
  const id = alerts.selected;
  const note = $("alert-note").value.trim();
  const status = $("alert-ack-status");
  if (target === "acknowledged" && !note) {
    status.textContent = "Write a note first: what is being done about it.";
    $("alert-note").focus();
    return;
  }
  const body = { state: target };
  if (note) body.note = note;
  let alert;
  try {
    alert = await sendJSON("PATCH", `alerts/${id}`, body, alerts.key());
  } catch (error) {
    status.textContent = error.message; // e.g. 409: closed meanwhile
    return;
  }
  renderAlert(alert);
  await loadAlerts();
  if (target === "closed") alerts.map.getSource("alert-selected").setData({ type: "FeatureCollection", features: [] });
  $("alert-ack-status").textContent = target === "closed" ? "Alert closed." : "Alert acknowledged.";
}

function closeAlert() {
  const id = alerts.selected;
  alerts.selected = null;
  markSelected(null);
  $("alert-panel").hidden = true;
  alerts.map.getSource("alert-selected").setData({ type: "FeatureCollection", features: [] });
  const item = document.querySelector(`#alerts-list [data-alert="${id}"]`);
  (item || $("alerts-title")).focus();
}

// --- the chart -------------------------------------------------------------------------

function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// Round tick values for an axis from 0 to at least ``top`` (about 4 steps).
function ticks(top) {
  const raw = top / 4;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const out = [];
  for (let i = 0; i <= Math.ceil(top / step - 1e-9); i++) out.push(i * step);
  return out;
}

/**
 * The series chart of an alert: observed counts (dots, alarmed periods in red on a red
 * column), expected (dashed line) and the band up to the upper threshold. One dot per
 * period of the series; a withheld count is a hollow dot under the axis. Returns the
 * figure and a table of the same numbers (its text alternative).
 */
export function seriesChart(alert) {
  const series = alert.series;
  const W = 440;
  const H = 220;
  const M = { left: 36, right: 16, top: 10, bottom: 44 };
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const values = series.flatMap((p) => [p.observed, p.threshold, p.expected]).filter((v) => v !== null && v !== undefined);
  const axis = ticks(Math.max(1, ...values));
  const top = axis[axis.length - 1] || 1;
  const n = series.length;
  const x = (i) => M.left + (n === 1 ? plotW / 2 : (i * plotW) / (n - 1));
  const y = (v) => M.top + plotH - (v / top) * plotH;
  const step = stepName(alert.period);
  const alarms = series.filter((p) => p.alarm);
  const withheld = series.filter((p) => p.observed === null).length;
  const first = series[0]?.period;
  const last = series[n - 1]?.period;
  const titleId = `alert-chart-title-${alert.id}`;
  const descId = `alert-chart-desc-${alert.id}`;
  const chart = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    "aria-labelledby": `${titleId} ${descId}`,
    class: "series-chart",
    "data-points": String(n),
  });
  chart.append(
    svg("title", { id: titleId, text: `Observed incidents per ${step}, expected and upper threshold, ${first} to ${last}` }),
    svg("desc", {
      id: descId,
      text:
        `${n} ${stepName(alert.period, n)}; ${alarms.length} above the threshold` +
        (alarms.length ? ` (${alarms.map((p) => p.period).join(", ")})` : "") +
        `; latest ${last}: observed ${count(series[n - 1]?.observed)}, expected ${number(series[n - 1]?.expected)}, threshold ${number(series[n - 1]?.threshold)}.` +
        (withheld ? ` ${withheld} counts withheld.` : ""),
    }),
  );
  const half = n > 1 ? plotW / (n - 1) / 2 : 6;
  // Alarmed periods: a light red column behind everything.
  for (const [i, p] of series.entries()) {
    if (p.alarm) chart.append(svg("rect", { class: "alarm-column", x: x(i) - Math.max(half, 1.5), y: M.top, width: Math.max(2 * half, 3), height: plotH }));
  }
  // Grid and y axis.
  for (const v of axis) {
    chart.append(svg("line", { class: "grid", x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }));
    chart.append(svg("text", { class: "tick", x: M.left - 4, y: y(v) + 3, "text-anchor": "end", text: number(v, v % 1 ? 1 : 0) }));
  }
  // The band from expected up to the threshold, and the expected line, in runs of
  // periods that have both (none before the detector has enough history).
  const runs = [];
  let run = [];
  for (const [i, p] of series.entries()) {
    if (p.expected !== null && p.threshold !== null) run.push(i);
    else if (run.length) (runs.push(run), (run = []));
  }
  if (run.length) runs.push(run);
  for (const r of runs) {
    const upper = r.map((i) => `${x(i)},${y(series[i].threshold)}`);
    const lower = r.slice().reverse().map((i) => `${x(i)},${y(series[i].expected)}`);
    chart.append(svg("polygon", { class: "band", points: [...upper, ...lower].join(" ") }));
    chart.append(svg("polyline", { class: "threshold", points: upper.join(" ") }));
    chart.append(svg("polyline", { class: "expected", points: r.map((i) => `${x(i)},${y(series[i].expected)}`).join(" ") }));
  }
  // Observed: a line through the counts shown, and one dot per period.
  const shown = series.map((p, i) => (p.observed === null ? null : `${x(i)},${y(p.observed)}`));
  let path = [];
  for (const point of [...shown, null]) {
    if (point) path.push(point);
    else if (path.length) {
      chart.append(svg("polyline", { class: "observed", points: path.join(" ") }));
      path = [];
    }
  }
  for (const [i, p] of series.entries()) {
    const label =
      `${p.period}: observed ${count(p.observed)}` +
      (p.expected !== null ? `, expected ${number(p.expected)}, threshold ${number(p.threshold)}` : `, no threshold (${p.reason || "not computable"})`) +
      (p.alarm ? ", ALARM" : "");
    const cy = p.observed === null ? M.top + plotH + 7 : y(p.observed);
    const kind = p.observed === null ? "point withheld" : p.alarm ? "point alarm" : "point";
    chart.append(svg("circle", { class: kind, cx: x(i), cy, r: p.alarm ? 4 : 2.2, "data-period": p.period }, svg("title", { text: label })));
  }
  // x axis: the first period, each new year, and the last.
  chart.append(svg("line", { class: "axis", x1: M.left, x2: W - M.right, y1: M.top + plotH, y2: M.top + plotH }));
  const labelled = new Set([0, n - 1]);
  for (let i = 1; i < n; i++) if (series[i].period.slice(0, 4) !== series[i - 1].period.slice(0, 4)) labelled.add(i);
  for (const i of [...labelled].sort((a, b) => a - b)) {
    const anchor = i === 0 ? "start" : i === n - 1 ? "end" : "middle";
    const close = i !== 0 && i !== n - 1 && (x(i) - x(0) < 60 || x(n - 1) - x(i) < 60);
    if (close) continue;
    chart.append(svg("line", { class: "axis", x1: x(i), x2: x(i), y1: M.top + plotH, y2: M.top + plotH + 3 }));
    chart.append(svg("text", { class: "tick", x: x(i), y: H - 18, "text-anchor": anchor, text: series[i].period }));
  }
  const key = element(
    "ul",
    { class: "chart-key" },
    element("li", {}, element("span", { class: "key-observed", "aria-hidden": "true" }), "Observed"),
    element("li", {}, element("span", { class: "key-expected", "aria-hidden": "true" }), "Expected"),
    element("li", {}, element("span", { class: "key-band", "aria-hidden": "true" }), "Up to the threshold"),
    element("li", {}, element("span", { class: "key-alarm", "aria-hidden": "true" }), "Alarm"),
  );
  if (withheld) key.append(element("li", {}, element("span", { class: "key-withheld", "aria-hidden": "true" }), "Withheld"));
  const table = element(
    "details",
    { class: "series-table" },
    element("summary", { text: "The series as a table" }),
    element(
      "table",
      {},
      element("thead", {}, element("tr", {}, ...["Period", "Observed", "Expected", "Threshold", "Alarm"].map((t, i) => element("th", { scope: "col", class: i ? "num" : "", text: t })))),
      element(
        "tbody",
        {},
        ...series.map((p) =>
          element(
            "tr",
            { class: p.alarm ? "alarm" : "" },
            element("th", { scope: "row", text: p.period }),
            element("td", { class: "num", text: p.observed === null ? "withheld" : number(p.observed, 0) }),
            element("td", { class: "num", text: number(p.expected) }),
            element("td", { class: "num", text: number(p.threshold) }),
            element("td", { class: "num", text: p.alarm ? "yes" : p.reason ? `– (${p.reason})` : "" }),
          ),
        ),
      ),
    ),
  );
  return [element("figure", { class: "chart alert-chart" }, chart, key), table];
}
