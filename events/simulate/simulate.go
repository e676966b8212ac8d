// Package simulate plays an annotation team working on a sample project and
// emits what the annotation platform would publish, as EVENTS.md describes:
// one CloudEvents 1.0 JSON body per message, on subject
// diffgram.events.<project>.<entity>.<action>. The `demo` command feeds it to
// the embedded NATS server; benchmarks and tests use it as a load generator
// or read its stream with Next.
//
// What it promises:
//
//   - The stream starts with the setup events that create the demo world
//     (see Setup and the Directory*, Job*, Label* constants), then files are
//     uploaded, annotated, reviewed in the job, completed, reopened, edited
//     and, rarely, removed.
//   - Every event carries the whole current snapshot of its entity, with a
//     version that grows by exactly one on every change of that entity. An
//     instance edit is a new row (new id, same root_id, previous_id = the
//     replaced row, version + 1); a delete or undelete changes soft_delete on
//     the same row (version + 1). Instance ids only grow.
//   - Event ids are UUID-shaped, unique, and double as the Nats-Msg-Id.
//   - With Options.Seed set, the stream (ids, times and bodies) is the same
//     on every run.
//   - After Restore with the events an earlier run published, the stream
//     carries on from that world: versions and ids continue, no file
//     changes type, and the setup is not sent again.
//
// A Simulator is not safe for concurrent use: call Next, Run and Setup from
// one goroutine at a time.
package simulate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"regexp"
	"strings"
	"time"
)

// Publisher sends one event; msgID goes in the Nats-Msg-Id header.
type Publisher func(ctx context.Context, subject string, body []byte, msgID string) error

// Options configure a Simulator. The zero value plays the default demo.
type Options struct {
	// Project is the project's string_id ([a-z0-9-]+), default
	// "street-scenes".
	Project string
	// Rate is the steady rate of Run in events per second; 0 means the
	// default, 20. A negative or infinite rate publishes as fast as the
	// Publisher allows (load generator). The setup events are published at
	// once, before the steady stream.
	Rate float64
	// Files is how many root files (a compound file counts once, with its
	// children) the team uploads over time before it only reworks the ones
	// it has; 0 or less means the default, 60.
	Files int
	// Seed makes the stream deterministic when non-zero. Zero picks a random
	// seed, which Run logs so a run can be replayed.
	Seed int64
	// Start is the time of the first event on the simulated clock, which
	// then advances by 1/Rate per event (1 ms when Rate is unlimited) and
	// stamps every event's time and every created_time. Zero means
	// 2026-11-28T10:00:00Z when Seed is set, else the time New is called.
	Start time.Time
	// Logger receives a line when Run starts and stops; nil discards.
	Logger *slog.Logger
	// BlobPaths makes every image, video and text file carry blob_path,
	// the key of its media object in a media bucket; MediaOf makes the
	// object, for the publisher to store before it publishes the upload.
	BlobPaths bool
}

// Defaults of Options.
const (
	DefaultProject = "street-scenes"
	DefaultRate    = 20.0
	DefaultFiles   = 60
)

// Event is one message of the stream.
type Event struct {
	Subject string
	Body    []byte
	// ID is the body's CloudEvents id, to be sent as Nats-Msg-Id.
	ID string
}

// workers is how many files the team works on at the same time.
const workers = 4

// timeLayout is the layout of every time the simulator writes.
const timeLayout = "2006-01-02T15:04:05.000000Z"

var projectRE = regexp.MustCompile(`^[a-z0-9-]+$`)

// Simulator plays the team. Create it with New.
type Simulator struct {
	opts  Options
	pub   Publisher
	log   *slog.Logger
	rng   *rand.Rand
	clock time.Time
	step  time.Duration

	setup   []Event // the setup events, kept for Setup
	pending int     // how many of setup Next has not returned yet

	project    project
	directory  map[int]*directory
	labels     []*labelFile
	groups     []*attributeGroup
	job        *job
	files      map[int]*file
	rootFiles  []int // root files in upload order, removed ones included
	tasks      map[int]*task
	sequences  map[int]*sequence
	instances  map[int]*instance // by root id: the newest row of each lineage
	uploaded   int               // root files uploaded (or being uploaded)
	nextFile   int
	nextTask   int
	nextSeq    int
	nextInst   int
	active     []*plan
	emitted    int64 // events returned by Next (setup included)
	liveRoots  int   // root files not removed
	kindsQueue []string

	restored     bool     // Restore was called
	restoredInfo Restored // what it found
}

