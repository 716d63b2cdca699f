// The web map: MapLibre GL JS on the service's own style (/styles/default.json), with the
// districts coloured by the chosen index and period (GET /rankings, public), the hot spot
// run of choice, and, with an analyst key, incidents (vector tiles, clustered at low zoom)
// and density hot areas. It reads only public interfaces, so it doubles as a reference
// client for other web maps.
//
// Without an analyst key, /stats answers only a fixed lattice of tables (app/services/
// lattice.py): one whole month, quarter or year, at most one category and one victim's
// sex, and an age range only when it is one declared age group. The district panel asks
// for nothing else then (latticeParams); with an analyst key it keeps the free filters.
import { alertsUseKey, setupAlerts } from "./alerts.js";
import { ServiceError, categoryName, clearError, element, getJSON, number, rankChange, sequential, showError, url } from "./api.js";

const $ = (id) => document.getElementById(id);
const mapError = $("map-error");
const state = {
  // Set by useKey only for a key that may read incidents: the analyst role or above (a
  // viewer key is refused there), so a key here means free /stats queries.
  key: null,
  // The declared age groups of public tables; replaced by the service's own
  // (parameters.age_groups of a /stats answer) once one arrives.
  ageGroups: parseAgeGroups("0-14,15-29,30-44,45-64,65+"),
  indexes: [],
  ranking: null,
  runs: [],
  months: [],
  stats: null,
  selected: null,
};
// The style's district class colours (app/symbology.py), read from its legend metadata.
let classColours = [];
const NO_DATA = "#d9d9d9";

function fail(error, where = "") {
  const message = error instanceof ServiceError ? error.message : `Something went wrong: ${error.message}`;
  showError(mapError, `${where}${message}`);
}

// --- the style: the service's, minus what this page adds or changes ------------------

async function loadStyle() {
  const style = await getJSON("styles/default.json");
  // Incident tiles need a key: left out until one is entered, so that a visitor's map
  // makes no request that must fail.
  for (const [id, source] of Object.entries(style.sources)) {
    if (id === "incidents") {
      state.incidentSource = source;
      delete style.sources[id];
    }
  }
  style.layers = style.layers.filter((layer) => layer.source !== "incidents");
  if (!style.sources["units-1"]) throw new ServiceError("No districts are loaded.", 404);
  // Feature ids from the unit code, so that the ranking's classes join as feature state.
  style.sources["units-1"].promoteId = { "units-1": "code" };
  const fill = style.layers.find((layer) => layer.id === "units-1-fill");
  classColours = (fill?.metadata?.["observatory:legend"] || []).map((entry) => entry.colour);
  fill.paint["fill-color"] = NO_DATA;
  fill.paint["fill-opacity"] = 0.8;
  // Place names (the service's glyphs and /labels.geojson) stay on top of what the page adds.
  state.labelLayers = style.layers.filter((layer) => layer.source === "labels").map((layer) => layer.id);
  const labelsAt = style.layers.findIndex((layer) => layer.source === "labels");
  style.layers.splice(labelsAt < 0 ? style.layers.length : labelsAt, 0, {
    id: "units-1-selected",
    type: "line",
    source: "units-1",
    "source-layer": "units-1",
    paint: {
      "line-color": "#000000",
      "line-width": ["case", ["boolean", ["feature-state", "selected"], false], 3.5, 0],
    },
  });
  state.runs = style.layers.filter((layer) => layer.id.startsWith("hotspots-")).map((layer) => layer.source);
  state.hotspotLegend = style.layers.find((layer) => layer.id.startsWith("hotspots-"))?.metadata?.["observatory:legend"] || [];
  return style;
}

function transformRequest(resource) {
  const own = resource.startsWith(location.origin) || resource.startsWith(new URL(document.baseURI).origin);
  // The sensitive monitors' alerts (alerts.js adds that layer once a key is accepted).
  const keyed = resource.includes("/tiles/incidents/") || resource.includes("/tiles/alerts-sensitive");
  if (state.key && own && keyed) {
    return { url: resource, headers: { Authorization: `Bearer ${state.key}` } };
  }
  return { url: resource };
}

