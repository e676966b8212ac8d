package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Load reads the YAML file at path and returns its configuration, as Parse
// does with the process environment (os.LookupEnv).
//
// If the file cannot be read, the error from os.ReadFile is returned,
// wrapped. If the file has problems, the error is an *Errors listing all of
// them and the returned *Config is nil.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, os.LookupEnv)
}

// Parse returns the configuration in data, a YAML document:
//
//  1. It starts from Default. Keys present in the file override it; a list
//     in the file (connections, nats.subjects, ...) replaces the default
//     list, it is not appended to. A key with an empty (null) value keeps
//     its default, except that it clears a list or an optional block:
//     "connections:" alone means no connections. An empty file gives
//     Default.
//  2. It decodes strictly: a key the configuration does not have, a key
//     given twice, or a value of the wrong type (a list for a string, "5"
//     for a duration, "yes" for a boolean) is a problem. Durations are Go
//     durations with a unit ("500ms", "5s", "1m30s"); 0 is also accepted.
//     Anchors, aliases and merge keys (<<) work.
//  3. While decoding, it expands ${NAME} from lookupEnv in string values
//     only: values decoded into a string (or Secret) field that YAML
//     resolves as a string (!!str). Keys, numbers, booleans, durations and
//     the structure are never expanded, so "replicas: ${N}" is a type error.
//     "$${" is a literal "${". A variable lookupEnv does not know is a
//     problem naming it; a variable set to "" expands to "". A nil
//     lookupEnv knows no variables.
//  4. It fills per-item defaults: an export without path gets
//     "exports/<name>/", and a path always ends in "/"; an export's
//     completion defaults to "complete" and its coalesce to 5s / 60s; an
//     S3 part_size to DefaultPartSize; an empty deployment becomes the
//     host name. Explicit values, zeros included, are kept.
//  5. It runs Validate.
//
// Every problem from every step is collected; if there is any, Parse
// returns a nil *Config and an *Errors whose Problems carry line numbers and
// are in file order. A problem Validate finds at a path where decoding
// already failed (or inside or around it), or about such a path ("requires
// secret_access_key" when secret_access_key's variable is not set), is left
// out as a consequence of the first. At most 1000 problems are listed, and
// a file whose aliases and merge keys expand beyond reason is reported as
// too complex instead of being expanded.
func Parse(data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	if lookupEnv == nil {
		lookupEnv = func(string) (string, bool) { return "", false }
	}
	root, p := parseYAML(data)
	if p != nil {
		return nil, &Errors{Problems: []Problem{*p}}
	}
	cfg := Default()
	d := &decoder{lookupEnv: lookupEnv, lines: map[string]int{}}
	if root != nil {
		d.decode(root, reflect.ValueOf(cfg).Elem(), "")
	}
	cfg.fillExportPaths()
	cfg.fillDeployment()
	problems := d.problems
	for _, is := range cfg.problems() {
		if d.failedNear(is.Path) || slices.ContainsFunc(is.about, d.failedNear) {
			continue
		}
		is.Line = d.lineOf(is.Path)
		problems = append(problems, is.Problem)
	}
	if len(problems) > 0 || d.stopped != nil {
		sortByLine(problems)
		if len(problems) > maxProblems {
			problems = append(problems[:maxProblems], Problem{
				Message: fmt.Sprintf("too many problems; only the first %d are listed", maxProblems),
			})
		}
		if d.stopped != nil {
			problems = append(problems, *d.stopped)
		}
		return nil, &Errors{Problems: problems}
	}
	return cfg, nil
}

var yamlLineRE = regexp.MustCompile(`^line (\d+): `)

// parseYAML parses data into its root node (nil for an empty document) or
// returns the syntax problem.
func parseYAML(data []byte) (*yaml.Node, *Problem) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, syntaxProblem(err, data)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		return nil, &Problem{Line: extra.Line, Message: fmt.Sprintf("line %d: a second YAML document; the file must hold exactly one", extra.Line)}
	case !errors.Is(err, io.EOF):
		return nil, syntaxProblem(err, data)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, nil
	}
	return doc.Content[0], nil
}

