// interop: RabbitMQ's Go client (amqp091-go) against an AMQP broker, one scenario per run.
//
//	interop -uri amqp://guest:guest@127.0.0.1:5672/ -scenario NAME -prefix UNIQUE
//
// Prints "OK NAME" and exits 0 when the scenario held, else prints what went wrong on stderr
// and exits 1. Every wait is bounded (a channel receive under a timer).
//
// Built offline against Debian's packaged client (golang-github-rabbitmq-amqp091-go-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o interop .
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const wait = 10 * time.Second

var prefix string

func check(what string, err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
		os.Exit(1)
	}
}

func expect(cond bool, format string, args ...interface{}) {
	if !cond {
		fmt.Fprintf(os.Stderr, "expectation failed: "+format+"\n", args...)
		os.Exit(1)
	}
}

func recv(ch <-chan amqp.Delivery, what string) amqp.Delivery {
	select {
	case d, ok := <-ch:
		expect(ok, "%s: delivery channel closed", what)
		return d
	case <-time.After(wait):
		expect(false, "%s: no delivery within %v", what, wait)
	}
	return amqp.Delivery{}
}

func publish(ch *amqp.Channel, exchange, key string, mandatory bool, p amqp.Publishing) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	check("publish", ch.PublishWithContext(ctx, exchange, key, mandatory, false, p))
}

func scenarioBasic(c *amqp.Connection) {
	ch, err := c.Channel()
	check("channel", err)
	ex, q := prefix+"-x", prefix+"-q"
	check("exchange.declare", ch.ExchangeDeclare(ex, "topic", false, true, false, false, nil))
	_, err = ch.QueueDeclare(q, false, false, false, false, nil)
	check("queue.declare", err)
	check("queue.bind", ch.QueueBind(q, "a.#", ex, false, nil))
	ts := time.Unix(1700000000, 0)
	publish(ch, ex, "a.b.c", false, amqp.Publishing{
		ContentType: "application/json", ContentEncoding: "utf-8", DeliveryMode: amqp.Persistent,
		Priority: 4, CorrelationId: "corr", ReplyTo: "reply", Expiration: "60000",
		MessageId: "mid", Timestamp: ts, Type: "type", UserId: "guest", AppId: "go",
		Headers: amqp.Table{"s": "str", "i": int32(42), "b": true, "f": 1.5,
			"t": amqp.Table{"nested": "yes"}, "a": []interface{}{"x", int32(1)}},
		Body: []byte(`{"hello":"go"}`),
	})
	publish(ch, ex, "b.a", false, amqp.Publishing{Body: []byte("unrouted")})
	msgs, err := ch.Consume(q, "go-consumer", false, false, false, false, nil)
	check("basic.consume", err)
	d := recv(msgs, "basic")
	expect(string(d.Body) == `{"hello":"go"}`, "body %q", d.Body)
	expect(d.ConsumerTag == "go-consumer", "consumer tag %q", d.ConsumerTag)
	expect(d.Exchange == ex && d.RoutingKey == "a.b.c", "exchange/rk %q %q", d.Exchange, d.RoutingKey)
	expect(d.ContentType == "application/json" && d.ContentEncoding == "utf-8", "content type")
	expect(d.DeliveryMode == amqp.Persistent && d.Priority == 4, "mode/priority")
	expect(d.CorrelationId == "corr" && d.ReplyTo == "reply" && d.Expiration == "60000", "props")
	expect(d.MessageId == "mid" && d.Type == "type" && d.UserId == "guest" && d.AppId == "go", "ids")
	expect(d.Timestamp.Equal(ts), "timestamp %v", d.Timestamp)
	expect(d.Headers["s"] == "str" && d.Headers["i"] == int32(42) && d.Headers["b"] == true, "headers %v", d.Headers)
	expect(d.Headers["f"] == 1.5, "float header %v", d.Headers["f"])
	nested, _ := d.Headers["t"].(amqp.Table)
	expect(nested["nested"] == "yes", "nested %v", d.Headers["t"])
	arr, _ := d.Headers["a"].([]interface{})
	expect(len(arr) == 2 && arr[0] == "x" && arr[1] == int32(1), "array %v", d.Headers["a"])
	check("ack", d.Ack(false))
	check("cancel", ch.Cancel("go-consumer", false))
	n, err := ch.QueueDelete(q, false, false, false)
	check("queue.delete", err)
	expect(n == 0, "queue not empty: %d", n)
	check("exchange.delete", ch.ExchangeDelete(ex, false, false))
	check("close", ch.Close())
}

