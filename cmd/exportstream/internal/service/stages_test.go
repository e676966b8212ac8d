package service

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestStagesStopInOrder: when the service's context ends, the parts of a
// stage are stopped only once every part of the stages before has
// returned.
func TestStagesStopInOrder(t *testing.T) {
	var mu sync.Mutex
	var order []string
	note := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, s)
	}
	pipeCtx := make(chan context.Context, 1)
	var s stages
	s.add(0, func(ctx context.Context) error {
		pctx := <-pipeCtx
		<-ctx.Done()
		// The batch in hand: the pipeline must still run meanwhile.
		if pctx.Err() != nil {
			t.Error("the pipeline was stopped while the consumer still ran")
		}
		note("consumer returned")
		return nil
	})
	s.add(1, func(ctx context.Context) error {
		pipeCtx <- ctx
		<-ctx.Done()
		note("pipeline returned")
		return nil
	})
	s.add(2, func(ctx context.Context) error {
		<-ctx.Done()
		note("nats closed")
		return nil
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return")
	}
	want := []string{"consumer returned", "pipeline returned", "nats closed"}
	if !slices.Equal(order, want) {
		t.Fatalf("order %q, want %q", order, want)
	}
}

// TestStagesPartFails: a part that fails stops the others, earlier
// stages first, with its error as their context's cause, and run returns
// it.
func TestStagesPartFails(t *testing.T) {
	boom := errors.New("pipeline failed")
	consumerStopped := make(chan error, 1)
	var s stages
	s.add(0, func(ctx context.Context) error {
		<-ctx.Done()
		consumerStopped <- context.Cause(ctx)
		return nil
	})
	s.add(1, func(context.Context) error { return boom })
	done := make(chan error, 1)
	go func() { done <- s.run(t.Context()) }()
	select {
	case err := <-done:
		if !errors.Is(err, boom) {
			t.Errorf("run = %v, want %v", err, boom)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after a part failed")
	}
	if cause := <-consumerStopped; !errors.Is(cause, boom) {
		t.Errorf("the consumer was stopped with cause %v, want %v", cause, boom)
	}
}
