/* Administrator pages: users, virtual hosts and permissions; definitions export/import. */
import { S, h, fill, fmtNum, enc, api, banner, actionError, writeButton, confirmButton, isAdmin } from "./core.js";
import { simpleTable } from "./widgets.js";

function needsAdmin(title) {
  return { el: h("div", {}, h("h1", {}, title), h("div", { class: "readonly-note", id: "admin-only" },
    `This page needs the administrator tag; user '${S.user}' has tags [${S.tags.join(", ")}].`)) };
}

export const admin = () => {
  if (!isAdmin()) return needsAdmin("Admin");
  const users = h("div", { id: "users" }), vhosts = h("div", { id: "vhosts" }), perms = h("div", { id: "permissions" });
  const act = (what, fn) => async ev => {
    if (ev) ev.preventDefault();
    try {
      await fn(); banner(what + " done.", "info");
      document.dispatchEvent(new Event("syncmq:vhosts"));  // the header's vhost selector
      await refresh();
    } catch (err) { actionError(what, err); }
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

export const definitions = () => {
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
