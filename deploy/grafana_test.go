package deploy_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// metrics are the names the service exports (or is adding), as they appear
// in PromQL: a histogram as its _bucket series. The dashboard and the
// alerts may use these and no other.
var metrics = []string{
	// events
	"exportstream_events_consumed_total",
	"exportstream_events_acked_total",
	"exportstream_events_applied_total",
	"exportstream_events_stale_total",
	"exportstream_events_dead_lettered_total",
	"exportstream_event_batch_failures_total",
	// consumer
	"exportstream_consumer_pending",
	"exportstream_consumer_ack_pending",
	// exports
	"exportstream_exports_total",
	"exportstream_exports_skipped_total",
	"exportstream_export_failures_total",
	"exportstream_export_bytes_total",
	"exportstream_export_files_total",
	"exportstream_export_duration_seconds_bucket",
	"exportstream_last_export_timestamp_seconds",
	"exportstream_exports_deleted_total",
	"exportstream_event_to_export_seconds_bucket",
	"exportstream_media_links_expire_at_seconds",
	// buckets
	"exportstream_bucket_operations_total",
	"exportstream_bucket_errors_total",
	"exportstream_bucket_last_write_ok",
	// process
	"process_resident_memory_bytes",
	"go_goroutines",
}

var (
	promStringRE   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promBracesRE   = regexp.MustCompile(`\{[^{}]*\}|\[[^\[\]]*\]`)
	promGroupingRE = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promTokenRE    = regexp.MustCompile(`\$?[A-Za-z_:][A-Za-z0-9_:]*|[0-9][0-9A-Za-z_.]*(?:[eE][+-][0-9]+)?`)
	promKeywords   = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
		"group_left", "group_right", "inf", "nan", "start", "end", "atan2"}
)

// metricNames returns the metric names a PromQL expression selects: the
// identifiers left once strings, label matchers, ranges and grouping
// labels are removed that are not functions, keywords, numbers or Grafana
// variables.
func metricNames(expr string) []string {
	e := promStringRE.ReplaceAllString(expr, `""`)
	e = promBracesRE.ReplaceAllString(e, " ")
	e = promGroupingRE.ReplaceAllString(e, " ")
	var names []string
	for _, loc := range promTokenRE.FindAllStringIndex(e, -1) {
		tok := e[loc[0]:loc[1]]
		rest := strings.TrimSpace(e[loc[1]:])
		switch {
		case tok[0] == '$' || (tok[0] >= '0' && tok[0] <= '9'):
		case slices.Contains(promKeywords, strings.ToLower(tok)):
		case strings.HasPrefix(rest, "("): // a function or aggregation
		default:
			names = append(names, tok)
		}
	}
	return names
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum by (le, definition) (rate(a_bucket{job=~"$job", x="y(z)"}[$__rate_interval]))`:         {"a_bucket"},
		`time() - max by (definition) (b{d=~"$definition"}) > 3600 and on () sum(rate(c[15m])) > 0`: {"b", "c"},
		`histogram_quantile(0.95, sum by (le) (rate(d_bucket[5m]))) > 1e3`:                          {"d_bucket"},
		`deriv(max(e)[30m:1m]) > 0 unless f offset 5m`:                                              {"e", "f"},
		`label_values(g{job=~"$job"}, definition)`:                                                  {"g", "definition"},
	} {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%s) = %v, want %v", expr, got, want)
		}
	}
}

// checkMetrics fails for every metric name of expr not in allowed, and
// counts the names in used.
func checkMetrics(t *testing.T, where, expr string, allowed []string, used map[string]int) {
	t.Helper()
	names := metricNames(expr)
	if len(names) == 0 {
		t.Errorf("%s: %q uses no metric", where, expr)
	}
	for _, n := range names {
		if !slices.Contains(allowed, n) {
			t.Errorf("%s: %q uses %s, which the service does not export", where, expr, n)
		}
		used[n]++
	}
}

type grafanaPanel struct {
	ID         int               `json:"id"`
	Type       string            `json:"type"`
	Title      string            `json:"title"`
	Datasource map[string]string `json:"datasource"`
	GridPos    struct{ H, W, X, Y int }
	Targets    []struct {
		Expr       string            `json:"expr"`
		RefID      string            `json:"refId"`
		Datasource map[string]string `json:"datasource"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // of a collapsed row
}

