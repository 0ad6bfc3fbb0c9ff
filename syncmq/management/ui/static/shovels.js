/* The Shovels page: RabbitMQ's Admin > "Shovel Status" and "Shovel Management" (the
 * rabbitmq_shovel_management plugin's pages) on one page.
 *
 * - Status (GET /api/shovels[/vhost]): name, vhost, state (running, starting, terminated),
 *   source and destination (protocol, URI without credentials, queue or exchange : key),
 *   last changed; a terminated shovel's reason on a row of its own, as RabbitMQ shows it.
 *   Restart (DELETE /api/shovels/vhost/{vhost}/{name}/restart) and Delete (DELETE
 *   /api/shovels/vhost/{vhost}/{name}, which clears the parameter) per row: RabbitMQ's UI
 *   calls, allowed to a monitoring user or an administrator, as RabbitMQ allows them.
 * - Definitions (GET /api/parameters/shovel[/vhost]): the runtime parameters, passwords in
 *   URIs masked (RabbitMQ's fmt_uri_with_credentials), and Delete (DELETE
 *   /api/parameters/shovel/...), for a policymaker or an administrator.
 * - "Add a shovel": the body RabbitMQ's form PUTs to /api/parameters/shovel/{vhost}/{name}
 *   (src/dest URI, several separated by spaces; queue, or exchange + routing key;
 *   prefetch; auto-delete never / after the initial length / after N messages; forward
 *   headers; reconnect delay; ack mode). Empty fields are left out, numbers are sent as
 *   numbers and anything else as typed, so that the API's reason ("Validation failed ...")
 *   says what is wrong; it is shown as text.
 *
 * Who may: the API decides (api.py, resources/shovels.py, resources/parameters.py); the page
 * asks only for the lists the user's tags can read and disables the controls they cannot use.
 */
import {
  S, h, fill, enc, vhostLabel, api, ApiError, banner, actionError, writeButton, confirmButton,
  hasTag, scoped, vhostOptions, unescapeReason, listOrReason,
} from "./core.js";

const MONITORS = ["monitoring", "administrator"];    // /api/shovels: list, restart, delete
const DEFINERS = ["policymaker", "administrator"];   // /api/parameters/shovel

/** A URI with its password masked, as RabbitMQ's UI shows definitions. */
export function maskUri(uri) {
  return String(uri).replace(/^([a-zA-Z0-9+.-]+):\/\/([^@/]*):([^@/]*)@/, "$1://$2:[redacted]@");
}
const showUris = v => (Array.isArray(v) ? v : [v]).filter(x => x !== undefined).map(maskUri).join(" ");

/** RabbitMQ's fmt_shovel_endpoint: a queue, or an exchange (or "as published") : key. */
function endpoint(queue, exchange, key) {
  if (queue !== undefined && queue !== null) return [h("span", { class: "ep" }, queue), h("sub", {}, " queue")];
  return [h("span", { class: "ep" }, exchange ? exchange : h("i", {}, "as published")),
          key ? ` : ${key}` : "", h("sub", {}, " exchange")];
}

function shovelError(what, err, needs) {
  if (err instanceof ApiError && err.status !== 401) err.message = unescapeReason(err.message);
  actionError(what, err, needs);
}

// ---------------------------------------------------------------- status

function operations(s, act) {
  const path = `/shovels/vhost/${enc(s.vhost)}/${enc(s.name)}`;
  return [
    writeButton("Restart", act(`Restarting '${s.name}'`, () => api("DELETE", path + "/restart")),
                "secondary shovel-restart", { writers: MONITORS }), " ",
    confirmButton("Delete", `Delete shovel '${s.name}' in '${s.vhost}'?`,
                  act(`Deleting '${s.name}'`, () => api("DELETE", path)), { writers: MONITORS }),
  ];
}