// --- filters -------------------------------------------------------------------------

function monthLabel(i) {
  const m = state.months[i];
  return m ? m.toLocaleString("en", { month: "short", year: "numeric", timeZone: "UTC" }) : "";
}

function range() {
  const from = state.months[Number($("from").value)];
  const last = state.months[Number($("to").value)];
  if (!from || !last) return null;
  const to = new Date(Date.UTC(last.getUTCFullYear(), last.getUTCMonth() + 1, 1));
  // Whole days, read by the service in the territory's local time on every route, so
  // that the incident tiles and the district counts of /stats select the same incidents.
  const day = (d) => d.toISOString().slice(0, 10);
  return { fromDay: day(from), toDay: day(to) };
}

function filters() {
  const ageMin = $("age-min").value;
  const ageMax = $("age-max").value;
  return { category: $("category").value, sex: $("sex").value, ageMin, ageMax, range: range() };
}

// The incident tile URL template with the filters as query parameters (OGC API / CQL2).
function incidentTiles() {
  const f = filters();
  const template = state.incidentSource.tiles[0];
  const params = new URLSearchParams();
  if (f.category) params.set("category", f.category);
  if (f.sex) params.set("victim_sex", f.sex);
  if (f.range) {
    params.set("occurred_from", f.range.fromDay);
    params.set("occurred_to", f.range.toDay);
  }
  const age = [];
  if (f.ageMin !== "") age.push(`victim_age >= ${Number(f.ageMin)}`);
  if (f.ageMax !== "") age.push(`victim_age <= ${Number(f.ageMax)}`);
  if (age.length) params.set("filter", age.join(" AND "));
  const query = params.toString().replaceAll("%7B", "{").replaceAll("%7D", "}");
  return query ? `${template}?${query}` : template;
}

// Free /stats parameters: any month range and age range (an analyst key's).
function statsParams(extra) {
  const f = filters();
  return {
    level: 1,
    category: f.category,
    victim_sex: f.sex,
    age_min: f.ageMin,
    age_max: f.ageMax,
    occurred_from: f.range?.fromDay,
    occurred_to: f.range?.toDay,
    ...extra,
  };
}

function parseAgeGroups(groups) {
  return groups.map
    ? groups.map((g) => parseAgeGroups(g)[0])
    : groups.split(",").map((text) => {
        const label = text.trim();
        const [first, last] = label.endsWith("+") ? [label.slice(0, -1), null] : label.split("-");
        return { label, first: Number(first), last: last === null || last === undefined ? null : Number(last) };
      });
}

// The one declared age group the age filter names (null: no age filter), or undefined when
// it names none, e.g. 20-25: public tables then count every age (the panel says so).
function ageGroup(f) {
  if (f.ageMin === "" && f.ageMax === "") return null;
  const first = f.ageMin === "" ? 0 : Number(f.ageMin);
  const last = f.ageMax === "" ? null : Number(f.ageMax);
  return state.ageGroups.find((g) => g.first === first && g.last === last);
}

function periodLabel(value) {
  if (/^\d{4}$/.test(value)) return value;
  if (/-Q\d$/.test(value)) return `${value.slice(5)} ${value.slice(0, 4)}`;
  const [year, month] = value.split("-").map(Number);
  return new Date(Date.UTC(year, month - 1, 1)).toLocaleString("en", { month: "long", year: "numeric", timeZone: "UTC" });
}

// The one period of a public table for the selected months (slider positions, inclusive):
// the month, quarter or year they cover exactly; else the last whole year inside them,
// else the last whole quarter, else the last month.
function latticePeriod() {
  const first = Number($("from").value);
  const last = Number($("to").value);
  const at = (i) => state.months[i];
  const month = (d) => d.getUTCMonth();
  const year = (d) => d.getUTCFullYear();
  const quarter = (d) => Math.floor(month(d) / 3) + 1;
  const pad = (m) => String(m + 1).padStart(2, "0");
  if (!at(first) || !at(last)) return null;
  if (first === last) return { value: `${year(at(first))}-${pad(month(at(first)))}`, exact: true };
  if (last - first === 2 && month(at(first)) % 3 === 0) return { value: `${year(at(first))}-Q${quarter(at(first))}`, exact: true };
  if (last - first === 11 && month(at(first)) === 0) return { value: String(year(at(first))), exact: true };
  for (let i = last - 11; i >= first; i--) if (month(at(i)) === 0) return { value: String(year(at(i))), exact: false };
  for (let i = last - 2; i >= first; i--) if (month(at(i)) % 3 === 0) return { value: `${year(at(i))}-Q${quarter(at(i))}`, exact: false };
  return { value: `${year(at(last))}-${pad(month(at(last)))}`, exact: false };
}

