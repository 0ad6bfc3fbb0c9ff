/* syncmq dashboard: a single page over the management API (/api/...).
 *
 * Hand-written, no framework, no build step, nothing loaded from outside syncmq.
 * - Login: the credentials are checked with GET /api/whoami and kept in sessionStorage
 *   (this tab only) as a basic-auth token sent with every API call.
 * - Pages are hash routes (#/overview, #/queues, #/queue/<vhost>/<name>, ...). Each page
 *   builds its forms once (mount) and then only replaces its data regions on every refresh,
 *   so a refresh never loses what the operator is typing.
 * - Every text that comes from the broker is put in the page with textContent (never as
 *   HTML): queue names and payloads are untrusted.
 * - Write controls are disabled for users without the administrator tag (the API refuses
 *   their writes anyway: a refusal is shown in the banner).
 */
"use strict";

(() => {
  const S = {
    token: null, user: null, tags: [], overview: null,
    view: null, timer: null, seq: 0,
    history: [],          // overview samples: {t, publish, deliver, ack, ready, unacked}
    last: null,           // the previous overview's counters, for client-side rates
  };
  const HISTORY_MS = 10 * 60 * 1000;
  const COLORS = { publish: "#1f5fa8", deliver: "#1e7b34", ack: "#a86400" };  // as style.css
  const MGMT_TAGS = ["administrator", "monitoring", "management", "policymaker"];

  // ---------------------------------------------------------------- DOM helpers

  function h(tag, attrs, ...kids) {
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
  function append(el, kids) {
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }
  function fill(el, ...kids) { el.replaceChildren(); return append(el, kids); }
  const $ = (sel, root) => (root || document).querySelector(sel);

  // ---------------------------------------------------------------- formatting

  function fmtNum(n) { return n === undefined || n === null ? "-" : Number(n).toLocaleString("en-US"); }
  function fmtRate(r) { return r === undefined || r === null ? "-" : Number(r).toFixed(1) + "/s"; }
  function fmtBytes(n) {
    if (n === undefined || n === null) return "-";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0; let v = Number(n);
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i ? v.toFixed(1) : String(v)) + " " + units[i];
  }
  function fmtDuration(ms) {
    let s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400); s -= d * 86400;
    const hh = Math.floor(s / 3600); s -= hh * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return `${d}d ${hh}h ${m}m`;
    if (hh) return `${hh}h ${m}m`;
    if (m) return `${m}m ${s}s`;
    return `${s}s`;
  }
  function rateOf(stats, key) {
    const d = stats && stats[key + "_details"];
    return d ? d.rate : 0;
  }
  const enc = encodeURIComponent;
  function vhostLabel(v) { return v === "/" ? "/" : v; }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, data, fallback) {
      super((data && data.reason) || fallback);
      this.status = status; this.data = data;
    }
  }

  async function api(method, path, body, headers) {
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

  function isAdmin() { return S.tags.includes("administrator"); }

  // ---------------------------------------------------------------- banner, errors

  let bannerTimer = null;
  function banner(text, kind, fromRefresh) {
    const b = $("#banner");
    b.dataset.refresh = fromRefresh ? "1" : "";  // a refresh that works again clears only its own
    b.className = kind || "error";
    b.textContent = text;
    b.hidden = false;
    clearTimeout(bannerTimer);
    if (kind === "info") bannerTimer = setTimeout(() => { b.hidden = true; }, 6000);
  }
  function clearBanner() { $("#banner").hidden = true; }

  /** Report a failed action: a 401 on a write is a refusal of the user's tags. */
  function actionError(what, err) {
    if (err instanceof ApiError && err.status === 401) {
      banner(`Access refused: ${what} needs the administrator tag; user '${S.user}' has ` +
             `tags [${S.tags.join(", ") || "none"}] (${err.message})`, "error");
    } else {
      banner(`${what} failed: ${err.message}`, "error");
    }
  }

  /** A button that changes the broker: disabled (with the reason) unless administrator. */
  function writeButton(label, onclick, cls, attrs) {
    const b = h("button", Object.assign({ type: "button", class: cls || "", "data-write": true,
                                         onclick }, attrs || {}), label);
    if (!isAdmin()) {
      b.disabled = true;
      b.title = "Read-only: needs the administrator tag";
    }
    return b;
  }

  /** Two-step confirmation in the page (no modal dialog): "Purge" -> "Really? Yes / Cancel". */
  function confirmButton(label, question, action, attrs) {
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

  function readOnlyNote() {
    if (isAdmin()) return null;
    return h("div", { class: "readonly-note", id: "readonly-note" },
      `Read-only: user '${S.user}' has tags [${S.tags.join(", ")}]; changes need the administrator tag.`);
  }

  // ---------------------------------------------------------------- tables

  /** A table whose rows come from an array; columns: {label, num, cell(item)}. */
  function simpleTable(columns, items, rowAttrs, empty) {
    const head = h("tr", {}, columns.map(c => h("th", { class: c.num ? "num" : "" }, c.label)));
    const rows = items.length ? items.map(it => h("tr", rowAttrs ? rowAttrs(it) : {},
      columns.map(c => h("td", { class: (c.num ? "num " : "") + (c.cls || "") }, c.cell(it)))))
      : [h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty || "Nothing here."))];
    return h("table", {}, h("thead", {}, head), h("tbody", {}, rows));
  }

  /** A server-paged table over a list endpoint (RabbitMQ's ?page=&page_size=&name=&sort=).
   * Columns with a ``sort`` key sort on the server; the filter, page and sort survive
   * refreshes. Only one page of rows is ever in the page, whatever the object count. */
  function pagedTable(opts) {
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
  function lineChart(id, series, unit) {
    const canvas = h("canvas", { class: "chart", id, role: "img", "aria-label": series.map(s => s.label).join(", ") });
    const legend = h("div", { class: "legend" });
    function draw(samples) {
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
  function swatch(color) {  // CSSOM, not a style attribute: the page's CSP allows no inline styles
    const i = h("i", {});
    i.style.background = color;
    return i;
  }
  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 4, 8, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }
  function shortNum(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(v % 1e6 ? 1 : 0) + "M";
    if (v >= 1e3) return (v / 1e3).toFixed(v % 1e3 ? 1 : 0) + "k";
    return String(Math.round(v * 10) / 10);
  }

  function tile(label, value, id, alarm) {
    return h("div", { class: "tile" + (alarm ? " alarm" : ""), id: id ? "tile-" + id : null },
      h("div", { class: "v" }, value), h("div", { class: "k" }, label));
  }

  // ---------------------------------------------------------------- pages

  const views = {};

  views.overview = () => {
    const tiles = h("div", { class: "tiles", id: "overview-tiles" });
    const rates = lineChart("chart-rates", [
      { label: "Publish", color: COLORS.publish, key: "publish" },
      { label: "Deliver", color: COLORS.deliver, key: "deliver" },
      { label: "Ack", color: COLORS.ack, key: "ack" }], "/s");
    const queued = lineChart("chart-queued", [
      { label: "Ready", color: COLORS.publish, key: "ready" },
      { label: "Unacked", color: COLORS.ack, key: "unacked" }]);
    const node = h("dl", { class: "kv", id: "node-details" });
    const el = h("div", {}, h("h1", {}, "Overview"), tiles,
      h("div", { class: "grid2" },
        h("div", { class: "card" }, h("h2", {}, "Message rates"), rates.el),
        h("div", { class: "card" }, h("h2", {}, "Queued messages"), queued.el)),
      h("div", { class: "card" }, h("h2", {}, "Node"), node));
    async function refresh() {
      // the first time, ask for the server's last 10 minutes of samples (RabbitMQ's
      // ?msg_rates_age=&lengths_age=) so the charts open with a history
      const seed = !S.history.length;
      const q = seed ? "?msg_rates_age=600&msg_rates_incr=5&lengths_age=600&lengths_incr=5" : "";
      const [ov, nodes] = await Promise.all([api("GET", "/overview" + q), api("GET", "/nodes")]);
      if (seed) seedHistory(ov);
      S.overview = ov;
      const n = nodes[0] || {};
      const ms = ov.message_stats || {}, qt = ov.queue_totals || {}, ot = ov.object_totals || {};
      const now = Date.now();
      const counters = { publish: ms.publish || 0, deliver: ms.deliver_get || 0, ack: ms.ack || 0 };
      let sample;
      if (S.last && now > S.last.t) {
        const dt = (now - S.last.t) / 1000;
        sample = { t: now };
        for (const k of Object.keys(counters)) sample[k] = Math.max(0, counters[k] - S.last.c[k]) / dt;
      } else {
        sample = { t: now, publish: rateOf(ms, "publish"), deliver: rateOf(ms, "deliver_get"), ack: rateOf(ms, "ack") };
      }
      sample.ready = qt.messages_ready || 0; sample.unacked = qt.messages_unacknowledged || 0;
      S.last = { t: now, c: counters };
      S.history.push(sample);
      while (S.history.length && S.history[0].t < now - HISTORY_MS) S.history.shift();
      const alarms = [n.mem_alarm ? "memory" : null, n.disk_free_alarm ? "disk" : null].filter(Boolean);
      fill(tiles,
        tile("Publish", fmtRate(sample.publish), "publish"),
        tile("Deliver", fmtRate(sample.deliver), "deliver"),
        tile("Ack", fmtRate(sample.ack), "ack"),
        tile("Ready", fmtNum(qt.messages_ready), "ready"),
        tile("Unacked", fmtNum(qt.messages_unacknowledged), "unacked"),
        tile("Total messages", fmtNum(qt.messages), "messages"),
        tile("Connections", fmtNum(ot.connections), "connections"),
        tile("Channels", fmtNum(ot.channels), "channels"),
        tile("Queues", fmtNum(ot.queues), "queues"),
        tile("Exchanges", fmtNum(ot.exchanges), "exchanges"),
        tile("Consumers", fmtNum(ot.consumers), "consumers"),
        tile("Alarms", alarms.length ? alarms.join(", ") : "none", "alarms", alarms.length > 0),
        tile("Journal", fmtBytes(n.journal_bytes || 0), "journal"),
        tile("Uptime", fmtDuration(n.uptime || 0), "uptime"));
      fill(node,
        h("dt", {}, "Node"), h("dd", {}, n.name || ov.node),
        h("dt", {}, "Version"), h("dd", {}, `${ov.product_name || "syncmq"} ${ov.product_version || ""} (Python ${ov.python_version || "?"})`),
        h("dt", {}, "Memory"), h("dd", {}, fmtBytes(n.mem_used) + (n.mem_alarm ? " — ALARM" : "")),
        h("dt", {}, "Disk free"), h("dd", {}, fmtBytes(n.disk_free) + (n.disk_free_alarm ? " — ALARM" : "")),
        h("dt", {}, "File descriptors"), h("dd", {}, `${fmtNum(n.fd_used)} / ${fmtNum(n.fd_total)}`),
        h("dt", {}, "Listeners"), h("dd", {}, (ov.listeners || []).map(l => `${l.protocol} ${l.ip_address}:${l.port}`).join(", ")),
        h("dt", {}, "Data directory"), h("dd", {}, n.db_dir || "-"));
      rates.draw(S.history); queued.draw(S.history);
    }
    return { el, refresh };
  };

  /** S.history from the overview's samples (newest first): rates from counter deltas. */
  function seedHistory(ov) {
    const ms = ov.message_stats || {}, qt = ov.queue_totals || {};
    const samples = key => ((ms[key + "_details"] || {}).samples || []).slice().reverse();
    const pub = samples("publish"), del = samples("deliver_get"), ack = samples("ack");
    const depth = {};
    for (const [k, name] of [["messages_ready", "ready"], ["messages_unacknowledged", "unacked"]]) {
      for (const s of ((qt[k + "_details"] || {}).samples || [])) (depth[s.timestamp] = depth[s.timestamp] || {})[name] = s.sample;
    }
    const out = [];
    for (let i = 1; i < pub.length; i++) {
      const dt = (pub[i].timestamp - pub[i - 1].timestamp) / 1000;
      if (dt <= 0) continue;
      const r = (arr) => arr[i] && arr[i - 1] ? Math.max(0, arr[i].sample - arr[i - 1].sample) / dt : 0;
      const d = depth[pub[i].timestamp] || {};
      out.push({ t: pub[i].timestamp, publish: r(pub), deliver: r(del), ack: r(ack),
                 ready: d.ready || 0, unacked: d.unacked || 0 });
    }
    S.history = out.filter(x => x.t > Date.now() - HISTORY_MS);
  }

  function queueFeatures(q) {
    return [q.durable ? h("span", { class: "badge", title: "durable" }, "D") : null,
            q.auto_delete ? h("span", { class: "badge", title: "auto-delete" }, "AD") : null,
            q.exclusive ? h("span", { class: "badge", title: "exclusive" }, "Excl") : null,
            Object.keys(q.arguments || {}).map(a => h("span", { class: "badge", title: a + " = " + JSON.stringify(q.arguments[a]) }, a.replace(/^x-/, "")))];
  }

  async function vhostOptions() {
    const vhosts = await api("GET", "/vhosts");
    return vhosts.map(v => h("option", { value: v.name }, v.name));
  }

  views.queues = () => {
    const table = pagedTable({
      id: "queues", path: "/queues", noun: "queues", pageSize: 50,
      rowAttrs: q => ({ "data-vhost": q.vhost, "data-name": q.name }),
      columns: [
        { label: "Virtual host", sort: "vhost", cell: q => vhostLabel(q.vhost) },
        { label: "Name", sort: "name", cls: "wrap", cell: q => h("a", { href: `#/queue/${enc(q.vhost)}/${enc(q.name)}`, class: "queue-link" }, q.name) },
        { label: "Features", cell: queueFeatures },
        { label: "State", cell: q => q.state },
        { label: "Ready", sort: "messages_ready", num: true, cls: "ready", cell: q => fmtNum(q.messages_ready) },
        { label: "Unacked", sort: "messages_unacknowledged", num: true, cls: "unacked", cell: q => fmtNum(q.messages_unacknowledged) },
        { label: "Total", sort: "messages", num: true, cell: q => fmtNum(q.messages) },
        { label: "Consumers", sort: "consumers", num: true, cls: "consumers", cell: q => fmtNum(q.consumers) },
        { label: "Incoming", sort: "message_stats.publish_details.rate", num: true, cell: q => fmtRate(rateOf(q.message_stats, "publish")) },
        { label: "Deliver", sort: "message_stats.deliver_get_details.rate", num: true, cell: q => fmtRate(rateOf(q.message_stats, "deliver_get")) },
        { label: "Ack", sort: "message_stats.ack_details.rate", num: true, cell: q => fmtRate(rateOf(q.message_stats, "ack")) },
      ],
    });
    const vh = h("select", { name: "vhost", id: "new-queue-vhost" });
    const name = h("input", { name: "name", id: "new-queue-name", required: true });
    const durable = h("input", { type: "checkbox", name: "durable", checked: true });
    const form = h("form", { class: "inline", id: "new-queue", onsubmit: async ev => {
      ev.preventDefault();
      try {
        await api("PUT", `/queues/${enc(vh.value)}/${enc(name.value)}`, { durable: durable.checked, auto_delete: false, arguments: {} });
        banner(`Queue '${name.value}' declared.`, "info"); name.value = "";
        await table.load();
      } catch (err) { actionError("Declaring a queue", err); }
    } }, h("label", {}, "Virtual host", vh), h("label", {}, "Name", name),
      h("label", {}, "Durable", durable), writeButton("Add queue", null, "", { type: "submit" }));
    const el = h("div", {}, h("h1", {}, "Queues"), readOnlyNote(), h("div", { class: "card" }, table.el),
      h("div", { class: "card" }, h("h2", {}, "Add a queue"), form));
    vhostOptions().then(opts => fill(vh, opts)).catch(() => {});
    return { el, refresh: () => table.load() };
  };

  function parseRoute(rest) { return rest.map(decodeURIComponent); }

  views.queue = (vhost, name) => {
    const path = `/queues/${enc(vhost)}/${enc(name)}`;
    const tiles = h("div", { class: "tiles", id: "queue-tiles" });
    const details = h("dl", { class: "kv" });
    const consumers = h("div", { id: "queue-consumers" });
    const bindings = h("div", { id: "queue-bindings" });
    const got = h("div", { id: "get-results" });
    const count = h("input", { type: "number", min: 1, max: 500, value: 5, id: "get-count" });
    const ackmode = h("select", { id: "get-ackmode" },
      h("option", { value: "ack_requeue_true" }, "Nack, requeue (look only)"),
      h("option", { value: "reject_requeue_true" }, "Reject, requeue"),
      h("option", { value: "ack_requeue_false" }, "Ack (removes them)"),
      h("option", { value: "reject_requeue_false" }, "Reject, no requeue (dead-letters)"));
    const encoding = h("select", { id: "get-encoding" }, h("option", { value: "auto" }, "Auto string/base64"),
      h("option", { value: "base64" }, "base64"));
    const getForm = h("form", { class: "inline", id: "get-form", onsubmit: async ev => {
      ev.preventDefault();
      try {
        const msgs = await api("POST", path + "/get", { count: Number(count.value), ackmode: ackmode.value,
                                                         encoding: encoding.value, truncate: 50000 });
        fill(got, msgs.length ? msgs.map((m, i) => h("div", { class: "card message", "data-index": i },
          h("dl", { class: "kv" },
            h("dt", {}, "Message"), h("dd", {}, `${i + 1} (${fmtNum(m.message_count)} left in the queue)`),
            h("dt", {}, "Exchange"), h("dd", {}, m.exchange || "(AMQP default)"),
            h("dt", {}, "Routing key"), h("dd", {}, m.routing_key),
            h("dt", {}, "Redelivered"), h("dd", {}, String(m.redelivered)),
            h("dt", {}, "Properties"), h("dd", {}, JSON.stringify(m.properties)),
            h("dt", {}, "Payload"), h("dd", {}, `${fmtNum(m.payload_bytes)} bytes, ${m.payload_encoding}`)),
          h("pre", { class: "payload" }, m.payload)))
          : h("p", { class: "muted", id: "get-empty" }, "The queue is empty."));
        refresh().catch(() => {});
      } catch (err) { actionError("Getting messages", err); }
    } }, h("label", {}, "Messages", count), h("label", {}, "Ack mode", ackmode),
      h("label", {}, "Encoding", encoding), writeButton("Get messages", null, "", { type: "submit", id: "get-submit" }));
    const purge = confirmButton("Purge", "Remove every ready message from this queue?", async () => {
      try {
        await api("DELETE", path + "/contents");
        banner(`Queue '${name}' purged.`, "info");
        await refresh();
      } catch (err) { actionError("Purging a queue", err); }
    }, { id: "purge" });
    const del = confirmButton("Delete", "Delete this queue and its messages?", async () => {
      try {
        await api("DELETE", path);
        banner(`Queue '${name}' deleted.`, "info");
        location.hash = "#/queues";
      } catch (err) { actionError("Deleting a queue", err); }
    }, { id: "delete-queue" });
    const el = h("div", {},
      h("h1", {}, "Queue ", h("span", { id: "queue-name" }, name), h("span", { class: "muted" }, ` in virtual host ${vhost}`)),
      readOnlyNote(), tiles,
      h("div", { class: "grid2" },
        h("div", { class: "card" }, h("h2", {}, "Details"), details),
        h("div", { class: "card" }, h("h2", {}, "Actions"), h("p", {}, purge), h("p", {}, del))),
      h("div", { class: "card" }, h("h2", {}, "Consumers"), consumers),
      h("div", { class: "card" }, h("h2", {}, "Bindings"), bindings),
      h("div", { class: "card" }, h("h2", {}, "Get messages"), getForm, got));
    async function refresh() {
      let q, bs;
      try {
        [q, bs] = await Promise.all([api("GET", path), api("GET", path + "/bindings")]);
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          fill(tiles, h("p", { class: "error", id: "queue-missing" }, "This queue does not exist (any more)."));
          return;
        }
        throw err;
      }
      const ms = q.message_stats || {};
      fill(tiles,
        tile("Ready", fmtNum(q.messages_ready), "ready"),
        tile("Unacked", fmtNum(q.messages_unacknowledged), "unacked"),
        tile("Total", fmtNum(q.messages), "messages"),
        tile("Consumers", fmtNum(q.consumers), "consumers"),
        tile("Incoming", fmtRate(rateOf(ms, "publish")), "publish"),
        tile("Deliver", fmtRate(rateOf(ms, "deliver_get")), "deliver"),
        tile("Ack", fmtRate(rateOf(ms, "ack")), "ack"),
        tile("State", q.state, "state"));
      fill(details,
        h("dt", {}, "Type"), h("dd", {}, q.type),
        h("dt", {}, "Features"), h("dd", {}, queueFeatures(q)),
        h("dt", {}, "Arguments"), h("dd", {}, JSON.stringify(q.arguments || {})),
        h("dt", {}, "Exclusive consumer"), h("dd", {}, q.exclusive_consumer_tag || "-"),
        h("dt", {}, "Published (total)"), h("dd", {}, fmtNum(ms.publish)),
        h("dt", {}, "Delivered (total)"), h("dd", {}, fmtNum(ms.deliver_get)),
        h("dt", {}, "Acked (total)"), h("dd", {}, fmtNum(ms.ack)),
        h("dt", {}, "Node"), h("dd", {}, q.node));
      fill(consumers, simpleTable([
        { label: "Consumer tag", cell: c => c.consumer_tag },
        { label: "Channel", cell: c => c.channel_details.name },
        { label: "User", cell: c => c.channel_details.user },
        { label: "Ack required", cell: c => String(c.ack_required) },
        { label: "Exclusive", cell: c => String(c.exclusive) },
        { label: "Prefetch", num: true, cell: c => fmtNum(c.prefetch_count) },
      ], q.consumer_details || [], null, "No consumers."));
      fill(bindings, simpleTable([
        { label: "From exchange", cell: b => b.source ? h("a", { href: `#/exchange/${enc(b.vhost)}/${enc(b.source)}` }, b.source) : "(AMQP default)" },
        { label: "Routing key", cls: "wrap", cell: b => b.routing_key },
        { label: "Arguments", cell: b => JSON.stringify(b.arguments || {}) },
      ], bs, null, "No bindings."));
    }
    return { el, refresh };
  };

  views.exchanges = () => {
    const table = pagedTable({
      id: "exchanges", path: "/exchanges", noun: "exchanges", pageSize: 50,
      rowAttrs: x => ({ "data-vhost": x.vhost, "data-name": x.name }),
      columns: [
        { label: "Virtual host", sort: "vhost", cell: x => vhostLabel(x.vhost) },
        { label: "Name", sort: "name", cls: "wrap", cell: x => h("a", { href: `#/exchange/${enc(x.vhost)}/${enc(x.name || "amq.default")}` }, x.name || "(AMQP default)") },
        { label: "Type", sort: "type", cell: x => x.type },
        { label: "Features", cell: x => [x.durable ? h("span", { class: "badge" }, "D") : null,
                                          x.auto_delete ? h("span", { class: "badge" }, "AD") : null,
                                          x.internal ? h("span", { class: "badge" }, "I") : null] },
      ],
    });
    const vh = h("select", { id: "new-exchange-vhost" });
    const name = h("input", { id: "new-exchange-name", required: true });
    const type = h("select", { id: "new-exchange-type" }, ["direct", "fanout", "topic", "headers"].map(t => h("option", { value: t }, t)));
    const durable = h("input", { type: "checkbox", checked: true });
    const form = h("form", { class: "inline", onsubmit: async ev => {
      ev.preventDefault();
      try {
        await api("PUT", `/exchanges/${enc(vh.value)}/${enc(name.value)}`, { type: type.value, durable: durable.checked });
        banner(`Exchange '${name.value}' declared.`, "info"); name.value = "";
        await table.load();
      } catch (err) { actionError("Declaring an exchange", err); }
    } }, h("label", {}, "Virtual host", vh), h("label", {}, "Name", name), h("label", {}, "Type", type),
      h("label", {}, "Durable", durable), writeButton("Add exchange", null, "", { type: "submit" }));
    vhostOptions().then(opts => fill(vh, opts)).catch(() => {});
    const el = h("div", {}, h("h1", {}, "Exchanges"), readOnlyNote(), h("div", { class: "card" }, table.el),
      h("div", { class: "card" }, h("h2", {}, "Add an exchange"), form));
    return { el, refresh: () => table.load() };
  };

  views.exchange = (vhost, name) => {
    const path = `/exchanges/${enc(vhost)}/${enc(name)}`;
    const details = h("dl", { class: "kv" });
    const source = h("div", { id: "exchange-bindings" });
    const rk = h("input", { id: "publish-routing-key" });
    const mode = h("select", { id: "publish-delivery-mode" }, h("option", { value: "1" }, "1 - transient"),
      h("option", { value: "2" }, "2 - persistent"));
    const ctype = h("input", { id: "publish-content-type", placeholder: "text/plain" });
    const headers = h("textarea", { id: "publish-headers", placeholder: '{"key": "value"}', rows: 2 });
    const payload = h("textarea", { id: "publish-payload", rows: 4 });
    const form = h("form", { id: "publish-form", onsubmit: async ev => {
      ev.preventDefault();
      let hdrs = {};
      if (headers.value.trim()) {
        try { hdrs = JSON.parse(headers.value); } catch (e) { banner("Headers must be a JSON object: " + e.message); return; }
      }
      const props = { delivery_mode: Number(mode.value), headers: hdrs };
      if (ctype.value) props.content_type = ctype.value;
      try {
        const r = await api("POST", path + "/publish", { routing_key: rk.value, payload: payload.value,
                                                          payload_encoding: "string", properties: props });
        banner(r.routed ? "Message published and routed." : "Message published, but not routed to any queue.",
               r.routed ? "info" : "error");
      } catch (err) { actionError("Publishing", err); }
    } },
      h("div", { class: "inline" }, h("label", {}, "Routing key", rk), h("label", {}, "Delivery mode", mode),
        h("label", {}, "Content type", ctype)),
      h("label", {}, "Headers (JSON)", headers), h("label", {}, "Payload", payload),
      h("p", {}, writeButton("Publish message", null, "", { type: "submit", id: "publish-submit" })));
    const el = h("div", {}, h("h1", {}, "Exchange ", name === "amq.default" ? "(AMQP default)" : name,
      h("span", { class: "muted" }, ` in virtual host ${vhost}`)), readOnlyNote(),
      h("div", { class: "card" }, h("h2", {}, "Details"), details),
      h("div", { class: "card" }, h("h2", {}, "Bindings from this exchange"), source),
      h("div", { class: "card" }, h("h2", {}, "Publish a message"), form));
    async function refresh() {
      const [x, bs] = await Promise.all([api("GET", path), api("GET", path + "/bindings/source")]);
      fill(details, h("dt", {}, "Type"), h("dd", {}, x.type), h("dt", {}, "Durable"), h("dd", {}, String(x.durable)),
        h("dt", {}, "Auto-delete"), h("dd", {}, String(x.auto_delete)), h("dt", {}, "Internal"), h("dd", {}, String(x.internal)),
        h("dt", {}, "Arguments"), h("dd", {}, JSON.stringify(x.arguments || {})));
      fill(source, simpleTable([
        { label: "To", cell: b => b.destination_type === "queue"
            ? h("a", { href: `#/queue/${enc(b.vhost)}/${enc(b.destination)}` }, b.destination)
            : h("a", { href: `#/exchange/${enc(b.vhost)}/${enc(b.destination)}` }, b.destination) },
        { label: "Type", cell: b => b.destination_type },
        { label: "Routing key", cls: "wrap", cell: b => b.routing_key },
        { label: "Arguments", cell: b => JSON.stringify(b.arguments || {}) },
      ], name === "amq.default" ? [] : bs, null, name === "amq.default" ? "Every queue, by its name." : "No bindings."));
    }
    return { el, refresh };
  };

  views.connections = () => {
    const table = pagedTable({
      id: "connections", path: "/connections", noun: "connections", pageSize: 50,
      rowAttrs: c => ({ "data-name": c.name }),
      columns: [
        { label: "Name", sort: "name", cls: "wrap", cell: c => [c.name, c.user_provided_name ? h("div", { class: "muted" }, c.user_provided_name) : null] },
        { label: "User", sort: "user", cell: c => c.user },
        { label: "Virtual host", sort: "vhost", cell: c => c.vhost },
        { label: "Client", cell: c => { const p = c.client_properties || {}; return `${p.product || "?"} ${p.version || ""}`; } },
        { label: "State", cell: c => c.state },
        { label: "Channels", sort: "channels", num: true, cell: c => fmtNum(c.channels) },
        { label: "Received", sort: "recv_oct", num: true, cell: c => fmtBytes(c.recv_oct) },
        { label: "Sent", sort: "send_oct", num: true, cell: c => fmtBytes(c.send_oct) },
        { label: "Connected", sort: "connected_at", cell: c => new Date(c.connected_at).toLocaleTimeString() },
        { label: "", cell: c => confirmButton("Close", "Close this connection?", async () => {
            try {
              await api("DELETE", `/connections/${enc(c.name)}`, undefined, { "X-Reason": `closed from the dashboard by ${S.user}` });
              banner(`Connection ${c.name} closed.`, "info");
              await table.load();
            } catch (err) { actionError("Closing a connection", err); }
          }, { class: "danger close-connection" }) },
      ],
    });
    const el = h("div", {}, h("h1", {}, "Connections"), readOnlyNote(), h("div", { class: "card" }, table.el));
    return { el, refresh: () => table.load() };
  };

  function needsAdmin(title) {
    return { el: h("div", {}, h("h1", {}, title), h("div", { class: "readonly-note", id: "admin-only" },
      `This page needs the administrator tag; user '${S.user}' has tags [${S.tags.join(", ")}].`)) };
  }

  views.admin = () => {
    if (!isAdmin()) return needsAdmin("Admin");
    const users = h("div", { id: "users" }), vhosts = h("div", { id: "vhosts" }), perms = h("div", { id: "permissions" });
    const act = (what, fn) => async ev => {
      if (ev) ev.preventDefault();
      try { await fn(); banner(what + " done.", "info"); await refresh(); } catch (err) { actionError(what, err); }
    };
    const uName = h("input", { id: "user-name", required: true }), uPass = h("input", { id: "user-password", type: "password" });
    const uTags = h("input", { id: "user-tags", placeholder: "administrator, monitoring" });
    const userForm = h("form", { class: "inline", id: "user-form", onsubmit: act("Saving the user", () => {
      const body = { tags: uTags.value };
      if (uPass.value) body.password = uPass.value;
      return api("PUT", `/users/${enc(uName.value)}`, body);
    }) }, h("label", {}, "Name", uName), h("label", {}, "Password (empty: keep)", uPass), h("label", {}, "Tags", uTags),
      writeButton("Add / update user", null, "", { type: "submit" }));
    const vName = h("input", { id: "vhost-name", required: true });
    const vhostForm = h("form", { class: "inline", onsubmit: act("Adding the virtual host", () => api("PUT", `/vhosts/${enc(vName.value)}`, {})) },
      h("label", {}, "Name", vName), writeButton("Add virtual host", null, "", { type: "submit" }));
    const pUser = h("input", { id: "perm-user", required: true }), pVhost = h("input", { id: "perm-vhost", value: "/", required: true });
    const pConf = h("input", { value: ".*" }), pWrite = h("input", { value: ".*" }), pRead = h("input", { value: ".*" });
    const permForm = h("form", { class: "inline", onsubmit: act("Setting permissions", () =>
      api("PUT", `/permissions/${enc(pVhost.value)}/${enc(pUser.value)}`, { configure: pConf.value, write: pWrite.value, read: pRead.value })) },
      h("label", {}, "User", pUser), h("label", {}, "Virtual host", pVhost), h("label", {}, "Configure", pConf),
      h("label", {}, "Write", pWrite), h("label", {}, "Read", pRead), writeButton("Set permissions", null, "", { type: "submit" }));
    const el = h("div", {}, h("h1", {}, "Users, virtual hosts and permissions"),
      h("div", { class: "card" }, h("h2", {}, "Users"), users, h("h2", {}, "Add or update a user"), userForm),
      h("div", { class: "card" }, h("h2", {}, "Virtual hosts"), vhosts, h("h2", {}, "Add a virtual host"), vhostForm),
      h("div", { class: "card" }, h("h2", {}, "Permissions"), perms, h("h2", {}, "Set permissions"), permForm));
    async function refresh() {
      const [us, vs, ps] = await Promise.all([api("GET", "/users"), api("GET", "/vhosts"), api("GET", "/permissions")]);
      fill(users, simpleTable([
        { label: "Name", cell: u => u.name },
        { label: "Tags", cell: u => u.tags.join(", ") || "-" },
        { label: "", cell: u => confirmButton("Delete", `Delete user '${u.name}'?`, act("Deleting the user", () => api("DELETE", `/users/${enc(u.name)}`))) },
      ], us, u => ({ "data-name": u.name })));
      fill(vhosts, simpleTable([
        { label: "Name", cell: v => v.name },
        { label: "Messages", num: true, cell: v => fmtNum(v.messages) },
        { label: "Ready", num: true, cell: v => fmtNum(v.messages_ready) },
        { label: "Unacked", num: true, cell: v => fmtNum(v.messages_unacknowledged) },
        { label: "", cell: v => confirmButton("Delete", `Delete virtual host '${v.name}' with all its queues?`, act("Deleting the virtual host", () => api("DELETE", `/vhosts/${enc(v.name)}`))) },
      ], vs, v => ({ "data-name": v.name })));
      fill(perms, simpleTable([
        { label: "User", cell: p => p.user }, { label: "Virtual host", cell: p => p.vhost },
        { label: "Configure", cell: p => p.configure }, { label: "Write", cell: p => p.write }, { label: "Read", cell: p => p.read },
        { label: "", cell: p => confirmButton("Clear", `Clear '${p.user}' on '${p.vhost}'?`, act("Clearing permissions", () => api("DELETE", `/permissions/${enc(p.vhost)}/${enc(p.user)}`))) },
      ], ps));
    }
    return { el, refresh };
  };

  views.definitions = () => {
    if (!isAdmin()) return needsAdmin("Definitions");
    const summary = h("p", { class: "muted", id: "export-summary" });
    const exportBtn = h("button", { type: "button", id: "export", onclick: async () => {
      try {
        const defs = await api("GET", "/definitions");
        const blob = new Blob([JSON.stringify(defs, null, 2)], { type: "application/json" });
        const a = h("a", { href: URL.createObjectURL(blob), download: `syncmq-definitions-${new Date().toISOString().slice(0, 10)}.json` });
        document.body.appendChild(a); a.click(); a.remove();
        setTimeout(() => URL.revokeObjectURL(a.href), 10000);
        fill(summary, ["users", "vhosts", "permissions", "queues", "exchanges", "bindings"]
          .map(k => `${(defs[k] || []).length} ${k}`).join(", "));
      } catch (err) { actionError("Exporting definitions", err); }
    } }, "Download definitions (JSON)");
    const file = h("input", { type: "file", id: "import-file", accept: "application/json,.json" });
    const importForm = h("form", { class: "inline", id: "import-form", onsubmit: async ev => {
      ev.preventDefault();
      if (!file.files.length) { banner("Choose a definitions file first."); return; }
      let defs;
      try { defs = JSON.parse(await file.files[0].text()); } catch (e) { banner("Not a JSON file: " + e.message); return; }
      try {
        await api("POST", "/definitions", defs);
        banner("Definitions imported.", "info");
      } catch (err) { actionError("Importing definitions", err); }
    } }, file, writeButton("Import", null, "", { type: "submit", id: "import-submit" }));
    const el = h("div", {}, h("h1", {}, "Definitions"),
      h("div", { class: "card" }, h("h2", {}, "Export"),
        h("p", {}, "Users, virtual hosts, permissions, queues, exchanges and bindings, in RabbitMQ's format."), exportBtn, summary),
      h("div", { class: "card" }, h("h2", {}, "Import"),
        h("p", {}, "A definitions file from syncmq or RabbitMQ; existing objects are kept, new ones added."), importForm));
    return { el };
  };

  // ---------------------------------------------------------------- router, refresh loop

  function refreshSeconds() { return Number($("#refresh").value); }

  function schedule() {
    clearTimeout(S.timer);
    const secs = refreshSeconds();
    if (!secs || !S.view || !S.view.refresh) return;
    const seq = S.seq;
    S.timer = setTimeout(async () => {
      if (seq !== S.seq) return;
      await runRefresh(seq);
      if (seq === S.seq) schedule();
    }, secs * 1000);
  }

  async function runRefresh(seq) {
    try {
      await S.view.refresh();
      if (seq === S.seq && $("#banner").dataset.refresh === "1") clearBanner();
    } catch (err) {
      if (seq !== S.seq) return;
      if (err instanceof ApiError && err.status === 401 && !S.view.keepOn401) {
        // the credentials stopped working (user deleted or password changed)
        logout("Your login is no longer accepted: " + err.message);
        return;
      }
      banner("Refresh failed: " + err.message, "error", true);
    }
  }

  function route() {
    if (!S.token) { showLogin(); return; }
    const hash = location.hash.replace(/^#\/?/, "") || "overview";
    const [page, ...rest] = hash.split("/");
    const make = views[page] || views.overview;
    S.seq++;
    clearTimeout(S.timer);
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page ||
      (a.dataset.page + "s") === page);
    let view;
    try { view = make(...parseRoute(rest)); } catch (err) { banner(err.message); return; }
    S.view = view;
    fill($("#view"), view.el);
    document.title = `syncmq — ${page}`;
    if (view.refresh) runRefresh(S.seq).then(schedule);
  }

  // ---------------------------------------------------------------- login

  function b64(text) {
    const bytes = new TextEncoder().encode(text);
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin);
  }

  function showLogin(message) {
    $("#nav").hidden = true; $("#session").hidden = true;
    fill($("#view"));
    $("#login").hidden = false;
    const e = $("#login-error");
    e.hidden = !message; e.textContent = message || "";
    $("#login-user").focus();
  }

  function startSession() {
    $("#login").hidden = true;
    $("#nav").hidden = false; $("#session").hidden = false;
    $("#whoami").textContent = `${S.user} (${S.tags.join(", ")})`;
    for (const a of document.querySelectorAll(".admin-only")) a.hidden = !isAdmin();
    api("GET", "/overview").then(ov => {
      $("#node-info").textContent = `${ov.product_name || "syncmq"} ${ov.product_version || ""} · ${ov.node} · cluster ${ov.cluster_name}`;
    }).catch(() => {});
    route();
  }

  async function login(ev) {
    ev.preventDefault();
    const user = $("#login-user").value, pass = $("#login-pass").value;
    S.token = b64(user + ":" + pass);
    try {
      const me = await api("GET", "/whoami");
      S.user = me.name; S.tags = me.tags || [];
      if (!S.tags.some(t => MGMT_TAGS.includes(t))) throw new ApiError(401, null, "Not management user");
      sessionStorage.setItem("syncmq.session", JSON.stringify({ token: S.token, user: S.user, tags: S.tags }));
      $("#login-pass").value = "";
      clearBanner();
      startSession();
    } catch (err) {
      S.token = null;
      showLogin(err instanceof ApiError && err.status === 401 ? `Login refused: ${err.message}` : `Login failed: ${err.message}`);
    }
  }

  function logout(message) {
    sessionStorage.removeItem("syncmq.session");
    S.token = null; S.user = null; S.tags = []; S.view = null; S.seq++;
    S.history = []; S.last = null;
    clearTimeout(S.timer);
    clearBanner();
    showLogin(message);
  }

  function init() {
    $("#login").addEventListener("submit", login);
    $("#logout").addEventListener("click", () => logout());
    const saved = localStorage.getItem("syncmq.refresh");
    if (saved !== null && [...$("#refresh").options].some(o => o.value === saved)) $("#refresh").value = saved;
    $("#refresh").addEventListener("change", () => {
      localStorage.setItem("syncmq.refresh", $("#refresh").value);
      schedule();
    });
    window.addEventListener("hashchange", route);
    try {
      const s = JSON.parse(sessionStorage.getItem("syncmq.session") || "null");
      if (s && s.token) { S.token = s.token; S.user = s.user; S.tags = s.tags || []; }
    } catch (e) { /* a damaged entry: log in again */ }
    if (S.token) startSession(); else showLogin();
  }

  document.addEventListener("DOMContentLoaded", init);
})();
