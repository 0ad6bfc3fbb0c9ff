// amqplib (Node) against an AMQP broker, one scenario per run:
//
//   node interop.js URL SCENARIO PREFIX
//
// Prints "OK SCENARIO" and exits 0 when the scenario held; otherwise prints the failure and
// exits 1. Every wait is bounded (a timer rejects it). amqplib has no tx.* API, so there is
// no tx scenario here.
'use strict';
const amqp = require('amqplib');
const assert = require('assert/strict');

const WAIT_MS = 10000;
const [url, scenario, prefix] = process.argv.slice(2);

function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${WAIT_MS} ms`)), WAIT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// A consumer whose deliveries can be awaited one by one.
async function inbox(ch, queue, options = {}) {
  const items = [];
  const waiters = [];
  const { consumerTag } = await ch.consume(queue, (msg) => {
    if (waiters.length) waiters.shift()(msg); else items.push(msg);
  }, options);
  return {
    consumerTag,
    next(what) {
      if (items.length) return Promise.resolve(items.shift());
      return within(new Promise((resolve) => waiters.push(resolve)), what);
    },
    pending() { return items.length; },
  };
}

function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

function expectClose(ch, code) {
  return within(new Promise((resolve) => {
    ch.on('error', (err) => { assert.equal(err.code, code, String(err)); resolve(err); });
  }), `channel close ${code}`);
}

const scenarios = {
  async basic(conn) {
    const ch = await conn.createChannel();
    const ex = `${prefix}-x`;
    const q = `${prefix}-q`;
    await ch.assertExchange(ex, 'topic', { durable: false });
    const ok = await ch.assertQueue(q, { durable: false, autoDelete: false });
    assert.deepEqual(ok, { queue: q, messageCount: 0, consumerCount: 0 });
    await ch.bindQueue(q, ex, '*.node');
    ch.publish(ex, 'hello.node', Buffer.from('{"n":1}'), {
      contentType: 'application/json', persistent: true, priority: 2, correlationId: 'c',
      replyTo: 'r', messageId: 'm', timestamp: 1700000000, type: 't', appId: 'node',
      headers: { s: 'x', i: 7, b: true, nested: { a: [1, 'two'] } },
    });
    ch.publish(ex, 'hello.other', Buffer.from('dropped'));
    const box = await inbox(ch, q, { noAck: false });
    const msg = await box.next('delivery');
    assert.equal(msg.content.toString(), '{"n":1}');
    assert.equal(msg.fields.routingKey, 'hello.node');
    assert.equal(msg.fields.exchange, ex);
    assert.equal(msg.fields.redelivered, false);
    const p = msg.properties;
    assert.equal(p.contentType, 'application/json');
    assert.equal(p.deliveryMode, 2);
    assert.equal(p.priority, 2);
    assert.equal(p.correlationId, 'c');
    assert.equal(p.replyTo, 'r');
    assert.equal(p.messageId, 'm');
    assert.equal(p.timestamp, 1700000000);
    assert.equal(p.type, 't');
    assert.equal(p.appId, 'node');
    assert.deepEqual(p.headers, { s: 'x', i: 7, b: true, nested: { a: [1, 'two'] } });
    ch.ack(msg);
    await ch.cancel(box.consumerTag);
    await ch.unbindQueue(q, ex, '*.node');
    assert.deepEqual(await ch.deleteQueue(q), { messageCount: 0 });
    await ch.deleteExchange(ex);
    await ch.close();
  },

  async get_nack(conn) {
    const ch = await conn.createChannel();
    const q = `${prefix}-q`;
    await ch.assertQueue(q, { durable: false, autoDelete: false });
    for (const b of ['a', 'b', 'c']) ch.sendToQueue(q, Buffer.from(b));
    let m = await ch.get(q, { noAck: false });
    assert.equal(m.content.toString(), 'a');
    assert.equal(m.fields.messageCount, 2);
    ch.nack(m, false, true);
    m = await ch.get(q);
    assert.equal(m.content.toString(), 'a');
    assert.equal(m.fields.redelivered, true);
    ch.reject(m, false);
    const b = await ch.get(q);
    const c = await ch.get(q);
    assert.equal(b.content.toString() + c.content.toString(), 'bc');
    ch.nackAll(true);
    m = await ch.get(q, { noAck: true });
    assert.equal(m.content.toString(), 'b');
    assert.equal(m.fields.redelivered, true);
    assert.deepEqual(await ch.purgeQueue(q), { messageCount: 1 });
    assert.equal(await ch.get(q), false);
    await ch.deleteQueue(q);
    await ch.close();
  },

  async qos(conn) {
    const ch = await conn.createChannel();
    const q = `${prefix}-q`;
    await ch.assertQueue(q, { durable: false, autoDelete: true });
    for (let i = 0; i < 4; i++) ch.sendToQueue(q, Buffer.from(String(i)));
    await ch.prefetch(2);
    const box = await inbox(ch, q);
    const m0 = await box.next('m0');
    const m1 = await box.next('m1');
    await sleep(300);
    assert.equal(box.pending(), 0, 'prefetch 2 exceeded');
    ch.ack(m1, true);
    const m2 = await box.next('m2');
    const m3 = await box.next('m3');
    assert.deepEqual([m0, m1, m2, m3].map((m) => m.content.toString()), ['0', '1', '2', '3']);
    ch.ackAll();
    await ch.close();
  },

  async confirms(conn) {
    const ch = await conn.createConfirmChannel();
    const q = `${prefix}-q`;
    await ch.assertQueue(q, { durable: true, autoDelete: false });
    const acks = [];
    for (let i = 0; i < 50; i++) {
      acks.push(new Promise((resolve, reject) => {
        ch.sendToQueue(q, Buffer.from(String(i)), { persistent: true },
          (err) => (err ? reject(err) : resolve(i)));
      }));
    }
    await within(Promise.all(acks), 'confirms');
    await within(ch.waitForConfirms(), 'waitForConfirms');
    const returned = within(new Promise((resolve) => ch.once('return', resolve)), 'basic.return');
    ch.publish('amq.direct', `${prefix}-nowhere`, Buffer.from('r'), { mandatory: true });
    const r = await returned;
    assert.equal(r.fields.replyCode, 312);
    assert.equal(r.fields.replyText, 'NO_ROUTE');
    assert.equal(r.content.toString(), 'r');
    await within(ch.waitForConfirms(), 'confirm of a returned message');
    assert.deepEqual(await ch.deleteQueue(q), { messageCount: 50 });
    await ch.close();
  },

  async exchange_types(conn) {
    const ch = await conn.createChannel();
    const q = `${prefix}-q`;
    await ch.assertQueue(q, { exclusive: true });
    await ch.assertExchange(`${prefix}-f`, 'fanout', { autoDelete: true });
    await ch.assertExchange(`${prefix}-h`, 'headers', { autoDelete: true });
    await ch.assertExchange(`${prefix}-d`, 'direct', { autoDelete: true });
    await ch.bindExchange(`${prefix}-f`, `${prefix}-d`, 'k');
    await ch.bindQueue(q, `${prefix}-f`, '');
    await ch.bindQueue(q, `${prefix}-h`, '', { 'x-match': 'any', a: 1, b: 2 });
    ch.publish(`${prefix}-d`, 'k', Buffer.from('e2e'));
    ch.publish(`${prefix}-d`, 'other', Buffer.from('miss'));
    ch.publish(`${prefix}-h`, '', Buffer.from('hdr'), { headers: { b: 2 } });
    ch.publish(`${prefix}-h`, '', Buffer.from('hdr-miss'), { headers: { b: 3 } });
    const got = [];
    for (;;) {
      const m = await ch.get(q, { noAck: true });
      if (m === false) break;
      got.push(m.content.toString());
    }
    assert.deepEqual(got.sort(), ['e2e', 'hdr']);
    await ch.unbindExchange(`${prefix}-f`, `${prefix}-d`, 'k');
    await ch.close();
  },

  async errors(conn) {
    let ch = await conn.createChannel();
    let closed = expectClose(ch, 404);
    await assert.rejects(ch.checkQueue(`${prefix}-missing`), /NOT_FOUND - no queue/);
    await closed;
    ch = await conn.createChannel();
    closed = expectClose(ch, 403);
    await assert.rejects(ch.assertExchange('amq.node', 'direct'), /ACCESS_REFUSED/);
    await closed;
    ch = await conn.createChannel();
    await ch.assertQueue(`${prefix}-q`, { durable: false, autoDelete: true });
    closed = expectClose(ch, 406);
    await assert.rejects(ch.assertQueue(`${prefix}-q`, { durable: true }),
      /PRECONDITION_FAILED - inequivalent arg 'durable'/);
    await closed;
    ch = await conn.createChannel();
    closed = expectClose(ch, 406);
    ch.ack({ fields: { deliveryTag: 99 } });  // unknown delivery tag
    await closed;
    ch = await conn.createChannel();
    const connClosed = within(new Promise((resolve) => conn.once('error', resolve)),
      'connection error');
    // amqplib rejects the pending call with 'Channel ended' once the connection is closed
    await assert.rejects(ch.assertExchange(`${prefix}-bad`, 'no-such-type'));
    const err = await connClosed;
    assert.equal(err.code, 503);
    return 'closed';
  },

  async cancel_notify(conn) {
    const ch = await conn.createChannel();
    const q = `${prefix}-q`;
    await ch.assertQueue(q, { autoDelete: false });
    const cancelled = within(new Promise((resolve) => {
      ch.consume(q, (msg) => { if (msg === null) resolve('cancelled'); });
    }), 'basic.cancel');
    const other = await conn.createChannel();
    await other.deleteQueue(q);
    assert.equal(await cancelled, 'cancelled');
    await ch.close();
  },

  async exclusive(conn) {
    const ch = await conn.createChannel();
    const q = `${prefix}-q`;
    await ch.assertQueue(q, { exclusive: true });
    const conn2 = await amqp.connect(url);
    const ch2 = await conn2.createChannel();
    const closed = expectClose(ch2, 405);
    await assert.rejects(ch2.checkQueue(q), /RESOURCE_LOCKED/);
    await closed;
    await conn.close();
    const ch3 = await conn2.createChannel();
    const closed3 = expectClose(ch3, 404);
    await assert.rejects(ch3.checkQueue(q), /NOT_FOUND/);
    await closed3;
    await conn2.close();
    return 'closed';
  },

  // connection.update-secret (promise API): the same secret is accepted and the connection
  // goes on; a wrong one closes it with 530 (syncmq checks it; see docs/compatibility.md).
  async update_secret(conn) {
    await within(conn.updateSecret(Buffer.from('guest'), 'token refresh'), 'update-secret-ok');
    const ch = await conn.createChannel();
    const { queue } = await ch.assertQueue('', { exclusive: true });
    assert.match(queue, /^amq\.gen-/);
    const closed = within(new Promise((resolve) => conn.on('close', resolve)), 'close 530');
    conn.updateSecret(Buffer.from('not-the-password'), 'bad token').catch(() => {});
    const err = await closed;
    assert.equal(err.code, 530, String(err));
    assert.match(err.message, /New secret was refused by one of the backends/);
    return 'closed';
  },

  // amqplib's callback API end to end, update-secret included, on its own connection.
  async callback_api() {
    const cbapi = require('amqplib/callback_api');
    const q = `${prefix}-cb`;
    const step = (fn) => new Promise((resolve, reject) =>
      fn((err, value) => (err ? reject(err) : resolve(value))));
    const c = await within(step((cb) => cbapi.connect(url, cb)), 'callback connect');
    await within(step((cb) => c.updateSecret(Buffer.from('guest'), 'refresh', cb)),
      'callback update-secret');
    const ch = await step((cb) => c.createChannel(cb));
    await step((cb) => ch.assertQueue(q, { durable: false }, cb));
    ch.sendToQueue(q, Buffer.from('via callbacks'), { messageId: 'cb1' });
    const msg = await within(new Promise((resolve) => {
      ch.consume(q, (m) => resolve(m), { noAck: false });
    }), 'callback delivery');
    assert.equal(msg.content.toString(), 'via callbacks');
    assert.equal(msg.properties.messageId, 'cb1');
    ch.ack(msg);
    await step((cb) => ch.deleteQueue(q, {}, cb));
    await step((cb) => ch.close(cb));
    await step((cb) => c.close(cb));
    return 'open';
  },
};

async function main() {
  const fn = scenarios[scenario];
  if (!fn) throw new Error(`unknown scenario ${scenario}`);
  const conn = await within(amqp.connect(url), 'connect');
  const caps = conn.connection.serverProperties.capabilities;
  assert.equal(caps.publisher_confirms, true);
  assert.equal(caps.consumer_cancel_notify, true);
  conn.on('error', () => {});
  const result = await fn(conn);
  if (result !== 'closed') await conn.close();
  console.log(`OK ${scenario}`);
}

main().then(() => process.exit(0), (err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
