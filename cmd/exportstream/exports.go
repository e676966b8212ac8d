package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/exportstream/exportstream/api/client"
	"github.com/exportstream/exportstream/pipeline"
)

const exportsUsage = `exportstream exports: the service's exports, through its HTTP API.

Usage:
  exportstream exports list [--definition N] [--project P] [--status S] [--limit N] [--before ID] [--all]
        the export records, newest first: id, definition, status, progress, files, instances, bytes,
        created time and a note (why an export failed or was skipped; when retention deleted it).
        The object keys: exports get ID, or --output json. --all follows the pages to the end.
        --status: pending, generating, uploading, complete, failed or skipped; also deleted
        (complete, then deleted from the bucket by retention, keep_last) or existing (complete
        and still in the bucket: the exports that can be downloaded)
  exportstream exports get ID
        one record, every field
  exportstream exports generate --definition N [--as-of SEQ|TIME] [--wait] [--return record|data|url] [--out FILE]
  exportstream exports generate --project P --source KIND=VALUE [--completion C] [--include-removed] [--formats coco,yolo,jsonl]
                                --connection C [--as-of SEQ|TIME] [--wait] [--return record|data|url] [--out FILE]
        export now; KIND=VALUE is directory=NAME, directory_id=N, job=NAME, job_id=N, task_id=N
        or project (the whole project). Without --wait: the pending record, id first. With --wait:
        once the export is done, its record, its data (--return data, to --out or stdout) or a
        download URL (--return url). --as-of SEQ|TIME: the export as of that point in the event
        stream (a stream sequence, e.g. an earlier export's watermark, or an RFC 3339 time), replayed
        from the stream; written under exports/adhoc/, never to latest.json
  exportstream exports url ID
        a signed download URL of a complete export
  exportstream exports data ID [--out FILE] [--wait]
        the export document, to stdout or to FILE (written whole or not at all); --wait first
        waits until the export is complete

Every subcommand takes:
  --server URL       the service (default $EXPORTSTREAM_SERVER, else http://127.0.0.1:8080)
  --token TOKEN      the API's bearer token (default $EXPORTSTREAM_TOKEN; prefer the variable:
                     arguments show in the process list)
  --output FORMAT    table (for people, the default) or json (the API's JSON as is, for jq)
  --timeout D        how long an HTTP call may wait for the server to answer, and then for
                     each further piece of the answer (default 30s)
  --wait-timeout D   with --wait: how long to wait for the export (default 20m)

Exit status:
  0  done
  1  the API answered with an error (shown as "exportstream: MESSAGE (CODE, HTTP STATUS)"),
     the server could not be reached, the export failed, or the output could not be written
  2  bad flags or arguments
`

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// apiError is an error answer of the API: {"error": {"code", "message"}}.
type apiError struct {
	Status  int
	Code    string
	Message string
	// Hint, when set, says what to do about it.
	Hint string
}

func (e *apiError) Error() string {
	msg := fmt.Sprintf("%s (%s, HTTP %d)", e.Message, e.Code, e.Status)
	if e.Hint != "" {
		msg += "; " + e.Hint
	}
	return msg
}

// cmdExports runs `exportstream exports SUBCOMMAND` and returns the exit
// status.
func cmdExports(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, exportsUsage)
		return 2
	}
	cmds := map[string]func(context.Context, *exportsClient, *flag.FlagSet, []string) error{
		"list": exportsList, "get": exportsGet, "generate": exportsGenerate, "url": exportsURL, "data": exportsData,
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, exportsUsage)
		return 0
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "exportstream exports: unknown subcommand %q\n\n%s", args[0], exportsUsage)
		return 2
	}
	fs := flag.NewFlagSet("exports "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage of exportstream exports %s (see exportstream exports help):\n", args[0])
		fs.PrintDefaults()
	}
	c := &exportsClient{stdout: stdout, stderr: stderr, http: &http.Client{}}
	fs.StringVar(&c.base, "server", "", "the service's URL (default $EXPORTSTREAM_SERVER, else http://127.0.0.1:8080)")
	fs.StringVar(&c.token, "token", "", "the API's bearer token (default $EXPORTSTREAM_TOKEN)")
	fs.StringVar(&c.output, "output", "table", "table or json")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "how long an HTTP call may wait for each answer, and each piece of it")
	fs.DurationVar(&c.waitTimeout, "wait-timeout", 20*time.Minute, "with --wait: how long to wait for the export")
	err := cmd(ctx, c, fs, args[1:])
	var usage *usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "exportstream exports %s: %s\n", args[0], usage.msg)
		return 2
	case errors.As(err, new(*flagError)):
		return 2 // the flag package has said what is wrong
	}
	fmt.Fprintln(stderr, "exportstream:", err)
	return 1
}

