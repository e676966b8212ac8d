package pipeline

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/events/eventstest"
)

// lockedBuffer is a log destination several goroutines write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestProgressLogOnlyWhenSlow: an export's progress is logged only once
// it has been rendering for progressLogAfter, and then at each call.
func TestProgressLogOnlyWhenSlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		logProgress := progressLogger(slog.New(slog.NewJSONHandler(&buf, nil)), &Record{ID: 7, Name: "big"})
		logProgress(10, 100, 1000)
		time.Sleep(progressLogAfter - time.Millisecond)
		logProgress(90, 900, 1000)
		if buf.Len() != 0 {
			t.Fatalf("progress logged before %v: %s", progressLogAfter, buf.String())
		}
		time.Sleep(time.Millisecond)
		logProgress(100, 1000, 1000)
		var line struct {
			Msg      string
			ExportID int64 `json:"export_id"`
			Percent  int
			Elapsed  string
		}
		if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
			t.Fatalf("%v: %s", err, buf.String())
		}
		if line.Msg != "export progress" || line.ExportID != 7 || line.Percent != 100 || line.Elapsed != progressLogAfter.String() {
			t.Errorf("after %v: %s", progressLogAfter, buf.String())
		}
	})
}

// TestQuickExportLogsNoProgress: an export that takes well under
// progressLogAfter logs "export written" and no progress line.
func TestQuickExportLogsNoProgress(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	b, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	scenario, exp := orderedExample(t)
	d := definitionFor(t, "luckfrill-complete", exp.Project, exp.Definitions["luckfrill-complete"])
	d.Connection, d.Quiet, d.MaxDelay = "disk", 20*time.Millisecond, time.Second
	var logs lockedBuffer
	start := time.Now()
	startHarnessWith(t, js, Options{Definitions: []*Definition{d}, Buckets: map[string]connectors.Bucket{"disk": b},
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))}, nil)
	publishLines(t, js, readLines(t, scenario))
	waitFor(t, "the export", 30*time.Second, func() bool { return strings.Contains(logs.String(), `"msg":"export written"`) })
	if took := time.Since(start); took >= progressLogAfter {
		t.Fatalf("the export took %v, not a quick one", took)
	}
	if strings.Contains(logs.String(), "export progress") {
		t.Errorf("a quick export logged its progress:\n%s", logs.String())
	}
}
