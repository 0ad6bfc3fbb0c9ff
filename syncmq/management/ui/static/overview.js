/* The overview page: broker-wide tiles, message-rate and queued-message charts (seeded with
 * the server's last 10 minutes, RabbitMQ's ?msg_rates_age=&lengths_age=), node details. */
import { S, HISTORY_MS, COLORS, h, fill, fmtNum, fmtRate, fmtBytes, fmtDuration, rateOf, api, tile } from "./core.js";
import { lineChart, fromSamples } from "./widgets.js";

export const overview = () => {
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
export function seedHistory(ov) {
  S.history = fromSamples(ov.message_stats || {}, ov.queue_totals || {})
    .filter(x => x.t > Date.now() - HISTORY_MS);
}
