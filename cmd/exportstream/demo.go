package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/exportstream/exportstream/cmd/exportstream/internal/service"
	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors"
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
	// The whole project also in every training format (README, "For
	// training jobs").
	whole := mk("whole-project", config.Source{Project: true}, "all")
	whole.Formats = []string{config.FormatDiffgram, config.FormatCOCO, config.FormatYOLO, config.FormatJSONL}
	return []config.Export{
		mk("luckfrill-complete", config.Source{Directory: "Luckfrill"}, "complete"),
		mk("luckfrill-all", config.Source{Directory: "Luckfrill"}, "all"),
		mk("night-review-complete", config.Source{Job: "Night Review"}, "complete"),
		whole,
	}
}

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (default: the embedded default)")
	rate := fs.Float64("rate", 20, "simulated events per second")
	files := fs.Int("files", 60, "files the simulated team uploads")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return fmt.Errorf("config %s:\n%w", *path, err)
	}
	const project = "street-scenes"
	media := false // the simulated media files go to demoMediaConnection
	if len(cfg.Exports) == 0 {
		cfg.Exports = demoExports(project)
		if media, err = demoMedia(cfg); err != nil {
			return err
		}
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
		conn := events.ConnectOptions{URL: svc.NATSURL(), Name: "exportstream-demo"}
		pub, closeConn, err := connectPublisher(conn, nil)
		if err != nil {
			return err
		}
		defer closeConn()
		if media {
			pub = storeMedia(svc.Bucket(demoMediaConnection), pub)
		}
		sim := simulate.New(simulate.Options{Project: project, Rate: *rate, Files: *files, Logger: log.With("part", "simulator"),
			BlobPaths: media}, simulate.Publisher(pub))
		// The stream may hold an earlier run's events (the same ./data):
		// the team carries on from them, so that its events are newer than
		// what is stored instead of starting again at version 1.
		found, err := restoreSimulator(gctx, conn, cfg.NATS.Stream, project, sim, log)
		if err != nil {
			if gctx.Err() != nil {
				return nil
			}
			return err
		}
		fmt.Fprint(stdout, demoBanner(cfg, svc.HTTPAddr(), svc.NATSURL(), project, *rate, found))
		return sim.Run(gctx)
	})
	return g.Wait()
}

// demoMediaConnection is the local bucket the demo keeps its simulated
// media files in; the demo's exports sign their links with it.
const demoMediaConnection = "local-media"

// demoMediaExpiry is how long the demo's signed media links live.
const demoMediaExpiry = 7 * 24 * time.Hour

// demoMedia adds the demo's media bucket, a folder "media" beside the
// local-disk connection's, whose links the service serves under
// /files/local-media/ signed with a key kept beside it (media.key, made
// on the first run), so that links stay good across restarts; and makes
// the demo's exports sign their media links with it. Without a local
// local-disk connection it adds nothing and reports false.
func demoMedia(cfg *config.Config) (bool, error) {
	var disk *config.Local
	for _, c := range cfg.Connections {
		if c.Name == demoMediaConnection {
			return false, nil // the file has its own
		}
		if c.Name == "local-disk" && c.Local != nil && c.Local.Dir != "" {
			disk = c.Local
		}
	}
	if disk == nil {
		return false, nil
	}
	base := filepath.Dir(filepath.Clean(disk.Dir))
	key, err := demoSignKey(filepath.Join(base, "media.key"))
	if err != nil {
		return false, err
	}
	cfg.Connections = append(cfg.Connections, config.Connection{Name: demoMediaConnection, Type: config.TypeLocal,
		Local: &config.Local{Dir: filepath.Join(base, "media"), SignKey: config.Secret(key)}})
	for i := range cfg.Exports {
		cfg.Exports[i].Media = &config.Media{Connection: demoMediaConnection, Expiry: demoMediaExpiry}
	}
	return true, nil
}

// demoSignKey reads the media bucket's signing key from path, making it
// (32 random bytes, hex, mode 0600) if there is none.
func demoSignKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("demo: media signing key: %w", err)
	}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	key := hex.EncodeToString(raw)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("demo: media signing key: %w", err)
	}
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("demo: media signing key: %w", err)
	}
	return key, nil
}

