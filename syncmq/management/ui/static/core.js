/* syncmq dashboard, shared core: state, DOM helpers, formatting, the API client, the
 * banner and the write buttons. Every other module imports from here; this one imports
 * nothing (ES modules, loaded by the browser from /static/, no build step).
 *
 * - Every text that comes from the broker is put in the page with textContent (h() never
 *   parses HTML): queue names and payloads are untrusted.
 * - Write controls are disabled for users without the administrator tag, or without the
 *   tags a control names (``writers``: the policy forms also take a policymaker); the API
 *   refuses their writes anyway: a refusal is shown in the banner.
 */
"use strict";

export const S = {
  token: null, user: null, tags: [], overview: null,
  view: null, timer: null, seq: 0,
  history: [],          // overview samples: {t, publish, deliver, ack, ready, unacked}
  last: null,           // the previous overview's counters, for client-side rates
  vhost: "",            // the header's virtual host selection ("" = all); list pages filter on it
};
export const HISTORY_MS = 10 * 60 * 1000;
export const COLORS = { publish: "#1f5fa8", deliver: "#1e7b34", ack: "#a86400" };  // as style.css
export const MGMT_TAGS = ["administrator", "monitoring", "management", "policymaker"];

// ---------------------------------------------------------------- DOM helpers

export function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, kids);
  return el;
}
export function append(el, kids) {
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}
export function fill(el, ...kids) { el.replaceChildren(); return append(el, kids); }
export const $ = (sel, root) => (root || document).querySelector(sel);

// ---------------------------------------------------------------- formatting

export function fmtNum(n) { return n === undefined || n === null ? "-" : Number(n).toLocaleString("en-US"); }
export function fmtRate(r) { return r === undefined || r === null ? "-" : Number(r).toFixed(1) + "/s"; }
export function fmtBytes(n) {
  if (n === undefined || n === null) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0; let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(1) : String(v)) + " " + units[i];
}
export function fmtDuration(ms) {
  let s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hh = Math.floor(s / 3600); s -= hh * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${d}d ${hh}h ${m}m`;
  if (hh) return `${hh}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}
export function rateOf(stats, key) {
  const d = stats && stats[key + "_details"];
  return d ? d.rate : 0;
}
export const enc = encodeURIComponent;
export function vhostLabel(v) { return v === "/" ? "/" : v; }

// ---------------------------------------------------------------- API

export class ApiError extends Error {
  constructor(status, data, fallback) {
    super((data && data.reason) || fallback);
    this.status = status; this.data = data;
  }
}

