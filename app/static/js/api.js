// Calls to the service's public REST interfaces, and the messages a person reads when
// one fails. Shared by the map and the rankings page.

export class ServiceError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// URLs relative to the page, so that the pages work behind a proxy under a sub-path.
export function url(path, params = {}) {
  const target = new URL(path, document.baseURI);
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") target.searchParams.set(name, value);
  }
  return target.toString();
}

export async function getJSON(path, params = {}, key = null) {
  return request(url(path, params), {}, key);
}

// A JSON body sent with ``method`` (e.g. PATCH /alerts/{id}); the answer's JSON.
export async function sendJSON(method, path, body, key = null) {
  return request(url(path), { method, body: JSON.stringify(body), headers: { "Content-Type": "application/json" } }, key);
}

async function request(target, init, key, polls = 0) {
  const headers = { Accept: "application/json", ...(init.headers || {}) };
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(target, { ...init, headers });
  } catch (error) {
    throw new ServiceError(`The service cannot be reached (${error.message}).`, 0);
  }
  // 202: still computing in a worker (e.g. a ranking's rank bands): ask the Location again
  // after Retry-After seconds, for a few minutes at most.
  if (response.status === 202 && !init.method) {
    if (polls >= 120) throw new ServiceError("The service is still computing this: try again in a few minutes.", 202);
    const seconds = Number(response.headers.get("Retry-After")) || 2;
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    const again = new URL(response.headers.get("Location") || target, response.url).toString();
    return request(again, init, key, polls + 1);
  }
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const body = await response.json();  // application/problem+json
      detail = body.detail || body.title || detail;
    } catch {
      // not JSON: keep the status text
    }
    throw new ServiceError(`The service answered ${response.status}: ${detail}`, response.status);
  }
  return response.json();
}

export function showError(element, message) {
  element.textContent = message;
  element.hidden = false;
}

export function clearError(element) {
  element.textContent = "";
  element.hidden = true;
}

export function number(value, digits = 1) {
  if (value === null || value === undefined) return "–";
  return Number(value).toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function categoryName(code) {
  const text = code.replaceAll("_", " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

export function rankChange(change) {
  if (change === null || change === undefined) return "new";
  if (change > 0) return `▲ ${change} (higher priority)`;
  if (change < 0) return `▼ ${-change} (lower priority)`;
  return "= unchanged";
}

// ColorBrewer YlOrRd interpolated for k classes, lightest first: the same ramp as
// app/symbology.sequential (used when the style's legend has another number of classes).
const YLORRD = ["#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#bd0026", "#800026"];

export function sequential(k) {
  if (k === 1) return [YLORRD[4]];
  const out = [];
  for (let i = 0; i < k; i++) {
    const position = (i * (YLORRD.length - 1)) / (k - 1);
    const low = Math.floor(position);
    const high = Math.min(low + 1, YLORRD.length - 1);
    const t = position - low;
    const a = rgb(YLORRD[low]);
    const b = rgb(YLORRD[high]);
    out.push("#" + a.map((x, j) => Math.round(x + (b[j] - x) * t).toString(16).padStart(2, "0")).join(""));
  }
  return out;
}

function rgb(colour) {
  return [1, 3, 5].map((i) => parseInt(colour.slice(i, i + 2), 16));
}

export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}
