/* syncmq dashboard widgets: tables (plain and server-paged), the line chart, the typed
 * arguments editor (queue and binding arguments, as RabbitMQ's UI types them) and the
 * add-binding form. Imports only core.js.
 */
import {
  HISTORY_MS, h, fill, fmtNum, fmtRate, api, ApiError, banner, actionError, writeButton,
  enc,
} from "./core.js";

// ---------------------------------------------------------------- tables

/** A table whose rows come from an array; columns: {label, num, cell(item)}. */
export function simpleTable(columns, items, rowAttrs, empty, id) {
  const head = h("tr", {}, columns.map(c => h("th", { class: c.num ? "num" : "" }, c.label)));
  const rows = items.length ? items.map(it => h("tr", rowAttrs ? rowAttrs(it) : {},
    columns.map(c => h("td", { class: (c.num ? "num " : "") + (c.cls || "") }, c.cell(it)))))
    : [h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty || "Nothing here."))];
  return h("table", { id }, h("thead", {}, head), h("tbody", {}, rows));
}

/** A server-paged table over a list endpoint (RabbitMQ's ?page=&page_size=&name=&sort=).
 * Columns with a ``sort`` key sort on the server; the filter, page and sort survive
 * refreshes. Only one page of rows is ever in the page, whatever the object count. */
export function pagedTable(opts) {
  const st = { page: 1, pageSize: opts.pageSize || 50, name: "", regex: false,
               sort: opts.sort || "", reverse: false };
  const filter = h("input", { type: "search", placeholder: "Filter by name", id: opts.id + "-filter",
                              "aria-label": "Filter by name" });
  const regex = h("input", { type: "checkbox", id: opts.id + "-regex" });
  const size = h("select", { id: opts.id + "-page-size", "aria-label": "Page size" },
    [20, 50, 100, 500].map(n => h("option", { value: n, selected: n === st.pageSize }, n + " per page")));
  const summary = h("span", { class: "muted", id: opts.id + "-summary" });
  const pager = h("div", { class: "pager", id: opts.id + "-pager" });
  const tableBox = h("div", { id: opts.id + "-table" });
  let debounce = null;
  const reload = () => load().catch(err => banner(err.message));
  filter.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { st.name = filter.value; st.page = 1; reload(); }, 250);
  });
  regex.addEventListener("change", () => { st.regex = regex.checked; st.page = 1; reload(); });
  size.addEventListener("change", () => { st.pageSize = Number(size.value); st.page = 1; reload(); });

  let lastData = null;
  let generation = 0;  // a slower, older answer (a refresh racing a click) never wins
  async function load() {
    const mine = ++generation;
    const q = new URLSearchParams({ page: st.page, page_size: st.pageSize });
    if (st.name) { q.set("name", st.name); if (st.regex) q.set("use_regex", "true"); }
    if (st.sort) { q.set("sort", st.sort); if (st.reverse) q.set("sort_reverse", "true"); }
    let data;
    try {
      data = await api("GET", opts.path + "?" + q.toString());
    } catch (err) {
      if (err instanceof ApiError && err.status === 400 && st.page > 1) {  // the page went away
        st.page = 1; return load();
      }
      throw err;
    }
    if (mine !== generation) return;
    lastData = data;
    render(data);
  }
  function header(c) {
    if (!c.sort) return h("th", { class: c.num ? "num" : "" }, c.label);
    let cls = "sortable" + (c.num ? " num" : "");
    if (st.sort === c.sort) cls += st.reverse ? " sorted-desc" : " sorted-asc";
    return h("th", { class: cls, "data-sort": c.sort, title: "Sort by " + c.label, onclick: () => {
      if (st.sort === c.sort) st.reverse = !st.reverse; else { st.sort = c.sort; st.reverse = !!c.num; }
      st.page = 1; reload();
    } }, c.label);
  }
  function render(data) {
    const cols = opts.columns;
    const rows = data.items.length ? data.items.map(it => h("tr", opts.rowAttrs ? opts.rowAttrs(it) : {},
      cols.map(c => h("td", { class: (c.num ? "num " : "") + (c.cls || "") }, c.cell(it)))))
      : [h("tr", {}, h("td", { colspan: cols.length, class: "muted" },
           data.total_count ? "No " + opts.noun + " matches the filter." : "No " + opts.noun + " yet."))];
    fill(tableBox, h("table", { id: opts.id + "-grid" },
      h("thead", {}, h("tr", {}, cols.map(header))), h("tbody", {}, rows)));
    const first = data.item_count ? (data.page - 1) * data.page_size + 1 : 0;
    fill(summary, `${fmtNum(first)}–${fmtNum(first ? first + data.item_count - 1 : 0)} of ` +
      `${fmtNum(data.filtered_count)} ${opts.noun}` +
      (data.filtered_count !== data.total_count ? ` (filtered from ${fmtNum(data.total_count)})` : ""));
    const pages = Math.max(1, data.page_count);
    const go = p => () => { st.page = p; reload(); };
    fill(pager,
      h("button", { type: "button", class: "secondary", disabled: st.page <= 1, onclick: go(1) }, "« First"),
      h("button", { type: "button", class: "secondary", disabled: st.page <= 1, onclick: go(st.page - 1),
                    id: opts.id + "-prev" }, "‹ Prev"),
      h("span", { id: opts.id + "-page-info" }, `Page ${fmtNum(data.page)} of ${fmtNum(pages)}`),
      h("button", { type: "button", class: "secondary", disabled: st.page >= pages, onclick: go(st.page + 1),
                    id: opts.id + "-next" }, "Next ›"),
      h("button", { type: "button", class: "secondary", disabled: st.page >= pages, onclick: go(pages) }, "Last »"));
  }
  const el = h("div", { class: "paged" },
    h("div", { class: "toolbar" }, filter, h("label", {}, regex, " Regex"), size, summary),
    tableBox, pager);
  return { el, load, get data() { return lastData; } };
}