/** The status table: one row per shovel, and a row with the reason under a terminated one. */
function statusTable(items, act) {
  if (!items.length) return h("p", { class: "muted" }, "No shovels.");
  const heads = [["Name"], ["Virtual host"], ["State"], ["Source", 3], ["Destination", 3],
                 ["Last changed"], ["Operations"]];
  const width = 11;
  const rows = [];
  for (const s of items) {
    const attrs = { "data-vhost": s.vhost, "data-name": s.name, "data-state": s.state };
    const name = h("td", {}, s.name, h("sub", {}, " " + s.type));
    const state = h("span", { class: `shovel-state state-${s.state}` }, s.state);
    const when = h("td", { class: "shovel-timestamp" }, s.timestamp);
    if (s.state === "running") {
      rows.push(h("tr", attrs, name, h("td", {}, vhostLabel(s.vhost)), h("td", {}, state),
        h("td", {}, s.src_protocol), h("td", { class: "brk src-uri" }, s.src_uri),
        h("td", { class: "brk src-endpoint" }, endpoint(s.src_queue, s.src_exchange, s.src_exchange_key)),
        h("td", {}, s.dest_protocol), h("td", { class: "brk dest-uri" }, s.dest_uri),
        h("td", { class: "brk dest-endpoint" }, endpoint(s.dest_queue, s.dest_exchange, s.dest_exchange_key)),
        when, h("td", { class: "ops" }, operations(s, act))));
    } else {
      rows.push(h("tr", attrs, name, h("td", {}, vhostLabel(s.vhost)),
        h("td", { colspan: 7 }, state), when, h("td", { class: "ops" }, operations(s, act))));
      if (s.reason) {
        rows.push(h("tr", { class: "shovel-reason-row", "data-vhost": s.vhost, "data-name": s.name },
          h("td", { colspan: width }, h("pre", { class: "shovel-reason" }, s.reason))));
      }
    }
  }
  return h("table", { id: "shovels-grid" },
    h("thead", {}, h("tr", {}, heads.map(([x, n]) => h("th", { colspan: n }, x)))), h("tbody", {}, rows));
}

// ---------------------------------------------------------------- definitions

function definitionsTable(items, act) {
  if (!items.length) return h("p", { class: "muted" }, "No shovel definitions.");
  const v = p => p.value || {};
  const pick = (p, a, b) => (v(p)[a] !== undefined ? v(p)[a] : v(p)[b]);
  const cols = [
    ["Virtual host", p => vhostLabel(p.vhost)], ["Name", p => p.name],
    ["Source", p => h("span", { class: "src-uri" }, showUris(v(p)["src-uri"])), "brk"],
    ["", p => endpoint(v(p)["src-queue"], v(p)["src-exchange"], v(p)["src-exchange-key"]), "brk"],
    ["Prefetch", p => pick(p, "src-prefetch-count", "prefetch-count") ?? ""],
    ["Destination", p => h("span", { class: "dest-uri" }, showUris(v(p)["dest-uri"])), "brk"],
    ["", p => endpoint(v(p)["dest-queue"], v(p)["dest-exchange"], v(p)["dest-exchange-key"]), "brk"],
    ["Add headers", p => String(pick(p, "dest-add-forward-headers", "add-forward-headers") ?? false)],
    ["Reconnect delay", p => (v(p)["reconnect-delay"] ?? "") === "" ? "" : `${v(p)["reconnect-delay"]} s`],
    ["Ack mode", p => v(p)["ack-mode"] ?? ""],
    ["Auto-delete", p => String(pick(p, "src-delete-after", "delete-after") ?? "")],
    ["", p => confirmButton("Delete", `Delete shovel '${p.name}' in '${p.vhost}'?`,
      act(`Deleting '${p.name}'`, () => api("DELETE", `/parameters/shovel/${enc(p.vhost)}/${enc(p.name)}`),
          "policymaker or administrator"), { writers: DEFINERS }), "ops"],
  ];
  return h("table", { id: "shovel-definitions-grid" },
    h("thead", {}, h("tr", {}, cols.map(([label]) => h("th", {}, label)))),
    h("tbody", {}, items.map(p => h("tr", { "data-vhost": p.vhost, "data-name": p.name },
      cols.map(([, cell, cls]) => h("td", { class: cls || "" }, cell(p)))))));
}