// New returns a Simulator for opts that publishes with pub (Run only; Next
// and Setup do not need it). Options are defaulted as documented on
// Options; New does not fail: an invalid Project is reported by Run.
func New(opts Options, pub Publisher) *Simulator {
	if opts.Project == "" {
		opts.Project = DefaultProject
	}
	if opts.Rate == 0 || math.IsNaN(opts.Rate) {
		opts.Rate = DefaultRate
	}
	if opts.Files <= 0 {
		opts.Files = DefaultFiles
	}
	if opts.Start.IsZero() {
		if opts.Seed != 0 {
			opts.Start = time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
		} else {
			opts.Start = time.Now()
		}
	}
	if opts.Seed == 0 {
		for opts.Seed == 0 {
			opts.Seed = rand.Int64()
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Simulator{
		opts:      opts,
		pub:       pub,
		log:       log,
		rng:       rand.New(rand.NewPCG(uint64(opts.Seed), uint64(opts.Seed)^0x9e3779b97f4a7c15)),
		clock:     opts.Start.UTC(),
		step:      time.Millisecond,
		directory: map[int]*directory{},
		files:     map[int]*file{},
		tasks:     map[int]*task{},
		sequences: map[int]*sequence{},
		instances: map[int]*instance{},
		nextFile:  firstFileID,
		nextTask:  firstTaskID,
		nextSeq:   firstSequenceID,
		nextInst:  firstInstanceID,
		// The first uploads show every media type early on.
		kindsQueue: []string{"image", "video", "image", "text", "image", "compound", "image", "audio"},
	}
	if limited(opts.Rate) {
		s.step = time.Duration(float64(time.Second) / opts.Rate)
		if s.step <= 0 {
			s.step = time.Nanosecond
		}
	}
	s.setup = s.buildSetup()
	s.pending = len(s.setup)
	return s
}

// limited reports whether rate asks for pacing.
func limited(rate float64) bool { return rate > 0 && !math.IsInf(rate, 1) }

// Setup returns the events that create the project's fixed world, in order:
// the project, directories Luckfrill (7) and Archive (8), labels car (101),
// person (102), bicycle (103) and traffic light (104), attribute groups
// occlusion (3) and weather (4), and the job "Night Review" (12) whose
// completion directory is Archive. They are also the first events Next
// returns and Run publishes; Setup itself consumes nothing from the stream.
// After Restore it returns only those of entities Restore did not find.
func (s *Simulator) Setup() []Event {
	out := make([]Event, len(s.setup))
	for i, ev := range s.setup {
		out[i] = Event{Subject: ev.Subject, Body: append([]byte(nil), ev.Body...), ID: ev.ID}
	}
	return out
}

// Next returns the next event of the stream without publishing it: first the
// setup events, then the team's work, forever.
func (s *Simulator) Next() (subject string, body []byte, msgID string) {
	ev := s.next()
	return ev.Subject, ev.Body, ev.ID
}

func (s *Simulator) next() Event {
	s.emitted++
	if s.pending > 0 {
		ev := s.setup[len(s.setup)-s.pending]
		s.pending--
		return ev
	}
	return s.work()
}

// Run publishes the stream with the Publisher: the setup events at once, then
// the rest at Options.Rate, measured from when Run starts (a slow Publisher
// is caught up with, up to one second's worth at a time). It returns nil when
// ctx is done, and the Publisher's error, wrapped, when a publish fails for
// any other reason (a publish that fails because ctx is done is a clean
// stop). An invalid Options.Project or a nil Publisher is an error before
// anything is published. Run can be called again to resume the stream.
func (s *Simulator) Run(ctx context.Context) error {
	if !projectRE.MatchString(s.opts.Project) {
		return fmt.Errorf("simulate: project %q: string_id must match [a-z0-9-]+", s.opts.Project)
	}
	if s.pub == nil {
		return errors.New("simulate: Run needs a Publisher")
	}
	if r := s.restoredInfo; r.Events > 0 {
		s.log.Info("simulator started", "project", s.opts.Project, "rate", s.opts.Rate,
			"files", s.opts.Files, "seed", s.opts.Seed, "carries_on", true, "events_found", r.Events,
			"root_files", r.Files, "next_file_id", r.NextFile, "next_instance_id", r.NextInstance)
	} else {
		s.log.Info("simulator started", "project", s.opts.Project, "rate", s.opts.Rate,
			"files", s.opts.Files, "seed", s.opts.Seed, "carries_on", false)
	}
	start := s.emitted
	defer func() {
		s.log.Info("simulator stopped", "project", s.opts.Project, "events", s.emitted-start)
	}()

	publish := func() (stop bool, err error) {
		if ctx.Err() != nil {
			return true, nil
		}
		ev := s.next()
		if err := s.pub(ctx, ev.Subject, ev.Body, ev.ID); err != nil {
			if ctx.Err() != nil {
				return true, nil
			}
			return true, fmt.Errorf("simulate: publish %s (id %s): %w", ev.Subject, ev.ID, err)
		}
		return false, nil
	}

	for s.pending > 0 {
		if stop, err := publish(); stop {
			return err
		}
	}
	if !limited(s.opts.Rate) {
		for {
			if stop, err := publish(); stop {
				return err
			}
		}
	}

	// Token bucket computed from the clock: at each tick, publish the events
	// due since begin. Ticks are at least 5 ms apart so high rates go out in
	// small batches rather than one timer per event.
	rate := s.opts.Rate
	interval := max(time.Duration(float64(time.Second)/rate), 5*time.Millisecond)
	maxBurst := int64(math.Max(1, math.Ceil(rate)))
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	begin := time.Now()
	var sent int64
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-ticker.C:
			// The epsilon keeps float rounding from losing a due event.
			due := int64(now.Sub(begin).Seconds()*rate+1e-9) - sent
			if due > maxBurst {
				sent += due - maxBurst // drop the backlog of a long stall
				due = maxBurst
			}
			for range due {
				if stop, err := publish(); stop {
					return err
				}
				sent++
			}
		}
	}
}

