package config

import (
	"sort"
	"strings"
)

// Problem is one thing wrong with a configuration.
type Problem struct {
	// Path is the YAML path of the offending key: dotted keys and [index]
	// for list items, e.g. "exports[1].connection" or "nats.tls.key_file".
	// A key that is not a plain word is quoted: `nats["a b"]`. Path is
	// empty only for a problem with the file as a whole (a YAML syntax
	// error).
	Path string
	// Message says what is wrong, in lower case, without the path.
	Message string
	// Line is the 1-based line in the file the problem was found at (the
	// line of the key, or of the nearest enclosing key present in the file).
	// It is 0 when unknown: always for problems from Config.Validate, which
	// has no file.
	Line int
}

// String returns "path: message", or just the message when Path is empty.
func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// Errors is every problem found in a configuration. Load, Parse and
// Config.Validate return it (as *Errors) whenever they report problems;
// use errors.As to get at the list.
type Errors struct {
	// Problems is never empty. Parse and Load order it by Line (file order),
	// problems on the same line in the order they were found; Validate
	// orders it by the position of the key in Config.
	Problems []Problem
}

// Error returns one problem per line, each as Problem.String formats it
// ("path: message"), with no trailing newline.
func (e *Errors) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// sortByLine orders problems by line, those without a line last, keeping
// the order problems were found in among equals.
func sortByLine(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool {
		li, lj := ps[i].Line, ps[j].Line
		if li == 0 || lj == 0 {
			return li != 0 && lj == 0
		}
		return li < lj
	})
}

// related reports whether one path is the other or lies inside it.
func related(a, b string) bool {
	return a == b || inside(a, b) || inside(b, a)
}

// inside reports whether path p lies strictly inside path outer.
func inside(p, outer string) bool {
	if outer == "" || len(p) <= len(outer) || !strings.HasPrefix(p, outer) {
		return false
	}
	c := p[len(outer)]
	return c == '.' || c == '['
}

// parentPath returns the path one level up: "a.b[2]" → "a.b", "a.b" → "a",
// "a" → "".
func parentPath(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i >= 0 {
			return p[:i]
		}
	}
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i]
	}
	return ""
}