// ---------------------------------------------------------------- chart

/** A line chart on a canvas: series [{label, color, key}], samples [{t, ...}], last 10 min. */
export function lineChart(id, series, unit) {
  const canvas = h("canvas", { class: "chart", id, role: "img", "aria-label": series.map(s => s.label).join(", ") });
  const legend = h("div", { class: "legend" });
  function draw(samples) {
    canvas.dataset.samples = String(samples.length);  // what it was given (tests: bounded)
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 600, hgt = canvas.clientHeight || 240;
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(hgt * dpr);
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, hgt);
    const padL = 56, padR = 12, padT = 10, padB = 24;
    // the time axis spans what there is: 1 minute at least, 10 minutes at most
    const now = Date.now();
    const first = samples.length ? samples[0].t : now;
    const span = Math.min(HISTORY_MS, Math.max(60000, Math.ceil((now - first) / 60000) * 60000));
    const t0 = now - span;
    let max = 0;
    for (const s of samples) for (const se of series) max = Math.max(max, s[se.key] || 0);
    max = niceMax(max);
    const x = t => padL + (w - padL - padR) * (t - t0) / span;
    const y = v => padT + (hgt - padT - padB) * (1 - v / max);
    g.font = "11px system-ui, sans-serif"; g.fillStyle = "#66707f"; g.strokeStyle = "#e3e7ee"; g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const v = max * i / 4, yy = Math.round(y(v)) + 0.5;
      g.beginPath(); g.moveTo(padL, yy); g.lineTo(w - padR, yy); g.stroke();
      g.textAlign = "right"; g.textBaseline = "middle";
      g.fillText(shortNum(v) + (unit || ""), padL - 6, yy);
    }
    g.textAlign = "center"; g.textBaseline = "top";
    const step = span / 5;
    for (let i = 5; i >= 0; i--) {
      const secs = Math.round(i * step / 1000);
      const label = !secs ? "now" : secs % 60 ? `-${secs} s` : `-${secs / 60} min`;
      g.fillText(label, x(now - i * step), hgt - padB + 6);
    }
    // lines thinner one after the other: equal series (publish = deliver = ack) stay visible
    series.forEach((se, i) => {
      g.strokeStyle = se.color; g.lineWidth = Math.max(1.5, 2 * (series.length - i)); g.beginPath();
      let started = false;
      for (const s of samples) {
        if (s.t < t0) continue;
        const px = x(s.t), py = y(s[se.key] || 0);
        if (!started) { g.moveTo(px, py); started = true; } else g.lineTo(px, py);
      }
      g.stroke();
    });
    const lastS = samples[samples.length - 1] || {};
    fill(legend, series.map(se => h("span", {}, swatch(se.color),
      `${se.label}: `, h("b", { "data-series": se.key }, unit ? fmtRate(lastS[se.key] || 0) : fmtNum(lastS[se.key] || 0)))));
  }
  return { el: h("div", { class: "chart-wrap" }, canvas, legend), draw };
}
export function swatch(color) {  // CSSOM, not a style attribute: the page's CSP allows no inline styles
  const i = h("i", {});
  i.style.background = color;
  return i;
}
export function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 4, 8, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}
export function shortNum(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(v % 1e6 ? 1 : 0) + "M";
  if (v >= 1e3) return (v / 1e3).toFixed(v % 1e3 ? 1 : 0) + "k";
  return String(Math.round(v * 10) / 10);
}

