// perfgo: S1 with RabbitMQ's Go client (amqp091-go), the reference for syncmq-perf.
//
// One producer connection and one consumer connection (each in its own goroutine, so on
// separate OS threads as GOMAXPROCS allows), one queue, 16-byte transient messages, the consumer
// with no-ack; runs for -time seconds and prints one JSON line with the same rate definitions
// as syncmq-perf (messages / seconds since the common start).
//
// Build offline against Debian's packaged client (no module downloads):
//
//	cd bench/go && GO111MODULE=off GOPATH=/usr/share/gocode go build -o perfgo .
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func main() {
	uri := flag.String("uri", "amqp://guest:guest@localhost:5672/", "AMQP URI")
	seconds := flag.Float64("time", 10, "run time in seconds")
	size := flag.Int("size", 16, "body size")
	queue := flag.String("queue", "perf-go-q", "queue name")
	flag.Parse()
	fail := func(what string, err error) {
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
			os.Exit(1)
		}
	}

	pc, err := amqp.Dial(*uri)
	fail("dial producer", err)
	cc, err := amqp.Dial(*uri)
	fail("dial consumer", err)
	pch, err := pc.Channel()
	fail("channel", err)
	cch, err := cc.Channel()
	fail("channel", err)
	_, _ = pch.QueueDelete(*queue, false, false, false)
	_, err = pch.QueueDeclare(*queue, false, false, false, false, nil)
	fail("queue.declare", err)
	deliveries, err := cch.Consume(*queue, "", true, false, false, false, nil)
	fail("basic.consume", err)

	body := make([]byte, *size)
	duration := time.Duration(*seconds * float64(time.Second))
	start := time.Now()
	deadline := start.Add(duration)
	var sent, received int64
	var lastRecv atomic.Int64
	pubDone := make(chan time.Time)
	go func() {
		msg := amqp.Publishing{Body: body}
		n := int64(0)
		for {
			if n%256 == 0 && time.Now().After(deadline) {
				break
			}
			if err := pch.Publish("", *queue, false, false, msg); err != nil {
				fail("publish", err)
			}
			n++
		}
		atomic.StoreInt64(&sent, n)
		pubDone <- time.Now()
	}()
	timer := time.NewTimer(duration)
loop:
	for {
		select {
		case _, ok := <-deliveries:
			if !ok {
				break loop
			}
			received++
			lastRecv.Store(int64(time.Since(start)))
		case <-timer.C:
			break loop
		}
	}
	pubEnd := <-pubDone
	_, _ = pch.QueueDelete(*queue, false, false, false)
	pc.Close()
	cc.Close()
	s := atomic.LoadInt64(&sent)
	out := map[string]any{
		"tool":          "perfgo (amqp091-go)",
		"sent":          s,
		"sent_rate":     float64(s) / pubEnd.Sub(start).Seconds(),
		"received":      received,
		"received_rate": float64(received) / time.Duration(lastRecv.Load()).Seconds(),
		"duration_s":    time.Since(start).Seconds(),
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}