// syntaxProblem turns the parser's error about data into a Problem, in
// the user's words where the parser's are obscure: a tab in indentation.
func syntaxProblem(err error, data []byte) *Problem {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	p := &Problem{Message: msg}
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
	}
	if line := tabLine(msg, p.Line, data); line > 0 {
		p.Line = line
		p.Message = fmt.Sprintf("line %d: tabs are not allowed in YAML indentation: indent with spaces", line)
	}
	return p
}

// tabLine returns the line of the tab the parser's message msg, reported
// at line (0: unknown, the first line), is about, or 0 if it is not about
// a tab in indentation. The parser reports a tab where a token cannot
// start at the tab's line, and a tab that breaks the indentation at (or
// before) the line before it.
func tabLine(msg string, line int, data []byte) int {
	var tabbed []int // lines whose indentation holds a tab
	for i, l := range strings.Split(string(data), "\n") {
		indent := l[:len(l)-len(strings.TrimLeft(l, " \t"))]
		if strings.Contains(indent, "\t") {
			tabbed = append(tabbed, i+1)
		}
	}
	line = max(line, 1)
	switch {
	case strings.Contains(msg, "found character that cannot start any token"):
		if slices.Contains(tabbed, line) {
			return line
		}
	case strings.Contains(msg, "found a tab character"):
		// The first tab-indented line at or after the reported one.
		if i, _ := slices.BinarySearch(tabbed, line); i < len(tabbed) {
			return tabbed[i]
		}
	}
	return 0
}

// YAML tags the decoder knows.
const (
	strTag       = "!!str"
	intTag       = "!!int"
	floatTag     = "!!float"
	boolTag      = "!!bool"
	nullTag      = "!!null"
	mapTag       = "!!map"
	seqTag       = "!!seq"
	mergeTag     = "!!merge"
	timestampTag = "!!timestamp"
	binaryTag    = "!!binary"
)

var (
	durationType = reflect.TypeFor[time.Duration]()
	exportType   = reflect.TypeFor[Export]()
	sourceType   = reflect.TypeFor[Source]()
)

// sourceKinds lists the keys of a source, for messages: "directory,
// directory_id, job, job_id, task_id, project".
func sourceKinds() string {
	_, names := fieldNames(sourceType)
	return strings.Join(names, ", ")
}

// Limits that keep a hostile file (merge keys that refer to themselves,
// aliases fanning out exponentially) from taking long to decode.
const (
	// maxMergeDepth bounds nested merge keys.
	maxMergeDepth = 32
	// maxMerges bounds the mappings merged in a file, counting each
	// time a mapping is merged.
	maxMerges = 10000
	// maxProblems bounds the problems reported.
	maxProblems = 1000
	// maxVisits bounds the values and keys decoded, aliases counting
	// each time they are used.
	maxVisits = 1_000_000
)

// decoder decodes a yaml.Node tree into Config with reflection, recording
// every problem with its path instead of stopping at the first one.
//
// It does not leave the decoding to the YAML library's Decode (with
// KnownFields), which does less than the messages need: it names a
// problem's line, not its path; takes "yes" (quoted too) and on for true
// and 1.5 for 1, ignores unknown tags, and refuses 0 for a duration; stops
// at the first merge of what is not a mapping, and at "<<" given a list by
// alias; skips a whole mapping that has a duplicate key; drops an empty
// list item; and checks for duplicate keys in quadratic time at every use
// of an alias. Nor can it be patched around: KnownFields holds for
// Decoder.Decode of text only, not for Node.Decode, so below an
// UnmarshalYAML (for an Export's defaults, or a duration type) unknown keys
// pass unseen; and ${VAR} needs the field's type, since a variable is never
// expanded into a duration or a boolean. Decoders built on it (Decode into
// Config, with the paths recovered from the node tree; or Decode of each
// mapping into map[string]yaml.Node, for its merges) needed as many lines
// as this one to keep the messages. goccy/go-yaml's strict Decode (v1.19)
// does no better: it returns one problem per file, the first in field
// order rather than file order; stops at a duplicate key as a syntax
// error; takes 1.5 for 1 and !!str 3 for 3; ignores unknown tags; and
// refuses 0 for a duration.
type decoder struct {
	lookupEnv func(string) (string, bool)
	problems  []Problem
	// lines maps each path decoded from the file to its line.
	lines map[string]int
	// reported holds the problems in problems.
	reported map[Problem]bool
	// visits counts the values and keys decoded so far.
	visits int
	// stopped says where decoding stopped, if it did; Parse lists it last
	// even when there are too many problems to list all.
	stopped *Problem
	// merged counts the mappings merged so far.
	merged int
	// merging holds the mappings whose merges are being resolved.
	merging map[*yaml.Node]bool
}

