/* Connections and channels: the connection list, a connection's page (client properties,
 * its channels, data rates, close), the channel list and a channel's page (mode, prefetch,
 * unacked, rates, consumers). */
import {
  S, COLORS, HISTORY_MS, h, fill, fmtNum, fmtRate, fmtBytes, rateOf, enc, api, ApiError, banner, actionError,
  confirmButton, readOnlyNote, tile, kv, fillKv, scoped, link,
} from "./core.js";
import { pagedTable, simpleTable, lineChart } from "./widgets.js";

/** Close a connection (DELETE /api/connections/{name}, the reason in X-Reason, as RabbitMQ). */
function closeButton(name, after, attrs) {
  return confirmButton("Close", "Close this connection?", async () => {
    try {
      await api("DELETE", `/connections/${enc(name)}`, undefined, { "X-Reason": `closed from the dashboard by ${S.user}` });
      banner(`Connection ${name} closed.`, "info");
      await after();
    } catch (err) { actionError("Closing a connection", err); }
  }, attrs);
}

export const connections = () => {
  const table = pagedTable({
    id: "connections", path: scoped("/connections"), noun: "connections", pageSize: 50,
    rowAttrs: c => ({ "data-name": c.name }),
    columns: [
      { label: "Name", sort: "name", cls: "wrap", cell: c => [link.connection(c.name),
          c.user_provided_name ? h("div", { class: "muted" }, c.user_provided_name) : null] },
      { label: "User", sort: "user", cell: c => c.user },
      { label: "Virtual host", sort: "vhost", cell: c => c.vhost },
      { label: "Client", cell: c => { const p = c.client_properties || {}; return `${p.product || "?"} ${p.version || ""}`; } },
      { label: "State", cell: c => c.state },
      { label: "Channels", sort: "channels", num: true, cell: c => fmtNum(c.channels) },
      { label: "From client", sort: "recv_oct_details.rate", num: true, cell: c => fmtBytes(rateOf(c, "recv_oct")) + "/s" },
      { label: "To client", sort: "send_oct_details.rate", num: true, cell: c => fmtBytes(rateOf(c, "send_oct")) + "/s" },
      { label: "Connected", sort: "connected_at", cell: c => new Date(c.connected_at).toLocaleTimeString() },
      { label: "", cell: c => closeButton(c.name, () => table.load(), { class: "danger close-connection" }) },
    ],
  });
  const el = h("div", {}, h("h1", {}, "Connections", S.vhost ? h("span", { class: "muted" }, ` in virtual host ${S.vhost}`) : null),
    readOnlyNote(), h("div", { class: "card" }, table.el));
  return { el, refresh: () => table.load() };
};

/** A field table (client properties) as nested key/value lists; every value as text. */
function propsList(obj, id) {
  return kv(Object.keys(obj || {}).sort().map(k => {
    const v = obj[k];
    return [k, v !== null && typeof v === "object" && !Array.isArray(v) ? propsList(v) : JSON.stringify(v)];
  }), id ? { id } : {});
}

/** Channel columns shared by the channel list and a connection's page. */
function channelColumns() {
  const mode = c => [c.confirm ? h("span", { class: "badge", title: "confirm mode" }, "C") : null,
                     c.transactional ? h("span", { class: "badge", title: "transactional" }, "T") : null];
  return [
    { label: "Channel", sort: "name", cls: "wrap", cell: c => link.channel(c.name) },
    { label: "Number", sort: "number", num: true, cell: c => fmtNum(c.number) },
    { label: "User", sort: "user", cell: c => c.user },
    { label: "Virtual host", sort: "vhost", cell: c => c.vhost },
    { label: "Mode", cls: "mode", cell: mode },
    { label: "State", cell: c => c.state },
    { label: "Consumers", sort: "consumer_count", num: true, cell: c => fmtNum(c.consumer_count) },
    { label: "Prefetch", sort: "prefetch_count", num: true, cls: "prefetch", cell: c => fmtNum(c.prefetch_count) },
    { label: "Unacked", sort: "messages_unacknowledged", num: true, cls: "unacked", cell: c => fmtNum(c.messages_unacknowledged) },
    { label: "Publish", sort: "message_stats.publish_details.rate", num: true, cell: c => fmtRate(rateOf(c.message_stats, "publish")) },
    { label: "Deliver", sort: "message_stats.deliver_get_details.rate", num: true, cell: c => fmtRate(rateOf(c.message_stats, "deliver_get")) },
    { label: "Ack", sort: "message_stats.ack_details.rate", num: true, cell: c => fmtRate(rateOf(c.message_stats, "ack")) },
  ];
}

export const channels = () => {
  const cols = channelColumns();
  cols.splice(1, 0, { label: "Connection", cls: "wrap", cell: c => link.connection(c.connection_details.name) });
  const table = pagedTable({
    id: "channels", path: scoped("/channels"), noun: "channels", pageSize: 50,
    rowAttrs: c => ({ "data-name": c.name, "data-connection": c.connection_details.name }), columns: cols,
  });
  const el = h("div", {}, h("h1", {}, "Channels", S.vhost ? h("span", { class: "muted" }, ` in virtual host ${S.vhost}`) : null),
    h("p", { class: "muted" }, "Mode: C = confirm, T = transactional."), h("div", { class: "card" }, table.el));
  return { el, refresh: () => table.load() };
};

/** The "this object is gone" answer of a detail page (a 404 while it is open). */
function gone(box, id, what) {
  fill(box, h("p", { class: "error", id }, `This ${what} does not exist (any more).`));
}

