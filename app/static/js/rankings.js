// The planners' page: the ranking of an index for a period (GET /rankings, public), a
// sortable table, a bar chart of scores with rank bands, CSV/XLSX downloads and a plain
// description of the index (GET /indexes/{code}). What the page says is what the API
// says: districts whose rank bands overlap share a range of ranks ("5–6"), each
// indicator is named with its denominator, census year and smoothing, a contribution is
// explained where it is shown, and the outlier rule that applied is stated with every
// value it changed.
import { ServiceError, categoryName, clearError, element, getJSON, number, rankChange, sequential, showError, url } from "./api.js";

const errorBox = document.getElementById("error");
const indexSelect = document.getElementById("index");
const periodSelect = document.getElementById("period");
const tbody = document.querySelector("#table tbody");
let rows = [];
let weights = {};
let sort = { key: "rank", ascending: true };

function fail(error) {
  const message = error instanceof ServiceError ? error.message : `Something went wrong: ${error.message}`;
  showError(errorBox, `${message} The ranking cannot be shown.`);
  document.body.dataset.state = "error";
}

async function start() {
  const params = new URLSearchParams(location.search);
  const { items } = await getJSON("indexes");
  if (!items.length) throw new ServiceError("No composite index is defined yet.", 404);
  for (const item of items) {
    indexSelect.append(element("option", { value: item.code, text: item.title || item.code }));
  }
  indexSelect.value = params.get("index") && items.some((i) => i.code === params.get("index")) ? params.get("index") : items[0].code;
  indexSelect.addEventListener("change", () => chooseIndex(items, null).catch(fail));
  periodSelect.addEventListener("change", () => load().catch(fail));
  for (const button of document.querySelectorAll("th button")) {
    button.addEventListener("click", () => sortBy(button.dataset.sort));
  }
  await chooseIndex(items, params.get("period"));
}

async function chooseIndex(items, wanted) {
  const item = items.find((i) => i.code === indexSelect.value);
  describe(item);
  const { periods, latest } = await getJSON(`indexes/${encodeURIComponent(item.code)}/periods`);
  periodSelect.replaceChildren(...periods.slice().reverse().map((p) => element("option", { value: p, text: p })));
  if (!periods.length) throw new ServiceError("There are no incidents yet, so no period to rank.", 404);
  // A period named in the page's address is asked for as it is: the service says if it is wrong.
  if (wanted && !periods.includes(wanted)) periodSelect.append(element("option", { value: wanted, text: wanted }));
  periodSelect.value = wanted || latest;
  await load();
}

function describe(item) {
  const d = item.definition;
  weights = Object.fromEntries(d.indicators.map((i) => [i.code, i.weight ?? 1]));
  const dims = (d.dimensions || []).map((x) => x.name || x.code).join("; ");
  document.getElementById("about-title").textContent = `What the ${item.title || item.code} measures`;
  document.getElementById("about-text").textContent =
    (d.description ? `${d.description} ` : "") +
    `It combines ${d.indicators.length} indicators` + (dims ? ` in these dimensions: ${dims}.` : ".") +
    ` Each indicator is rescaled to 0–100 (${method(d.normalisation, "minmax")}), weighted and averaged` +
    ` (${method(d.aggregation, "arithmetic")}), so a district's score (0–100) is the weighted sum of its` +
    ` indicators' contributions, and districts fall into ${d.classes?.k ?? 3} map classes. Version ${item.version}.`;
  document.getElementById("indicators").replaceChildren(
    ...d.indicators.map((i) => element("li", { text: `${i.name || categoryName(i.code)}${i.weight && i.weight !== 1 ? ` (weight ${i.weight})` : ""}` })),
  );
  document.getElementById("indicators").dataset.k = d.classes?.k ?? 3;
}

// A method is a name or {method: name, ...} in a definition.
function method(value, fallback) {
  if (!value) return fallback;
  return typeof value === "object" ? value.method || value.type || fallback : String(value);
}