func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile("grafana/exportstream-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID           string         `json:"uid"`
		Title         string         `json:"title"`
		SchemaVersion int            `json:"schemaVersion"`
		Panels        []grafanaPanel `json:"panels"`
		Templating    struct {
			List []struct {
				Name       string            `json:"name"`
				Type       string            `json:"type"`
				Query      any               `json:"query"`
				Definition string            `json:"definition"`
				Datasource map[string]string `json:"datasource"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 || d.SchemaVersion > 41 {
		t.Errorf("uid %q, title %q, schemaVersion %d: want a uid, a title, schemaVersion 36..41", d.UID, d.Title, d.SchemaVersion)
	}
	const ds = "${DS_PROMETHEUS}"
	used := map[string]int{}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		switch v.Type {
		case "datasource":
			if v.Query != "prometheus" {
				t.Errorf("variable %s: query %v, want prometheus", v.Name, v.Query)
			}
		case "query":
			if v.Datasource["uid"] != ds {
				t.Errorf("variable %s: datasource %v, want %s", v.Name, v.Datasource, ds)
			}
			checkMetrics(t, "variable "+v.Name, v.Definition, append(metrics, "job", "definition", "connection"), used)
		}
	}
	if vars["DS_PROMETHEUS"] != "datasource" || vars["definition"] != "query" || vars["connection"] != "query" {
		t.Errorf("template variables %v: want the datasource DS_PROMETHEUS and the queries definition and connection", vars)
	}

	var panels []grafanaPanel
	for _, p := range d.Panels {
		panels = append(panels, p)
		panels = append(panels, p.Panels...)
	}
	ids := map[int]bool{}
	exprs := ""
	for _, p := range panels {
		if ids[p.ID] || p.ID == 0 {
			t.Errorf("panel %q: id %d is not unique", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource["uid"] != ds {
			t.Errorf("panel %q: datasource %v, want %s", p.Title, p.Datasource, ds)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no target", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Expr == "" {
				t.Errorf("panel %q: target %s has no expr", p.Title, tg.RefID)
				continue
			}
			if tg.Datasource["uid"] != ds {
				t.Errorf("panel %q: target %s datasource %v, want %s", p.Title, tg.RefID, tg.Datasource, ds)
			}
			checkMetrics(t, "panel "+p.Title, tg.Expr, metrics, used)
			exprs += tg.Expr + "\n"
		}
	}
	for _, m := range metrics {
		if used[m] == 0 {
			t.Errorf("no panel shows %s", m)
		}
	}
	for _, v := range []string{"$definition", "$connection"} {
		if !strings.Contains(exprs, v) {
			t.Errorf("no panel filters by %s", v)
		}
	}
}

// TestPrometheusAlerts: the rule file is well formed and uses only the
// service's metrics (and Prometheus' own `up`).
func TestPrometheusAlerts(t *testing.T) {
	files := yamlDocs[struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}](t, "prometheus/alerts.yaml")
	if len(files) != 1 || len(files[0].Groups) == 0 {
		t.Fatalf("want one document with rule groups")
	}
	used := map[string]int{}
	names := map[string]bool{}
	for _, g := range files[0].Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || names[r.Alert] {
				t.Errorf("group %s: alert name %q is empty or repeated", g.Name, r.Alert)
			}
			names[r.Alert] = true
			checkMetrics(t, "alert "+r.Alert, r.Expr, append(metrics, "up"), used)
			if !slices.Contains([]string{"critical", "warning"}, r.Labels["severity"]) {
				t.Errorf("alert %s: severity %q", r.Alert, r.Labels["severity"])
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: want a summary and a description", r.Alert)
			}
		}
	}
	for _, want := range []string{"exportstream_last_export_timestamp_seconds", "exportstream_events_dead_lettered_total", "exportstream_consumer_pending"} {
		if used[want] == 0 {
			t.Errorf("no alert on %s", want)
		}
	}
}