/** Chart points from RabbitMQ's ``samples`` (newest first, as the API sends them): ``ms``
 * holds the counters' ``*_details`` (publish, deliver_get, ack: drawn as per-second rates
 * between samples), ``depths`` the depths' (messages_ready, messages_unacknowledged,
 * messages). Points are oldest first: {t, publish, deliver, ack, ready, unacked, total}. */
export function fromSamples(ms, depths) {
  const samples = (o, key) => ((o[key + "_details"] || {}).samples || []).slice().reverse();
  const pub = samples(ms, "publish"), del = samples(ms, "deliver_get"), ack = samples(ms, "ack");
  const depth = {};
  for (const [k, name] of [["messages_ready", "ready"], ["messages_unacknowledged", "unacked"], ["messages", "total"]]) {
    for (const s of samples(depths, k)) (depth[s.timestamp] = depth[s.timestamp] || {})[name] = s.sample;
  }
  const out = [];
  for (let i = 1; i < pub.length; i++) {
    const dt = (pub[i].timestamp - pub[i - 1].timestamp) / 1000;
    if (dt <= 0) continue;
    const r = (arr) => arr[i] && arr[i - 1] ? Math.max(0, arr[i].sample - arr[i - 1].sample) / dt : 0;
    const d = depth[pub[i].timestamp] || {};
    out.push({ t: pub[i].timestamp, publish: r(pub), deliver: r(del), ack: r(ack),
               ready: d.ready || 0, unacked: d.unacked || 0,
               total: d.total !== undefined ? d.total : (d.ready || 0) + (d.unacked || 0) });
  }
  return out;
}

// ---------------------------------------------------------------- typed arguments

/** The arguments RabbitMQ's "Add a new queue" form offers, with the type it sends. */
export const QUEUE_ARGS = [
  { key: "x-message-ttl", label: "Message TTL", type: "number", help: "ms a message may wait in the queue" },
  { key: "x-expires", label: "Auto expire", type: "number", help: "ms unused before the queue is deleted" },
  { key: "x-max-length", label: "Max length", type: "number", help: "ready messages kept at most" },
  { key: "x-max-length-bytes", label: "Max length bytes", type: "number", help: "ready message bytes kept at most" },
  { key: "x-overflow", label: "Overflow behaviour", type: "string", value: "drop-head",
    help: "drop-head, reject-publish or reject-publish-dlx" },
  { key: "x-dead-letter-exchange", label: "Dead letter exchange", type: "string", help: "exchange for dead-lettered messages" },
  { key: "x-dead-letter-routing-key", label: "Dead letter routing key", type: "string", help: "their routing key (default: theirs)" },
  { key: "x-single-active-consumer", label: "Single active consumer", type: "boolean", value: "true",
    help: "only one consumer at a time gets messages" },
  { key: "x-max-priority", label: "Maximum priority", type: "number", help: "1-255: a priority queue" },
  { key: "x-queue-mode", label: "Lazy mode", type: "string", value: "lazy", help: "keep messages on disk (accepted; syncmq pages anyway)" },
];

/** One parsed value of the editor: "number" as a JSON number, "boolean" as true/false
 * (exactly "true" or "false", as RabbitMQ's UI checks), "list" as a JSON array of what the
 * comma-separated items parse to, else the string. Throws an Error naming the key. */
export function typedValue(key, text, type) {
  if (type === "number") {
    const n = Number(text);
    if (text.trim() === "" || !Number.isFinite(n)) throw new Error(`${key} must be a number; got '${text}'`);
    return n;
  }
  if (type === "boolean") {
    if (text !== "true" && text !== "false") throw new Error(`${key} must be "true" or "false"; got '${text}'`);
    return text === "true";
  }
  if (type === "list") return text.split(",").map(s => s.trim()).filter(s => s !== "");
  return text;
}

/** Rows of key = value (type); known arguments are added by link, with their type.
 * ``value()`` returns the typed object (or throws); ``reset()`` empties it; ``set(obj)``
 * shows an object's entries. */