func scenarioGetNack(c *amqp.Connection) {
	ch, err := c.Channel()
	check("channel", err)
	q := prefix + "-q"
	_, err = ch.QueueDeclare(q, false, true, false, false, nil)
	check("queue.declare", err)
	for _, b := range []string{"one", "two", "three"} {
		publish(ch, "", q, false, amqp.Publishing{Body: []byte(b)})
	}
	d, ok, err := ch.Get(q, false)
	check("get", err)
	expect(ok && string(d.Body) == "one" && d.MessageCount == 2 && !d.Redelivered, "get 1: %v %q %d", ok, d.Body, d.MessageCount)
	info, err := ch.QueueDeclarePassive(q, false, true, false, false, nil)
	check("passive declare", err)
	expect(info.Messages == 2, "message count %d", info.Messages)
	check("nack", d.Nack(false, true))
	d, _, err = ch.Get(q, false)
	check("get", err)
	expect(string(d.Body) == "one" && d.Redelivered, "requeued: %q %v", d.Body, d.Redelivered)
	check("reject", d.Reject(false))
	d1, _, _ := ch.Get(q, false)
	d2, _, _ := ch.Get(q, false)
	expect(string(d1.Body) == "two" && string(d2.Body) == "three", "order %q %q", d1.Body, d2.Body)
	check("nack multiple", d2.Nack(true, true))
	d, _, _ = ch.Get(q, true)
	expect(string(d.Body) == "two" && d.Redelivered, "after multi nack %q", d.Body)
	n, err := ch.QueuePurge(q, false)
	check("purge", err)
	expect(n == 1, "purged %d", n)
	_, ok, err = ch.Get(q, true)
	check("get empty", err)
	expect(!ok, "get-empty expected")
	check("close", ch.Close())
}

func scenarioQos(c *amqp.Connection) {
	ch, err := c.Channel()
	check("channel", err)
	q := prefix + "-q"
	_, err = ch.QueueDeclare(q, false, true, false, false, nil)
	check("queue.declare", err)
	for i := 0; i < 4; i++ {
		publish(ch, "", q, false, amqp.Publishing{Body: []byte(fmt.Sprint(i))})
	}
	check("qos", ch.Qos(2, 0, false))
	msgs, err := ch.Consume(q, "", false, false, false, false, nil)
	check("consume", err)
	a, b := recv(msgs, "qos 1"), recv(msgs, "qos 2")
	select {
	case d := <-msgs:
		expect(false, "prefetch 2 exceeded: got %q", d.Body)
	case <-time.After(300 * time.Millisecond):
	}
	check("ack multiple", b.Ack(true))
	c3, d4 := recv(msgs, "qos 3"), recv(msgs, "qos 4")
	got := []string{string(a.Body), string(b.Body), string(c3.Body), string(d4.Body)}
	expect(strings.Join(got, ",") == "0,1,2,3", "order %v", got)
	check("ack", d4.Ack(true))
	check("close", ch.Close())
}

func scenarioConfirms(c *amqp.Connection) {
	ch, err := c.Channel()
	check("channel", err)
	q := prefix + "-q"
	_, err = ch.QueueDeclare(q, true, false, false, false, nil)
	check("queue.declare", err)
	check("confirm.select", ch.Confirm(false))
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 100))
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	for i := 0; i < 50; i++ {
		publish(ch, "", q, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte("m")})
	}
	for i := 1; i <= 50; i++ {
		select {
		case cf := <-confirms:
			expect(cf.Ack && cf.DeliveryTag == uint64(i), "confirm %d: %+v", i, cf)
		case <-time.After(wait):
			expect(false, "no confirm %d", i)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", prefix+"-nowhere", true, false,
		amqp.Publishing{Body: []byte("returned")})
	check("publish mandatory", err)
	select {
	case r := <-returns:
		expect(r.ReplyCode == 312 && r.ReplyText == "NO_ROUTE" && string(r.Body) == "returned", "return %+v", r)
	case <-time.After(wait):
		expect(false, "no basic.return")
	}
	select {
	case cf := <-confirms:
		expect(cf.Ack && cf.DeliveryTag == 51, "confirm after return %+v", cf)
	case <-time.After(wait):
		expect(false, "no confirm for the returned message")
	}
	expect(dc.DeliveryTag == 51, "deferred tag %d", dc.DeliveryTag)
	n, err := ch.QueueDelete(q, false, false, false)
	check("queue.delete", err)
	expect(n == 50, "queue had %d", n)
	check("close", ch.Close())
}

