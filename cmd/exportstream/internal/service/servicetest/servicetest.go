// Package servicetest builds service configurations for tests: the
// embedded default on free ports and temporary folders, with one export
// definition per expected export of a contract example.
package servicetest

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

// Config is the embedded default with NATS and HTTP on free loopback
// ports and NATS's data in a temporary folder, writing to the one
// connection conn, with one definition per expected export of exp (path
// exports/<name>/, quiet 100 ms, max delay 2 s), sorted by name. It fails
// t if the result does not validate.
func Config(t testing.TB, exp *pipelinetest.Expected, conn config.Connection) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.NATS.Embedded.Listen = "127.0.0.1:0"
	cfg.NATS.Embedded.StoreDir = filepath.Join(t.TempDir(), "nats")
	cfg.State.Dir = filepath.Join(t.TempDir(), "state")
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Connections = []config.Connection{conn}
	for name, d := range exp.Definitions {
		e := config.Export{Name: name, Project: exp.Project, Completion: d.Completion,
			IncludeRemovedInstances: d.IncludeRemoved, Connection: conn.Name, Path: "exports/" + name + "/",
			Coalesce: config.Coalesce{Quiet: 100 * time.Millisecond, MaxDelay: 2 * time.Second}}
		for k, v := range d.Source {
			switch k {
			case "directory":
				e.Source.Directory = v.(string)
			case "directory_id":
				id := int64(v.(float64))
				e.Source.DirectoryID = &id
			case "job":
				e.Source.Job = v.(string)
			case "job_id":
				id := int64(v.(float64))
				e.Source.JobID = &id
			case "task_id":
				id := int64(v.(float64))
				e.Source.TaskID = &id
			case "project":
				e.Source.Project = true
			}
		}
		cfg.Exports = append(cfg.Exports, e)
	}
	slices.SortFunc(cfg.Exports, func(a, b config.Export) int { return strings.Compare(a.Name, b.Name) })
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	return cfg
}
