package config

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestRetryDefaults: retries back off to at most 5 s unless the file says
// otherwise; an empty retry block keeps the default; a cap outside
// 100ms..1h is a problem at retry.max_backoff.
func TestRetryDefaults(t *testing.T) {
	if got, want := Default().Retry, (Retry{MaxBackoff: 5 * time.Second}); got != want {
		t.Errorf("Default().Retry = %+v, want %+v", got, want)
	}
	for data, want := range map[string]Retry{
		"retry:\n":                      {MaxBackoff: 5 * time.Second},
		"retry: {max_backoff: 1s}\n":    {MaxBackoff: time.Second},
		"retry: {max_backoff: 1m30s}\n": {MaxBackoff: 90 * time.Second},
	} {
		cfg, err := Parse([]byte(data), nil)
		if err != nil {
			t.Errorf("Parse(%q): %v", data, err)
			continue
		}
		if cfg.Retry != want {
			t.Errorf("Parse(%q): retry %+v, want %+v", data, cfg.Retry, want)
		}
	}
	for _, bad := range []time.Duration{0, -time.Second, 99 * time.Millisecond, time.Hour + time.Second} {
		c := Default()
		c.Retry.MaxBackoff = bad
		var errs *Errors
		if err := c.Validate(); !errors.As(err, &errs) {
			t.Errorf("max_backoff %v: Validate: %v, want *Errors", bad, err)
			continue
		}
		want := []Problem{{Path: "retry.max_backoff",
			Message: "must be between 100ms and 1h0m0s (got " + bad.String() + "; leave the key out for the default, 5s)"}}
		if diff := cmp.Diff(want, errs.Problems); diff != "" {
			t.Errorf("max_backoff %v: problems (-want +got):\n%s", bad, diff)
		}
	}
}
