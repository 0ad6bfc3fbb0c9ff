/* The Policies page (RabbitMQ's Admin > Policies): user policies and operator policies of
 * the selected vhost (or all), "Add / update a policy" with the definition as typed
 * key = value rows (the known keys offered by link, numbers sent as numbers), Edit (fills
 * the form) and Delete per row.
 *
 * Who may (the API decides, the page follows): user policies are listed and written by an
 * administrator or a policymaker, operator policies by an administrator only; anyone else
 * gets the page read-only with the reason, and the API's 401 if a write is forced.
 * A refused policy shows the API's 400 reason (RabbitMQ's "Validation failed" text).
 */
import {
  S, h, fill, enc, vhostLabel, api, ApiError, banner, actionError, writeButton, confirmButton,
  hasTag, isAdmin, scoped, vhostOptions, unescapeReason, listOrReason,
} from "./core.js";
import { simpleTable, argsEditor } from "./widgets.js";

const POLICY_WRITERS = ["policymaker", "administrator"];
const APPLY_TO = [["all", "Exchanges and queues"], ["queues", "Queues (all types)"],
                  ["classic_queues", "Classic queues"], ["quorum_queues", "Quorum queues"],
                  ["exchanges", "Exchanges"]];

/** The definition keys RabbitMQ's policy form offers, with the type it sends; ``op``: also
 * an operator-policy key; ``na``: accepted but not applicable on syncmq (one node, classic
 * queues served as RabbitMQ's; the broker logs a warning). */
export const POLICY_KEYS = [
  { key: "max-length", label: "Max length", type: "number", op: true, help: "ready messages kept at most" },
  { key: "max-length-bytes", label: "Max length bytes", type: "number", op: true, help: "ready message bytes kept at most" },
  { key: "overflow", label: "Overflow behaviour", type: "string", value: "drop-head",
    help: "drop-head, reject-publish or reject-publish-dlx" },
  { key: "message-ttl", label: "Message TTL", type: "number", op: true, help: "ms a message may wait in the queue" },
  { key: "expires", label: "Auto expire", type: "number", op: true, help: "ms unused before the queue is deleted" },
  { key: "dead-letter-exchange", label: "Dead letter exchange", type: "string", help: "exchange for dead-lettered messages" },
  { key: "dead-letter-routing-key", label: "Dead letter routing key", type: "string", help: "their routing key (default: theirs)" },
  { key: "dead-letter-strategy", label: "Dead letter strategy", type: "string", value: "at-most-once",
    help: "at-most-once (what syncmq does)" },
  { key: "alternate-exchange", label: "Alternate exchange", type: "string", help: "exchanges: where unroutable messages go" },
  { key: "queue-mode", label: "Lazy mode", type: "string", value: "lazy", na: true, help: "accepted, not applicable" },
  { key: "queue-version", label: "Version", type: "number", value: "2", na: true, help: "accepted, not applicable" },
  { key: "delivery-limit", label: "Delivery limit", type: "number", op: true, na: true, help: "quorum queues: accepted, not applicable" },
  { key: "ha-mode", label: "HA mode", type: "string", value: "all", na: true, help: "mirroring: accepted, not applicable" },
];

function policyError(what, err) {
  if (err instanceof ApiError && err.status !== 401) err.message = unescapeReason(err.message);
  actionError(what, err, "policymaker or administrator");
}

