package simulate_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/exportstream/exportstream/events/simulate"
)

func ExampleSimulator_Next() {
	s := simulate.New(simulate.Options{Seed: 1}, nil)
	for range len(s.Setup()) + 3 {
		subject, _, _ := s.Next()
		fmt.Println(subject)
	}
	// Output:
	// diffgram.events.street-scenes.project.upserted
	// diffgram.events.street-scenes.directory.upserted
	// diffgram.events.street-scenes.directory.upserted
	// diffgram.events.street-scenes.label.upserted
	// diffgram.events.street-scenes.label.upserted
	// diffgram.events.street-scenes.label.upserted
	// diffgram.events.street-scenes.label.upserted
	// diffgram.events.street-scenes.attribute_group.upserted
	// diffgram.events.street-scenes.attribute_group.upserted
	// diffgram.events.street-scenes.job.upserted
	// diffgram.events.street-scenes.file.uploaded
	// diffgram.events.street-scenes.task.created
	// diffgram.events.street-scenes.task.status_changed
}

// The demo wires Run to a NATS JetStream publish; here the Publisher prints.
func ExampleSimulator_Run() {
	pub := func(ctx context.Context, subject string, body []byte, msgID string) error {
		// e.g. js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: body,
		//     Header: nats.Header{"Nats-Msg-Id": []string{msgID}}})
		fmt.Println(subject, msgID)
		return nil
	}
	s := simulate.New(simulate.Options{Rate: 20, Logger: slog.Default()}, pub)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.Run(ctx); err != nil {
		fmt.Println("simulator:", err)
	}
}
