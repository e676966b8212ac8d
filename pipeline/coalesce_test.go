package pipeline

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestCoalesce(t *testing.T) {
	for _, tc := range []struct {
		name        string
		kicksAt     []time.Duration // after the first kick at 0
		quiet, max  time.Duration
		wantAfter   time.Duration
		wantTrigger Trigger
	}{
		{"one kick waits the quiet period", nil, 5 * time.Second, time.Minute, 5 * time.Second, TriggerEvent},
		{"each kick restarts the quiet period", []time.Duration{2 * time.Second, 4 * time.Second}, 5 * time.Second, time.Minute, 9 * time.Second, TriggerEvent},
		{"a steady stream is cut at max delay",
			[]time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second, 5 * time.Second, 6 * time.Second, 7 * time.Second},
			2 * time.Second, 6 * time.Second, 6 * time.Second, TriggerEvent},
		{"quiet zero exports at once", nil, 0, time.Second, 0, TriggerEvent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				kicks := make(chan Trigger, 1)
				start := time.Now()
				kicks <- TriggerEvent
				var wg sync.WaitGroup
				defer wg.Wait()
				wg.Go(func() {
					for _, at := range tc.kicksAt {
						time.Sleep(at - time.Since(start))
						select { // as Pipeline.kick: never blocks
						case kicks <- TriggerEvent:
						default:
						}
					}
				})
				trig, ok := coalesce(t.Context(), kicks, tc.quiet, tc.max)
				if !ok || trig != tc.wantTrigger {
					t.Fatalf("got %q, %v", trig, ok)
				}
				if got := time.Since(start); got != tc.wantAfter {
					t.Errorf("fired after %v, want %v", got, tc.wantAfter)
				}
			})
		})
	}
}

func TestCoalesceTriggers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		kicks := make(chan Trigger, 1)
		kicks <- TriggerStartup
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() {
			time.Sleep(time.Second)
			kicks <- TriggerManual
			time.Sleep(time.Second)
			kicks <- TriggerEvent
		})
		trig, _ := coalesce(t.Context(), kicks, 3*time.Second, time.Minute)
		if trig != TriggerManual {
			t.Errorf("trigger %q, want manual (the strongest seen)", trig)
		}
	})
}

func TestCoalesceStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		kicks := make(chan Trigger, 1)
		kicks <- TriggerEvent
		go func() {
			time.Sleep(time.Second)
			cancel()
		}()
		if _, ok := coalesce(ctx, kicks, 10*time.Second, time.Minute); ok {
			t.Error("coalesce fired after its context ended")
		}
		if _, ok := coalesce(ctx, kicks, time.Second, time.Minute); ok {
			t.Error("coalesce waited for a kick after its context ended")
		}
	})
}