async function load() {
  clearError(errorBox);
  document.body.dataset.state = "loading";
  const params = { index: indexSelect.value, period: periodSelect.value };
  history.replaceState(null, "", `?${new URLSearchParams(params)}`);
  document.getElementById("csv").href = url("rankings", { ...params, format: "csv" });
  document.getElementById("xlsx").href = url("rankings", { ...params, format: "xlsx" });
  const ranking = await getJSON("rankings", params);
  rows = ranking.rows;
  document.getElementById("caption").textContent =
    `${ranking.title || ranking.index}, ${ranking.period} (version ${ranking.version}); change since ${ranking.previous_period}; ` +
    `bands over ${ranking.runs.toLocaleString("en")} Monte Carlo runs with seed ${ranking.seed} (the definition's, the same on every request).`;
  notes(ranking);
  indicators(ranking);
  treatment(ranking);
  sort = { key: "rank", ascending: true };
  render();
  chart(ranking);
  document.body.dataset.state = "ready";
}

// The public-view note (what the contributions column shows, and why) beside the table;
// every note of the ranking in the list below it.
function notes(ranking) {
  const publicView = ranking.notes.find((n) => n.startsWith("Public view:"));
  const box = document.getElementById("contributions-note");
  box.textContent = publicView || "";
  box.hidden = !publicView;
  document.getElementById("contribution-meaning").textContent = ranking.contributions;
  const above = ranking.contributions.includes("above the lowest") ? "points above the lowest district" : "score points";
  document.getElementById("contributions-heading").textContent = `Largest contributions (${above}${publicView ? "; without values" : ""})`;
  document.getElementById("ties").replaceChildren(...ranking.ties.map((t) => element("li", { text: t })));
  document.getElementById("notes").replaceChildren(...ranking.notes.map((n) => element("li", { text: n })));
  document.getElementById("notes-box").hidden = !ranking.notes.length;
}

// Each indicator as the API describes it for this period: what is counted, per whom, the
// census year of the denominator and the smoothing.
function indicators(ranking) {
  const list = document.getElementById("indicators");
  list.replaceChildren(
    ...ranking.indicators.map((i) => {
      const parts = [];
      if (i.per) parts.push(`per ${i.per}`);
      if (i.census_years.length) parts.push(`${i.census_years.join(", ")} census`);
      parts.push(i.smoothing ? "EB-smoothed toward the national rate" : i.measure === "rate" ? "not smoothed" : null);
      const item = element("li", {}, element("strong", { text: i.name }));
      if (weights[i.code] && weights[i.code] !== 1) parts.push(`weight ${weights[i.code]}`);
      const detail = parts.filter(Boolean).join("; ");
      if (detail) item.append(` — ${detail}.`);
      if (i.description) item.append(element("br"), element("span", { class: "note", text: i.description }));
      return item;
    }),
  );
}

// The outlier rule that applied, every value it changed (with the value before), and,
// where the service gives them, the scores with and without the treatment.
function treatment(ranking) {
  document.getElementById("treatment-rule").textContent = ranking.treatment.rule;
  const treated = ranking.rows.flatMap((r) =>
    r.treated_values.map((t) => {
      const how = t.action === "log" ? "log-transformed" : "winsorised";
      const values = t.original === null ? "values withheld without an analyst key" : `${number(t.original)} counted as ${number(t.treated)}`;
      return element("li", { text: `${r.unit_name} — ${t.name}: ${how}, ${values}` });
    }),
  );
  document.getElementById("treated").replaceChildren(...treated);
  document.getElementById("treated-box").hidden = !treated.length;
  const comparison = ranking.treatment_comparison;
  document.getElementById("comparison-box").hidden = !comparison;
  document.querySelector("#comparison tbody").replaceChildren(
    ...(comparison || []).map((c) =>
      element(
        "tr",
        {},
        element("th", { scope: "row", text: c.unit_name }),
        element("td", { class: "num", text: `${number(c.score)} (${c.rank ?? "–"})` }),
        element("td", { class: "num", text: `${number(c.score_untreated)} (${c.rank_untreated ?? "–"})` }),
        element("td", { class: "num", text: `${number(c.score_jrc)} (${c.rank_jrc ?? "–"})` }),
      ),
    ),
  );
}

// Points with one decimal, more for small ones, so that no listed value reads as 0.0.
function points(value) {
  return number(value, Math.abs(value) < 0.1 ? 3 : 1);
}

function value(row, key) {
  if (key === "band") return row.rank_q95 - row.rank_q05;
  return row[key];
}

function sortBy(key) {
  sort = { key, ascending: sort.key === key ? !sort.ascending : true };
  render();
}

