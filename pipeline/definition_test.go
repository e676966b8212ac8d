package pipeline

import (
	"errors"
	"testing"
)

func TestParseSource(t *testing.T) {
	for _, tc := range []struct {
		kind, value string
		want        Source
		err         string
	}{
		{"directory", "Train", Source{Kind: SourceDirectory, Name: "Train"}, ""},
		{"directory", "a=b", Source{Kind: SourceDirectory, Name: "a=b"}, ""},
		{"directory_id", "12", Source{Kind: SourceDirectory, ID: 12}, ""},
		{"job", "Label cars", Source{Kind: SourceJob, Name: "Label cars"}, ""},
		{"job_id", "7", Source{Kind: SourceJob, ID: 7}, ""},
		{"task_id", "9002", Source{Kind: SourceTask, ID: 9002}, ""},
		{"project", "", Source{Kind: SourceProject}, ""},
		{"project", "true", Source{Kind: SourceProject}, ""},

		{"project", "no", Source{}, "project takes no value (the whole project)"},
		{"directory", "", Source{}, "directory=NAME: the name is missing"},
		{"job", "", Source{}, "job=NAME: the name is missing"},
		{"job_id", "abc", Source{}, `job_id=N: "abc" is not a positive number`},
		{"task_id", "0", Source{}, `task_id=N: "0" is not a positive number`},
		{"directory_id", "-3", Source{}, `directory_id=N: "-3" is not a positive number`},
		{"directory_id", "", Source{}, `directory_id=N: "" is not a positive number`},
		{"folder", "x", Source{}, `unknown source kind "folder": want directory, directory_id, job, job_id, task_id or project`},
	} {
		got, err := ParseSource(tc.kind, tc.value)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("ParseSource(%q, %q): %v", tc.kind, tc.value, err)
		case tc.err != "" && (err == nil || err.Error() != tc.err):
			t.Errorf("ParseSource(%q, %q): error %v, want %q", tc.kind, tc.value, err, tc.err)
		case got != tc.want:
			t.Errorf("ParseSource(%q, %q) = %+v, want %+v", tc.kind, tc.value, got, tc.want)
		}
	}
	if _, err := ParseSource("folder", "x"); !errors.Is(err, ErrSourceKind) {
		t.Errorf("an unknown kind: %v, want ErrSourceKind", err)
	}
}
