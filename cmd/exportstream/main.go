// Command exportstream keeps Diffgram-format annotation exports in a
// bucket current as annotation events arrive on NATS JetStream.
//
//	exportstream run [--config FILE]            the service (no config: embedded default)
//	exportstream demo [--config FILE] [--rate N] [--files N]
//	                                            the service plus a simulated annotation team
//	exportstream check-config --config FILE [--print] [--probe [--timeout D]]
//	                                            report every problem in a config; exit 1 if any;
//	                                            --probe also writes and deletes an object in every bucket
//	exportstream publish [--nats URL] [--creds FILE] FILE...
//	                                            publish events from SUBJECT<TAB>BODY files
//	exportstream exports list|get|generate|url|data [--server URL] [--output table|json] ...
//	                                            list, inspect, generate and download exports through
//	                                            the service's HTTP API, for scripts and people
//	exportstream version                        version and VCS revision of the build
//
// `exportstream --help` lists every flag of every command; `exportstream
// help COMMAND` shows one command's flags with their defaults.
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
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/exportstream/exportstream/cmd/exportstream/internal/service"
	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/pipeline"
)

// version is set at build time with -ldflags "-X main.version=..."; when
// it is not, the build information says which version this is.
var version = "dev"

// usage lists every command with every flag; TestUsageNamesEveryFlag
// checks it against the commands' flag sets.
const usage = `exportstream: annotation events in, Diffgram exports out.

Usage:
  exportstream run [--config FILE]
        run the service (no --config: embedded NATS, exports under ./data/bucket)
  exportstream demo [--config FILE] [--rate N] [--files N]
        the service plus a simulated annotation team: --rate events per second (default 20),
        --files files uploaded (default 60)
  exportstream check-config --config FILE [--print] [--probe [--timeout D]]
        report every problem in FILE; exit 1 if any
        --print: show the config the service would run with (secrets hidden)
        --probe: write, read and delete a probe object in every connection, each within
        --timeout (default 20s)
  exportstream publish [--nats URL] [--creds FILE] FILE...
        publish events from SUBJECT<TAB>BODY files to JetStream
        --nats: the server (default nats://127.0.0.1:4222); --creds: a NATS credentials file
  exportstream exports list|get|generate|url|data [--server URL] [--token TOKEN] [--output table|json] ...
        list, inspect, generate and download exports through the service's HTTP API;
        every subcommand and flag: exportstream exports help
  exportstream version (or --version)
        the version, VCS revision and Go release this binary was built from

Each command's flags with their defaults: exportstream help COMMAND (or exportstream COMMAND -h).
`

// command is one of exportstream's commands: it runs with the arguments
// after its name and returns the exit status.
type command func(ctx context.Context, args []string, stdout, stderr io.Writer) int

// commands are the commands that take flags, by name.
var commands = map[string]command{
	"run": func(ctx context.Context, args []string, _, stderr io.Writer) int {
		return exitStatus(cmdRun(ctx, args, stderr), stderr)
	},
	"demo": func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		return exitStatus(cmdDemo(ctx, args, stdout, stderr), stderr)
	},
	"check-config": cmdCheckConfig,
	"publish": func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		return exitStatus(cmdPublish(ctx, args, stdout, stderr), stderr)
	},
	"exports": cmdExports,
}

func main() {
	if os.Getenv("GOGC") == "" {
		// The local state store's block cache and memtables are Go memory
		// in the binary built for production (CGO_ENABLED=0, see
		// deploy/Dockerfile): at the default GOGC=100 the heap may grow to
		// twice them between collections. Collecting at 50 % growth keeps
		// the peak within the memory budget (docs/performance.md) for a
		// few per cent more CPU; GOGC in the environment overrides it.
		debug.SetGCPercent(gcPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		keepMemoryLimit(time.Second)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// gcPercent is the service's GOGC unless the environment sets one.
const gcPercent = 50

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	bi, _ := debug.ReadBuildInfo()
	pipeline.Version = buildVersion(version, bi)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cmd, ok := commands[args[0]]; ok {
		return cmd(ctx, args[1:], stdout, stderr)
	}
	switch args[0] {
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, versionLine(version, bi))
		return 0
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			// A command's own flag set says the rest.
			if cmd, ok := commands[args[1]]; ok && args[1] != "exports" {
				cmd(ctx, []string{"-h"}, stdout, stdout)
				return 0
			}
			if args[1] == "exports" {
				return cmdExports(ctx, []string{"help"}, stdout, stderr)
			}
		}
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
	return 2
}

// exitStatus prints a command's error and returns the exit status: 0
// when it succeeded or showed its help, 2 for a bad flag (the flag
// package has said what), 1 otherwise.
func exitStatus(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(*parseError)):
		return 2
	}
	fmt.Fprintln(stderr, "exportstream:", err)
	return 1
}

// parseFailed returns the error of a flag set's Parse: flag.ErrHelp as
// it is, any other as a parseError.
func parseFailed(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return &parseError{err}
}

// parseError is an error of the flag package, which it has already
// printed with the command's flags.
type parseError struct{ err error }

func (e *parseError) Error() string { return e.err.Error() }
func (e *parseError) Unwrap() error { return e.err }

// buildVersion is the version this binary reports: stamped when it was
// set at build time (not "dev"), else the main module's version in the
// build information (a tag, or the pseudo-version go build derives from
// the VCS), else "dev".
func buildVersion(stamped string, bi *debug.BuildInfo) string {
	if stamped != "" && stamped != "dev" {
		return stamped
	}
	if bi != nil && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// versionLine is what `exportstream version` prints: the version, the
// VCS revision and commit time the build information records (and
// whether the working tree had changes), and the Go release.
func versionLine(stamped string, bi *debug.BuildInfo) string {
	v := "exportstream " + buildVersion(stamped, bi)
	if bi == nil {
		return v + " (no build information in this binary)"
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	var about []string
	if rev := settings["vcs.revision"]; rev != "" {
		about = append(about, "revision "+rev)
		if at := settings["vcs.time"]; at != "" {
			about = append(about, "committed "+at)
		}
		if settings["vcs.modified"] == "true" {
			about = append(about, "with uncommitted changes")
		}
	} else {
		about = append(about, "no VCS revision recorded: built by go run or go test, outside a checkout, or with -buildvcs=false")
	}
	return v + " (" + strings.Join(about, ", ") + "; " + bi.GoVersion + ")"
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
		return parseFailed(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "run: unexpected argument %q (the config is --config FILE)\n", fs.Arg(0))
		return &parseError{errors.New("unexpected argument")}
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
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
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
	// Whether the folders the service writes to (local buckets, the
	// state store, the embedded server's store) are usable only the disk
	// can tell (relative to the working directory, as for run).
	for _, err := range cfg.CheckFolders() {
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
	for i, r := range service.Probe(ctx, cfg, *timeout) {
		if r.OK() {
			fmt.Fprintf(stdout, "connection %s (%s): OK\n", r.Connection, r.Type)
			continue
		}
		failed++
		fmt.Fprintf(stdout, "connection %s (%s): %s\n    %s failed: %s\n    %s\n", r.Connection, r.Type, strings.ToUpper(r.Outcome),
			r.Step, r.Err, probeAdviceFor(cfg, i, r.Outcome))
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
