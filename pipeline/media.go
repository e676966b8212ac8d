package pipeline

// Media links (EXPORTS.md, "Media links").
//
// A definition with Media signs a fresh link for every file whose
// snapshot carries blob_path (a key in the Media connection's bucket):
// the entry's file.blob_url and its media block's signed url and expiry
// (image_signed_url/_expiry, mp4_video_signed_url/_expiry,
// signed_url/_expiry) say the signed link, valid for Media.Expiry from
// the export's time. Links of files without blob_path, and the
// point_cloud and geo_assets blocks, are copied as received.
//
// Signing never enters the state or its caches: the entries kept by the
// local state store, the measure pass and the content hash
// (content_sha256) all see the links as received, and the render pass
// rewrites the head of each entry ({"file":{...},"<media block>":{...})
// as it streams it. So an export whose only difference would be fresher
// signatures is "unchanged", like any other; instead a definition's
// newest export is written again once its signed links have used half
// their validity (refreshLinks), or when its media setting changed.
//
// Every export also records the earliest expiry among the links it
// shows, signed or copied, as media_links_expire_at (the manifest and
// the record), exposed as exportstream_media_links_expire_at_seconds.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/events"
)

// Media makes a definition sign media links: Connection is the bucket
// holding the media files (blob_path is a key in it), Expiry how long a
// signed link stays valid (at most connectors.MaxSignedURLExpiry).
type Media struct {
	Connection string
	Expiry     time.Duration
}

// TriggerRefresh marks an export written because the newest export's
// signed media links had used half their validity, or because the
// definition's media setting changed since it was written.
const TriggerRefresh = "refresh"

// mediaSetting names the definition's media setting in its state: an
// export signed with another setting (or none) is not the one the
// definition asks for.
func (d *Definition) mediaSetting() string {
	if d.Media == nil {
		return ""
	}
	return d.Media.Connection + "|" + d.Media.Expiry.String()
}

// linksDue returns when the definition's newest export (st) should be
// written again for its media links: the zero time when never (no export,
// or no signed link in it), a time not after now when at once (its media
// setting is not the definition's).
func (d *Definition) linksDue(st *definitionState, now time.Time) time.Time {
	if st == nil || st.LastID == 0 || st.Skipped != nil {
		return time.Time{}
	}
	if st.Media != d.mediaSetting() {
		return now
	}
	if d.Media == nil || st.LinksSignedAt == nil {
		return time.Time{}
	}
	return st.LinksSignedAt.Add(d.Media.Expiry / 2)
}

// linksStale reports whether the newest export (st) must be written
// again for its media links, whatever its content.
func (d *Definition) linksStale(st *definitionState, now time.Time) bool {
	due := d.linksDue(st, now)
	return !due.IsZero() && !now.Before(due)
}

