package pipeline

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/exportstream/exportstream/events"
)

// No empty export (EXPORTS.md): when a source matches no file, nothing is
// written and the attempt is recorded as skipped, with a reason that names
// what was not found and what exists.

// maxListed bounds the names a reason lists.
const maxListed = 10

// emptyReason says why the definition's source matched no file; pl is its
// plan (with no files). It runs under the state's read lock.
func (s *State) emptyReason(d *Definition, p *project, pl *plan) string {
	if p == nil {
		names := slices.Sorted(maps.Keys(s.projects))
		return fmt.Sprintf("no project %q: no event has named it yet (projects: %s)", d.Project, listed(names, len(names)))
	}
	what := completionWord(d.Completion)
	switch d.Source.Kind {
	case SourceDirectory:
		if pl.dir == nil {
			names := namesByID(p.dirs, func(v any) string { return v.(*events.Directory).Nickname })
			return fmt.Sprintf("no directory %s in project %s (directories: %s)", d.Source.describe(), d.Project, listed(names, len(names)))
		}
		n, total := 0, 0
		for _, f := range p.files {
			fv := f.val.(*events.File)
			if !fv.Removed() && slices.Contains(fv.DirectoryIDs, pl.dir.id) {
				total++
				if fv.Complete() {
					n++
				}
			}
		}
		return fmt.Sprintf("directory %q in project %s has no %sfiles (%s)", pl.dir.val.(*events.Directory).Nickname, d.Project, what, counted(d.Completion, total, n, "file"))
	case SourceJob:
		if pl.job == nil {
			names := namesByID(p.jobs, func(v any) string { return v.(*events.Job).Name })
			return fmt.Sprintf("no job %s in project %s (jobs: %s)", d.Source.describe(), d.Project, listed(names, len(names)))
		}
		n, total := 0, 0
		for tid := range p.jobTasks[pl.job.id] {
			t := p.tasks[tid].val.(*events.Task)
			if t.Status != "archived" {
				total++
				if t.Status == "complete" {
					n++
				}
			}
		}
		return fmt.Sprintf("job %q in project %s has no %sfiles (%s)", pl.job.val.(*events.Job).Name, d.Project, what, counted(d.Completion, total, n, "task"))
	case SourceTask:
		if pl.task == nil {
			var ids []string
			for _, id := range sortedKeys(p.tasks) {
				if len(ids) == maxListed {
					break
				}
				ids = append(ids, strconv.FormatInt(id, 10))
			}
			return fmt.Sprintf("no task %d in project %s (tasks: %s)", d.Source.ID, d.Project, listed(ids, len(p.tasks)))
		}
		t := pl.task.val.(*events.Task)
		if f := p.files[t.FileID]; f == nil || f.val.(*events.File).Removed() {
			return fmt.Sprintf("task %d in project %s: its file %d is removed or not known", t.ID, d.Project, t.FileID)
		}
		return fmt.Sprintf("task %d in project %s is %s, so it has no %sfile", t.ID, d.Project, t.Status, what)
	}
	n, total := 0, 0
	for _, f := range p.files {
		if fv := f.val.(*events.File); !fv.Removed() {
			total++
			if fv.Complete() {
				n++
			}
		}
	}
	return fmt.Sprintf("project %s has no %sfiles (%s)", d.Project, what, counted(d.Completion, total, n, "file"))
}

// namesByID lists the entities of a table as "name (id N)", by id.
func namesByID(table map[int64]*snap, name func(any) string) []string {
	var names []string
	for _, id := range sortedKeys(table) {
		names = append(names, fmt.Sprintf("%s (id %d)", name(table[id].val), id))
	}
	return names
}

// describe names the source as configured: "Luckfril" or "with id 7".
func (src Source) describe() string {
	if src.ID != 0 {
		return "with id " + strconv.FormatInt(src.ID, 10)
	}
	return strconv.Quote(src.Name)
}

func completionWord(c string) string {
	switch c {
	case CompletionComplete:
		return "complete "
	case CompletionIncomplete:
		return "incomplete "
	}
	return ""
}

// counted says how many of total items (files or tasks) there are and how
// many of them are complete.
func counted(completion string, total, complete int, item string) string {
	if total == 0 {
		return "it has no " + item + "s"
	}
	if completion == CompletionAll {
		return fmt.Sprintf("%d %ss", total, item)
	}
	return fmt.Sprintf("%d %ss, %d complete", total, item, complete)
}

// listed joins up to maxListed names, saying how many more there are, or
// "none".
func listed(names []string, total int) string {
	if total == 0 {
		return "none"
	}
	if len(names) > maxListed {
		names = names[:maxListed]
	}
	out := strings.Join(names, ", ")
	if total > len(names) {
		out += fmt.Sprintf(" and %d more", total-len(names))
	}
	return out
}