func scenarioTx(c *amqp.Connection) {
	ch, err := c.Channel()
	check("channel", err)
	q := prefix + "-q"
	_, err = ch.QueueDeclare(q, false, true, false, false, nil)
	check("queue.declare", err)
	check("tx.select", ch.Tx())
	publish(ch, "", q, false, amqp.Publishing{Body: []byte("rolled back")})
	check("tx.rollback", ch.TxRollback())
	publish(ch, "", q, false, amqp.Publishing{Body: []byte("committed")})
	info, err := ch.QueueInspect(q)
	check("inspect", err)
	expect(info.Messages == 0, "uncommitted visible: %d", info.Messages)
	check("tx.commit", ch.TxCommit())
	d, ok, err := ch.Get(q, false)
	check("get", err)
	expect(ok && string(d.Body) == "committed", "got %q", d.Body)
	check("ack", d.Ack(false))
	check("tx.commit", ch.TxCommit())
	info, err = ch.QueueInspect(q)
	check("inspect", err)
	expect(info.Messages == 0, "left %d", info.Messages)
	check("close", ch.Close())
}

func scenarioExchangeTypes(c *amqp.Connection) {
	ch, err := c.Channel()
	check("channel", err)
	q := prefix + "-q"
	_, err = ch.QueueDeclare(q, false, true, true, false, nil)
	check("queue.declare", err)
	check("declare fanout", ch.ExchangeDeclare(prefix+"-f", "fanout", false, true, false, false, nil))
	check("declare headers", ch.ExchangeDeclare(prefix+"-h", "headers", false, true, false, false, nil))
	check("declare direct", ch.ExchangeDeclare(prefix+"-d", "direct", false, true, false, false, nil))
	check("e2e bind", ch.ExchangeBind(prefix+"-f", "any", prefix+"-d", false, nil))
	check("bind fanout", ch.QueueBind(q, "ignored", prefix+"-f", false, nil))
	check("bind headers", ch.QueueBind(q, "", prefix+"-h", false, amqp.Table{"x-match": "all", "k": "v"}))
	publish(ch, prefix+"-d", "any", false, amqp.Publishing{Body: []byte("via-e2e")})
	publish(ch, prefix+"-h", "", false, amqp.Publishing{Body: []byte("hdr-match"), Headers: amqp.Table{"k": "v", "x": "y"}})
	publish(ch, prefix+"-h", "", false, amqp.Publishing{Body: []byte("hdr-miss"), Headers: amqp.Table{"k": "w"}})
	var got []string
	for {
		d, ok, err := ch.Get(q, true)
		check("get", err)
		if !ok {
			break
		}
		got = append(got, string(d.Body))
	}
	sort.Strings(got)
	expect(strings.Join(got, ",") == "hdr-match,via-e2e", "routed %v", got)
	check("e2e unbind", ch.ExchangeUnbind(prefix+"-f", "any", prefix+"-d", false, nil))
	check("close", ch.Close())
}

