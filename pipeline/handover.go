package pipeline

import (
	"context"
	"fmt"
	"time"
)

// Manual requests (Generate) live in the memory of the replica holding
// the definition's project until its export starts. When this replica
// gives a partition up while it is still running (another replica should
// hold it, or its lease was lost), handOver passes the requests waiting
// for the partition's definitions to the replica that takes it over:
// each is asked again there, which answers with a record of its own, and
// the record here is marked failed with a text that names the export
// serving it instead. Until then a request handed away stayed pending
// for as long as this replica ran.

// handOverTimeout bounds how long a request is offered to the partition's
// next holder (asked every handOverEvery).
var (
	handOverTimeout = 2 * time.Minute
	handOverEvery   = time.Second
)

// handOver passes the manual requests waiting for definitions of
// partition i to its next holder, in the background (requests.wait waits
// for it).
func (p *Pipeline) handOver(i int) {
	for _, d := range p.defs {
		if p.parts.of(d.Project) != i {
			continue
		}
		r := p.requests.takeManual(d.Name)
		if r == nil {
			continue
		}
		p.requests.start(func() { p.handOverRequest(p.runCtx(), r, i) })
	}
}

// handOverRequest asks the holder of partition i to serve manual request
// r, until one answers or handOverTimeout passes, and marks r failed,
// saying what became of it.
func (p *Pipeline) handOverRequest(ctx context.Context, r *Record, i int) {
	ctx, cancel := context.WithTimeout(ctx, handOverTimeout)
	defer cancel()
	tick := time.NewTicker(handOverEvery)
	defer tick.Stop()
	var err error
	for {
		var served *Record
		if served, err = p.forward(ctx, r.Project, forwardRequest{Definition: r.Name}); err == nil {
			r.StatusText = fmt.Sprintf("handed over: project %q moved to another replica, where export %d serves this request", r.Project, served.ID)
			break
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
			continue
		}
		r.StatusText = fmt.Sprintf("not exported: this replica gave project %q (partition %d) up before the export started, and no replica took the request: %v; ask again", r.Project, i, err)
		break
	}
	r.Status = StatusFailed
	if perr := p.records.put(context.WithoutCancel(ctx), r); perr != nil {
		p.log.Warn("a manual request handed over: its record could not be updated", "export_id", r.ID, "err", perr)
		return
	}
	p.log.Info("manual request handed over with its project", "export_id", r.ID, "definition", r.Name, "partition", i, "status_text", r.StatusText)
}