// Public /stats parameters: a cell of the lattice (one period, at most one category and
// one sex, an age range only if it is one declared group).
function latticeParams(extra) {
  const f = filters();
  const group = ageGroup(f);
  return {
    level: 1,
    period: latticePeriod()?.value,
    category: f.category,
    victim_sex: f.sex,
    age_min: group ? group.first : "",
    age_max: group && group.last !== null ? group.last : "",
    ...extra,
  };
}

// --- the map -------------------------------------------------------------------------

async function start() {
  if (typeof maplibregl === "undefined") {
    throw new ServiceError("MapLibre GL JS is not installed on this server (run scripts/setup.sh).", 0);
  }
  const [style, indexes, collections] = await Promise.all([loadStyle(), getJSON("indexes"), getJSON("collections")]);
  state.indexes = indexes.items.filter((item) => (item.definition.unit_level ?? 1) === 1);
  if (!state.indexes.length) throw new ServiceError("No composite index is defined for districts.", 404);
  for (const item of state.indexes) $("index").append(element("option", { value: item.code, text: item.title || item.code }));
  const titles = Object.fromEntries(collections.collections.map((c) => [c.id, c.title]));
  for (const run of state.runs.slice().reverse()) $("run").append(element("option", { value: run, text: titles[run] || run }));
  if (!state.runs.length) {
    $("run").append(element("option", { value: "", text: "No hot spot run published" }));
    $("show-hotspots").disabled = true;
  }
  legendHotspots();

  const map = new maplibregl.Map({
    container: "map",
    style,
    transformRequest,
    attributionControl: { compact: true },
    // Keeps the drawn pixels readable, so that the browser tests can sample them.
    canvasContextAttributes: { preserveDrawingBuffer: true },
  });
  state.map = map;
  window.observatoryMap = map;
  map.addControl(new maplibregl.NavigationControl(), "top-left");
  map.on("error", (event) => {
    const status = event.error?.status;
    if (status) fail(new ServiceError(`A map layer could not be loaded (HTTP ${status}).`, status));
  });
  await new Promise((resolve) => map.on("load", resolve));
  const bounds = (await getJSON("tiles/units-1.json")).bounds;
  if (bounds) map.fitBounds([[bounds[0], bounds[1]], [bounds[2], bounds[3]]], { padding: 20, animate: false });

  map.on("click", "units-1-fill", (event) => {
    const feature = event.features[0];
    if (feature) openPanel(feature.properties.code).catch((e) => fail(e, "District panel: "));
  });
  map.on("mouseenter", "units-1-fill", () => (map.getCanvas().style.cursor = "pointer"));
  map.on("mouseleave", "units-1-fill", () => (map.getCanvas().style.cursor = ""));

  $("index").addEventListener("change", () => chooseIndex().catch(fail));
  $("period").addEventListener("change", () => {
    setRangeToPeriod();
    refresh().catch(fail);
  });
  $("district").addEventListener("change", () => {
    if ($("district").value) openPanel($("district").value).catch((e) => fail(e, "District panel: "));
  });
  $("run").addEventListener("change", showRun);
  $("show-hotspots").addEventListener("change", showRun);
  $("show-districts").addEventListener("change", () =>
    map.setLayoutProperty("units-1-fill", "visibility", $("show-districts").checked ? "visible" : "none"),
  );
  $("show-incidents").addEventListener("change", showIncidents);
  $("show-labels").addEventListener("change", () => {
    for (const id of state.labelLayers) map.setLayoutProperty(id, "visibility", $("show-labels").checked ? "visible" : "none");
  });
  $("show-kde").addEventListener("change", () => loadKde().catch((e) => fail(e, "Density: ")));
  for (const id of ["category", "sex", "age-min", "age-max", "from", "to"]) {
    $(id).addEventListener("change", () => refreshFilters().catch(fail));
  }
  for (const id of ["from", "to"]) $(id).addEventListener("input", rangeLabels);
  $("use-key").addEventListener("click", () => useKey().catch((e) => fail(e, "Key: ")));
  $("key").addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      useKey().catch((e) => fail(e, "Key: "));
    }
  });
  $("panel-close").addEventListener("click", closePanel);
  $("choices").addEventListener("submit", (event) => event.preventDefault());
  showRun();
  // The alerts panel (alerts.js) reports its own errors; the map works without it.
  await setupAlerts({ map, key: () => state.key, before: state.labelLayers[0] });
  await chooseIndex();
  document.body.dataset.state = "ready";
}

