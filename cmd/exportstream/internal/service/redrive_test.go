package service

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestRedriveUnknownSequence: a redrive of sequences the dead-letter
// stream does not hold is a 404 that names them and says where to find
// the ones there are, not the NATS error; in a redrive of several, such a
// sequence fails with the same words while the others are redriven.
func TestRedriveUnknownSequence(t *testing.T) {
	_, c, _, _ := startAPIService(t)
	var dl struct {
		Entries []struct{ Sequence uint64 }
	}
	c.json("GET", "/api/v1/deadletters?limit=200", nil, http.StatusOK, &dl)
	if len(dl.Entries) == 0 {
		t.Fatal("the scenario left no dead letter")
	}
	there := dl.Entries[0].Sequence // the newest
	missing := there + 1000
	const redrive = "/api/v1/deadletters/redrive"
	noSuch := func(seq uint64) string {
		return fmt.Sprintf("no dead letter with sequence %d; list them with GET /api/v1/deadletters", seq)
	}

	if msg := c.wantError("POST", redrive, map[string]any{"sequences": []uint64{missing}}, http.StatusNotFound, "not_found"); msg != noSuch(missing) {
		t.Errorf("redrive of %d: %q, want %q", missing, msg, noSuch(missing))
	}
	msg := c.wantError("POST", redrive, map[string]any{"sequences": []uint64{missing, missing + 1, missing}}, http.StatusNotFound, "not_found")
	if want := fmt.Sprintf("no dead letters with sequences %d, %d; list them with GET /api/v1/deadletters", missing, missing+1); msg != want {
		t.Errorf("redrive of two unknown sequences: %q, want %q", msg, want)
	}

	var out struct {
		Redriven []struct{ Sequence uint64 }
		Failed   []struct {
			Sequence uint64
			Error    string
		}
	}
	c.json("POST", redrive, map[string]any{"sequences": []uint64{there, missing}}, http.StatusOK, &out)
	if len(out.Redriven) != 1 || out.Redriven[0].Sequence != there {
		t.Errorf("redriven %+v, want %d", out.Redriven, there)
	}
	if len(out.Failed) != 1 || out.Failed[0].Sequence != missing || out.Failed[0].Error != noSuch(missing) {
		t.Errorf("failed %+v, want %d: %q", out.Failed, missing, noSuch(missing))
	}
	// Redriven, it is no longer there.
	msg = c.wantError("POST", redrive, map[string]any{"sequences": []uint64{there}}, http.StatusNotFound, "not_found")
	if msg != noSuch(there) || strings.Contains(msg, "err_code") {
		t.Errorf("second redrive of %d: %q, want %q", there, msg, noSuch(there))
	}
}
