package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/exportstream/exportstream/cmd/exportstream/internal/service"
	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/events/simulate"
)

// demoExports are the export definitions the demo adds to the config.
func demoExports(project string) []config.Export {
	quick := config.Coalesce{Quiet: time.Second, MaxDelay: 3 * time.Second}
	mk := func(name string, src config.Source, completion string) config.Export {
		return config.Export{Name: name, Project: project, Source: src, Completion: completion,
			Connection: "local-disk", Path: "exports/" + name + "/", Coalesce: quick,
			// The simulator changes things all the time: keep the bucket small.
			KeepLast: 20}
	}
	return []config.Export{
		mk("luckfrill-complete", config.Source{Directory: "Luckfrill"}, "complete"),
		mk("luckfrill-all", config.Source{Directory: "Luckfrill"}, "all"),
		mk("night-review-complete", config.Source{Job: "Night Review"}, "complete"),
		mk("whole-project", config.Source{Project: true}, "all"),
	}
}

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (default: the embedded default)")
	rate := fs.Float64("rate", 20, "simulated events per second")
	files := fs.Int("files", 60, "files the simulated team uploads")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return fmt.Errorf("config %s:\n%w", *path, err)
	}
	const project = "street-scenes"
	if len(cfg.Exports) == 0 {
		cfg.Exports = demoExports(project)
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("demo config: %w (the demo writes to a connection named local-disk)", err)
		}
	}
	if *path == "" {
		cfg.Log.Format = "text" // a person is watching
	}
	log := newLogger(cfg, stderr)
	svc := service.New(cfg, log)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return svc.Run(gctx) })
	g.Go(func() error {
		select {
		case <-gctx.Done():
			return nil
		case <-svc.Ready():
		}
		pub, closeConn, err := connectPublisher(events.ConnectOptions{URL: svc.NATSURL(), Name: "exportstream-demo"})
		if err != nil {
			return err
		}
		defer closeConn()
		dir := "(see connections)"
		for _, c := range cfg.Connections {
			if c.Local != nil {
				dir = c.Local.Dir
			}
		}
		fmt.Fprintf(stdout, "exportstream demo: a simulated team annotates project %q at %.0f events/s.\n"+
			"Exports appear under %s/exports/<definition>/ (latest.json points at the newest).\n"+
			"NATS: %s   HTTP: http://%s/metrics   Stop with Ctrl-C.\n",
			project, *rate, dir, svc.NATSURL(), svc.HTTPAddr())
		sim := simulate.New(simulate.Options{Project: project, Rate: *rate, Files: *files, Logger: log.With("part", "simulator")},
			simulate.Publisher(pub))
		return sim.Run(gctx)
	})
	return g.Wait()
}
