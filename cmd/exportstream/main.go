// Command exportstream keeps Diffgram-format annotation exports in a
// bucket current as annotation events arrive on NATS JetStream.
//
//	exportstream run [--config FILE]            the service (no config: embedded default)
//	exportstream demo [--rate N]                the service plus a simulated annotation team
//	exportstream check-config --config FILE [--probe]
//	                                            report every problem in a config; exit 1 if any;
//	                                            --probe also writes and deletes an object in every bucket
//	exportstream publish [--nats URL] FILE...   publish events from SUBJECT<TAB>BODY files
//	exportstream exports list|get|generate|url|data [--server URL] [--output table|json] ...
//	                                            list, inspect, generate and download exports through
//	                                            the service's HTTP API, for scripts and people
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/exportstream/exportstream/cmd/exportstream/internal/service"
	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/pipeline"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `exportstream: annotation events in, Diffgram exports out.

Usage:
  exportstream run [--config FILE]             run the service (no --config: embedded NATS, ./data/bucket)
  exportstream demo [--rate N] [--config FILE] the service plus a simulated annotation team
  exportstream check-config --config FILE [--probe] [--print]
                                               report every problem in FILE; exit 1 if any
                                               --probe: write, read and delete a probe object in every connection
  exportstream publish [--nats URL] FILE...    publish events from SUBJECT<TAB>BODY files
  exportstream exports list|get|generate|url|data [--server URL] [--token TOKEN] [--output table|json]
                                               list, inspect, generate and download exports through the
                                               service's HTTP API; see: exportstream exports help
  exportstream version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	pipeline.Version = version
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(ctx, args[1:], stderr)
	case "demo":
		err = cmdDemo(ctx, args[1:], stdout, stderr)
	case "check-config":
		return cmdCheckConfig(ctx, args[1:], stdout, stderr)
	case "publish":
		err = cmdPublish(ctx, args[1:], stdout, stderr)
	case "exports":
		return cmdExports(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "exportstream", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 2
		}
		fmt.Fprintln(stderr, "exportstream:", err)
		return 1
	}
	return 0
}

// loadConfig loads FILE, or the embedded default when path is empty.
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		cfg := config.Default()
		return cfg, cfg.Validate()
	}
	return config.Load(path)
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	w = service.RedactWriter(w, cfg.SecretValues())
	level := slog.LevelInfo
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (default: the embedded default)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return fmt.Errorf("config %s:\n%w", *path, err)
	}
	return service.New(cfg, newLogger(cfg, stderr)).Run(ctx)
}

func cmdCheckConfig(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file to check")
	show := fs.Bool("print", false, "print the effective config (secrets hidden)")
	probe := fs.Bool("probe", false, "connect to every connection and write, read and delete a probe object")
	timeout := fs.Duration("timeout", 20*time.Second, "with --probe: how long each connection may take")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "check-config: --config FILE is required")
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		var errs *config.Errors
		if errors.As(err, &errs) {
			fmt.Fprintf(stderr, "%s: %d problem(s):\n%s\n", *path, len(errs.Problems), err)
		} else {
			fmt.Fprintf(stderr, "%s: %v\n", *path, err)
		}
		return 1
	}
	// Provider errors are printed below: blank any secret they carry.
	stdout = service.RedactWriter(stdout, cfg.SecretValues())
	stderr = service.RedactWriter(stderr, cfg.SecretValues())
	problems := service.ProviderProblems(cfg.Connections)
	// Whether the local state store's folder is usable only the disk can
	// tell (relative to the working directory, as for run).
	if err := config.CheckStateDir(cfg.State.Dir); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		fmt.Fprintf(stderr, "%s: %d problem(s):\n%s\n", *path, len(problems), strings.Join(problems, "\n"))
		return 1
	}
	fmt.Fprintf(stdout, "%s: OK (%d connection(s), %d export definition(s))\n", *path, len(cfg.Connections), len(cfg.Exports))
	if *show {
		fmt.Fprint(stdout, cfg.Redacted())
	}
	if !*probe {
		return 0
	}
	failed := 0
	for _, r := range service.Probe(ctx, cfg, *timeout) {
		if r.OK() {
			fmt.Fprintf(stdout, "connection %s (%s): OK\n", r.Connection, r.Type)
			continue
		}
		failed++
		fmt.Fprintf(stdout, "connection %s (%s): %s\n    %s failed: %s\n    %s\n", r.Connection, r.Type, strings.ToUpper(r.Outcome),
			r.Step, r.Err, probeAdvice[r.Outcome])
	}
	if failed > 0 {
		fmt.Fprintf(stderr, "%s: %d of %d connection(s) failed the probe\n", *path, failed, len(cfg.Connections))
		return 1
	}
	return 0
}

// probeAdvice is what an operator does about each probe outcome.
var probeAdvice = map[string]string{
	connectors.ProbeBucketMissing: "create the bucket (container), or fix its name in the connection",
	connectors.ProbeAccessDenied:  "the credentials work but may not write, read or delete here: grant put, get, delete and list on the bucket and path",
	connectors.ProbeWrongRegion:   "the bucket is in another region: set the connection's region to the bucket's",
	connectors.ProbeNoCredentials: "no valid credentials were found: set them in the connection, or in the environment the provider's default chain reads (environment variables, profile, workload/managed identity)",
	connectors.ProbeUnreachable:   "the endpoint did not answer: check the endpoint URL, DNS, proxy, firewall and TLS settings",
	connectors.ProbeFailed:        "see the error above",
}