func scenarioErrors(c *amqp.Connection) {
	ch, err := c.Channel()
	check("channel", err)
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	_, err = ch.QueueDeclarePassive(prefix+"-missing", false, false, false, false, nil)
	var ae *amqp.Error
	expect(errors.As(err, &ae) && ae.Code == 404 && ae.Server, "404 expected, got %v", err)
	expect(strings.Contains(ae.Reason, "NOT_FOUND - no queue '"+prefix+"-missing' in vhost '/'"), "reason %q", ae.Reason)
	select {
	case e := <-closed:
		expect(e != nil && e.Code == 404, "NotifyClose %v", e)
	case <-time.After(wait):
		expect(false, "channel not closed")
	}
	ch, err = c.Channel()
	check("channel", err)
	err = ch.ExchangeDeclare("amq.go", "direct", false, false, false, false, nil)
	expect(errors.As(err, &ae) && ae.Code == 403, "403 expected, got %v", err)
	ch, err = c.Channel()
	check("channel", err)
	_, err = ch.QueueDeclare(prefix+"-q", false, true, false, false, nil)
	check("declare", err)
	_, err = ch.QueueDeclare(prefix+"-q", true, true, false, false, nil)
	expect(errors.As(err, &ae) && ae.Code == 406, "406 expected, got %v", err)
	// a hard error: unknown exchange type is 503 and closes the connection
	ch, err = c.Channel()
	check("channel", err)
	connClosed := c.NotifyClose(make(chan *amqp.Error, 1))
	err = ch.ExchangeDeclare(prefix+"-bad", "no-such-type", false, false, false, false, nil)
	expect(errors.As(err, &ae) && ae.Code == 503, "503 expected, got %v", err)
	select {
	case e := <-connClosed:
		expect(e != nil && e.Code == 503, "connection close %v", e)
	case <-time.After(wait):
		expect(false, "connection not closed")
	}
}

func scenarioCancelNotify(c *amqp.Connection) {
	ch, err := c.Channel()
	check("channel", err)
	q := prefix + "-q"
	_, err = ch.QueueDeclare(q, false, false, false, false, nil)
	check("declare", err)
	cancels := ch.NotifyCancel(make(chan string, 1))
	_, err = ch.Consume(q, "go-ctag", false, false, false, false, nil)
	check("consume", err)
	other, err := c.Channel()
	check("channel", err)
	_, err = other.QueueDelete(q, false, false, false)
	check("delete", err)
	select {
	case tag := <-cancels:
		expect(tag == "go-ctag", "cancelled %q", tag)
	case <-time.After(wait):
		expect(false, "no basic.cancel")
	}
}

func scenarioExclusive(c *amqp.Connection, uri string) {
	ch, err := c.Channel()
	check("channel", err)
	q := prefix + "-q"
	_, err = ch.QueueDeclare(q, false, false, true, false, nil)
	check("declare exclusive", err)
	c2, err := amqp.Dial(uri)
	check("dial 2", err)
	defer c2.Close()
	ch2, err := c2.Channel()
	check("channel 2", err)
	_, err = ch2.QueueDeclarePassive(q, false, false, true, false, nil)
	var ae *amqp.Error
	expect(errors.As(err, &ae) && ae.Code == 405, "405 expected, got %v", err)
	check("close owner", c.Close())
	ch2, err = c2.Channel()
	check("channel 2", err)
	_, err = ch2.QueueDeclarePassive(q, false, false, true, false, nil)
	expect(errors.As(err, &ae) && ae.Code == 404, "exclusive queue outlived its connection: %v", err)
}

func main() {
	uri := flag.String("uri", "amqp://guest:guest@127.0.0.1:5672/", "AMQP URI")
	scenario := flag.String("scenario", "basic", "scenario name")
	flag.StringVar(&prefix, "prefix", "go", "prefix of the names this run declares")
	flag.Parse()
	c, err := amqp.DialConfig(*uri, amqp.Config{Heartbeat: 10 * time.Second, Locale: "en_US"})
	check("dial", err)
	caps, _ := c.Properties["capabilities"].(amqp.Table)
	expect(caps["publisher_confirms"] == true, "capabilities %v", caps)
	switch *scenario {
	case "basic":
		scenarioBasic(c)
	case "get_nack":
		scenarioGetNack(c)
	case "qos":
		scenarioQos(c)
	case "confirms":
		scenarioConfirms(c)
	case "tx":
		scenarioTx(c)
	case "exchange_types":
		scenarioExchangeTypes(c)
	case "errors":
		scenarioErrors(c)
	case "cancel_notify":
		scenarioCancelNotify(c)
	case "exclusive":
		scenarioExclusive(c, *uri)
	default:
		expect(false, "unknown scenario %q", *scenario)
	}
	if !c.IsClosed() {
		check("connection close", c.Close())
	}
	fmt.Println("OK", *scenario)
}
