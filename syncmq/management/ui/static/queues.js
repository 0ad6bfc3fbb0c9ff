/* The queue list (with the "Add a queue" form) and a queue's page: tiles, message and rate
 * charts from the queue's history (RabbitMQ's ?lengths_age=&msg_rates_age= samples), details,
 * consumers, bindings (bind, unbind), publish, get, purge and delete. */
import {
  S, COLORS, h, fill, fmtNum, fmtRate, rateOf, enc, vhostLabel, api, ApiError, banner, actionError,
  writeButton, confirmButton, readOnlyNote, tile, kv, fillKv, scoped, vhostOptions, link,
} from "./core.js";
import {
  pagedTable, simpleTable, lineChart, fromSamples, argsEditor, QUEUE_ARGS, bindingsTable, bindForm,
  publishForm,
} from "./widgets.js";

/** The window the queue page asks the server's history for (s), and the sample spacing. */
const AGE = 600, INCR = 5;

export function queueFeatures(q) {
  return [q.durable ? h("span", { class: "badge", title: "durable" }, "D") : null,
          q.auto_delete ? h("span", { class: "badge", title: "auto-delete" }, "AD") : null,
          q.exclusive ? h("span", { class: "badge", title: "exclusive" }, "Excl") : null,
          Object.keys(q.arguments || {}).map(a => h("span", { class: "badge", title: a + " = " + JSON.stringify(q.arguments[a]) }, a.replace(/^x-/, ""))),
          // as RabbitMQ's list: the policies that apply, by name
          q.policy ? h("span", { class: "badge policy", title: "policy" }, q.policy) : null,
          q.operator_policy ? h("span", { class: "badge policy", title: "operator policy" }, q.operator_policy) : null];
}

const TYPE_NOTES = {
  classic: "",
  quorum: "syncmq is one node: a quorum queue is served by a durable classic queue, after " +
          "RabbitMQ's checks (durable, not auto-delete).",
  stream: "syncmq does not serve streams: the broker refuses the declaration (406).",
};

/** "Add a queue": vhost, type (sent as x-queue-type, as RabbitMQ's UI does), name,
 * durability, auto-delete and typed arguments (the known ones offered by link). */
function addQueueForm(onDone) {
  const vh = h("select", { name: "vhost", id: "new-queue-vhost" });
  const type = h("select", { id: "new-queue-type" },
    ["classic", "quorum", "stream"].map(t => h("option", { value: t }, t[0].toUpperCase() + t.slice(1))));
  const name = h("input", { name: "name", id: "new-queue-name", required: true });
  const durable = h("select", { id: "new-queue-durable" },
    h("option", { value: "true" }, "Durable"), h("option", { value: "false" }, "Transient"));
  const autoDelete = h("select", { id: "new-queue-auto-delete" },
    h("option", { value: "false" }, "No"), h("option", { value: "true" }, "Yes"));
  const note = h("p", { class: "muted", id: "new-queue-type-note", hidden: true });
  const args = argsEditor("new-queue-args", QUEUE_ARGS);
  type.addEventListener("change", () => {
    const classic = type.value === "classic";
    // as RabbitMQ's form: only a classic queue chooses durability and auto-delete
    if (!classic) { durable.value = "true"; autoDelete.value = "false"; }
    durable.disabled = autoDelete.disabled = !classic;
    note.textContent = TYPE_NOTES[type.value];
    note.hidden = classic;
  });
  const form = h("form", { id: "new-queue", onsubmit: async ev => {
    ev.preventDefault();
    let argv;
    try { argv = args.value(); } catch (e) { banner(e.message); return; }
    argv["x-queue-type"] = type.value;
    try {
      await api("PUT", `/queues/${enc(vh.value)}/${enc(name.value)}`, {
        durable: durable.value === "true", auto_delete: autoDelete.value === "true", arguments: argv });
      banner(`Queue '${name.value}' declared.`, "info");
      name.value = ""; args.reset();
      await onDone();
    } catch (err) { actionError("Declaring a queue", err); }
  } },
    h("div", { class: "inline" }, h("label", {}, "Virtual host", vh), h("label", {}, "Type", type),
      h("label", {}, "Name", name), h("label", {}, "Durability", durable),
      h("label", {}, "Auto delete", autoDelete)),
    note, h("label", { class: "block" }, "Arguments"), args.el,
    h("p", {}, writeButton("Add queue", null, "", { type: "submit", id: "new-queue-submit" })));
  vhostOptions().then(opts => fill(vh, opts)).catch(() => {});
  return form;
}

