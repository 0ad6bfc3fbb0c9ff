/* The exchange list (with "Add an exchange") and an exchange's page: details, its bindings
 * (bind, unbind) and "Publish a message". */
import {
  S, h, fill, enc, vhostLabel, api, banner, actionError, writeButton, readOnlyNote, fillKv, scoped,
  vhostOptions, link,
} from "./core.js";
import { pagedTable, bindingsTable, bindForm, publishForm } from "./widgets.js";

export const exchanges = () => {
  const table = pagedTable({
    id: "exchanges", path: scoped("/exchanges"), noun: "exchanges", pageSize: 50,
    rowAttrs: x => ({ "data-vhost": x.vhost, "data-name": x.name }),
    columns: [
      { label: "Virtual host", sort: "vhost", cell: x => vhostLabel(x.vhost) },
      { label: "Name", sort: "name", cls: "wrap", cell: x => link.exchange(x.vhost, x.name) },
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
  const el = h("div", {}, h("h1", {}, "Exchanges", S.vhost ? h("span", { class: "muted" }, ` in virtual host ${S.vhost}`) : null), readOnlyNote(), h("div", { class: "card" }, table.el),
    h("div", { class: "card" }, h("h2", {}, "Add an exchange"), form));
  return { el, refresh: () => table.load() };
};

export const exchange = (vhost, name) => {
  const path = `/exchanges/${enc(vhost)}/${enc(name)}`;
  const isDefault = name === "amq.default";
  const details = h("dl", { class: "kv" });
  const source = h("div", { id: "exchange-bindings" });
  const dest = h("div", { id: "exchange-bindings-in" });
  const refreshSoon = () => { refresh().catch(() => {}); };
  const el = h("div", {}, h("h1", {}, "Exchange ", isDefault ? "(AMQP default)" : name,
    h("span", { class: "muted" }, ` in virtual host ${vhost}`)), readOnlyNote(),
    h("div", { class: "card" }, h("h2", {}, "Details"), details),
    h("div", { class: "card" }, h("h2", {}, "Bindings from this exchange"), source,
      // the default exchange binds every queue by its name and takes no other binding
      isDefault ? null : [h("h3", {}, "Add a binding from this exchange"),
                          bindForm("exchange-bind", vhost, { source: name }, refreshSoon)]),
    isDefault ? null : h("div", { class: "card" }, h("h2", {}, "Bindings to this exchange"), dest),
    h("div", { class: "card" }, h("h2", {}, "Publish a message"), publishForm(vhost, name)));
  async function refresh() {
    const [x, bs, bd] = await Promise.all([api("GET", path), api("GET", path + "/bindings/source"),
                                           isDefault ? [] : api("GET", path + "/bindings/destination")]);
    fillKv(details, [["Type", x.type], ["Durable", String(x.durable)], ["Auto-delete", String(x.auto_delete)],
                     ["Internal", String(x.internal)], ["Arguments", JSON.stringify(x.arguments || {})],
                     x.policy ? ["Policy", h("a", { href: "#/policies", id: "exchange-policy" }, x.policy)] : null,
                     Object.keys(x.effective_policy_definition || {}).length ? ["Effective policy definition",
                       JSON.stringify(x.effective_policy_definition)] : null]);
    fill(source, bindingsTable("exchange-bindings-grid", isDefault ? [] : bs, "source", refreshSoon,
                               isDefault ? "Every queue, by its name." : "No bindings."));
    if (!isDefault) fill(dest, bindingsTable("exchange-bindings-in-grid", bd, "destination", refreshSoon, "No bindings."));
  }
  return { el, refresh };
};