async function chooseIndex() {
  const code = $("index").value;
  const { periods, latest } = await getJSON(`indexes/${encodeURIComponent(code)}/periods`);
  $("period").replaceChildren(...periods.slice().reverse().map((p) => element("option", { value: p, text: p })));
  if (!periods.length) throw new ServiceError("There are no incidents yet, so no period to map.", 404);
  // A period named in the page's address is asked for as it is: the service says if it is wrong.
  const wanted = state.firstLoad === undefined ? new URLSearchParams(location.search).get("period") : null;
  state.firstLoad = false;
  if (wanted && !periods.includes(wanted)) $("period").append(element("option", { value: wanted, text: wanted }));
  $("period").value = wanted || latest;
  // The time slider spans every month of the index's periods.
  state.months = [];
  const first = Number(periods[0].slice(0, 4));
  const last = Number(periods[periods.length - 1].slice(0, 4));
  for (let year = first; year <= last; year++) for (let m = 0; m < 12; m++) state.months.push(new Date(Date.UTC(year, m, 1)));
  for (const id of ["from", "to"]) $(id).max = String(state.months.length - 1);
  setRangeToPeriod();
  await refresh();
}

function setRangeToPeriod() {
  const year = Number($("period").value.slice(0, 4));
  const first = Math.max(0, Math.min(state.months.findIndex((m) => m.getUTCFullYear() === year), state.months.length - 12));
  $("from").value = String(Math.max(0, first));
  $("to").value = String(Math.max(0, first) + 11);
  rangeLabels();
}

function rangeLabels() {
  if (Number($("from").value) > Number($("to").value)) $("to").value = $("from").value;
  $("from-label").textContent = monthLabel(Number($("from").value));
  $("to-label").textContent = monthLabel(Number($("to").value));
}

async function refresh() {
  clearError(mapError);
  const code = $("index").value;
  // With an analyst key the ranking lists every contribution with its value.
  const ranking = await getJSON("rankings", { index: code, period: $("period").value }, state.key);
  state.ranking = ranking;
  const map = state.map;
  const k = Number(state.indexes.find((i) => i.code === code).definition.classes?.k ?? 3);
  const colours = classColours.length === k ? classColours : sequential(k);
  const match = ["match", ["coalesce", ["feature-state", "class"], 0]];
  colours.forEach((colour, i) => match.push(i + 1, colour));
  match.push(NO_DATA);
  map.setPaintProperty("units-1-fill", "fill-color", match);
  for (const row of ranking.rows) {
    map.setFeatureState({ source: "units-1", sourceLayer: "units-1", id: row.unit_code }, { class: row.class, rank: row.rank });
  }
  legendIndex(ranking, colours);
  const current = $("district").value;
  $("district").replaceChildren(
    element("option", { value: "", text: "Choose a district…" }),
    ...ranking.rows.slice().sort((a, b) => a.unit_name.localeCompare(b.unit_name)).map((r) => element("option", { value: r.unit_code, text: r.unit_name })),
  );
  $("district").value = current;
  await refreshFilters();
}

async function refreshFilters() {
  rangeLabels();
  state.stats = null;
  if (state.key && state.map.getSource("incidents")) state.map.getSource("incidents").setTiles([incidentTiles()]);
  if ($("show-kde").checked) await loadKde();
  if ($("category").options.length === 1) await loadCategories();
  if (state.selected) await openPanel(state.selected);
}