// storeMedia wraps pub: before a file upload is published, the media
// object it stands for (simulate.MediaOf) is written into b, so that the
// links the export signs fetch it. An object already there (an earlier
// run's) is left as it is.
func storeMedia(b connectors.Bucket, pub func(ctx context.Context, subject string, body []byte, msgID string) error) func(ctx context.Context, subject string, body []byte, msgID string) error {
	return func(ctx context.Context, subject string, body []byte, msgID string) error {
		if obj, ok := simulate.MediaOf(body); ok {
			w, err := b.NewWriter(ctx, obj.Key, connectors.WriteOptions{ContentType: obj.ContentType, IfAbsent: true})
			if err == nil {
				if _, err = w.Write(obj.Data); err != nil {
					_ = w.Abort()
				} else {
					err = w.Close()
				}
			}
			if err != nil && !errors.Is(err, connectors.ErrExists) {
				return fmt.Errorf("demo: store media file %s: %w", obj.Key, err)
			}
		}
		return pub(ctx, subject, body, msgID)
	}
}

// demoBanner is what the demo prints once the service is up, at httpAddr
// and natsURL: what the team does (carries on or starts afresh), then
// where to look, the page first.
func demoBanner(cfg *config.Config, httpAddr, natsURL, project string, rate float64, found simulate.Restored) string {
	var b strings.Builder
	fmt.Fprintf(&b, "exportstream demo: a simulated team annotates project %q at %g events/s.\n", project, rate)
	where := "stream " + cfg.NATS.Stream
	if cfg.NATS.URL == "" {
		where += " (" + cfg.NATS.Embedded.StoreDir + ")"
	}
	if found.Events > 0 {
		fmt.Fprintf(&b, "It carries on from the %d events of the project already in %s: %d files, %d of them not removed;\n"+
			"versions and ids go on from there (the next file is %d).\n",
			found.Events, where, found.Files, found.Live, found.NextFile)
	} else {
		fmt.Fprintf(&b, "It starts the project afresh: %s holds no events of it.\n", where)
	}
	base := "http://" + httpAddr
	fmt.Fprintf(&b, "\n  Page:     %s/\n  API:      %s/api/v1/\n  Metrics:  %s/metrics\n  NATS:     %s\n\n",
		base, base, base, natsURL)
	dir := ""
	for _, c := range cfg.Connections {
		if c.Local != nil && len(cfg.Exports) > 0 && c.Name == cfg.Exports[0].Connection {
			dir = c.Local.Dir
		}
	}
	if dir != "" {
		fmt.Fprintf(&b, "Exports appear under %s/exports/<definition>/ (latest.json points at the newest). ", dir)
	}
	b.WriteString("Stop with Ctrl-C.\n")
	return b.String()
}

// restoreSimulator reads the events of project already in the event
// stream and restores sim from them (see simulate.Simulator.Restore).
func restoreSimulator(ctx context.Context, conn events.ConnectOptions, stream, project string, sim *simulate.Simulator, log *slog.Logger) (simulate.Restored, error) {
	nc, err := events.Connect(conn, nil)
	if err != nil {
		return simulate.Restored{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return simulate.Restored{}, err
	}
	subject := "diffgram.events." + project + ".>"
	cons, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Description:       "exportstream demo: the simulated team reads what it did before",
		FilterSubject:     subject,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return simulate.Restored{}, fmt.Errorf("demo: read %s from stream %s: %w", subject, stream, err)
	}
	defer js.DeleteConsumer(context.WithoutCancel(ctx), stream, cons.CachedInfo().Name)
	total := cons.CachedInfo().NumPending
	if total > 0 {
		log.Info("the simulated team reads what it did before", "part", "simulator", "stream", stream, "events", total)
	}
	var readErr error
	bodies := func(yield func([]byte) bool) {
		for got := uint64(0); got < total; {
			// Ask for no more than is there: a fetch waits until it has
			// its batch or its time is up.
			batch, err := cons.Fetch(int(min(1000, total-got)), jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				readErr = err
				return
			}
			n := 0
			for m := range batch.Messages() {
				n++
				got++
				if !yield(m.Data()) {
					return
				}
			}
			if err := batch.Error(); err != nil {
				readErr = err
				return
			}
			if n == 0 {
				readErr = fmt.Errorf("got %d of its %d events", got, total)
				return
			}
		}
	}
	found, err := sim.Restore(bodies)
	if readErr == nil && ctx.Err() != nil {
		readErr = ctx.Err()
	}
	if readErr != nil {
		return simulate.Restored{}, fmt.Errorf("demo: read %s from stream %s: %w", subject, stream, readErr)
	}
	return found, err
}
