package pipeline

import (
	"sync"
	"testing"

	"github.com/exportstream/exportstream/events"
)

// TestStateOfferKeepsSnapshots offers the same version of an instance at a
// higher revision while a reader holds the snapshot it got before: the
// state answers the new revision, and the reader's snapshot is not
// changed under it (snapshots are immutable; under -race a write to the
// one the reader holds is a race).
func TestStateOfferKeepsSnapshots(t *testing.T) {
	const raw = `{"id":100,"root_id":100,"file_id":3,"type":"box","version":2}`
	s := NewState()
	s.offer("moves", snapOf(t, events.KindInstance, raw, 5))
	held := s.current("moves", events.KindInstance, 100)

	var wg sync.WaitGroup
	var readRev uint64
	wg.Go(func() { readRev = held.rev })
	old, stored := s.offer("moves", snapOf(t, events.KindInstance, raw, 9))
	wg.Wait()

	if stored || old == nil || old == held || old.rev != 9 {
		t.Errorf("offer of the same version = (%+v, %t), want (a copy of the held snapshot at revision 9, false)", old, stored)
	}
	if readRev != 5 || held.rev != 5 {
		t.Errorf("the held snapshot's revision changed: read %d, now %d, want 5", readRev, held.rev)
	}
	if cur := s.current("moves", events.KindInstance, 100); cur == nil || cur.rev != 9 || cur.version != 2 {
		t.Errorf("current = %+v, want version 2 at revision 9", cur)
	}
	var inFile []*snap
	s.Read(func(v View) {
		for sn := range v.Project("moves").Instances(3) {
			inFile = append(inFile, sn)
		}
	})
	if len(inFile) != 1 || inFile[0].rev != 9 {
		t.Errorf("the file's instances after the offer: %d, want the one at revision 9", len(inFile))
	}
}