async function loadCategories() {
  // A lattice table (one whole period), which every caller may ask for.
  const table = await getJSON("stats", { level: 0, by: "category", period: latticePeriod()?.value });
  if (table.parameters?.age_groups?.length) state.ageGroups = parseAgeGroups(table.parameters.age_groups);
  const codes = [...new Set(table.rows.map((r) => r.category))];
  for (const code of codes) $("category").append(element("option", { value: code, text: categoryName(code) }));
}

function showRun() {
  const chosen = $("run").value;
  for (const run of state.runs) {
    const visible = $("show-hotspots").checked && run === chosen;
    state.map?.setLayoutProperty(`${run}-fill`, "visibility", visible ? "visible" : "none");
  }
}

// --- the key and the analyst layers ------------------------------------------------------

async function useKey() {
  const key = $("key").value.trim();
  $("key-status").textContent = "";
  if (!key) return;
  try {
    await getJSON("collections/incidents", {}, key);
  } catch (error) {
    $("key-status").textContent = error.status === 403 ? "This key may not read incidents (analyst role needed)." : "This key was not accepted.";
    throw error;
  }
  state.key = key;
  state.stats = null; // the district counts are asked again, with the free filters
  clearError(mapError);
  $("key-status").textContent = "Key accepted: incidents shown.";
  $("show-incidents").disabled = false;
  $("show-kde").disabled = false;
  $("show-incidents").checked = true;
  showIncidents();
  await alertsUseKey();
  await refresh();
}

function showIncidents() {
  const map = state.map;
  if (!map.getSource("incidents")) {
    map.addSource("incidents", { ...state.incidentSource, tiles: [incidentTiles()] });
    map.addLayer({
      id: "incidents-circle",
      type: "circle",
      source: "incidents",
      "source-layer": "incidents",
      paint: {
        // Below z12 a point is a cluster with its count: area grows with the count.
        "circle-color": "#252525",
        "circle-opacity": 0.75,
        "circle-radius": ["min", 30, ["*", 3, ["sqrt", ["max", 1, ["coalesce", ["get", "count"], 1]]]]],
        "circle-stroke-color": "#ffffff",
        "circle-stroke-width": 0.5,
      },
    }, state.labelLayers[0]);
  }
  map.setLayoutProperty("incidents-circle", "visibility", $("show-incidents").checked ? "visible" : "none");
}

async function loadKde() {
  const map = state.map;
  if (!$("show-kde").checked) {
    if (map.getLayer("kde-fill")) map.setLayoutProperty("kde-fill", "visibility", "none");
    return;
  }
  const p = statsParams({ percentile: 90 });
  delete p.level;
  const areas = await getJSON("analyses/kde/areas", p, state.key);
  if (map.getSource("kde")) {
    map.getSource("kde").setData(areas);
  } else {
    map.addSource("kde", { type: "geojson", data: areas });
    map.addLayer(
      { id: "kde-fill", type: "fill", source: "kde", paint: { "fill-color": "#6a51a3", "fill-opacity": 0.45, "fill-outline-color": "#3f007d" } },
      map.getLayer("incidents-circle") ? "incidents-circle" : state.labelLayers[0],
    );
  }
  map.setLayoutProperty("kde-fill", "visibility", "visible");
}

// --- legend and panel ----------------------------------------------------------------

function legendIndex(ranking, colours) {
  $("legend-index-title").textContent = `${ranking.title || ranking.index}, ${ranking.period}`;
  const items = colours.map((colour, i) => {
    const members = ranking.rows.filter((r) => r.class === i + 1);
    const scores = members.map((r) => r.score);
    const span = scores.length ? `scores ${number(Math.min(...scores), 0)}–${number(Math.max(...scores), 0)}` : "no district";
    const note = i === 0 ? " (lowest)" : i === colours.length - 1 ? " (highest)" : "";
    return element("li", { "data-class": i + 1 }, element("span", { class: "swatch", style: `background:${colour}`, "aria-hidden": "true" }), `Class ${i + 1}${note}: ${span}`);
  });
  items.push(element("li", {}, element("span", { class: "swatch", style: `background:${NO_DATA}`, "aria-hidden": "true" }), "No value"));
  $("legend-index").replaceChildren(...items);
}

