package s3_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/s3"
	"github.com/exportstream/exportstream/connectors/s3/s3test"
)

func open(t *testing.T, opts s3.Options) *s3.Bucket {
	t.Helper()
	b, err := s3.New(t.Context(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

func put(t *testing.T, b *s3.Bucket, key string, size int, opts connectors.WriteOptions) error {
	t.Helper()
	w, err := b.NewWriter(t.Context(), key, opts)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	if _, err := w.Write(make([]byte, size)); err != nil {
		w.Abort()
		return err
	}
	return w.Close()
}

// cause digs the server's answer out of an error, through the wrapping.
func cause(err error) (status int, code string) {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	return status, code
}

// TestConditionalWrites pins down what the server answers to conditional
// writes on both upload paths (one PutObject, multipart completion), and
// that the cause survives the translation into sentinels.
func TestConditionalWrites(t *testing.T) {
	opts := s3test.NewBucket(t)
	b := open(t, opts)
	small, large := 1<<10, 2*int(opts.PartSize)+1 // large: three parts
	if err := put(t, b, "exists.json", 10, connectors.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	a, err := b.Attributes(t.Context(), "exists.json")
	if err != nil {
		t.Fatal(err)
	}
	stale := `"0123456789abcdef0123456789abcdef"`
	cases := []struct {
		name       string
		key        string
		opts       connectors.WriteOptions
		wantStatus int
		wantCode   string
		want       []error
	}{
		{"IfNoneMatch on an existing key", "exists.json", connectors.WriteOptions{IfAbsent: true},
			http.StatusPreconditionFailed, "PreconditionFailed", []error{connectors.ErrExists}},
		{"IfMatch with a stale ETag", "exists.json", connectors.WriteOptions{IfMatch: stale},
			http.StatusPreconditionFailed, "PreconditionFailed", []error{connectors.ErrPrecondition}},
		{"IfMatch on a missing key", "missing.json", connectors.WriteOptions{IfMatch: a.ETag},
			http.StatusNotFound, "NoSuchKey", []error{connectors.ErrPrecondition, connectors.ErrNotFound}},
	}
	for _, c := range cases {
		for _, size := range []int{small, large} {
			path := "PutObject"
			if size == large {
				path = "CompleteMultipartUpload"
			}
			err := put(t, b, c.key, size, c.opts)
			status, code := cause(err)
			t.Logf("%s via %s: HTTP %d %s", c.name, path, status, code)
			if status != c.wantStatus || code != c.wantCode {
				t.Errorf("%s via %s: got HTTP %d %q, want %d %q (err: %v)", c.name, path, status, code, c.wantStatus, c.wantCode, err)
			}
			for _, want := range c.want {
				if !errors.Is(err, want) {
					t.Errorf("%s via %s: err = %v, want it to wrap %v", c.name, path, err, want)
				}
			}
		}
	}
}

// TestNoUploadsLeftBehind checks that discarded and refused multipart
// writes abort their multipart upload, so no parts are left to pay for.
func TestNoUploadsLeftBehind(t *testing.T) {
	opts := s3test.NewBucket(t)
	b := open(t, opts)
	large := make([]byte, 2*opts.PartSize+1)
	if err := put(t, b, "exists.json", 10, connectors.WriteOptions{}); err != nil {
		t.Fatal(err)
	}

	// Aborted after two parts have gone out.
	w, err := b.NewWriter(t.Context(), "aborted.json", connectors.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(large); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatalf("Abort: %v", err)
	}

	// Context cancelled in the middle.
	ctx, cancel := context.WithCancel(t.Context())
	w, err = b.NewWriter(ctx, "cancelled.json", connectors.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(large); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := w.Close(); !errors.Is(err, context.Canceled) {
		t.Errorf("Close after cancel: err = %v, want context.Canceled", err)
	}

	// Refused at completion.
	if err := put(t, b, "exists.json", len(large), connectors.WriteOptions{IfAbsent: true}); !errors.Is(err, connectors.ErrExists) {
		t.Errorf("IfAbsent: err = %v, want ErrExists", err)
	}

	noUploadsLeft(t, b, opts.Bucket)
}

func TestErrorTranslation(t *testing.T) {
	opts := s3test.NewBucket(t)
	good := open(t, opts)
	if err := put(t, good, "k.json", 10, connectors.WriteOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("WrongSecret", func(t *testing.T) {
		o := opts
		o.SecretAccessKey = "wrong"
		b := open(t, o)
		_, errAttr := b.Attributes(t.Context(), "k.json")
		_, errRead := b.NewReader(t.Context(), "k.json")
		errList := b.List(t.Context(), "", func(connectors.Attributes) bool { return true })
		errWrite := put(t, b, "k2.json", 10, connectors.WriteOptions{})
		errDelete := b.Delete(t.Context(), "k.json")
		for name, err := range map[string]error{"Attributes": errAttr, "NewReader": errRead, "List": errList, "Write": errWrite, "Delete": errDelete} {
			if !errors.Is(err, connectors.ErrPermission) {
				t.Errorf("%s: err = %v, want ErrPermission", name, err)
			}
			// HEAD answers carry no error code to tell a bad key from a
			// missing permission.
			if name != "Attributes" && !errors.Is(err, connectors.ErrNoCredentials) {
				t.Errorf("%s: err = %v, want ErrNoCredentials", name, err)
			}
		}
	})

	t.Run("MissingBucket", func(t *testing.T) {
		o := opts
		o.Bucket = "no-such-bucket-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
		b := open(t, o)
		_, err := b.NewReader(t.Context(), "k.json")
		if err == nil || errors.Is(err, connectors.ErrNotFound) {
			t.Errorf("NewReader in a missing bucket: err = %v, want an error that is not ErrNotFound", err)
		}
		if _, code := cause(err); code != "NoSuchBucket" {
			t.Errorf("NewReader in a missing bucket: code %q, want NoSuchBucket", code)
		}
		if !errors.Is(err, connectors.ErrBucketNotFound) {
			t.Errorf("NewReader in a missing bucket: err = %v, want ErrBucketNotFound", err)
		}
		if err := put(t, b, "k.json", 10, connectors.WriteOptions{}); err == nil || errors.Is(err, connectors.ErrNotFound) || !errors.Is(err, connectors.ErrBucketNotFound) {
			t.Errorf("write to a missing bucket: err = %v, want ErrBucketNotFound and not ErrNotFound", err)
		}
	})

	t.Run("ReaderIsStreamed", func(t *testing.T) {
		r, err := good.NewReader(t.Context(), "k.json")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if n, err := io.Copy(io.Discard, r); err != nil || n != 10 {
			t.Errorf("read %d bytes, %v; want 10", n, err)
		}
	})
}

func TestOptions(t *testing.T) {
	err := s3.Options{AccessKeyID: "AKIA", SessionToken: "tok", PartSize: 1 << 20, Endpoint: "localhost:9000"}.Validate()
	for _, want := range []string{"bucket is required", "given together", "session token", "part size", "endpoint"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v; want a problem mentioning %q", err, want)
		}
	}
	if _, err := s3.New(t.Context(), s3.Options{}); err == nil {
		t.Error("New with empty options succeeded")
	}

	o := s3.Options{Bucket: "b", AccessKeyID: "AKIA", SecretAccessKey: "hunter2", SessionToken: "tok3n"}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		if s := fmtSprintf(format, o); strings.Contains(s, "hunter2") || strings.Contains(s, "tok3n") {
			t.Errorf("%s prints a secret: %s", format, s)
		}
	}
}

// TestDefaultRegion checks that a custom endpoint works without any region
// configured (S3-compatible servers) and that the SDK chain is used when
// no keys are given.
func TestDefaultRegion(t *testing.T) {
	empty := t.TempDir() + "/none"
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", empty)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", empty)
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretAccessKey)

	o := s3test.NewBucket(t)
	o.Region, o.AccessKeyID, o.SecretAccessKey = "", "", ""
	b := open(t, o)
	if err := put(t, b, "k.json", 10, connectors.WriteOptions{}); err != nil {
		t.Fatalf("write with the default region and credentials chain: %v", err)
	}

	o.Endpoint = ""
	if _, err := s3.New(t.Context(), o); err == nil {
		t.Error("New without region or endpoint succeeded")
	}
}

func fmtSprintf(format string, a any) string { return fmt.Sprintf(format, a) }

// TestProbe checks what check-config --probe says for each way an S3
// connection can be wrong, against the real gateway.
func TestProbe(t *testing.T) {
	opts := s3test.NewBucket(t)
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := refused.Addr().String()
	refused.Close()

	empty := t.TempDir() + "/none"
	for _, c := range []struct {
		name   string
		change func(o *s3.Options)
		env    bool // no credentials anywhere in the environment
		want   string
	}{
		{"OK", func(o *s3.Options) {}, false, connectors.ProbeOK},
		{"BucketMissing", func(o *s3.Options) { o.Bucket = "no-such-bucket-probe" }, false, connectors.ProbeBucketMissing},
		{"WrongSecret", func(o *s3.Options) { o.SecretAccessKey = "wrong" }, false, connectors.ProbeNoCredentials},
		{"NoCredentials", func(o *s3.Options) { o.AccessKeyID, o.SecretAccessKey = "", "" }, true, connectors.ProbeNoCredentials},
		{"Unreachable", func(o *s3.Options) { o.Endpoint = "http://" + closedAddr }, false, connectors.ProbeUnreachable},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.env {
				for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
					"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"} {
					t.Setenv(k, "")
				}
				t.Setenv("AWS_CONFIG_FILE", empty)
				t.Setenv("AWS_SHARED_CREDENTIALS_FILE", empty)
				t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
			}
			o := opts
			c.change(&o)
			b := open(t, o)
			r := connectors.Probe(t.Context(), b, "", 20*time.Second)
			if r.Outcome != c.want {
				t.Errorf("Probe: %v; want outcome %q", r, c.want)
			}
			if strings.Contains(r.Err, s3test.SecretAccessKey) {
				t.Errorf("Probe error shows the secret key: %s", r.Err)
			}
		})
	}
}

