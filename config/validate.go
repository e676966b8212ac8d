package config

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

var (
	connectionNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	exportNameRE     = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)
	projectRE        = regexp.MustCompile(`^[a-z0-9-]+$`)
	bucketPrefixRE   = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	deploymentRE     = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
)

// CheckProject returns nil if p is a valid Diffgram project string id, as
// exports[].project must be ([a-z0-9-]+), and otherwise an error saying
// what a project id may hold. The project names a token of NATS subjects
// (diffgram.events.<project>.…, diffgram.exports.<project>.…), so
// wildcards, dots and spaces are never valid; the API checks ad-hoc
// exports with it too.
func CheckProject(p string) error {
	if !projectRE.MatchString(p) {
		return fmt.Errorf("%q is not a valid project (lowercase letters, digits and \"-\")", p)
	}
	return nil
}

// CheckFormats returns nil if every name in formats is an export format
// (diffgram, coco, yolo, jsonl) listed once, and otherwise an error
// naming the first that is not (with the likely typo): the API checks
// ad-hoc exports with it too. Diffgram is always written, listed or not.
func CheckFormats(formats []string) error {
	seen := map[string]bool{}
	for _, f := range formats {
		if !slices.Contains(formatNames, f) {
			return fmt.Errorf("%s", formatProblem(f))
		}
		if seen[f] {
			return fmt.Errorf("%q is listed twice", f)
		}
		seen[f] = true
	}
	return nil
}

// formatProblem says why f is not a format name.
func formatProblem(f string) string {
	msg := fmt.Sprintf("%q is not a format", f)
	if s := suggest(f, formatNames); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	return msg + "; the formats are: " + strings.Join(formatNames, ", ") + " (diffgram is always written)"
}

// Validate checks the configuration as a whole and returns nil, or an
// *Errors listing every problem, each with its YAML path (Line is 0), in
// the order of the keys in Config. It does not fill defaults: a Config
// built in Go is checked as it is. It checks:
//
//   - nats: with an empty url, embedded.listen is host:port and
//     embedded.store_dir is set; a non-empty url is a comma separated list
//     of nats://, tls://, ws:// or wss:// URLs or host:port; at most one of
//     credentials_file, user/password and token, user and password
//     together; tls.cert_file and tls.key_file together; stream, consumer,
//     dead_letter_stream and exports_stream valid JetStream names (no
//     whitespace, ".", "*", ">", "/" or "\") and the three streams
//     distinct; state_prefix letters, digits, "_" and "-"; subjects non-empty
//     valid NATS subjects; replicas 1..5; max_event_bytes and
//     max_ack_pending > 0; max_event_depth 1..MaxEventDepthLimit;
//     ack_wait >= 1s.
//   - connections: name [a-z0-9][a-z0-9-]* and unique; type one of local,
//     s3, gcs, azure with exactly its block; local.dir set; s3.bucket set,
//     access_key_id and secret_access_key together (session_token needs
//     them), endpoint an http(s) URL, part_size in MinPartSize..MaxPartSize,
//     role_arn an ARN (external_id needs it), sse AES256 or aws:kms
//     (kms_key_id needs aws:kms); gcs.bucket set, endpoint an http(s) URL;
//     azure.container set, exactly one of connection_string and
//     account_name, account_key or sas_token (not both) only with
//     account_name, endpoint an http(s) URL; uploads in 0..MaxUploads;
//     signed_url_expiry 0 or 1s..7 days.
//   - exports: name [a-z0-9]+(-[a-z0-9]+)* and unique; project [a-z0-9-]+;
//     exactly one source, ids > 0; completion one of complete, all,
//     incomplete; connection names a connection (a missing or unknown one
//     is reported with the likely typo and the connections there are); path relative, without
//     "." or ".." segments or "//", ending in "/" (or empty: the bucket
//     root), and no two exports share connection and path; coalesce.quiet
//     >= 0, coalesce.max_delay > 0 and >= quiet; keep_last >= 0; formats
//     each one of diffgram, coco, yolo, jsonl, listed once (diffgram is
//     always written: a list without it implies it); media.connection
//     names a connection that can sign links that outlive the process (a
//     local one with sign_key, no SAS-token Azure one, no GCS emulator
//     endpoint without credentials_file), media.expiry MinMediaExpiry..7
//     days.
//   - records.keep_last >= 0 and records.max_age >= 0 (0: that rule is
//     off).
//   - retry.max_backoff is MinMaxBackoff..MaxMaxBackoff.
//   - state.dir is set. Validate does not look at the file system; see
//     CheckFolders.
//   - http.listen is host:port, http.public_url empty or an http(s) URL,
//     http.token set when http.listen is not a loopback address,
//     http.max_adhoc_exports 1..MaxAdhocExportsLimit; log.level is debug, info, warn or error;
//     log.format is json or text.
//   - deployment is set, [A-Za-z0-9._-]+ (a URI path segment) and not "."
//     or "..".
func (c *Config) Validate() error {
	issues := c.problems()
	if len(issues) == 0 {
		return nil
	}
	ps := make([]Problem, len(issues))
	for i, is := range issues {
		ps[i] = is.Problem
	}
	return &Errors{Problems: ps}
}