// flagError is an error of the flag package, which it has already printed.
type flagError struct{ err error }

func (e *flagError) Error() string { return e.err.Error() }
func (e *flagError) Unwrap() error { return e.err }

// parseArgs parses flags wherever they are among the arguments (`get 12
// --output json` as well as `get --output json 12`), checks the common
// flags, and returns the positional arguments, of which there must be
// want.
func (c *exportsClient) parseArgs(fs *flag.FlagSet, args []string, want int, what string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &flagError{err}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	if len(pos) != want {
		if want == 0 {
			return nil, usagef("unexpected argument %q", pos[0])
		}
		return nil, usagef("want %s, got %d argument(s)", what, len(pos))
	}
	return pos, c.setUp()
}

// exportsClient calls the API.
type exportsClient struct {
	base        string // the server's URL, without a trailing slash
	token       string // never printed
	tokenFrom   string // where token came from: "--token", "$EXPORTSTREAM_TOKEN" or ""
	output      string
	timeout     time.Duration
	waitTimeout time.Duration
	http        *http.Client

	stdout, stderr io.Writer
}

// setUp applies the environment's defaults and checks the common flags.
func (c *exportsClient) setUp() error {
	if c.base == "" {
		c.base = os.Getenv("EXPORTSTREAM_SERVER")
	}
	if c.base == "" {
		c.base = "http://127.0.0.1:8080"
	}
	u, err := url.Parse(c.base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return usagef("--server: want http://HOST:PORT or https://HOST[/PATH], the service's address")
	}
	c.base = strings.TrimSuffix(c.base, "/")
	if c.token != "" {
		c.tokenFrom = "--token"
	} else if c.token = os.Getenv("EXPORTSTREAM_TOKEN"); c.token != "" {
		c.tokenFrom = "$EXPORTSTREAM_TOKEN"
	}
	if c.output != "table" && c.output != "json" {
		return usagef("--output %q: want table or json", c.output)
	}
	if c.timeout <= 0 || c.waitTimeout <= 0 {
		return usagef("--timeout and --wait-timeout must be positive")
	}
	return nil
}

func (c *exportsClient) asJSON() bool { return c.output == "json" }

// call sends a request (body, when not nil, as JSON) and returns the
// answer when its status is 2xx, and otherwise the API's error. The
// answer must start within wait; then each read of its body may take at
// most c.timeout. Closing the body ends the call.
func (c *exportsClient) call(ctx context.Context, method, path string, body any, wait time.Duration) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithCancel(ctx)
	var fired atomic.Bool
	timer := time.AfterFunc(wait, func() { fired.Store(true); cancel() })
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		timer.Stop()
		cancel()
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		timer.Stop()
		cancel()
		if fired.Load() {
			return nil, fmt.Errorf("%s %s: no answer within %v", method, path, wait)
		}
		return nil, err
	}
	timer.Reset(c.timeout)
	resp.Body = &idleBody{ReadCloser: resp.Body, timer: timer, idle: c.timeout, fired: &fired, cancel: cancel}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		err := answerError(method, path, resp)
		var ae *apiError
		if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
			ae.Hint = c.tokenHint()
		}
		return nil, err
	}
	return resp, nil
}

