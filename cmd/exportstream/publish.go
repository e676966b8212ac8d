package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/cmd/exportstream/internal/service"
	"github.com/exportstream/exportstream/events"
)

func cmdPublish(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("publish", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("nats", "nats://127.0.0.1:4222", "NATS server URL")
	creds := fs.String("creds", "", "NATS credentials file")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("publish: name at least one file (SUBJECT<TAB>BODY a line)")
	}
	dups := 0
	pub, closeConn, err := connectPublisher(events.ConnectOptions{URL: *url, Name: "exportstream-publish", CredentialsFile: *creds},
		func(string) { dups++ })
	if err != nil {
		return service.NATSConnectError(*url, err,
			"start one (`exportstream demo` runs one and prints its URL), or pass --nats URL")
	}
	defer closeConn()
	start, n := time.Now(), 0
	for _, path := range fs.Args() {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		err = events.ReadStream(f, func(subject string, body []byte, msgID string) error {
			n++
			return pub(ctx, subject, body, msgID)
		})
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	fmt.Fprintf(stdout, "published %d events in %v\n", n, time.Since(start).Round(time.Millisecond))
	if dups > 0 {
		// Acknowledged but not stored: JetStream's de-duplication (README,
		// "Events in"). A changed body under a reused id is lost the same way.
		fmt.Fprintf(stdout, "%d of them not stored: an event with the same id was published within the stream's duplicate window\n", dups)
	}
	return nil
}

// connectPublisher connects to NATS and returns a function that publishes
// one event to JetStream and waits for the ack, with Nats-Msg-Id set to
// msgID when there is one, and a function that closes the connection.
// duplicate, when not nil, is called with the id of every event the
// stream acknowledged as a duplicate (not stored).
func connectPublisher(o events.ConnectOptions, duplicate func(msgID string)) (func(ctx context.Context, subject string, body []byte, msgID string) error, func(), error) {
	nc, err := events.Connect(o, nil)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return func(ctx context.Context, subject string, body []byte, msgID string) error {
		m := nats.NewMsg(subject)
		m.Data = body
		var opts []jetstream.PublishOpt
		if msgID != "" {
			opts = append(opts, jetstream.WithMsgID(msgID))
		}
		ack, err := js.PublishMsg(ctx, m, opts...)
		if err == nil && ack.Duplicate && duplicate != nil {
			duplicate(msgID)
		}
		return err
	}, nc.Close, nil
}