// issue is a Problem and the other paths whose values it is about.
type issue struct {
	Problem
	about []string
}

// checker collects problems.
type checker struct{ issues []issue }

func (ch *checker) add(path, format string, args ...any) {
	ch.issues = append(ch.issues, issue{Problem: Problem{Path: path, Message: fmt.Sprintf(format, args...)}})
}

// addAbout adds a problem at path that is also about the key at other.
func (ch *checker) addAbout(path, other, format string, args ...any) {
	ch.add(path, format, args...)
	ch.issues[len(ch.issues)-1].about = []string{other}
}

func (c *Config) problems() []issue {
	ch := &checker{}
	ch.nats(&c.NATS)
	conns := ch.connections(c.Connections)
	ch.exports(c.Exports, conns)
	ch.media(c.Exports, c.Connections)
	if c.Records.KeepLast < 0 {
		ch.add("records.keep_last", "must not be negative (got %d; 0 keeps any number of records)", c.Records.KeepLast)
	}
	if c.Records.MaxAge < 0 {
		ch.add("records.max_age", "must not be negative (got %s; 0 keeps records of any age)", c.Records.MaxAge)
	}
	if b := c.Retry.MaxBackoff; b < MinMaxBackoff || b > MaxMaxBackoff {
		ch.add("retry.max_backoff", "must be between %s and %s (got %s; leave the key out for the default, %s)", MinMaxBackoff, MaxMaxBackoff, b, DefaultMaxBackoff)
	}
	if c.State.Dir == "" {
		ch.add("state.dir", "must name a folder (the local state store; leave the key out for the default, %s)", DefaultStateDir)
	} else {
		c.stateOverlaps(ch)
	}
	ch.hostPort("http.listen", c.HTTP.Listen)
	ch.httpURL("http.public_url", c.HTTP.PublicURL)
	if n := c.HTTP.MaxAdhocExports; n < 1 || n > MaxAdhocExportsLimit {
		ch.add("http.max_adhoc_exports", "must be between 1 and %d (got %d; leave the key out for the default, %d)", MaxAdhocExportsLimit, n, DefaultMaxAdhocExports)
	}
	if c.HTTP.Token == "" && !loopbackListen(c.HTTP.Listen) {
		ch.addAbout("http.token", "http.listen", "required when http.listen (%s) is not a loopback address: the API would be open to the network", c.HTTP.Listen)
	}
	ch.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	ch.oneOf("log.format", c.Log.Format, "json", "text")
	switch {
	case c.Deployment == "":
		ch.add("deployment", "required (it defaults to the host name, which is unknown here)")
	case !deploymentRE.MatchString(c.Deployment) || c.Deployment == "." || c.Deployment == "..":
		ch.add("deployment", "%q is not valid: it names a URI path segment in completion events' source, so use only letters, digits, \".\", \"_\" and \"-\" ([A-Za-z0-9._-]+, not \".\" or \"..\")", c.Deployment)
	}
	return ch.issues
}

