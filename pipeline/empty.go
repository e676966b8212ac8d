package pipeline

import (
	"fmt"
	"iter"
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

// emptyReason says why the definition's source matched no file; pv is
// its project (nil when unknown) and pl its plan (with no files).
func emptyReason(v View, d *Definition, pv ProjectView, pl *plan) string {
	if pv == nil {
		names := v.Projects()
		return fmt.Sprintf("no project %q: no event has named it yet (projects: %s)", d.Project, listed(names, len(names)))
	}
	what := completionWord(d.Completion)
	switch d.Source.Kind {
	case SourceDirectory:
		if pl.dir == nil {
			names := namesOf(pv.Dirs(), func(v any) string { return v.(*events.Directory).Nickname })
			return fmt.Sprintf("no directory %s in project %s (directories: %s)", d.Source.describe(), d.Project, listed(names, len(names)))
		}
		total, n := countFiles(pv, func(f *events.File) bool { return slices.Contains(f.DirectoryIDs, pl.dir.id) })
		return fmt.Sprintf("directory %q in project %s has no %sfiles (%s)", pl.dir.val.(*events.Directory).Nickname, d.Project, what, counted(d.Completion, total, n, "file"))
	case SourceJob:
		if pl.job == nil {
			names := namesOf(pv.Jobs(), func(v any) string { return v.(*events.Job).Name })
			return fmt.Sprintf("no job %s in project %s (jobs: %s)", d.Source.describe(), d.Project, listed(names, len(names)))
		}
		n, total := 0, 0
		for ts := range pv.JobTasks(pl.job.id) {
			if t := ts.val.(*events.Task); t.Status != "archived" {
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
			total := 0
			for t := range pv.Tasks() {
				if total < maxListed {
					ids = append(ids, strconv.FormatInt(t.id, 10))
				}
				total++
			}
			return fmt.Sprintf("no task %d in project %s (tasks: %s)", d.Source.ID, d.Project, listed(ids, total))
		}
		t := pl.task.val.(*events.Task)
		if f := pv.File(t.FileID); f == nil || f.val.(*events.File).Removed() {
			return fmt.Sprintf("task %d in project %s: its file %d is removed or not known", t.ID, d.Project, t.FileID)
		}
		return fmt.Sprintf("task %d in project %s is %s, so it has no %sfile", t.ID, d.Project, t.Status, what)
	}
	total, n := countFiles(pv, func(*events.File) bool { return true })
	return fmt.Sprintf("project %s has no %sfiles (%s)", d.Project, what, counted(d.Completion, total, n, "file"))
}

// countFiles counts the project's files that are not removed and that in
// keeps, and how many of those are complete.
func countFiles(pv ProjectView, in func(*events.File) bool) (total, complete int) {
	for f := range pv.Files() {
		if fv := f.val.(*events.File); !fv.Removed() && in(fv) {
			total++
			if fv.Complete() {
				complete++
			}
		}
	}
	return total, complete
}

// namesOf lists entities as "name (id N)", in the order given.
func namesOf(all iter.Seq[*snap], name func(any) string) []string {
	var names []string
	for s := range all {
		names = append(names, fmt.Sprintf("%s (id %d)", name(s.val), s.id))
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

func completionWord(c Completion) string {
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
func counted(completion Completion, total, complete int, item string) string {
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