// tokenHint says what to do when the API refuses the request's token,
// naming where it came from.
func (c *exportsClient) tokenHint() string {
	switch c.tokenFrom {
	case "":
		return "the service wants its token (its http.token): set $EXPORTSTREAM_TOKEN, or pass --token"
	case "--token":
		return "the token given with --token is not the service's http.token"
	}
	return "the token in " + c.tokenFrom + " is not the service's http.token: correct it, or pass the right one with --token"
}

// idleBody ends the call when a read waits longer than idle.
type idleBody struct {
	io.ReadCloser
	timer  *time.Timer
	idle   time.Duration
	fired  *atomic.Bool
	cancel context.CancelFunc
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if b.fired.Load() && err != nil && err != io.EOF {
		return n, fmt.Errorf("the answer stalled for %v (--timeout): %w", b.idle, err)
	}
	b.timer.Reset(b.idle)
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// answerError reads an error answer: the API's JSON error, or else
// whatever answered (a proxy, another service) in a line.
func answerError(method, path string, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e client.ErrorBody
	if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
		return &apiError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	text, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if len(text) > 200 {
		text = text[:200] + "..."
	}
	return fmt.Errorf("%s %s: HTTP %s, not an exportstream API answer (is --server right?): %q", method, path, resp.Status, text)
}

// get calls GET path and returns the answer's body.
func (c *exportsClient) get(ctx context.Context, path string) ([]byte, error) {
	resp, err := c.call(ctx, http.MethodGet, path, nil, c.timeout)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return readAnswer(resp)
}

func readAnswer(resp *http.Response) ([]byte, error) {
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %w", resp.Request.Method, resp.Request.URL.Path, err)
	}
	return b, nil
}

// decode decodes an answer of the API.
func decode(raw []byte, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("the server's answer is not what the API answers: %w", err)
	}
	return nil
}

// exportPath is the API path of export id, which must be a positive
// integer.
func exportPath(id string) (string, error) {
	if n, err := strconv.ParseInt(id, 10, 64); err != nil || n <= 0 {
		return "", usagef("%q is not an export id (a positive number)", id)
	}
	return "/api/v1/exports/" + id, nil
}

// listPage is an answer of GET /api/v1/exports, its records kept as sent.
type listPage = client.ListPage[json.RawMessage]

func exportsList(ctx context.Context, c *exportsClient, fs *flag.FlagSet, args []string) error {
	definition := fs.String("definition", "", "only this definition's exports (adhoc: the ad-hoc ones)")
	project := fs.String("project", "", "only this project's exports")
	status := fs.String("status", "", "only exports in this status: pending, generating, uploading, complete, failed or skipped; "+
		"also deleted (complete, then deleted from the bucket by retention) or existing (complete and still in the bucket)")
	limit := fs.Int("limit", 0, "records per page (default: the server's)")
	before := fs.Int64("before", 0, "only exports older than this id (the next_before of the previous page)")
	all := fs.Bool("all", false, "follow the pages to the end")
	if _, err := c.parseArgs(fs, args, 0, ""); err != nil {
		return err
	}
	if *limit < 0 || *before < 0 {
		return usagef("--limit and --before must not be negative")
	}
	q := url.Values{}
	for k, v := range map[string]string{"definition": *definition, "project": *project, "status": *status} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if *limit > 0 {
		q.Set("limit", strconv.Itoa(*limit))
	}
	if *before > 0 {
		q.Set("before", strconv.FormatInt(*before, 10))
	}
	var merged listPage
	for first := true; ; first = false {
		path := "/api/v1/exports"
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		raw, err := c.get(ctx, path)
		if err != nil {
			return err
		}
		var page listPage
		if err := decode(raw, &page); err != nil {
			return err
		}
		if !*all {
			if c.asJSON() {
				_, err := c.stdout.Write(raw)
				return err
			}
			if err := c.printList(page.Exports); err != nil {
				return err
			}
			if page.NextBefore != 0 {
				fmt.Fprintf(c.stderr, "(%d of %d shown; more with --before %d, or --all)\n", len(page.Exports), page.Total, page.NextBefore)
			}
			return nil
		}
		if first {
			merged.Total = page.Total
		}
		merged.Exports = append(merged.Exports, page.Exports...)
		if page.NextBefore == 0 {
			break
		}
		if prev := q.Get("before"); prev != "" && strconv.FormatInt(page.NextBefore, 10) == prev {
			return fmt.Errorf("GET %s: the next page starts where this one did (next_before %d)", path, page.NextBefore)
		}
		q.Set("before", strconv.FormatInt(page.NextBefore, 10))
	}
	if merged.Exports == nil {
		merged.Exports = []json.RawMessage{}
	}
	if c.asJSON() {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(merged)
	}
	return c.printList(merged.Exports)
}