// TestServerSideEncryption writes with SSE-S3 asked for and reads the
// object back; the gateway must accept the header.
func TestServerSideEncryption(t *testing.T) {
	o := s3test.NewBucket(t)
	o.SSE = "AES256"
	b := open(t, o)
	if err := put(t, b, "sse.json", 100, connectors.WriteOptions{IfAbsent: true}); err != nil {
		t.Fatalf("write with SSE-S3: %v", err)
	}
	if _, err := b.Attributes(t.Context(), "sse.json"); err != nil {
		t.Fatal(err)
	}
}

// TestPartLimit: an object that needs more parts than S3 allows in one
// upload (10,000; lowered here to 3) fails with an error naming the
// connection's part_size, leaves no object and no upload behind, and an
// object of exactly the limit is written whole.
func TestPartLimit(t *testing.T) {
	o := s3test.NewBucket(t)
	b := open(t, o)
	b.SetMaxParts(3)
	part := int(o.PartSize)

	atLimit := body(7, 3*part)
	w, err := b.NewWriter(t.Context(), "at-limit.bin", connectors.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(atLimit); err != nil {
		t.Fatalf("Write of 3 parts: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close of 3 parts: %v", err)
	}
	wantObject(t, b, "at-limit.bin", atLimit)

	w, err = b.NewWriter(t.Context(), "over-limit.bin", connectors.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.Write(body(8, 3*part+1))
	if err == nil {
		err = w.Close()
	} else {
		_ = w.Abort()
	}
	if err == nil {
		t.Fatal("an object of 3 parts and a byte was written with a limit of 3 parts")
	}
	if msg := err.Error(); !strings.Contains(msg, "more than 3 parts") || !strings.Contains(msg, "part_size") {
		t.Errorf("error %q does not say the limit and part_size", msg)
	}
	wantNotFound(t, b, "over-limit.bin")
	noUploadsLeft(t, b, o.Bucket)
	if held, _ := b.PartBuffers(); held != 0 {
		t.Errorf("after the failed write: %d part buffers held, want 0", held)
	}
}