func (ch *checker) nats(n *NATS) {
	if n.URL == "" {
		if n.Embedded.Listen == "" {
			ch.add("nats.embedded.listen", "required when nats.url is empty")
		} else {
			ch.hostPort("nats.embedded.listen", n.Embedded.Listen)
		}
		if n.Embedded.StoreDir == "" {
			ch.add("nats.embedded.store_dir", "required when nats.url is empty")
		}
	} else {
		for u := range strings.SplitSeq(n.URL, ",") {
			if !natsURL(strings.TrimSpace(u)) {
				ch.add("nats.url", "%q is not a NATS URL (nats://host:port, tls://, ws://, wss:// or host:port)", redactURL(strings.TrimSpace(u)))
			}
		}
	}
	if n.CredentialsFile != "" && (n.User != "" || n.Password != "" || n.Token != "") {
		ch.add("nats.credentials_file", "set only one of credentials_file, user/password and token")
	} else if n.Token != "" && (n.User != "" || n.Password != "") {
		ch.add("nats.token", "set only one of credentials_file, user/password and token")
	}
	if n.User != "" && n.Password == "" {
		ch.addAbout("nats.user", "nats.password", "requires password")
	}
	if n.Password != "" && n.User == "" {
		ch.addAbout("nats.password", "nats.user", "requires user")
	}
	if n.TLS.CertFile != "" && n.TLS.KeyFile == "" {
		ch.addAbout("nats.tls.cert_file", "nats.tls.key_file", "requires key_file")
	}
	if n.TLS.KeyFile != "" && n.TLS.CertFile == "" {
		ch.addAbout("nats.tls.key_file", "nats.tls.cert_file", "requires cert_file")
	}

	ch.streamName("nats.stream", n.Stream)
	if len(n.Subjects) == 0 {
		ch.add("nats.subjects", "at least one subject is required")
	}
	for i, s := range n.Subjects {
		if !validSubject(s) {
			ch.add(fmt.Sprintf("nats.subjects[%d]", i), "%q is not a valid NATS subject", s)
		}
	}
	ch.streamName("nats.consumer", n.Consumer)
	ch.streamName("nats.dead_letter_stream", n.DeadLetterStream)
	if n.DeadLetterStream != "" && n.DeadLetterStream == n.Stream {
		ch.add("nats.dead_letter_stream", "must differ from nats.stream (%q)", n.Stream)
	}
	ch.streamName("nats.exports_stream", n.ExportsStream)
	if n.ExportsStream != "" {
		switch n.ExportsStream {
		case n.Stream:
			ch.add("nats.exports_stream", "must differ from nats.stream (%q)", n.Stream)
		case n.DeadLetterStream:
			ch.add("nats.exports_stream", "must differ from nats.dead_letter_stream (%q)", n.DeadLetterStream)
		}
	}
	if n.Replicas < 1 || n.Replicas > 5 {
		ch.add("nats.replicas", "%d is out of range 1..5", n.Replicas)
	}
	switch {
	case n.StatePrefix == "":
		ch.add("nats.state_prefix", "required")
	case !bucketPrefixRE.MatchString(n.StatePrefix):
		ch.add("nats.state_prefix", "%q is not valid (letters, digits, \"_\" and \"-\")", n.StatePrefix)
	}
	if n.MaxEventBytes <= 0 {
		ch.add("nats.max_event_bytes", "must be > 0 (got %d)", n.MaxEventBytes)
	}
	if n.MaxEventDepth < 1 || n.MaxEventDepth > MaxEventDepthLimit {
		ch.add("nats.max_event_depth", "must be between 1 and %d (got %d)", MaxEventDepthLimit, n.MaxEventDepth)
	}
	if n.MaxAckPending <= 0 {
		ch.add("nats.max_ack_pending", "must be > 0 (got %d)", n.MaxAckPending)
	}
	if n.AckWait < time.Second {
		ch.add("nats.ack_wait", "%s is less than the 1s minimum", n.AckWait)
	}
	switch {
	case n.Partitions < 1 || n.Partitions > MaxPartitions:
		ch.add("nats.partitions", "must be between 1 and %d (got %d)", MaxPartitions, n.Partitions)
	case n.Partitions > 1:
		// The stream's subject transform partitions <prefix>.<project>.
		// <entity>.<action> (events.Partitioning).
		if len(n.Subjects) != 1 || !strings.HasSuffix(n.Subjects[0], ".>") ||
			strings.ContainsAny(strings.TrimSuffix(n.Subjects[0], ".>"), "*>") {
			ch.add("nats.subjects", "nats.partitions %d needs exactly one subject of the form <prefix>.> (got %q)",
				n.Partitions, n.Subjects)
		}
	}
}