export function argsEditor(id, known) {
  const rows = h("div", { class: "args", id });
  function row(key, value, type) {
    const k = h("input", { class: "arg-key", placeholder: "key", value: key || "", "aria-label": "Argument name" });
    const v = h("input", { class: "arg-value", placeholder: "value", value: value || "", "aria-label": "Argument value" });
    const t = h("select", { class: "arg-type", "aria-label": "Argument type" },
      ["string", "number", "boolean", "list"].map(x => h("option", { value: x, selected: x === (type || "string") }, x)));
    const r = h("div", { class: "arg-row", "data-key": key || "" }, k, " = ", v, t,
      h("button", { type: "button", class: "secondary arg-remove", title: "Remove",
                    onclick: () => { r.remove(); if (!rows.children.length) row(); } }, "×"));
    k.addEventListener("input", () => { r.dataset.key = k.value; });
    // typing in the last row adds an empty one, as RabbitMQ's multifield does
    k.addEventListener("input", () => { if (r === rows.lastElementChild && k.value) row(); });
    rows.appendChild(r);
    return r;
  }
  function add(a) {
    const last = rows.lastElementChild;
    const empty = last && !last.querySelector(".arg-key").value && !last.querySelector(".arg-value").value;
    const r = row(a.key, a.value || "", a.type);
    if (empty) rows.insertBefore(r, last);
    r.querySelector(".arg-value").focus();
  }
  const links = known ? h("div", { class: "arg-links" }, "Add: ", known.map((a, i) => [i ? " | " : "",
    h("a", { href: "#", class: "arg-link", "data-arg": a.key, title: `${a.key} (${a.type}): ${a.help}`,
             onclick: ev => { ev.preventDefault(); add(a); } }, a.label)])) : null;
  row();
  return {
    el: h("div", {}, rows, links),
    value() {
      const out = {};
      for (const r of rows.children) {
        const key = r.querySelector(".arg-key").value.trim();
        const text = r.querySelector(".arg-value").value;
        if (!key) continue;
        out[key] = typedValue(key, text, r.querySelector(".arg-type").value);
      }
      return out;
    },
    reset() { rows.replaceChildren(); row(); },
    /** Rows for an object's entries, each typed as its JSON value is (an edit form). */
    set(obj) {
      rows.replaceChildren();
      for (const [key, v] of Object.entries(obj || {})) {
        const type = Array.isArray(v) ? "list" : typeof v === "number" ? "number"
          : typeof v === "boolean" ? "boolean" : "string";
        row(key, Array.isArray(v) ? v.join(", ") : String(v), type);
      }
      row();
    },
  };
}

// ---------------------------------------------------------------- bindings

/** A binding's row cells + an Unbind button (DELETE .../{properties_key}, RabbitMQ's API).
 * ``side`` is "source" (the exchange page: shows the destination) or "destination". */
export function bindingsTable(id, bindings, side, onChange, empty) {
  const unbind = b => {
    const path = `/bindings/${enc(b.vhost)}/e/${enc(b.source)}/${b.destination_type === "queue" ? "q" : "e"}/` +
      `${enc(b.destination)}/${enc(b.properties_key)}`;
    return writeButton("Unbind", async () => {
      try {
        await api("DELETE", path);
        banner(`Unbound '${b.destination}' from '${b.source}' (${b.routing_key}).`, "info");
        await onChange();
      } catch (err) { actionError("Unbinding", err); }
    }, "secondary unbind");
  };
  const cols = side === "source" ? [
    { label: "To", cell: b => b.destination_type === "queue"
        ? h("a", { href: `#/queue/${enc(b.vhost)}/${enc(b.destination)}` }, b.destination)
        : h("a", { href: `#/exchange/${enc(b.vhost)}/${enc(b.destination)}` }, b.destination) },
    { label: "Type", cell: b => b.destination_type },
  ] : [
    { label: "From exchange", cell: b => b.source ? h("a", { href: `#/exchange/${enc(b.vhost)}/${enc(b.source)}` }, b.source) : "(AMQP default)" },
  ];
  cols.push({ label: "Routing key", cls: "wrap", cell: b => b.routing_key },
            { label: "Arguments", cls: "wrap", cell: b => JSON.stringify(b.arguments || {}) },
            // the default exchange's implicit bindings cannot be removed (RabbitMQ: 403)
            { label: "", cell: b => b.source === "" ? null : unbind(b) });
  return simpleTable(cols, bindings, b => ({ "data-routing-key": b.routing_key, "data-peer":
    side === "source" ? b.destination : b.source }), empty, id);
}