export const queues = () => {
  const table = pagedTable({
    id: "queues", path: scoped("/queues"), noun: "queues", pageSize: 50,
    rowAttrs: q => ({ "data-vhost": q.vhost, "data-name": q.name }),
    columns: [
      { label: "Virtual host", sort: "vhost", cell: q => vhostLabel(q.vhost) },
      { label: "Name", sort: "name", cls: "wrap", cell: q => link.queue(q.vhost, q.name, { class: "queue-link" }) },
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
  const el = h("div", {}, h("h1", {}, "Queues", S.vhost ? h("span", { class: "muted" }, ` in virtual host ${S.vhost}`) : null),
    readOnlyNote(), h("div", { class: "card" }, table.el),
    h("div", { class: "card" }, h("h2", {}, "Add a queue"), addQueueForm(() => table.load())));
  return { el, refresh: () => table.load() };
};

/** "Get messages" (POST /api/queues/{vhost}/{name}/get) and where its answer is shown. */
function getForm(path, after) {
  const got = h("div", { id: "get-results" });
  const count = h("input", { type: "number", min: 1, max: 500, value: 5, id: "get-count" });
  const ackmode = h("select", { id: "get-ackmode" },
    h("option", { value: "ack_requeue_true" }, "Nack, requeue (look only)"),
    h("option", { value: "reject_requeue_true" }, "Reject, requeue"),
    h("option", { value: "ack_requeue_false" }, "Ack (removes them)"),
    h("option", { value: "reject_requeue_false" }, "Reject, no requeue (dead-letters)"));
  const encoding = h("select", { id: "get-encoding" }, h("option", { value: "auto" }, "Auto string/base64"),
    h("option", { value: "base64" }, "base64"));
  const form = h("form", { class: "inline", id: "get-form", onsubmit: async ev => {
    ev.preventDefault();
    try {
      const msgs = await api("POST", path + "/get", { count: Number(count.value), ackmode: ackmode.value,
                                                       encoding: encoding.value, truncate: 50000 });
      fill(got, msgs.length ? msgs.map((m, i) => h("div", { class: "card message", "data-index": i },
        kv([["Message", `${i + 1} (${fmtNum(m.message_count)} left in the queue)`],
            ["Exchange", m.exchange || "(AMQP default)"], ["Routing key", m.routing_key],
            ["Redelivered", String(m.redelivered)], ["Properties", JSON.stringify(m.properties)],
            ["Payload", `${fmtNum(m.payload_bytes)} bytes, ${m.payload_encoding}`]]),
        h("pre", { class: "payload" }, m.payload)))
        : h("p", { class: "muted", id: "get-empty" }, "The queue is empty."));
      after();
    } catch (err) { actionError("Getting messages", err); }
  } }, h("label", {}, "Messages", count), h("label", {}, "Ack mode", ackmode),
    h("label", {}, "Encoding", encoding), writeButton("Get messages", null, "", { type: "submit", id: "get-submit" }));
  return [form, got];
}

/** Purge and Delete, each confirmed in the page. */
function queueActions(path, name, refresh) {
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
  return [h("p", {}, purge), h("p", {}, del)];
}

export const queue = (vhost, name) => {
  const path = `/queues/${enc(vhost)}/${enc(name)}`;
  const tiles = h("div", { class: "tiles", id: "queue-tiles" });
  const details = h("dl", { class: "kv", id: "queue-details" });
  const consumers = h("div", { id: "queue-consumers" });
  const bindings = h("div", { id: "queue-bindings" });
  const depthChart = lineChart("chart-queue-messages", [
    { label: "Ready", color: COLORS.publish, key: "ready" },
    { label: "Unacked", color: COLORS.ack, key: "unacked" },
    { label: "Total", color: COLORS.deliver, key: "total" }]);
  const rateChart = lineChart("chart-queue-rates", [
    { label: "Publish", color: COLORS.publish, key: "publish" },
    { label: "Deliver", color: COLORS.deliver, key: "deliver" },
    { label: "Ack", color: COLORS.ack, key: "ack" }], "/s");
  const refreshSoon = () => { refresh().catch(() => {}); };
  const live = [];  // the points each refresh of this page saw
  const el = h("div", {},
    h("h1", {}, "Queue ", h("span", { id: "queue-name" }, name), h("span", { class: "muted" }, ` in virtual host ${vhost}`)),
    readOnlyNote(), tiles,
    h("div", { class: "grid2" },
      h("div", { class: "card" }, h("h2", {}, "Queued messages"), depthChart.el),
      h("div", { class: "card" }, h("h2", {}, "Message rates"), rateChart.el)),
    h("div", { class: "grid2" },
      h("div", { class: "card" }, h("h2", {}, "Details"), details),
      h("div", { class: "card" }, h("h2", {}, "Actions"), queueActions(path, name, () => refresh()))),
    h("div", { class: "card" }, h("h2", {}, "Consumers"), consumers),
    h("div", { class: "card" }, h("h2", {}, "Bindings"), bindings,
      h("h3", {}, "Add a binding to this queue"), bindForm("queue-bind", vhost, { destination: name }, refreshSoon)),
    h("div", { class: "card" }, h("h2", {}, "Publish a message"),
      h("p", { class: "muted" }, "Published to this queue through the default exchange (routing key: its name)."),
      publishForm(vhost, "", name)),
    h("div", { class: "card" }, h("h2", {}, "Get messages"), getForm(path, refreshSoon)));
  async function refresh() {
    let q, bs;
    const hist = `?lengths_age=${AGE}&lengths_incr=${INCR}&msg_rates_age=${AGE}&msg_rates_incr=${INCR}`;
    try {
      [q, bs] = await Promise.all([api("GET", path + hist), api("GET", path + "/bindings")]);
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
    // the server's samples (every 5 s) before this page opened, then what each refresh saw
    live.push({ t: Date.now(), publish: rateOf(ms, "publish"), deliver: rateOf(ms, "deliver_get"),
                ack: rateOf(ms, "ack"), ready: q.messages_ready, unacked: q.messages_unacknowledged,
                total: q.messages });
    while (live.length && live[0].t < Date.now() - AGE * 1000) live.shift();
    const points = fromSamples(ms, q).filter(p => p.t < live[0].t).concat(live);
    depthChart.draw(points); rateChart.draw(points);
    fillKv(details, [
      ["Type", q.type], ["Features", queueFeatures(q)],
      ["Arguments", h("code", { id: "queue-arguments" }, JSON.stringify(q.arguments || {}))],
      q.policy ? ["Policy", h("a", { href: "#/policies", id: "queue-policy" }, q.policy)] : null,
      q.operator_policy ? ["Operator policy", h("span", { id: "queue-operator-policy" }, q.operator_policy)] : null,
      Object.keys(q.effective_policy_definition || {}).length ? ["Effective policy definition",
        h("dl", { class: "kv", id: "queue-effective-policy" }, Object.entries(q.effective_policy_definition)
          .map(([k, v]) => [h("dt", {}, k), h("dd", { "data-key": k }, JSON.stringify(v))]))] : null,
      ["Exclusive consumer", q.exclusive_consumer_tag || "-"],
      ["Published (total)", fmtNum(ms.publish)], ["Delivered (total)", fmtNum(ms.deliver_get)],
      ["Acked (total)", fmtNum(ms.ack)], ["Node", q.node]]);
    fill(consumers, simpleTable([
      { label: "Consumer tag", cell: c => c.consumer_tag },
      { label: "Channel", cell: c => link.channel(c.channel_details.name) },
      { label: "User", cell: c => c.channel_details.user },
      { label: "Ack required", cell: c => String(c.ack_required) },
      { label: "Exclusive", cell: c => String(c.exclusive) },
      { label: "Prefetch", num: true, cell: c => fmtNum(c.prefetch_count) },
    ], q.consumer_details || [], null, "No consumers."));
    fill(bindings, bindingsTable("queue-bindings-grid", bs, "destination", refreshSoon, "No bindings."));
  }
  return { el, refresh };
};