// printList prints records as a table.
func (c *exportsClient) printList(records []json.RawMessage) error {
	if len(records) == 0 {
		fmt.Fprintln(c.stderr, "no exports")
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tDEFINITION\tSTATUS\t%\tFILES\tINSTANCES\tBYTES\tCREATED\tNOTE")
	for _, raw := range records {
		var r pipeline.Record
		if err := decode(raw, &r); err != nil {
			return err
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", r.ID, dash(r.Name), r.Status, r.PercentComplete,
			r.FileListLength, r.InstanceCount, r.Bytes, r.CreatedTime.UTC().Format(time.RFC3339), listNote(&r))
	}
	return tw.Flush()
}

// listNote is the NOTE column of exports list: why a failed or skipped
// attempt wrote nothing (good), when retention deleted an export, or "-".
// The object key, long, is left to exports get and --output json.
func listNote(r *pipeline.Record) string {
	switch {
	case r.Status == pipeline.StatusSkipped || r.Status == pipeline.StatusFailed:
		return dash(r.StatusText)
	case r.DeletedTime != nil:
		return "deleted by retention at " + r.DeletedTime.UTC().Format(time.RFC3339)
	case r.AsOf != "":
		return fmt.Sprintf("as of %s (sequence %d)", r.AsOf, r.Watermark)
	}
	return "-"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printFields prints a JSON object's fields as "key: value" lines, in
// the order the server sent them; nested values stay compact JSON.
func (c *exportsClient) printFields(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return errors.New("the server's answer is not a JSON object")
	}
	var keys, values []string
	width := 0
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("the server's answer: %w", err)
		}
		key, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("the server's answer: %w", err)
		}
		var text string
		switch {
		case string(v) == "null":
			text = "-"
		case json.Unmarshal(v, &text) == nil:
		default:
			var b bytes.Buffer
			_ = json.Compact(&b, v)
			text = b.String()
		}
		keys, values = append(keys, key), append(values, text)
		width = max(width, len(key))
	}
	for i, k := range keys {
		fmt.Fprintln(c.stdout, strings.TrimRight(fmt.Sprintf("%-*s %s", width+1, k+":", values[i]), " "))
	}
	return nil
}

// printRecord prints a record answer: as is, or field by field.
func (c *exportsClient) printRecord(raw []byte) error {
	if c.asJSON() {
		_, err := c.stdout.Write(raw)
		return err
	}
	return c.printFields(raw)
}

func exportsGet(ctx context.Context, c *exportsClient, fs *flag.FlagSet, args []string) error {
	pos, err := c.parseArgs(fs, args, 1, "an export ID")
	if err != nil {
		return err
	}
	path, err := exportPath(pos[0])
	if err != nil {
		return err
	}
	raw, err := c.get(ctx, path)
	if err != nil {
		return err
	}
	return c.printRecord(raw)
}

// printURL prints a URL answer ({"export_id", "url", "expires_at", ...}):
// as is, or the URL alone.
func (c *exportsClient) printURL(raw []byte) error {
	if c.asJSON() {
		_, err := c.stdout.Write(raw)
		return err
	}
	var u client.SignedURL
	if err := decode(raw, &u); err != nil {
		return err
	}
	if u.URL == "" {
		return errors.New("the server's answer holds no url")
	}
	_, err := fmt.Fprintln(c.stdout, u.URL)
	return err
}