/** The add/update form; ``edit(kind, p)`` fills it with a listed policy. */
function policyForm(onDone) {
  const kind = h("select", { id: "policy-kind" }, h("option", { value: "policies" }, "Policy"),
    h("option", { value: "operator-policies", disabled: !isAdmin() }, "Operator policy"));
  const vh = h("select", { id: "policy-vhost" });
  const name = h("input", { id: "policy-name", required: true });
  const pattern = h("input", { id: "policy-pattern", required: true, placeholder: "^amq\\." });
  const applyTo = h("select", { id: "policy-apply-to" }, APPLY_TO.map(([v, l]) => h("option", { value: v }, l)));
  const priority = h("input", { id: "policy-priority", type: "number", value: "0", step: "1" });
  const defn = argsEditor("policy-definition", POLICY_KEYS);
  const showKeys = () => {  // an operator policy takes fewer keys (RabbitMQ's form offers those)
    for (const a of defn.el.querySelectorAll(".arg-link")) {
      const k = POLICY_KEYS.find(x => x.key === a.dataset.arg);
      a.hidden = kind.value === "operator-policies" && !k.op;
    }
  };
  kind.addEventListener("change", showKeys);
  const form = h("form", { id: "policy-form", onsubmit: async ev => {
    ev.preventDefault();
    let definition;
    try { definition = defn.value(); } catch (e) { banner(e.message); return; }
    const prio = Number(priority.value || 0);
    if (!Number.isInteger(prio)) { banner(`priority must be an integer; got '${priority.value}'`); return; }
    const what = kind.value === "policies" ? "Policy" : "Operator policy";
    try {
      const path = `/${kind.value}/${enc(vh.value)}/${enc(name.value)}`;
      await api("PUT", path, { pattern: pattern.value, "apply-to": applyTo.value, priority: prio, definition });
      banner(`${what} '${name.value}' saved.`, "info");
      name.value = ""; pattern.value = ""; priority.value = "0"; defn.reset();
      await onDone();
    } catch (err) { policyError(`Saving the ${what.toLowerCase()}`, err); }
  } },
    h("div", { class: "inline" }, h("label", {}, "Kind", kind), h("label", {}, "Virtual host", vh),
      h("label", {}, "Name", name), h("label", {}, "Pattern", pattern), h("label", {}, "Apply to", applyTo),
      h("label", {}, "Priority", priority)),
    h("label", { class: "block" }, "Definition"), defn.el,
    h("p", { class: "muted" }, "Lazy mode, version, delivery limit and HA keys are accepted for " +
      "compatibility and reported as not applicable (syncmq is one node)."),
    h("p", {}, writeButton("Add / update policy", null, "", { type: "submit", id: "policy-submit",
                                                              writers: POLICY_WRITERS })));
  vhostOptions().then(opts => fill(vh, opts)).catch(() => {});
  function edit(k, p) {
    kind.value = k; showKeys();
    if (![...vh.options].some(o => o.value === p.vhost)) vh.appendChild(h("option", { value: p.vhost }, p.vhost));
    vh.value = p.vhost; name.value = p.name; pattern.value = p.pattern;
    applyTo.value = p["apply-to"]; priority.value = String(p.priority);
    defn.set(p.definition);
    form.scrollIntoView();
  }
  return { el: form, edit };
}

function definitionCell(d) {
  return Object.entries(d || {}).map(([k, v]) =>
    h("div", { class: "policy-key", "data-key": k }, h("b", {}, k), ": ", JSON.stringify(v)));
}

function policyTable(kind, items, form, act) {
  const path = p => `/${kind}/${enc(p.vhost)}/${enc(p.name)}`;
  return simpleTable([
    { label: "Virtual host", cell: p => vhostLabel(p.vhost) },
    { label: "Name", cls: "wrap", cell: p => p.name },
    { label: "Pattern", cls: "wrap", cell: p => h("code", {}, p.pattern) },
    { label: "Apply to", cell: p => p["apply-to"] },
    { label: "Definition", cls: "wrap", cell: p => definitionCell(p.definition) },
    { label: "Priority", num: true, cell: p => String(p.priority) },
    { label: "", cell: p => [
      writeButton("Edit", () => form.edit(kind, p), "secondary policy-edit",
                  { writers: kind === "policies" ? POLICY_WRITERS : ["administrator"] }), " ",
      confirmButton("Delete", `Delete '${p.name}' in '${p.vhost}'?`,
                    act(`Deleting '${p.name}'`, () => api("DELETE", path(p))),
                    { writers: kind === "policies" ? POLICY_WRITERS : ["administrator"] })] },
  ], items, p => ({ "data-vhost": p.vhost, "data-name": p.name }),
  kind === "policies" ? "No policies." : "No operator policies.");
}

export const policies = () => {
  const userList = h("div", { id: "policies" }), opList = h("div", { id: "operator-policies" });
  const act = (what, fn) => async () => {
    try { await fn(); banner(what + " done.", "info"); await refresh(); } catch (err) { policyError(what, err); }
  };
  const form = policyForm(() => refresh());
  const note = hasTag(POLICY_WRITERS) ? null : h("div", { class: "readonly-note", id: "readonly-note" },
    `Read-only: user '${S.user}' has tags [${S.tags.join(", ")}]; policies need the policymaker or administrator tag.`);
  const el = h("div", {},
    h("h1", {}, "Policies", S.vhost ? h("span", { class: "muted" }, ` in virtual host ${S.vhost}`) : null), note,
    h("div", { class: "card" }, h("h2", {}, "User policies"), userList),
    h("div", { class: "card" }, h("h2", {}, "Operator policies"), opList),
    h("div", { class: "card" }, h("h2", {}, "Add / update a policy"), form.el));
  async function refresh() {
    const [ups, ops] = await Promise.all([
      listOrReason(scoped("/policies"), POLICY_WRITERS), listOrReason(scoped("/operator-policies"), ["administrator"])]);
    const show = (box, kind, r) => fill(box, r.note ? h("p", { class: "muted list-refused" }, r.note)
      : policyTable(kind, r.items, form, act));
    show(userList, "policies", ups);
    show(opList, "operator-policies", ops);
  }
  return { el, refresh };
};