// envelope is the CloudEvents 1.0 structured-mode body.
type envelope struct {
	SpecVersion     string         `json:"specversion"`
	ID              string         `json:"id"`
	Source          string         `json:"source"`
	Type            string         `json:"type"`
	Time            string         `json:"time"`
	DataContentType string         `json:"datacontenttype"`
	DiffgramProject string         `json:"diffgramproject"`
	Data            map[string]any `json:"data"`
}

// dataKey maps an entity to its key under data.
var dataKey = map[string]string{
	"project":         "project",
	"directory":       "directory",
	"label":           "label_file",
	"attribute_group": "attribute_group",
	"job":             "job",
	"file":            "file",
	"task":            "task",
	"sequence":        "sequence",
	"instance":        "instance",
}

// emit marshals the current snapshot of an entity into an event stamped with
// the simulated clock, then advances the clock.
func (s *Simulator) emit(entity, action string, snapshot any) Event {
	key, ok := dataKey[entity]
	if !ok {
		panic("simulate: unknown entity " + entity)
	}
	id := s.uuid()
	body, err := json.Marshal(envelope{
		SpecVersion:     "1.0",
		ID:              id,
		Source:          "diffgram/projects/" + s.opts.Project,
		Type:            "diffgram." + entity + "." + action,
		Time:            s.now(),
		DataContentType: "application/json",
		DiffgramProject: s.opts.Project,
		Data:            map[string]any{key: snapshot},
	})
	if err != nil {
		// Only our own plain structs go in: this is a programming error.
		panic(fmt.Sprintf("simulate: marshal %s.%s: %v", entity, action, err))
	}
	s.clock = s.clock.Add(s.step)
	return Event{
		Subject: "diffgram.events." + s.opts.Project + "." + entity + "." + action,
		Body:    body,
		ID:      id,
	}
}