func exportsURL(ctx context.Context, c *exportsClient, fs *flag.FlagSet, args []string) error {
	pos, err := c.parseArgs(fs, args, 1, "an export ID")
	if err != nil {
		return err
	}
	path, err := exportPath(pos[0])
	if err != nil {
		return err
	}
	raw, err := c.get(ctx, path+"/url")
	if err != nil {
		return err
	}
	return c.printURL(raw)
}

// parseSource reads --source KIND=VALUE (pipeline.ParseSource) into the
// API's source object.
func parseSource(s string) (*client.Source, error) {
	if s == "project=" { // ParseSource takes "" for no value; here "=" says there is one
		return nil, usagef("--source project takes no value (the whole project)")
	}
	kind, value, _ := strings.Cut(s, "=")
	src, err := pipeline.ParseSource(kind, value)
	if errors.Is(err, pipeline.ErrSourceKind) {
		return nil, usagef("--source %q: want directory=NAME, directory_id=N, job=NAME, job_id=N, task_id=N or project", s)
	}
	if err != nil {
		return nil, usagef("--source %v", err)
	}
	return client.SourceOf(src), nil
}

func exportsGenerate(ctx context.Context, c *exportsClient, fs *flag.FlagSet, args []string) error {
	var req client.GenerateRequest
	var source, asOf string
	fs.StringVar(&req.Definition, "definition", "", "export this configured definition now")
	fs.StringVar(&req.Project, "project", "", "ad hoc: the project")
	fs.StringVar(&source, "source", "", "ad hoc: directory=NAME, directory_id=N, job=NAME, job_id=N, task_id=N or project")
	fs.StringVar(&req.Completion, "completion", "", "ad hoc: complete (the server's default), all or incomplete")
	fs.BoolVar(&req.IncludeRemovedInstances, "include-removed", false, "ad hoc: include removed instances")
	fs.StringVar(&req.Connection, "connection", "", "ad hoc: the connection (bucket) to write to")
	formats := fs.String("formats", "", "ad hoc: formats beside the Diffgram document, comma separated: coco, yolo, jsonl")
	fs.BoolVar(&req.Wait, "wait", false, "wait until the export is done (at most --wait-timeout)")
	ret := fs.String("return", "record", "with --wait: print the record, write the data (to --out), or print a download URL: record, data or url")
	out := fs.String("out", "", "with --return data: the file to write (default: stdout)")
	fs.StringVar(&asOf, "as-of", "", "export the state as of a point in the event stream: a stream sequence (the watermark of an earlier export) or an RFC 3339 time")
	if _, err := c.parseArgs(fs, args, 0, ""); err != nil {
		return err
	}
	if asOf != "" {
		if _, err := pipeline.ParseAsOf(asOf); err != nil {
			return usagef("--as-of: %v", err)
		}
		req.AsOf, _ = json.Marshal(asOf) // a string: the server reads its digits or its time
	}
	adhoc := req.Project != "" || source != "" || req.Completion != "" || req.IncludeRemovedInstances || req.Connection != "" || *formats != ""
	for f := range strings.SplitSeq(*formats, ",") {
		if f = strings.TrimSpace(f); f != "" {
			req.Formats = append(req.Formats, f)
		}
	}
	switch {
	case req.Definition != "" && adhoc:
		return usagef("give --definition, or an ad-hoc --project, --source and --connection, not both")
	case req.Definition == "" && (req.Project == "" || source == "" || req.Connection == ""):
		return usagef("give --definition NAME, or an ad-hoc --project, --source and --connection")
	}
	if source != "" {
		src, err := parseSource(source)
		if err != nil {
			return err
		}
		req.Source = src
	}
	switch *ret {
	case "record":
	case "data", "url":
		if !req.Wait {
			return usagef("--return %s needs --wait", *ret)
		}
		req.ReturnType = *ret
	default:
		return usagef("--return %q: want record, data or url", *ret)
	}
	if *out != "" && *ret != "data" {
		return usagef("--out goes with --return data")
	}
	wait := c.timeout
	if req.Wait {
		wait = c.waitTimeout
	}
	resp, err := c.call(ctx, http.MethodPost, "/api/v1/exports", req, wait)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if req.ReturnType == "data" {
		return c.writeData(ctx, resp, *out)
	}
	raw, err := readAnswer(resp)
	if err != nil {
		return err
	}
	if req.ReturnType == "url" {
		return c.printURL(raw)
	}
	return c.printRecord(raw)
}