export async function api(method, path, body, headers) {
  const hdrs = Object.assign({
    "Authorization": "Basic " + S.token,
    "X-Requested-With": "XMLHttpRequest",  // the server then sends no WWW-Authenticate
  }, headers || {});
  const init = { method, headers: hdrs, cache: "no-store" };
  if (body !== undefined) {
    hdrs["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch("/api" + path, init);
  const text = await resp.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch (e) { data = text; } }
  if (!resp.ok) throw new ApiError(resp.status, data, resp.statusText || "HTTP " + resp.status);
  return data;
}

export function isAdmin() { return S.tags.includes("administrator"); }
/** Whether the user has one of ``tags`` (the policy pages also let a policymaker write). */
export function hasTag(tags) { return tags.some(t => S.tags.includes(t)); }

// ---------------------------------------------------------------- banner, errors

let bannerTimer = null;
export function banner(text, kind, fromRefresh) {
  const b = $("#banner");
  b.dataset.refresh = fromRefresh ? "1" : "";  // a refresh that works again clears only its own
  b.className = kind || "error";
  b.textContent = text;
  b.hidden = false;
  clearTimeout(bannerTimer);
  if (kind === "info") bannerTimer = setTimeout(() => { b.hidden = true; }, 6000);
}
export function clearBanner() { $("#banner").hidden = true; }

/** A reason from the parameters and policies endpoints is HTML-escaped by the API
 * (RabbitMQ's UI renders it as HTML); shown as text, it is unescaped first (never parsed). */
export function unescapeReason(text) {
  return String(text).replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"')
    .replace(/&#39;|&#x27;/g, "'").replace(/&amp;/g, "&");
}

/** Report a failed action: a 401 on a write is a refusal of the user's tags. */
export function actionError(what, err, needs) {
  if (err instanceof ApiError && err.status === 401) {
    banner(`Access refused: ${what} needs the ${needs || "administrator"} tag; user '${S.user}' has ` +
           `tags [${S.tags.join(", ") || "none"}] (${err.message})`, "error");
  } else {
    banner(`${what} failed: ${err.message}`, "error");
  }
}

/** A button that changes the broker: disabled (with the reason) unless the user has one of
 * ``attrs.writers`` (default: administrator). */
export function writeButton(label, onclick, cls, attrs) {
  const { writers, ...rest } = attrs || {};
  const allowed = writers || ["administrator"];
  const b = h("button", Object.assign({ type: "button", class: cls || "", "data-write": true,
                                       onclick }, rest), label);
  if (!hasTag(allowed)) {
    b.disabled = true;
    b.title = `Read-only: needs the ${allowed.join(" or ")} tag`;
  }
  return b;
}

/** Two-step confirmation in the page (no modal dialog): "Purge" -> "Really? Yes / Cancel". */
export function confirmButton(label, question, action, attrs) {
  const { id, ...rest } = attrs || {};
  attrs = rest;
  const box = h("span", { class: "confirm", id });
  const yes = h("button", { type: "button", class: "danger", "data-confirm": true }, "Yes, " + label.toLowerCase());
  const no = h("button", { type: "button", class: "secondary" }, "Cancel");
  const ask = h("span", { hidden: true }, " " + question + " ", yes, " ", no);
  const first = writeButton(label, () => { first.hidden = true; ask.hidden = false; }, "danger", attrs);
  no.onclick = () => { first.hidden = false; ask.hidden = true; };
  yes.onclick = async () => {
    yes.disabled = true;
    try { await action(); } finally { yes.disabled = false; first.hidden = false; ask.hidden = true; }
  };
  return append(box, [first, ask]);
}

/** A list the user may not read: ``{note}`` (the reason, shown in place of the table), else
 * ``{items}``. Not asked for without one of ``readers`` (no refused request on every
 * refresh); a 401 still gives the note (a policymaker without permissions on the selected
 * vhost). */
export async function listOrReason(path, readers) {
  const note = { note: `Listing these needs the ${readers.join(" or ")} tag; user '${S.user}' has ` +
                       `tags [${S.tags.join(", ") || "none"}]${hasTag(readers) ? " or no permissions here" : ""}.` };
  if (!hasTag(readers)) return note;
  try { return { items: await api("GET", path) }; } catch (err) {
    if (err instanceof ApiError && err.status === 401) return note;
    throw err;
  }
}

export function readOnlyNote() {
  if (isAdmin()) return null;
  return h("div", { class: "readonly-note", id: "readonly-note" },
    `Read-only: user '${S.user}' has tags [${S.tags.join(", ")}]; changes need the administrator tag.`);
}
export function tile(label, value, id, alarm) {
  return h("div", { class: "tile" + (alarm ? " alarm" : ""), id: id ? "tile-" + id : null },
    h("div", { class: "v" }, value), h("div", { class: "k" }, label));
}

/** A key/value list (<dl class="kv">) from [label, value] pairs; values are nodes or text. */
export function kv(pairs, attrs) {
  return h("dl", Object.assign({ class: "kv" }, attrs || {}),
    pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

/** Fill an existing <dl> with [label, value] pairs. */
export function fillKv(dl, pairs) {
  fill(dl, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

// ---------------------------------------------------------------- virtual hosts

/** ``base`` of a list endpoint narrowed to the selected vhost, as RabbitMQ's API spells it:
 * ``/queues`` -> ``/queues/<vh>``, ``/connections`` -> ``/vhosts/<vh>/connections``. */
export function scoped(base) {
  if (!S.vhost) return base;
  if (base === "/connections" || base === "/channels") return `/vhosts/${enc(S.vhost)}${base}`;
  return `${base}/${enc(S.vhost)}`;
}

/** <option>s of every vhost the user sees, the header's selection (if any) selected. */
export async function vhostOptions() {
  const vhosts = await api("GET", "/vhosts");
  return vhosts.map(v => h("option", { value: v.name, selected: v.name === S.vhost }, v.name));
}

/** Links to a queue, exchange, connection or channel page (hash routes). */
export const link = {
  queue: (vhost, name, attrs) => h("a", Object.assign({ href: `#/queue/${enc(vhost)}/${enc(name)}` }, attrs || {}), name),
  exchange: (vhost, name, attrs) => h("a", Object.assign({ href: `#/exchange/${enc(vhost)}/${enc(name || "amq.default")}` }, attrs || {}),
                                      name || "(AMQP default)"),
  connection: (name, attrs) => h("a", Object.assign({ href: `#/connection/${enc(name)}` }, attrs || {}), name),
  channel: (name, attrs) => h("a", Object.assign({ href: `#/channel/${enc(name)}` }, attrs || {}), name),
};
