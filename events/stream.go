package events

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// ReadStream reads messages in the examples' format, one a line:
// SUBJECT<TAB>BODY. It calls fn for each with the subject, the body and
// the message id to publish it with (the body's "id" where the body is a
// JSON object with a string id, else ""). Blank lines are skipped; a
// non-blank line without a tab is an error naming its line number.
func ReadStream(r io.Reader, fn func(subject string, body []byte, msgID string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Bytes()
		if len(bytes.TrimSpace(text)) == 0 {
			continue
		}
		subj, body, ok := bytes.Cut(text, []byte("\t"))
		if !ok {
			return fmt.Errorf("line %d: no tab between subject and body", line)
		}
		var probe struct {
			ID any `json:"id"`
		}
		msgID := ""
		if json.Unmarshal(body, &probe) == nil {
			if s, ok := probe.ID.(string); ok {
				msgID = s
			}
		}
		if err := fn(string(subj), bytes.Clone(body), msgID); err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
	}
	return sc.Err()
}