// ---------------------------------------------------------------- the form

/** A number field's value: left out when empty, a number when it is one, else the text as
 * typed (the API's reason then names it). */
function numberOr(text) {
  const t = text.trim();
  if (!t) return undefined;
  return /^-?\d+(\.\d+)?$/.test(t) ? Number(t) : t;
}
/** A URI field: several URIs separated by spaces make a list (RabbitMQ's arrayable keys). */
function uriValue(text) {
  const parts = text.trim().split(/\s+/).filter(Boolean);
  return parts.length > 1 ? parts : (parts[0] || "");
}

/** One side of the form (source or destination): URI, queue or exchange + routing key. */
function endpointFields(side) {
  const uri = h("input", { id: `shovel-${side}-uri`, value: "amqp://", required: true, class: "uri" });
  const kind = h("select", { id: `shovel-${side}-type` },
    h("option", { value: "queue" }, "Queue"), h("option", { value: "exchange" }, "Exchange"));
  const queue = h("input", { id: `shovel-${side}-queue` });
  const exchange = h("input", { id: `shovel-${side}-exchange` });
  const key = h("input", { id: `shovel-${side}-exchange-key` });
  const qLabel = h("label", {}, "Queue", queue);
  const xLabels = [h("label", { hidden: true }, "Exchange", exchange), h("label", { hidden: true }, "Routing key", key)];
  kind.addEventListener("change", () => {
    qLabel.hidden = kind.value !== "queue";
    for (const l of xLabels) l.hidden = kind.value === "queue";
  });
  const el = [h("label", {}, "URI", uri), h("label", {}, "Type", kind), qLabel, ...xLabels];
  function value() {
    const out = { [`${side}-protocol`]: "amqp091", [`${side}-uri`]: uriValue(uri.value) };
    const put = (k, v) => { if (v !== "") out[`${side}-${k}`] = v; };
    if (kind.value === "queue") put("queue", queue.value);
    else { put("exchange", exchange.value); put("exchange-key", key.value); }
    return out;
  }
  function reset() { queue.value = ""; exchange.value = ""; key.value = ""; }
  return { el, value, reset };
}