func (s *Simulator) now() string { return s.clock.Format(timeLayout) }

// uuid returns a random version-4-shaped UUID from the seeded generator.
func (s *Simulator) uuid() string {
	hi, lo := s.rng.Uint64(), s.rng.Uint64()
	hi = hi&^(0xf<<12) | 0x4<<12 // version 4
	lo = lo&^(0x3<<62) | 0x2<<62 // RFC 4122 variant
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x",
		hi>>32, hi>>16&0xffff, hi&0xffff, lo>>48, lo&0xffffffffffff)
}

// projectName turns "street-scenes" into "Street Scenes".
func projectName(stringID string) string {
	parts := strings.FieldsFunc(stringID, func(r rune) bool { return r == '-' })
	for i, p := range parts {
		parts[i] = strings.ToUpper(p[:1]) + p[1:]
	}
	if len(parts) == 0 {
		return stringID
	}
	return strings.Join(parts, " ")
}

func (s *Simulator) buildSetup() []Event {
	var out []Event
	s.project = project{StringID: s.opts.Project, Name: projectName(s.opts.Project), Version: 1}
	out = append(out, s.emit("project", "upserted", &s.project))

	for _, d := range []directory{
		{ID: DirectoryLuckfrill, Nickname: "Luckfrill"},
		{ID: DirectoryArchive, Nickname: "Archive"},
	} {
		d.CreatedTime = s.now()
		d.Version = 1
		s.directory[d.ID] = &d
		out = append(out, s.emit("directory", "upserted", &d))
	}

	for _, l := range []struct {
		id, labelID int
		name        string
		c           rgba
	}{
		{LabelCar, 11, "car", rgba{R: 1, G: 138, B: 35, A: 1}},
		{LabelPerson, 12, "person", rgba{R: 228, G: 26, B: 28, A: 1}},
		{LabelBicycle, 13, "bicycle", rgba{R: 1, G: 145, B: 241, A: 1}},
		{LabelTrafficLight, 14, "traffic light", rgba{R: 255, G: 176, B: 0, A: 1}},
	} {
		lf := &labelFile{
			ID:      l.id,
			Type:    "label",
			Label:   labelRef{ID: l.labelID, Name: l.name},
			Colour:  colour{Hex: fmt.Sprintf("#%02x%02x%02x", l.c.R, l.c.G, l.c.B), RGBA: l.c},
			State:   "added",
			Version: 1,
		}
		s.labels = append(s.labels, lf)
		out = append(out, s.emit("label", "upserted", lf))
	}

	templates := func(group int, names ...string) []attributeTemplate {
		list := make([]attributeTemplate, len(names))
		for i, n := range names {
			list[i] = attributeTemplate{ID: group*10 + i + 1, Name: n, GroupID: group, DisplayOrder: ptr(i)}
		}
		return list
	}
	s.groups = []*attributeGroup{{
		ID: AttributeGroupOcclusion, Kind: "select", Name: "occlusion", Prompt: "How much of it is hidden?",
		GlobalType: "file", AttributeTemplateList: templates(AttributeGroupOcclusion, "none", "partial", "heavy"),
		LabelFileIDs: []int{LabelCar, LabelPerson, LabelBicycle}, Version: 1,
	}, {
		ID: AttributeGroupWeather, Kind: "radio", Name: "weather", Prompt: "Weather in the scene",
		IsGlobal: true, GlobalType: "file", AttributeTemplateList: templates(AttributeGroupWeather, "sunny", "rainy", "night"),
		LabelFileIDs: []int{}, Version: 1,
	}}
	for _, g := range s.groups {
		out = append(out, s.emit("attribute_group", "upserted", g))
	}

	s.job = &job{ID: JobNightReview, Name: "Night Review", Status: "active",
		CompletionDirectoryID: DirectoryArchive, Version: 1}
	out = append(out, s.emit("job", "upserted", s.job))
	return out
}
