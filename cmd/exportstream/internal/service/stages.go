package service

import (
	"context"
	"errors"
	"sync"
)

// stages runs long-running parts and stops them in order, as oklog/run's
// Group stops its actors, but stage by stage: once ctx ends or a part
// returns, the parts of the first stage are stopped (their context
// cancelled) and waited for, then those of the next stage, and so on.
// A part must return soon after its context ends.
type stages [][]func(ctx context.Context) error

// add adds part to stage i (0 stops first).
func (s *stages) add(i int, part func(ctx context.Context) error) {
	for len(*s) <= i {
		*s = append(*s, nil)
	}
	(*s)[i] = append((*s)[i], part)
}

// errPartEnded stops the other parts when one returned nil before it was
// stopped.
var errPartEnded = errors.New("a part of the service ended")

// run runs every part until ctx ends or one returns, then stops them in
// order. It returns once every part has, with the first error a part
// returned (nil when none did).
func (s stages) run(ctx context.Context) error {
	var (
		mu       sync.Mutex
		firstErr error
		once     sync.Once
	)
	ended := make(chan struct{}) // a part returned
	type running struct {
		cancel context.CancelCauseFunc
		wg     sync.WaitGroup
	}
	all := make([]*running, len(s))
	for i, parts := range s {
		r := &running{}
		all[i] = r
		sctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
		r.cancel = cancel
		for _, part := range parts {
			r.wg.Go(func() {
				err := part(sctx)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
				once.Do(func() { close(ended) })
			})
		}
	}
	cause := errPartEnded
	select {
	case <-ctx.Done():
		cause = context.Cause(ctx)
	case <-ended:
		mu.Lock()
		if firstErr != nil {
			cause = firstErr
		}
		mu.Unlock()
	}
	for _, r := range all {
		r.cancel(cause)
		r.wg.Wait()
	}
	mu.Lock()
	defer mu.Unlock()
	return firstErr
}