func (d *decoder) add(n *yaml.Node, path, format string, args ...any) {
	if d.full() {
		return
	}
	line := 0
	if n != nil {
		line = n.Line
	}
	p := Problem{Path: path, Message: fmt.Sprintf(format, args...), Line: line}
	if d.reported[p] {
		// The same problem reached again through an alias or a merge.
		return
	}
	if d.reported == nil {
		d.reported = map[Problem]bool{}
	}
	d.reported[p] = true
	d.problems = append(d.problems, p)
}

// full reports whether no more problems are recorded: Parse reports the
// first maxProblems and says there are more.
func (d *decoder) full() bool { return len(d.problems) > maxProblems }

// visit counts one more value or key decoded and reports whether
// decoding may go on.
func (d *decoder) visit(n *yaml.Node, path string) bool {
	d.visits++
	if d.visits == maxVisits+1 {
		d.stopped = &Problem{Path: path, Line: n.Line,
			Message: fmt.Sprintf("the file is too complex: its aliases expand to more than %d values; decoding stopped here", maxVisits)}
	}
	return d.visits <= maxVisits
}

// failedNear reports whether decoding reported a problem at path, inside it
// or around it.
func (d *decoder) failedNear(path string) bool {
	for _, p := range d.problems {
		if related(p.Path, path) {
			return true
		}
	}
	return false
}

// lineOf returns the line of path or of its nearest ancestor in the file.
func (d *decoder) lineOf(path string) int {
	for p := path; p != ""; p = parentPath(p) {
		if l, ok := d.lines[p]; ok {
			return l
		}
	}
	return 0
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	// The parser only creates aliases to anchors already seen, and an alias
	// never points at another alias, but be defensive about chains.
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 16; i++ {
		n = n.Alias
	}
	return n
}

// knownTag reports whether tag is one of YAML's standard tags.
func knownTag(tag string) bool {
	switch tag {
	case strTag, intTag, floatTag, boolTag, nullTag, mapTag, seqTag, mergeTag, timestampTag, binaryTag:
		return true
	}
	return false
}

// decode decodes n into v, which is addressable; path is v's YAML path.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if !d.visit(n, path) {
		return
	}
	n = resolveAlias(n)
	tag := n.ShortTag()
	if !knownTag(tag) {
		d.add(n, path, "unsupported YAML tag %q", n.Tag)
		return
	}
	if n.Kind == yaml.ScalarNode && tag == nullTag {
		// An empty value leaves the default in place, except that it
		// clears optional blocks and lists.
		switch v.Kind() {
		case reflect.Pointer, reflect.Slice:
			v.SetZero()
		}
		return
	}
	if v.Type() == durationType {
		d.duration(n, v, path)
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		nv := newValue(v.Type().Elem())
		before := len(d.problems)
		d.decode(n, nv.Elem(), path)
		// A block that failed to decode is kept, so that its other keys
		// are still checked; a scalar that failed is left unset.
		if nv.Elem().Kind() == reflect.Struct || len(d.problems) == before {
			v.Set(nv)
		}
	case reflect.Struct:
		d.mapping(n, v, path)
	case reflect.Slice:
		d.sequence(n, v, path)
	case reflect.String:
		d.string(n, v, path)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || tag != boolTag {
			d.add(n, path, "expected true or false, got %s", describe(n))
			return
		}
		var b bool
		if err := n.Decode(&b); err != nil {
			d.add(n, path, "expected true or false, got %s", describe(n))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		if n.Kind != yaml.ScalarNode || tag != intTag {
			d.add(n, path, "expected an integer, got %s", describe(n))
			return
		}
		var i int64
		if err := n.Decode(&i); err != nil || v.OverflowInt(i) {
			d.add(n, path, "integer %s is out of range", n.Value)
			return
		}
		v.SetInt(i)
	default:
		panic(fmt.Sprintf("config: no decoder for %s at %s", v.Type(), path))
	}
}