function legendHotspots() {
  $("legend-hotspots").replaceChildren(
    ...state.hotspotLegend
      .slice()
      .reverse()
      .map((entry) => element("li", {}, element("span", { class: "swatch", style: `background:${entry.colour}`, "aria-hidden": "true" }), entry.label)),
  );
}

async function districtStats() {
  if (state.stats) return state.stats;
  state.stats = state.key ? await analystStats() : await publicStats();
  return state.stats;
}

// Without an analyst key: one lattice table by category and, for one chosen category, one
// by victim's sex (a count over several categories is not a public table).
async function publicStats() {
  const byCategory = await getJSON("stats", latticeParams({ by: "category" }));
  const category = $("category").value;
  const sensitive = new Set(byCategory.parameters.sensitive_categories);
  const bySex = category && !sensitive.has(category) ? await getJSON("stats", latticeParams({ by: "victim_sex" })) : null;
  return { byCategory, bySex, excluded: category && sensitive.has(category) ? [category] : [], period: latticePeriod(), age: ageGroup(filters()) };
}

async function analystStats() {
  const byCategory = await getJSON("stats", statsParams({ by: "category" }), state.key);
  // Totals by sex over the categories the caller may see: without an analyst key the
  // sensitive ones are withheld, and so is any total that includes them.
  const sensitive = new Set(state.key ? [] : byCategory.parameters.sensitive_categories);
  const scope = $("category").value ? [$("category").value] : [...new Set(byCategory.rows.map((r) => r.category))];
  const open = scope.filter((c) => !sensitive.has(c));
  const bySex = open.length
    ? await getJSON("stats", statsParams({ by: "victim_sex", category: open.join(",") }), state.key)
    : { rows: [] };
  return { byCategory, bySex, excluded: scope.filter((c) => sensitive.has(c)), period: null, age: null };
}

function count(row) {
  return row.suppressed ? "withheld" : row.count.toLocaleString("en");
}