function shovelForm(onDone) {
  const vh = h("select", { id: "shovel-vhost" });
  const name = h("input", { id: "shovel-name", required: true });
  const src = endpointFields("src"), dest = endpointFields("dest");
  const prefetch = h("input", { id: "shovel-src-prefetch-count", placeholder: "1000", inputmode: "numeric" });
  const delAfter = h("select", { id: "shovel-src-delete-after" },
    h("option", { value: "never" }, "Never"),
    h("option", { value: "queue-length" }, "After initial length transferred"),
    h("option", { value: "number" }, "After N messages"));
  const delN = h("input", { id: "shovel-src-delete-after-n", inputmode: "numeric", placeholder: "N" });
  const delNLabel = h("label", { hidden: true }, "Messages", delN);
  delAfter.addEventListener("change", () => { delNLabel.hidden = delAfter.value !== "number"; });
  const headers = h("select", { id: "shovel-dest-add-forward-headers" },
    h("option", { value: "false" }, "No"), h("option", { value: "true" }, "Yes"));
  const delay = h("input", { id: "shovel-reconnect-delay", placeholder: "5", inputmode: "numeric" });
  const ack = h("select", { id: "shovel-ack-mode" }, h("option", { value: "on-confirm" }, "On confirm"),
    h("option", { value: "on-publish" }, "On publish"), h("option", { value: "no-ack" }, "No ack"));

  function value() {
    const out = Object.assign(src.value(), dest.value());
    const num = (k, text) => { const n = numberOr(text); if (n !== undefined) out[k] = n; };
    num("src-prefetch-count", prefetch.value);
    if (delAfter.value === "number") out["src-delete-after"] = numberOr(delN.value) ?? "";
    else out["src-delete-after"] = delAfter.value;
    out["dest-add-forward-headers"] = headers.value === "true";
    num("reconnect-delay", delay.value);
    out["ack-mode"] = ack.value;
    return out;
  }
  const form = h("form", { id: "shovel-form", onsubmit: async ev => {
    ev.preventDefault();
    const path = `/parameters/shovel/${enc(vh.value)}/${enc(name.value)}`;
    try {
      await api("PUT", path, { component: "shovel", vhost: vh.value, name: name.value, value: value() });
      banner(`Shovel '${name.value}' added.`, "info");
      name.value = ""; src.reset(); dest.reset();
      await onDone();
    } catch (err) { shovelError("Adding the shovel", err, "policymaker or administrator"); }
  } },
    h("div", { class: "inline" }, h("label", {}, "Virtual host", vh), h("label", {}, "Name", name)),
    h("h3", {}, "Source"),
    h("div", { class: "inline" }, src.el, h("label", {}, "Prefetch count", prefetch),
      h("label", {}, "Auto-delete", delAfter), delNLabel),
    h("h3", {}, "Destination"),
    h("div", { class: "inline" }, dest.el, h("label", {}, "Add forwarding headers", headers)),
    h("h3", {}, "Shovel"),
    h("div", { class: "inline" }, h("label", {}, "Reconnect delay (s)", delay),
      h("label", {}, "Acknowledgement mode", ack)),
    h("p", { class: "muted" }, "URI examples: amqp:// (this broker, vhost /), amqp:///other-vhost, " +
      "amqp://user:password@host:5672/vhost, amqps://user:password@host?cacertfile=/path/ca.pem" +
      "&verify=verify_peer. Several URIs separated by spaces: one is picked per connection."),
    h("p", {}, writeButton("Add shovel", null, "", { type: "submit", id: "shovel-submit", writers: DEFINERS })));
  vhostOptions().then(opts => fill(vh, opts)).catch(() => {});
  return form;
}

// ---------------------------------------------------------------- the page

export const shovels = () => {
  const statusBox = h("div", { id: "shovels-status" }), defsBox = h("div", { id: "shovel-definitions" });
  const act = (what, fn, needs) => async () => {
    try { await fn(); banner(what + " done.", "info"); await refresh(); } catch (err) {
      shovelError(what, err, needs || "monitoring or administrator");
    }
  };
  const note = hasTag(DEFINERS) ? null : h("div", { class: "readonly-note", id: "readonly-note" },
    `User '${S.user}' has tags [${S.tags.join(", ")}]: adding a shovel needs the policymaker or administrator tag` +
    (hasTag(MONITORS) ? " (restarting and deleting one is allowed to monitoring users, as in RabbitMQ)." : "."));
  const el = h("div", {},
    h("h1", {}, "Shovels", S.vhost ? h("span", { class: "muted" }, ` in virtual host ${S.vhost}`) : null), note,
    h("div", { class: "card" }, h("h2", {}, "Shovel status"), statusBox),
    h("div", { class: "card" }, h("h2", {}, "Dynamic shovels"), defsBox),
    h("div", { class: "card" }, h("h2", {}, "Add a shovel"), shovelForm(() => refresh())));
  async function refresh() {
    const [st, defs] = await Promise.all([listOrReason(scoped("/shovels"), MONITORS),
                                          listOrReason(scoped("/parameters/shovel"), DEFINERS)]);
    const refused = r => h("p", { class: "muted list-refused" }, r.note);
    fill(statusBox, st.note ? refused(st) : statusTable(st.items, act));
    fill(defsBox, defs.note ? refused(defs) : definitionsTable(defs.items, act));
  }
  return { el, refresh };
};