function render() {
  const sorted = rows.slice().sort((a, b) => {
    const x = value(a, sort.key);
    const y = value(b, sort.key);
    const order = x === null ? 1 : y === null ? -1 : x < y ? -1 : x > y ? 1 : 0;
    return sort.ascending ? order : -order;
  });
  for (const th of document.querySelectorAll("#table th")) {
    const button = th.querySelector("button");
    if (!button) continue;
    th.setAttribute("aria-sort", button.dataset.sort === sort.key ? (sort.ascending ? "ascending" : "descending") : "none");
  }
  const k = Number(document.getElementById("indicators").dataset.k || 3);
  const colours = sequential(k);
  tbody.replaceChildren(
    ...sorted.map((r) => {
      const tr = element("tr", { "data-unit": r.unit_code });
      const swatch = element("span", { class: "swatch", style: `background:${colours[(r.class || 1) - 1]}`, "aria-hidden": "true" });
      // Without an analyst key, an index with indicators counted from sensitive categories
      // names its other largest contributors without values (contribution null).
      const top = r.top_indicators.map((c) => (c.contribution === null ? c.name : `${c.name}: ${points(c.contribution)}`)).join("; ");
      // Districts the data cannot order share a range of ranks ("5–6"), said beside the name.
      const name = element("th", { scope: "row", text: r.unit_name });
      if (r.shares_ranks_with.length) {
        name.append(element("br"), element("span", { class: "note tie", text: `shares ranks ${r.ranks} with ${r.shares_ranks_with.join(", ")}: the data cannot order them` }));
      }
      tr.append(
        element("td", { class: r.shares_ranks_with.length ? "num shared" : "num", text: r.ranks || "–" }),
        name,
        element("td", { class: "num", text: number(r.score) }),
        element("td", { class: "num", text: `${number(r.rank_q05, 0)}–${number(r.rank_q95, 0)} (median ${number(r.median_rank, 1)})` }),
        element("td", { class: "num" }, swatch, `${r.class ?? "–"} of ${k}`),
        element("td", { text: rankChange(r.rank_change) }),
        element("td", { text: top || "–" }),
      );
      return tr;
    }),
  );
}

// A horizontal bar per district in rank order: score bar, then the rank band drawn on a
// small rank axis (1..n) to its right. SVG built here; no chart library, nothing fetched.
function chart(ranking) {
  const n = ranking.rows.length;
  const width = 760;
  const rowHeight = 30;
  const left = 130;
  const barMax = 380;
  const bandLeft = left + barMax + 64; // room for the score written after the longest bar
  const bandWidth = width - bandLeft - 20;
  const height = n * rowHeight + 40;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `Scores of ${n} districts with their rank bands`);
  const k = Number(document.getElementById("indicators").dataset.k || 3);
  const colours = sequential(k);
  const add = (tag, attributes, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [name, v] of Object.entries(attributes)) node.setAttribute(name, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  add("text", { x: width - 4, y: 14, "font-size": 12, "text-anchor": "end" }, "Rank band (1 = highest priority)");
  const rankX = (rank) => bandLeft + ((rank - 1) / Math.max(1, n - 1)) * bandWidth;
  ranking.rows.forEach((r, i) => {
    const y = 24 + i * rowHeight;
    add("text", { x: left - 8, y: y + 16, "text-anchor": "end", "font-size": 13 }, `${r.ranks || "–"}. ${r.unit_name}`);
    const w = Math.max(1, ((r.score ?? 0) / 100) * barMax);
    add("rect", { x: left, y: y + 4, width: w, height: 18, fill: colours[(r.class || 1) - 1], stroke: "#4d4d4d" });
    add("text", { x: left + w + 4, y: y + 17, "font-size": 12 }, number(r.score));
    if (r.rank_q05 !== null) {
      add("line", { x1: rankX(r.rank_q05), x2: rankX(r.rank_q95), y1: y + 13, y2: y + 13, stroke: "#1f1f1f", "stroke-width": 3 });
      add("circle", { cx: rankX(r.rank), cy: y + 13, r: 5, fill: "#1f1f1f" });
    }
  });
  for (let rank = 1; rank <= n; rank++) {
    add("text", { x: rankX(rank), y: height - 4, "text-anchor": "middle", "font-size": 11 }, String(rank));
  }
  document.getElementById("chart").replaceChildren(svg);
}

start().catch(fail);