export const connection = (name) => {
  const path = `/connections/${enc(name)}`;
  const tiles = h("div", { class: "tiles", id: "connection-tiles" });
  const details = h("dl", { class: "kv", id: "connection-details" });
  const props = h("div", { id: "client-properties" });
  const chans = h("div", { id: "connection-channels" });
  const points = [];  // data rates seen by this page: {t, recv, send}
  const chart = lineChart("chart-connection-data", [
    { label: "From client", color: COLORS.publish, key: "recv" },
    { label: "To client", color: COLORS.deliver, key: "send" }], "/s");
  const close = closeButton(name, async () => { location.hash = "#/connections"; }, { id: "close-connection" });
  const el = h("div", {}, h("h1", {}, "Connection ", h("span", { id: "connection-name" }, name)), readOnlyNote(), tiles,
    h("div", { class: "grid2" },
      h("div", { class: "card" }, h("h2", {}, "Details"), details, h("p", {}, close)),
      h("div", { class: "card" }, h("h2", {}, "Data rates (bytes)"), chart.el)),
    h("div", { class: "card" }, h("h2", {}, "Channels"), chans),
    h("div", { class: "card" }, h("h2", {}, "Client properties"), props));
  async function refresh() {
    let c, cs;
    try {
      [c, cs] = await Promise.all([api("GET", path), api("GET", path + "/channels")]);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) { gone(tiles, "connection-missing", "connection"); return; }
      throw err;
    }
    fill(tiles, tile("Channels", fmtNum(c.channels), "channels"),
      tile("From client", fmtBytes(rateOf(c, "recv_oct")) + "/s", "recv"),
      tile("To client", fmtBytes(rateOf(c, "send_oct")) + "/s", "send"),
      tile("Received", fmtBytes(c.recv_oct), "recv-total"), tile("Sent", fmtBytes(c.send_oct), "send-total"),
      tile("State", c.state, "state"));
    fillKv(details, [
      ["User", c.user], ["Virtual host", c.vhost], ["Client-provided name", c.user_provided_name || "-"],
      ["Protocol", c.protocol], ["Peer", `${c.peer_host}:${c.peer_port}`], ["Local", `${c.host}:${c.port}`],
      ["TLS", String(c.ssl)], ["Heartbeat", `${c.timeout} s`], ["Frame max", fmtNum(c.frame_max)],
      ["Channel max", fmtNum(c.channel_max)], ["Connected at", new Date(c.connected_at).toLocaleString()],
      ["Node", c.node]]);
    fill(props, propsList(c.client_properties, "client-properties-list"));
    fill(chans, simpleTable(channelColumns(), cs, ch => ({ "data-name": ch.name }), "No channels.", "connection-channels-grid"));
    points.push({ t: Date.now(), recv: rateOf(c, "recv_oct"), send: rateOf(c, "send_oct") });
    // the chart shows the last HISTORY_MS: older points go (a page left open must not grow)
    while (points.length && points[0].t < Date.now() - HISTORY_MS) points.shift();
    chart.draw(points);
  }
  return { el, refresh };
};

export const channel = (name) => {
  const path = `/channels/${enc(name)}`;
  const tiles = h("div", { class: "tiles", id: "channel-tiles" });
  const details = h("dl", { class: "kv", id: "channel-details" });
  const consumers = h("div", { id: "channel-consumers" });
  const el = h("div", {}, h("h1", {}, "Channel ", h("span", { id: "channel-name" }, name)), tiles,
    h("div", { class: "card" }, h("h2", {}, "Details"), details),
    h("div", { class: "card" }, h("h2", {}, "Consumers"), consumers));
  async function refresh() {
    let c;
    try { c = await api("GET", path); } catch (err) {
      if (err instanceof ApiError && err.status === 404) { gone(tiles, "channel-missing", "channel"); return; }
      throw err;
    }
    const ms = c.message_stats || {};
    fill(tiles, tile("Unacked", fmtNum(c.messages_unacknowledged), "unacked"),
      tile("Prefetch", fmtNum(c.prefetch_count), "prefetch"), tile("Consumers", fmtNum(c.consumer_count), "consumers"),
      tile("Publish", fmtRate(rateOf(ms, "publish")), "publish"), tile("Deliver", fmtRate(rateOf(ms, "deliver_get")), "deliver"),
      tile("Ack", fmtRate(rateOf(ms, "ack")), "ack"));
    fillKv(details, [
      ["Connection", link.connection(c.connection_details.name, { id: "channel-connection" })],
      ["Number", fmtNum(c.number)], ["User", c.user], ["Virtual host", c.vhost], ["State", c.state],
      ["Mode", c.confirm ? "confirm" : c.transactional ? "transactional" : "-"],
      ["Prefetch (per consumer)", fmtNum(c.prefetch_count)], ["Prefetch (global)", fmtNum(c.global_prefetch_count)],
      ["Uncommitted messages", fmtNum(c.messages_uncommitted)], ["Uncommitted acks", fmtNum(c.acks_uncommitted)],
      ["Published (total)", fmtNum(ms.publish)], ["Delivered (total)", fmtNum(ms.deliver_get)],
      ["Acked (total)", fmtNum(ms.ack)]]);
    fill(consumers, simpleTable([
      { label: "Consumer tag", cell: x => x.consumer_tag },
      { label: "Queue", cell: x => link.queue(x.queue.vhost, x.queue.name) },
      { label: "Ack required", cell: x => String(x.ack_required) },
      { label: "Exclusive", cell: x => String(x.exclusive) },
      { label: "Prefetch", num: true, cell: x => fmtNum(x.prefetch_count) },
    ], c.consumer_details || [], null, "No consumers."));
  }
  return { el, refresh };
};