// refreshLinks kicks the definition's export whenever its newest
// export's links are due (linksDue), until ctx is done. Every replica
// runs it; the export's lease and its "unchanged" check make the kicks
// of the replicas that come second harmless.
func (p *Pipeline) refreshLinks(ctx context.Context, d *Definition) error {
	for {
		wait := time.Hour
		st, err := p.records.definitionState(ctx, d.Name)
		now := time.Now()
		switch due := d.linksDue(st, now); {
		case err != nil:
			wait = time.Minute
		case due.IsZero():
			if d.Media == nil {
				return nil // nothing signed will ever need refreshing
			}
			wait = d.Media.Expiry / 2 // looked at again after an export anyway
		case !now.Before(due):
			p.log.Info("media links of the newest export are due; exporting again", "definition", d.Name)
			p.kick(d.Name, TriggerRefresh)
			// The export takes a while: look again after it.
			wait = time.Minute
			if d.Media != nil {
				wait = min(wait, d.Media.Expiry/4)
			}
		default:
			wait = due.Sub(now)
		}
		// An export written meanwhile only moves the due time later: it
		// is read again then.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// mediaLinks is a render pass's media links: the signer (nil: links are
// copied as received), and what the pass found.
type mediaLinks struct {
	ctx     context.Context
	signer  connectors.Signer
	expiry  time.Duration
	expires int64 // the expiry fields of signed links: Unix seconds

	earliest int64 // the earliest expiry seen, Unix seconds; 0: none
	signed   int   // links signed
	err      error // the first signing error: the pass fails
	scratch  []byte
}

// newMediaLinks prepares the links of d's export at time at.
func (p *Pipeline) newMediaLinks(ctx context.Context, d *Definition, at time.Time) (*mediaLinks, error) {
	l := &mediaLinks{ctx: ctx}
	if d.Media == nil {
		return l, nil
	}
	b := p.opts.Buckets[d.Media.Connection]
	if b == nil {
		return nil, fmt.Errorf("media: no bucket for connection %q", d.Media.Connection)
	}
	l.signer, l.expiry, l.expires = b, d.Media.Expiry, at.Add(d.Media.Expiry).Unix()
	return l, nil
}

// expireAt is the earliest link expiry the pass saw, or nil.
func (l *mediaLinks) expireAt() *time.Time {
	if l == nil || l.earliest == 0 {
		return nil
	}
	t := time.Unix(l.earliest, 0).UTC()
	return &t
}

// linkEntry finishes the entry of file id, b[start:], rendered with its
// links as received: when the pass signs, the heads of the file (and of
// a compound file's children in it) that carry blob_path are replaced
// by signed ones. It notes the earliest link expiry the entry shows.
func (pl *plan) linkEntry(b []byte, start int, id int64) []byte {
	l := pl.links
	if l == nil {
		return b
	}
	if l.signer != nil && l.err == nil {
		l.scratch = append(l.scratch[:0], b[start:]...)
		b = pl.appendLinked(b[:start], l.scratch, id)
	}
	if e := linkExpiry(b[start:]); e > 0 && (l.earliest == 0 || e < l.earliest) {
		l.earliest = e
	}
	return b
}

// appendLinked appends entry, the entry of file id as rendered, with its
// head signed (if the file carries blob_path) and, for a compound file,
// its children's entries treated alike.
func (pl *plan) appendLinked(b, entry []byte, id int64) []byte {
	f := pl.pv.File(id)
	if f == nil {
		return append(b, entry...)
	}
	head := fileFragment(f)
	if !bytes.HasPrefix(entry, head) {
		return append(b, entry...) // null, or not ours to rewrite
	}
	if signed, ok := pl.signedHead(f); ok {
		b = append(b, signed...)
	} else {
		b = append(b, head...)
	}
	rest := entry[len(head):]
	if f.val.(*events.File).Type != "compound" {
		return append(b, rest...)
	}
	// A compound entry's members after its head: instance_list, then
	// one per child file, under its id.
	i := 0
	for i < len(rest) {
		if rest[i] != ',' {
			return append(b, rest[i:]...)
		}
		k := i + 1
		kend := events.SkipValue(rest, k)
		if kend < 0 || kend+1 >= len(rest) || rest[kend] != ':' {
			return append(b, rest[i:]...)
		}
		v := kend + 1
		vend := events.SkipValue(rest, v)
		if vend < 0 {
			return append(b, rest[i:]...)
		}
		b = append(b, rest[i:v]...)
		if cid, err := strconv.ParseInt(string(rest[k+1:kend-1]), 10, 64); err == nil && rest[v] == '{' {
			b = pl.appendLinked(b, rest[v:vend], cid)
		} else {
			b = append(b, rest[v:vend]...)
		}
		i = vend
	}
	return b
}

// signedHead renders the file's head with a link signed for its
// blob_path; false when the file carries no usable blob_path (its links
// are then copied as received) or signing failed (l.err says why).
func (pl *plan) signedHead(f *snap) ([]byte, bool) {
	l := pl.links
	key, ok := blobPath(f.raw)
	if !ok || l.err != nil {
		return nil, false
	}
	u, err := l.signer.SignedURL(l.ctx, key, l.expiry)
	if err != nil {
		l.err = fmt.Errorf("sign the media link of file %d (blob_path %q): %w", f.id, key, err)
		return nil, false
	}
	l.signed++
	return renderHead(f, &signedLink{url: u, expires: l.expires}), true
}

// blobPath returns the file snapshot's blob_path when it is a key a
// bucket can hold: a non-empty relative slash-separated path without
// "." or ".." segments.
func blobPath(raw []byte) (string, bool) {
	v, ok := lookup(events.Fields(raw), "blob_path")
	if !ok || len(v) == 0 || v[0] != '"' {
		return "", false
	}
	var key string
	if json.Unmarshal(v, &key) != nil || key == "" || strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/") {
		return "", false
	}
	if path.Clean(key) != key || key == ".." || strings.HasPrefix(key, "../") {
		return "", false
	}
	return key, true
}

// signedLink is what a signed head shows.
type signedLink struct {
	url     string
	expires int64 // Unix seconds
}

// mediaLinkFields are the members of each media block that hold its link
// and the link's expiry.
var mediaLinkFields = map[string][2]string{
	"image": {"image_signed_url", "image_signed_expiry"},
	"video": {"mp4_video_signed_url", "mp4_video_signed_expiry"},
	"text":  {"signed_url", "signed_expiry"},
}

// linkExpiry returns the earliest link expiry an entry shows, in Unix
// seconds (0: none): the members named *signed_expiry of its media block
// (and of each geo asset), and for a compound file its children's. It
// reads the entry's head only, except for a compound file.
func linkExpiry(e []byte) int64 {
	var earliest int64
	note := func(v int64) {
		if v > 0 && (earliest == 0 || v < earliest) {
			earliest = v
		}
	}
	if len(e) == 0 || e[0] != '{' {
		return 0
	}
	i := 1
	for i < len(e) && e[i] != '}' {
		if e[i] == ',' {
			i++
		}
		kend := events.SkipValue(e, i)
		if kend < 0 || kend >= len(e) || e[kend] != ':' {
			break
		}
		key := e[i+1 : kend-1]
		v := kend + 1
		vend := events.SkipValue(e, v)
		if vend < 0 {
			break
		}
		val := e[v:vend]
		switch string(key) {
		case "file", "instance_list", "parent_instance_list", "sequence_list":
		case "geo_assets":
			var assets []json.RawMessage
			_ = json.Unmarshal(val, &assets)
			for _, a := range assets {
				note(blockExpiry(a))
			}
			return earliest
		case "image", "video", "text", "point_cloud":
			note(blockExpiry(val))
			return earliest // a file with a media block has no children
		default:
			if len(key) > 0 && key[0] >= '0' && key[0] <= '9' {
				note(linkExpiry(val))
			}
		}
		i = vend
	}
	return earliest
}

// blockExpiry is the earliest of a media block's *signed_expiry members.
func blockExpiry(block []byte) int64 {
	var earliest int64
	for _, f := range events.Fields(block) {
		if !strings.HasSuffix(f.Key, "signed_expiry") {
			continue
		}
		if v := expiryValue(f.Val); v > 0 && (earliest == 0 || v < earliest) {
			earliest = v
		}
	}
	return earliest
}

// expiryValue reads a link expiry as Diffgram writes it, Unix seconds (an
// integer, or a number with a fraction), or an RFC 3339 time; 0 when it is
// neither (null, absent).
func expiryValue(v []byte) int64 {
	if len(v) == 0 {
		return 0
	}
	if v[0] == '"' {
		var s string
		if json.Unmarshal(v, &s) != nil {
			return 0
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return 0
		}
		return t.Unix()
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || f <= 0 || f > math.MaxInt64/2 {
		return 0
	}
	return int64(f)
}

// linksDone records, on rec, what the render pass found: the earliest
// link expiry and how many links it signed.
func (l *mediaLinks) done(rec *Record) error {
	if l == nil {
		return nil
	}
	if l.err != nil {
		return l.err
	}
	rec.MediaLinksExpireAt, rec.MediaLinksSigned = l.expireAt(), l.signed
	return nil
}

// signedAt is when the export's signed links were signed from (its
// created time), or nil when it signed none.
func signedAt(rec *Record) *time.Time {
	if rec.MediaLinksSigned == 0 {
		return nil
	}
	t := rec.CreatedTime
	return &t
}

// mediaCollector exposes exportstream_media_links_expire_at_seconds: per
// definition, the earliest expiry of the media links in its newest
// export, read from the export records at each scrape (every replica
// knows every definition's newest export).
type mediaCollector struct{ p *Pipeline }

var mediaExpireDesc = prometheus.NewDesc("exportstream_media_links_expire_at_seconds",
	"Earliest expiry (Unix time) of the media links in the definition's newest export (signed or copied); absent when it shows no link with an expiry. Alert before it passes.",
	[]string{"definition"}, nil)

func (c mediaCollector) Describe(ch chan<- *prometheus.Desc) { ch <- mediaExpireDesc }

func (c mediaCollector) Collect(ch chan<- prometheus.Metric) {
	for _, d := range c.p.defs {
		r := c.p.LatestRecord(d.Name)
		if r == nil || r.MediaLinksExpireAt == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(mediaExpireDesc, prometheus.GaugeValue,
			float64(r.MediaLinksExpireAt.Unix()), d.Name)
	}
}

// errNoMediaBucket: a definition's media connection is not open.
var errNoMediaBucket = errors.New("no bucket for the media connection")

// checkMedia reports a definition whose media connection has no bucket.
func checkMedia(d *Definition, buckets map[string]connectors.Bucket) error {
	if d.Media == nil {
		return nil
	}
	if _, ok := buckets[d.Media.Connection]; !ok {
		return fmt.Errorf("export %s: media: %w %q", d.Name, errNoMediaBucket, d.Media.Connection)
	}
	return nil
}