/** "Add binding" form: from this exchange to a queue/exchange, or to this queue from an
 * exchange (POST /api/bindings/{vhost}/e/{source}/q|e/{destination}). */
export function bindForm(id, vhost, fixed, onChange) {
  const side = fixed.source !== undefined ? "source" : "destination";
  const dtype = h("select", { id: id + "-dtype", "aria-label": "Destination type" },
    h("option", { value: "q" }, "To queue"), h("option", { value: "e" }, "To exchange"));
  const other = h("input", { id: id + "-peer", required: true,
                             placeholder: side === "source" ? "queue or exchange name" : "exchange name" });
  const rk = h("input", { id: id + "-routing-key" });
  const args = argsEditor(id + "-args");
  const form = h("form", { class: "bind-form", id, onsubmit: async ev => {
    ev.preventDefault();
    let argv;
    try { argv = args.value(); } catch (e) { banner(e.message); return; }
    const src = side === "source" ? fixed.source : other.value;
    const dst = side === "source" ? other.value : fixed.destination;
    const t = side === "source" ? dtype.value : "q";
    try {
      await api("POST", `/bindings/${enc(vhost)}/e/${enc(src)}/${t}/${enc(dst)}`,
                { routing_key: rk.value, arguments: argv });
      banner(`Bound '${dst}' to '${src}' with routing key '${rk.value}'.`, "info");
      other.value = ""; rk.value = ""; args.reset();
      await onChange();
    } catch (err) { actionError("Binding", err); }
  } },
    h("div", { class: "inline" },
      side === "source" ? h("label", {}, "Destination", dtype) : null,
      h("label", {}, side === "source" ? "Name" : "From exchange", other),
      h("label", {}, "Routing key", rk)),
    h("label", { class: "block" }, "Arguments"), args.el,
    h("p", {}, writeButton("Bind", null, "", { type: "submit", id: id + "-submit" })));
  return form;
}

// ---------------------------------------------------------------- publish

/** "Publish a message" (POST /api/exchanges/{vhost}/{exchange}/publish, RabbitMQ's body).
 * With ``toQueue`` it publishes to that queue through the default exchange, as RabbitMQ's
 * queue page does, and has no routing-key field. */
export function publishForm(vhost, exchange, toQueue) {
  const rk = toQueue === undefined ? h("input", { id: "publish-routing-key" }) : null;
  const mode = h("select", { id: "publish-delivery-mode" }, h("option", { value: "1" }, "1 - transient"),
    h("option", { value: "2" }, "2 - persistent"));
  const ctype = h("input", { id: "publish-content-type", placeholder: "text/plain" });
  const headers = h("textarea", { id: "publish-headers", placeholder: '{"key": "value"}', rows: 2 });
  const payload = h("textarea", { id: "publish-payload", rows: 4 });
  const path = `/exchanges/${enc(vhost)}/${enc(exchange || "amq.default")}/publish`;
  return h("form", { id: "publish-form", onsubmit: async ev => {
    ev.preventDefault();
    let hdrs = {};
    if (headers.value.trim()) {
      try { hdrs = JSON.parse(headers.value); } catch (e) { banner("Headers must be a JSON object: " + e.message); return; }
      if (typeof hdrs !== "object" || Array.isArray(hdrs) || hdrs === null) { banner("Headers must be a JSON object."); return; }
    }
    const props = { delivery_mode: Number(mode.value), headers: hdrs };
    if (ctype.value) props.content_type = ctype.value;
    try {
      const r = await api("POST", path, { routing_key: rk ? rk.value : toQueue, payload: payload.value,
                                          payload_encoding: "string", properties: props });
      banner(r.routed ? "Message published and routed." : "Message published, but not routed to any queue.",
             r.routed ? "info" : "error");
    } catch (err) { actionError("Publishing", err); }
  } },
    h("div", { class: "inline" }, rk ? h("label", {}, "Routing key", rk) : null,
      h("label", {}, "Delivery mode", mode), h("label", {}, "Content type", ctype)),
    h("label", {}, "Headers (JSON)", headers), h("label", {}, "Payload", payload),
    h("p", {}, writeButton("Publish message", null, "", { type: "submit", id: "publish-submit" })));
}
