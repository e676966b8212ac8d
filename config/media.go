package config

import (
	"fmt"
	"strings"
	"time"
)

// Media makes an export sign fresh media links (EXPORTS.md, "Media
// links"): for every file whose snapshot carries blob_path, the export
// writes links to that key in Connection's bucket (blob_url and the media
// block's signed url and expiry fields), valid for Expiry from the
// export's time. Links of files without blob_path are copied as received.
type Media struct {
	// Connection is the Name of the connection holding the media files;
	// it must be able to sign links (see Validate).
	Connection string `yaml:"connection"`
	// Expiry is how long the signed links stay valid: MinMediaExpiry to
	// MaxSignedURLExpiry (7 days). An export whose links have used half
	// of it is written again, with fresh links, even if nothing changed.
	Expiry time.Duration `yaml:"expiry"`
}

// MinMediaExpiry is the shortest Media.Expiry: links are signed again (a
// new export) every Expiry/2, so shorter ones would export the whole
// source every few seconds.
const MinMediaExpiry = time.Minute

// media checks each export's media block: a connection that exists and
// can sign links that live Expiry.
func (ch *checker) media(es []Export, conns []Connection) {
	byName := map[string]int{}
	var names []string
	for i, c := range conns {
		if _, dup := byName[c.Name]; !dup && c.Name != "" {
			byName[c.Name] = i
			names = append(names, c.Name)
		}
	}
	for i, e := range es {
		m := e.Media
		if m == nil {
			continue
		}
		p := fmt.Sprintf("exports[%d].media", i)
		switch j, ok := byName[m.Connection]; {
		case m.Connection == "":
			ch.add(p+".connection", "required: the connection holding the media files, which signs their links (%s)", connectionList(names))
		case !ok:
			ch.add(p+".connection", "no connection named %q (%s)", m.Connection, connectionHint(m.Connection, names))
		default:
			if why := cannotSign(conns[j]); why != "" {
				ch.addAbout(p+".connection", fmt.Sprintf("connections[%d]", j), "connection %q cannot sign media links: %s", m.Connection, why)
			}
		}
		switch {
		case m.Expiry == 0:
			ch.add(p+".expiry", "required: how long the signed links stay valid, %s to %s (e.g. 168h)", durationText(MinMediaExpiry), durationText(MaxSignedURLExpiry))
		case m.Expiry < 0:
			ch.add(p+".expiry", "must be positive (got %s)", durationText(m.Expiry))
		case m.Expiry < MinMediaExpiry:
			ch.add(p+".expiry", "%s is less than %s (links are signed again, with a new export, every expiry/2)", durationText(m.Expiry), durationText(MinMediaExpiry))
		case m.Expiry > MaxSignedURLExpiry:
			ch.add(p+".expiry", "%s is more than %s, the longest S3 and GCS V4 signatures and Azure user delegation keys allow", durationText(m.Expiry), durationText(MaxSignedURLExpiry))
		}
	}
}

// cannotSign says why the connection cannot sign links that outlive the
// process, or "" if it can. (A GCS connection on default credentials
// finds out only when it signs: the export then fails saying what is
// missing.)
func cannotSign(c Connection) string {
	if b := c.block(); b != nil {
		return b.cannotSign()
	}
	return ""
}

// durationText writes d without zero minutes and seconds: "168h", "1m",
// "1h30m", not "168h0m0s".
func durationText(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