async function openPanel(code) {
  const map = state.map;
  if (state.selected) map.setFeatureState({ source: "units-1", sourceLayer: "units-1", id: state.selected }, { selected: false });
  state.selected = code;
  map.setFeatureState({ source: "units-1", sourceLayer: "units-1", id: code }, { selected: true });
  $("district").value = code;
  const row = state.ranking.rows.find((r) => r.unit_code === code);
  const panel = $("panel");
  panel.hidden = false;
  panel.dataset.unit = code;
  $("panel-title").textContent = row ? `${row.unit_name} District` : code;
  const body = $("panel-body");
  body.replaceChildren(element("p", { class: "note", text: "Loading…" }));
  const stats = await districtStats();
  const categories = stats.byCategory.rows.filter((r) => r.unit_code === code);
  const sexes = (stats.bySex?.rows || []).filter((r) => r.unit_code === code);
  const population = categories.find((r) => r.population !== null);
  const r = row || {};
  const facts = element("dl", {});
  const fact = (term, value, name) => facts.append(element("dt", { text: term }), element("dd", { text: value, "data-field": name }));
  fact("Population", population ? `${Math.round(population.population).toLocaleString("en")} (${population.population_year})` : "–", "population");
  fact("Score", `${number(r.score)} of 100`, "score");
  fact("Rank", `${r.rank ?? "–"} of ${state.ranking.rows.length}`, "rank");
  fact("Rank band (5–95 %)", `${number(r.rank_q05, 0)}–${number(r.rank_q95, 0)}`, "band");
  fact("Class", `${r.class ?? "–"}`, "class");
  fact("Change", rankChange(r.rank_change), "change");
  // Without an analyst key an index with indicators counted from sensitive categories
  // lists its other indicators by name only (contribution null): with the score, any
  // value shown would bound the withheld ones.
  const contributors = r.top_indicators || [];
  const top = element("ol", {}, ...contributors.map((c) => element("li", { text: c.contribution === null ? c.name : `${c.name}: ${number(c.contribution)} points` })));
  const unvalued = contributors.some((c) => c.contribution === null) || (!contributors.length && state.ranking.notes.some((n) => n.startsWith("Public view:")));
  const f = filters();
  const months = f.range ? `${monthLabel(Number($("from").value))} – ${monthLabel(Number($("to").value))}` : "";
  const period = stats.period;
  const when = !period
    ? months
    : period.exact
      ? periodLabel(period.value)
      : `${periodLabel(period.value)}, the last whole ${period.value.length === 4 ? "year" : period.value.includes("Q") ? "quarter" : "month"} of ${months} (without an analyst key, counts are for one whole month, quarter or year)`;
  const catTable = element(
    "table",
    {},
    element("caption", { class: "note", text: `Incidents, ${when}` }),
    element("thead", {}, element("tr", {}, element("th", { scope: "col", text: "Category" }), element("th", { scope: "col", class: "num", text: "Count" }))),
    element("tbody", {}, ...categories.map((c) => element("tr", {}, element("th", { scope: "row", text: categoryName(c.category) }), element("td", { class: "num", text: count(c) })))),
  );
  const sexTable = element(
    "table",
    {},
    element("caption", { class: "note", text: `Incidents, ${when}` }),
    element("thead", {}, element("tr", {}, element("th", { scope: "col", text: "Victim's sex" }), element("th", { scope: "col", class: "num", text: "Count" }))),
    element("tbody", {}, ...sexes.map((c) => element("tr", {}, element("th", { scope: "row", text: categoryName(c.victim_sex) }), element("td", { class: "num", text: count(c) })))),
  );
  let sexPart;
  if (stats.bySex === null && !stats.excluded.length) {
    sexPart = element("p", { class: "note", "data-note": "sex", text: "Choose a category to see counts by victim's sex (without an analyst key a count by sex covers one category)." });
  } else if (sexes.length) {
    sexPart = sexTable;
  } else {
    sexPart = element("p", { class: "note", text: stats.period ? "Withheld: the category is sensitive." : "Withheld: every selected category is sensitive." });
  }
  const parts = [
    facts,
    element("h3", { text: "Largest contributions to the score" }),
    contributors.length ? top : element("p", { class: "note", text: "–" }),
  ];
  if (unvalued) {
    parts.push(
      element("p", {
        class: "note",
        "data-note": "contributions",
        text: contributors.length
          ? "Largest first, without values: this index has indicators counted from sensitive categories, whose contributions are withheld without an analyst key, and any value shown here would bound them (contributions add up to the score)."
          : "Every indicator of this index is counted from sensitive categories: their contributions are withheld without an analyst key.",
      }),
    );
  }
  parts.push(element("h3", { text: "Counts by category" }), catTable, element("h3", { text: "Counts by victim's sex" }), sexPart);
  if (stats.age === undefined) {
    const groups = state.ageGroups.map((g) => g.label).join(", ");
    parts.push(element("p", { class: "note", "data-note": "age", text: `The age filter is not one of the declared age groups (${groups}): without an analyst key the counts are for every age.` }));
  } else if (stats.age) {
    parts.push(element("p", { class: "note", text: `Victims aged ${stats.age.label}.` }));
  }
  if (stats.excluded.length && !stats.period) {
    parts.push(element("p", { class: "note", text: `Without an analyst key, sensitive categories (${stats.excluded.map(categoryName).join(", ")}) are withheld and left out of the totals by sex.` }));
  }
  if ([...categories, ...sexes].some((c) => c.suppressed)) {
    parts.push(element("p", { class: "note", text: "“withheld”: fewer than 5 incidents, a sensitive category, or a figure that would let one be recomputed." }));
  }
  body.replaceChildren(...parts);
  panel.focus();
}

function closePanel() {
  if (state.selected) state.map.setFeatureState({ source: "units-1", sourceLayer: "units-1", id: state.selected }, { selected: false });
  state.selected = null;
  $("panel").hidden = true;
  $("district").value = "";
  $("district").focus();
}

start().catch((error) => {
  fail(error, "The map cannot be shown: ");
  document.body.dataset.state = "error";
});