// streamName checks a JetStream stream or consumer name.
func (ch *checker) streamName(path, name string) {
	if name == "" {
		ch.add(path, "required")
		return
	}
	if strings.ContainsFunc(name, func(r rune) bool {
		return r <= ' ' || r == 0x7f || strings.ContainsRune(`.*>/\`, r)
	}) {
		ch.add(path, "%q is not a valid JetStream name (no whitespace, \".\", \"*\", \">\", \"/\" or \"\\\")", name)
	}
}

// validSubject reports whether s is a valid NATS subject or wildcard.
func validSubject(s string) bool {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return false
	}
	tokens := strings.Split(s, ".")
	for i, t := range tokens {
		switch {
		case t == "":
			return false
		case t == ">":
			if i != len(tokens)-1 {
				return false
			}
		case t == "*":
		case strings.ContainsAny(t, "*>"):
			return false
		}
	}
	return true
}

func natsURL(s string) bool {
	if !strings.Contains(s, "://") {
		return validHostPort(s)
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return false
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
		return true
	}
	return false
}

func validHostPort(s string) bool {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	p, err := strconv.ParseUint(port, 10, 16)
	return err == nil && p <= 65535
}

func (ch *checker) hostPort(path, s string) {
	if s == "" {
		ch.add(path, "required")
		return
	}
	if !validHostPort(s) {
		ch.add(path, "%q is not host:port (e.g. 127.0.0.1:8080 or :8080)", s)
	}
}

func (ch *checker) oneOf(path, s string, allowed ...string) {
	for _, a := range allowed {
		if s == a {
			return
		}
	}
	list := strings.Join(allowed, ", ")
	if s == "" {
		ch.add(path, "required (one of %s)", list)
		return
	}
	ch.add(path, "%q is not one of %s", s, list)
}

// loopbackListen reports whether host:port listens on loopback only
// (127.0.0.0/8, ::1, localhost). An unparsable value is reported
// elsewhere and counts as loopback here.
func loopbackListen(hostPort string) bool {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return true
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (ch *checker) httpURL(path, s string) {
	if s == "" {
		return
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		ch.add(path, "%q is not an http(s) URL", redactURL(s))
	}
}

func (ch *checker) required(path, s string) {
	if s == "" {
		ch.add(path, "required")
	}
}

// connections checks the connections and returns their names, in file
// order without repeats.
func (ch *checker) connections(cs []Connection) []string {
	var names []string
	first := map[string]int{}
	for i, c := range cs {
		p := fmt.Sprintf("connections[%d]", i)
		switch {
		case c.Name == "":
			ch.add(p+".name", "required")
		case !connectionNameRE.MatchString(c.Name):
			ch.add(p+".name", "%q is not a valid name (lowercase letters, digits and \"-\", not starting with \"-\")", c.Name)
		}
		if c.Name != "" {
			if j, dup := first[c.Name]; dup {
				ch.add(p+".name", "duplicate name %q (also connections[%d])", c.Name, j)
			} else {
				first[c.Name] = i
				names = append(names, c.Name)
			}
		}

		blocks := c.blocks()
		known := false
		for _, b := range blocks {
			known = known || b.typ == c.Type
		}
		if !known {
			ch.oneOf(p+".type", c.Type, connectionTypes()...)
		} else {
			for _, b := range blocks {
				switch {
				case b.typ == c.Type && b.block == nil:
					ch.add(p+"."+b.typ, "required for type %s", c.Type)
				case b.typ != c.Type && b.block != nil:
					ch.add(p+"."+b.typ, "not allowed for type %s", c.Type)
				}
			}
		}

		switch {
		case c.Uploads < 0 || c.Uploads > MaxUploads:
			ch.add(p+".uploads", "%d is not in 0..%d (0: the default, %d)", c.Uploads, MaxUploads, DefaultUploads)
		}
		switch {
		case c.SignedURLExpiry < 0:
			ch.add(p+".signed_url_expiry", "must not be negative (got %s)", c.SignedURLExpiry)
		case c.SignedURLExpiry > 0 && c.SignedURLExpiry < time.Second:
			ch.add(p+".signed_url_expiry", "%s is less than 1s", c.SignedURLExpiry)
		case c.SignedURLExpiry > MaxSignedURLExpiry:
			ch.add(p+".signed_url_expiry", "%s is more than 7 days (168h), the longest S3 and GCS allow", c.SignedURLExpiry)
		}
		for _, b := range blocks {
			if b.block != nil {
				b.block.check(ch, p+"."+b.typ)
			}
		}
	}
	return names
}

func (ch *checker) exports(es []Export, connNames []string) {
	conns := map[string]bool{}
	for _, n := range connNames {
		conns[n] = true
	}
	firstName := map[string]int{}
	type target struct{ conn, path string }
	firstTarget := map[target]int{}
	for i, e := range es {
		p := fmt.Sprintf("exports[%d]", i)
		switch {
		case e.Name == "":
			ch.add(p+".name", "required")
		case !exportNameRE.MatchString(e.Name):
			ch.add(p+".name", "%q is not a valid name (lowercase letters and digits, words separated by single \"-\")", e.Name)
		}
		if e.Name != "" {
			if j, dup := firstName[e.Name]; dup {
				ch.add(p+".name", "duplicate name %q (also exports[%d])", e.Name, j)
			} else {
				firstName[e.Name] = i
			}
		}
		switch {
		case e.Project == "":
			ch.add(p+".project", "required")
		default:
			if err := CheckProject(e.Project); err != nil {
				ch.add(p+".project", "%v", err)
			}
		}
		ch.source(p+".source", e.Source)
		ch.oneOf(p+".completion", e.Completion, CompletionComplete, CompletionAll, CompletionIncomplete)
		switch {
		case e.Connection == "":
			ch.add(p+".connection", "required (%s)", connectionList(connNames))
		case !conns[e.Connection]:
			ch.add(p+".connection", "no connection named %q (%s)", e.Connection, connectionHint(e.Connection, connNames))
		}
		ch.exportPath(p+".path", e.Path)
		// An export with a bad name or connection is already reported;
		// comparing its (possibly unfilled) path would only add noise.
		if exportNameRE.MatchString(e.Name) && conns[e.Connection] {
			t := target{e.Connection, e.Path}
			if j, dup := firstTarget[t]; dup {
				ch.add(p+".path", "%q on connection %q is also used by exports[%d]", e.Path, e.Connection, j)
			} else {
				firstTarget[t] = i
			}
		}
		if e.KeepLast < 0 {
			ch.add(p+".keep_last", "must not be negative (got %d; 0 keeps every export)", e.KeepLast)
		}
		ch.formats(p+".formats", e.Formats)
		cp := p + ".coalesce"
		if e.Coalesce.Quiet < 0 {
			ch.add(cp+".quiet", "must not be negative (got %s)", e.Coalesce.Quiet)
		}
		switch {
		case e.Coalesce.MaxDelay <= 0:
			ch.add(cp+".max_delay", "must be > 0 (got %s)", e.Coalesce.MaxDelay)
		case e.Coalesce.MaxDelay < e.Coalesce.Quiet:
			ch.add(cp+".max_delay", "%s is less than quiet (%s)", e.Coalesce.MaxDelay, e.Coalesce.Quiet)
		}
	}
}

// formats checks an export's formats: each a known name, listed once.
func (ch *checker) formats(p string, formats []string) {
	first := map[string]int{}
	for i, f := range formats {
		fp := fmt.Sprintf("%s[%d]", p, i)
		if !slices.Contains(formatNames, f) {
			ch.add(fp, "%s", formatProblem(f))
			continue
		}
		if j, dup := first[f]; dup {
			ch.add(fp, "%q is listed twice (also %s[%d])", f, p, j)
			continue
		}
		first[f] = i
	}
}

// connectionHint says what an export naming the missing connection name
// could name instead: the likely typo, the connection names, and that a
// file's connections replace the default local-disk connection.
func connectionHint(name string, names []string) string {
	hint := ""
	if s := suggest(name, names); s != "" {
		hint = fmt.Sprintf("did you mean %q? ", s)
	}
	hint += connectionList(names)
	if name == defaultConnection && len(names) > 0 {
		hint += "; a connections list replaces the default " + defaultConnection + " connection"
	}
	return hint
}

// connectionList names the connections an export can write to.
func connectionList(names []string) string {
	const most = 20
	switch {
	case len(names) == 0:
		return "there are no connections: add one under connections"
	case len(names) > most:
		return fmt.Sprintf("the connections are: %s and %d more", strings.Join(names[:most], ", "), len(names)-most)
	}
	return "the connections are: " + strings.Join(names, ", ")
}

func (ch *checker) source(p string, s Source) {
	var set []string
	if s.Directory != "" {
		set = append(set, "directory")
	}
	if s.DirectoryID != nil {
		set = append(set, "directory_id")
	}
	if s.Job != "" {
		set = append(set, "job")
	}
	if s.JobID != nil {
		set = append(set, "job_id")
	}
	if s.TaskID != nil {
		set = append(set, "task_id")
	}
	if s.Project {
		set = append(set, "project")
	}
	const one = "exactly one of directory, directory_id, job, job_id, task_id, project must be set"
	switch len(set) {
	case 0:
		ch.add(p, "%s (found none)", one)
	case 1:
	default:
		ch.add(p, "%s (found %d: %s)", one, len(set), strings.Join(set, ", "))
	}
	for _, id := range []struct {
		key string
		v   *int64
	}{{"directory_id", s.DirectoryID}, {"job_id", s.JobID}, {"task_id", s.TaskID}} {
		if id.v != nil && *id.v <= 0 {
			ch.add(p+"."+id.key, "must be > 0 (got %d)", *id.v)
		}
	}
}

func (ch *checker) exportPath(p, path string) {
	if path == "" {
		return
	}
	if strings.HasPrefix(path, "/") {
		ch.add(p, "must not start with \"/\"")
		return
	}
	if !strings.HasSuffix(path, "/") {
		ch.add(p, "must end with \"/\"")
	}
	for seg := range strings.SplitSeq(strings.TrimSuffix(path, "/"), "/") {
		switch seg {
		case "..":
			ch.add(p, "must not contain \"..\"")
			return
		case ".", "":
			ch.add(p, "must not contain \".\" segments or \"//\"")
			return
		}
	}
}

// stateOverlaps reports a state.dir that is, holds or sits inside a folder
// the service writes other data to (the embedded server's store, a local
// bucket): the local state store is emptied when it cannot be opened, so
// it needs a folder of its own.
func (c *Config) stateOverlaps(ch *checker) {
	type other struct{ key, dir string }
	var others []other
	if c.NATS.URL == "" && c.NATS.Embedded.StoreDir != "" {
		others = append(others, other{"nats.embedded.store_dir", c.NATS.Embedded.StoreDir})
	}
	for i, conn := range c.Connections {
		if conn.Local != nil && conn.Local.Dir != "" {
			others = append(others, other{fmt.Sprintf("connections[%d].local.dir", i), conn.Local.Dir})
		}
	}
	state, err := filepath.Abs(c.State.Dir)
	if err != nil {
		return
	}
	for _, o := range others {
		dir, err := filepath.Abs(o.dir)
		if err != nil {
			continue
		}
		var how string
		switch {
		case dir == state:
			how = "is"
		case strings.HasPrefix(state, dir+string(filepath.Separator)):
			how = "is inside"
		case strings.HasPrefix(dir, state+string(filepath.Separator)):
			how = "holds"
		default:
			continue
		}
		ch.addAbout("state.dir", o.key, "%s %s %s (%s): the local state store needs a folder of its own (it is emptied when it cannot be opened)",
			c.State.Dir, how, o.key, o.dir)
	}
}