func exportsData(ctx context.Context, c *exportsClient, fs *flag.FlagSet, args []string) error {
	out := fs.String("out", "", "the file to write, whole or not at all (default: stdout)")
	wait := fs.Bool("wait", false, "wait until the export is complete (at most --wait-timeout)")
	pos, err := c.parseArgs(fs, args, 1, "an export ID")
	if err != nil {
		return err
	}
	path, err := exportPath(pos[0])
	if err != nil {
		return err
	}
	if !*wait {
		resp, err := c.call(ctx, http.MethodGet, path+"/data", nil, c.timeout)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return c.writeData(ctx, resp, *out)
	}
	deadline := time.Now().Add(c.waitTimeout)
	delay, shown := 100*time.Millisecond, ""
	for {
		raw, err := c.get(ctx, path)
		if err != nil {
			return err
		}
		var rec pipeline.Record
		if err := decode(raw, &rec); err != nil {
			return err
		}
		switch rec.Status {
		case pipeline.StatusFailed:
			return fmt.Errorf("export %d failed: %s", rec.ID, rec.StatusText)
		case pipeline.StatusSkipped:
			return fmt.Errorf("export %d wrote nothing: %s", rec.ID, rec.StatusText)
		case pipeline.StatusComplete:
			resp, err := c.call(ctx, http.MethodGet, path+"/data", nil, c.timeout)
			var ae *apiError
			if errors.As(err, &ae) && ae.Code == "not_ready" {
				break // keep waiting
			}
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			return c.writeData(ctx, resp, *out)
		}
		if now := fmt.Sprintf("%s %d%%", rec.Status, rec.PercentComplete); !c.asJSON() && now != shown {
			fmt.Fprintf(c.stderr, "export %d: %s\n", rec.ID, now)
			shown = now
		}
		if time.Now().Add(delay).After(deadline) {
			return fmt.Errorf("export %d is still %s after %v (--wait-timeout); try again later", rec.ID, rec.Status, c.waitTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*3/2, 2*time.Second)
	}
}

// writeData copies a data answer to out, or to stdout when out is "" or
// "-", and checks it against the record's sha256 (X-Export-Sha256). A
// file is written whole or not at all: to a temporary file beside it,
// renamed over it once complete and checked.
func (c *exportsClient) writeData(ctx context.Context, resp *http.Response, out string) error {
	id := resp.Header.Get("X-Export-Id")
	want := resp.Header.Get("X-Export-Sha256")
	sum := sha256.New()
	check := func(n int64) error {
		if got := hex.EncodeToString(sum.Sum(nil)); want != "" && got != want {
			return fmt.Errorf("export %s: the %d bytes received have sha256 %s, the record says %s", id, n, got, want)
		}
		return nil
	}
	if out == "" || out == "-" {
		n, err := io.Copy(io.MultiWriter(c.stdout, sum), resp.Body)
		if err != nil {
			return fmt.Errorf("export %s: the download broke off after %d bytes: %w", id, n, err)
		}
		return check(n)
	}
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(out); err == nil {
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("--out %s: not a regular file", out)
		}
		mode = fi.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*.partial")
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	n, err := io.Copy(io.MultiWriter(tmp, sum), resp.Body)
	if err != nil {
		return fmt.Errorf("export %s: the download broke off after %d bytes (%s left as it was): %w", id, n, out, err)
	}
	if err := check(n); err != nil {
		return fmt.Errorf("%w (%s left as it was)", err, out)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return err
	}
	done = true
	if !c.asJSON() {
		fmt.Fprintf(c.stderr, "export %s: %d bytes written to %s\n", id, n, out)
	}
	return nil
}