// newValue returns a pointer to a new t holding t's defaults, if t has
// any: an Export or a connection block with defaults (S3) starts from
// them so that a value the file sets explicitly, zero included, is kept.
func newValue(t reflect.Type) reflect.Value {
	p := reflect.New(t)
	if t == exportType {
		p.Elem().Set(reflect.ValueOf(defaultExport()))
	}
	if d, ok := p.Interface().(defaulter); ok {
		d.setDefaults()
	}
	return p
}

var plainKeyRE = regexp.MustCompile(`^[A-Za-z0-9_${}<-]+$`)

// joinPath returns the path of key inside path.
func joinPath(path, key string) string {
	if !plainKeyRE.MatchString(key) {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

type pair struct{ key, value *yaml.Node }

// pairs returns the key/value pairs of mapping n: its own pairs in order,
// then those merged in with "<<" that it does not set itself (an earlier
// merge source wins over a later one, as in YAML 1.1).
func (d *decoder) pairs(n *yaml.Node, path string, depth int) []pair {
	var own []pair
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == mergeTag {
			merges = append(merges, v)
			continue
		}
		own = append(own, pair{k, v})
	}
	if len(merges) == 0 {
		return own
	}
	if depth >= maxMergeDepth {
		d.add(n, joinPath(path, "<<"), "merge keys nested too deep")
		return own
	}
	if d.merging == nil {
		d.merging = map[*yaml.Node]bool{}
	}
	if d.merging[n] {
		d.add(n, joinPath(path, "<<"), "a mapping merges itself")
		return own
	}
	d.merging[n] = true
	defer delete(d.merging, n)
	set := map[string]bool{}
	for _, p := range own {
		set[resolveAlias(p.key).Value] = true
	}
	out := own
	var from []*yaml.Node
	for _, m := range merges {
		m = resolveAlias(m)
		if m.Kind == yaml.SequenceNode {
			from = append(from, m.Content...)
			continue
		}
		from = append(from, m)
	}
	for _, m := range from {
		if d.merged++; d.merged > maxMerges {
			if d.merged == maxMerges+1 {
				d.add(m, joinPath(path, "<<"), "more than %d merges in the file", maxMerges)
			}
			return out
		}
		src := resolveAlias(m)
		if src.Kind != yaml.MappingNode {
			d.add(m, joinPath(path, "<<"), "expected a mapping or a list of mappings to merge, got %s", describe(src))
			continue
		}
		for _, p := range d.pairs(src, path, depth+1) {
			k := resolveAlias(p.key).Value
			if set[k] {
				continue
			}
			set[k] = true
			out = append(out, p)
		}
	}
	return out
}

// fieldNames returns t's fields by YAML key, and the keys in field order.
func fieldNames(t reflect.Type) (map[string]int, []string) {
	byName := map[string]int{}
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		byName[name] = i
		names = append(names, name)
	}
	return byName, names
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		if v.Type() == sourceType {
			example := "directory: Luckfrill"
			if n.Kind == yaml.ScalarNode && n.ShortTag() == strTag && n.Value != "" {
				example = "directory: " + strconv.Quote(n.Value)
			}
			d.add(n, path, "expected a mapping with one of the source kinds (%s), got %s: e.g. {%s}", sourceKinds(), describe(n), example)
			return
		}
		d.add(n, path, "expected a mapping, got %s", describe(n))
		return
	}
	byName, names := fieldNames(v.Type())
	seen := map[string]int{}
	for _, p := range d.pairs(n, path, 0) {
		if !d.visit(p.key, path) {
			return
		}
		k := resolveAlias(p.key)
		if k.Kind != yaml.ScalarNode {
			d.add(k, path, "keys must be strings, got %s", describe(k))
			continue
		}
		kp := joinPath(path, k.Value)
		if first, dup := seen[k.Value]; dup {
			d.add(k, kp, "duplicate key (first set on line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		i, ok := byName[k.Value]
		if !ok && d.full() {
			continue
		}
		if !ok {
			msg := "unknown key"
			if s := suggest(k.Value, names); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			if v.Type() == sourceType {
				msg += "; the source kinds are: " + sourceKinds() + " (exactly one)"
			}
			d.add(k, kp, "%s", msg)
			continue
		}
		d.lines[kp] = k.Line
		d.decode(p.value, v.Field(i), kp)
	}
}

func (d *decoder) sequence(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.add(n, path, "expected a list, got %s", describe(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		ip := fmt.Sprintf("%s[%d]", path, i)
		d.lines[ip] = item.Line
		e := newValue(v.Type().Elem()).Elem()
		d.decode(item, e, ip)
		s.Index(i).Set(e)
	}
	v.Set(s)
}

func (d *decoder) string(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.add(n, path, "expected a string, got %s", describe(n))
		return
	}
	s := n.Value
	if n.ShortTag() == strTag {
		var msgs []string
		s, msgs = expand(s, d.lookupEnv)
		for _, m := range msgs {
			d.add(n, path, "%s", m)
		}
	}
	v.SetString(s)
}

func (d *decoder) duration(n *yaml.Node, v reflect.Value, path string) {
	const hint = "a number with a unit: ms, s, m or h, e.g. 500ms, 5s, 1m30s"
	if n.Kind != yaml.ScalarNode {
		d.add(n, path, "expected a duration (%s), got %s", hint, describe(n))
		return
	}
	switch n.ShortTag() {
	case strTag:
		dur, err := time.ParseDuration(n.Value)
		if err != nil {
			d.add(n, path, "invalid duration %q (use %s)", n.Value, hint)
			return
		}
		v.SetInt(int64(dur))
	case intTag:
		if i, err := strconv.ParseInt(n.Value, 10, 64); err == nil && i == 0 {
			v.SetInt(0)
			return
		}
		fallthrough
	default:
		d.add(n, path, "expected a duration (%s), got %s", hint, describe(n))
	}
}

// describe names the kind and value of n for a type error.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case strTag:
			return "string " + strconv.Quote(n.Value)
		case intTag:
			return "integer " + n.Value
		case floatTag:
			return "number " + n.Value
		case boolTag:
			return "boolean " + n.Value
		case nullTag:
			return "null"
		default:
			return n.ShortTag() + " " + strconv.Quote(n.Value)
		}
	}
	return "an unexpected YAML node"
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// expand replaces ${NAME} in s with lookupEnv(NAME) and "$${" with "${". It
// returns the result and a message for every reference it cannot expand
// (which expands to "").
func expand(s string, lookupEnv func(string) (string, bool)) (string, []string) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	var msgs []string
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "$${"):
			b.WriteString("${")
			i += 3
		case strings.HasPrefix(s[i:], "${"):
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				msgs = append(msgs, `unterminated "${" (write "$${" for a literal "${")`)
				return b.String(), msgs
			}
			name := s[i+2 : i+2+end]
			i += 2 + end + 1
			if !envNameRE.MatchString(name) {
				msgs = append(msgs, fmt.Sprintf(`invalid environment variable reference "${%s}" (names are letters, digits and "_", not starting with a digit)`, name))
				continue
			}
			val, ok := lookupEnv(name)
			if !ok {
				msgs = append(msgs, fmt.Sprintf("environment variable %s is not set", name))
				continue
			}
			b.WriteString(val)
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String(), msgs
}

// suggest returns the candidate closest to key if it is a likely typo.
func suggest(key string, candidates []string) string {
	key = strings.ToLower(key)
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := editDistance(key, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	if bestDist > 1 && len(key) <= 3 {
		best = ""
	}
	if best == "" {
		// "cert" for "cert_file".
		for _, c := range candidates {
			if len(key) >= 3 && strings.HasPrefix(c, key+"_") {
				return c
			}
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
