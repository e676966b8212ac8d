package service

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/exportstream/exportstream/config"
)

// A secret that reaches a log line inside an SDK's error text is blanked,
// in JSON and in text logs, raw or JSON-escaped, including the parts of
// composite secrets.
func TestRedactWriter(t *testing.T) {
	cfg := config.Default()
	cfg.Connections = append(cfg.Connections,
		config.Connection{Name: "az", Type: config.TypeAzure, Azure: &config.Azure{Container: "c",
			ConnectionString: "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5+with/slash==;EndpointSuffix=core.windows.net"}},
		config.Connection{Name: "sas", Type: config.TypeAzure, Azure: &config.Azure{Container: "c", AccountName: "acct",
			SASToken: "sv=2022-11-02&ss=b&sig=c2lnbmF0dXJl%2Bx"}},
		config.Connection{Name: "s3", Type: config.TypeS3, S3: &config.S3{Bucket: "b", AccessKeyID: "AKIA", SecretAccessKey: `quote"back\slash`}},
	)
	for _, format := range []string{"json", "text"} {
		var buf bytes.Buffer
		w := RedactWriter(&buf, cfg.SecretValues())
		var h slog.Handler = slog.NewJSONHandler(w, nil)
		if format == "text" {
			h = slog.NewTextHandler(w, nil)
		}
		log := slog.New(h)
		log.Error("upload failed", "err", errors.New(`PUT https://acct.blob.core.windows.net/c/k?sv=2022-11-02&sig=c2lnbmF0dXJl%2Bx: key a2V5+with/slash== refused`))
		log.Warn("s3 said", "detail", `secret quote"back\slash`)
		out := buf.String()
		for _, leak := range []string{"a2V5+with/slash==", "c2lnbmF0dXJl", `back\slash`, `back\\slash`} {
			if strings.Contains(out, leak) {
				t.Errorf("%s log shows %q:\n%s", format, leak, out)
			}
		}
		if strings.Count(out, "<secret>") < 3 {
			t.Errorf("%s log: want the secrets replaced by <secret>:\n%s", format, out)
		}
	}
}

func TestRedactString(t *testing.T) {
	r := RedactString([]string{"hunter22", "a2V5+with/slash=="})
	if got := r("auth hunter22 and a2V5+with/slash== failed"); got != "auth <secret> and <secret> failed" {
		t.Errorf("got %q", got)
	}
}
