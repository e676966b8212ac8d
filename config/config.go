// Package config is exportstream's configuration: the YAML file ops write,
// its defaults, and its validation.
//
// Load (and Parse) start from Default, decode the file strictly (unknown
// keys, duplicate keys and wrongly typed values are errors), expand ${VAR}
// from the environment in string values only, fill per-item defaults, and
// run Validate. Every problem is reported at once, as an *Errors whose lines
// read "path: message", the path being the YAML path of the offending key:
//
//	nats.ack_wait: invalid duration "5 seconds" (use a number with a unit: ms, s, m or h, e.g. 500ms, 5s, 1m30s)
//	exports[1].sorce: unknown key (did you mean "source"?)
//	exports[1].connection: no connection named "s4"
//
// Secret values print as "<secret>" wherever they are formatted, logged or
// marshalled; Config.Redacted renders the effective configuration that way.
//
// The package imports nothing from the rest of the project.
package config

import (
	"os"
	"time"
)

// Config is the whole configuration file. The zero Config is not useful;
// start from Default, Load or Parse.
type Config struct {
	// NATS says where events come from and where state is kept.
	NATS NATS `yaml:"nats"`
	// Connections are the buckets exports can be written to. A file that
	// lists connections replaces Default's single "local-disk" connection.
	Connections []Connection `yaml:"connections"`
	// Exports are the export definitions. Default has none.
	Exports []Export `yaml:"exports"`
	// Records says how long the export records (the history the API,
	// the CLI and the page show) are kept in the records bucket.
	Records Records `yaml:"records"`
	// Retry says how failed exports are retried.
	Retry Retry `yaml:"retry"`
	// State is the service's local state store.
	State State `yaml:"state"`
	// HTTP configures the HTTP listener.
	HTTP HTTP `yaml:"http"`
	// Log configures logging.
	Log Log `yaml:"log"`
	// Deployment names this deployment in the source of the completion
	// events the service publishes ("exportstream/<deployment>"). It is a
	// URI path segment: [A-Za-z0-9._-]+, not "." or "..". Empty in the
	// file (or unset): the host name (os.Hostname), filled by Default and
	// Parse.
	Deployment string `yaml:"deployment"`
}

// NATS says where the events come from and where the service keeps state.
type NATS struct {
	// URL of the NATS server(s), comma separated. Empty: start the embedded
	// server described by Embedded.
	URL string `yaml:"url"`
	// Embedded configures the in-process server used when URL is empty.
	Embedded Embedded `yaml:"embedded"`
	// CredentialsFile is a NATS .creds file (JWT and nkey seed). At most one
	// of CredentialsFile, User/Password and Token is set.
	CredentialsFile string `yaml:"credentials_file"`
	// User and Password authenticate with a user name and password; they
	// are set together.
	User     string `yaml:"user"`
	Password Secret `yaml:"password"`
	// Token authenticates with a token.
	Token Secret `yaml:"token"`
	// TLS configures TLS towards the server.
	TLS TLS `yaml:"tls"`

	// Stream is the JetStream stream the events are read from.
	Stream string `yaml:"stream"`
	// Subjects are the subjects Stream captures (when the service creates
	// it) and the consumer reads.
	Subjects []string `yaml:"subjects"`
	// CreateStream: true creates the streams that are missing (an
	// existing stream is left as it is: raise its replicas by hand); false
	// binds to existing streams and fails if they are missing.
	CreateStream bool `yaml:"create_stream"`
	// Consumer is the durable consumer name, shared by all replicas of the
	// service.
	Consumer string `yaml:"consumer"`
	// DeadLetterStream receives events that cannot be processed.
	DeadLetterStream string `yaml:"dead_letter_stream"`
	// ExportsStream captures the diffgram.exports.> completion events the
	// service publishes (created when CreateStream is true).
	ExportsStream string `yaml:"exports_stream"`
	// Replicas is the replica count (1..5) of the streams and key-value
	// buckets the service creates.
	Replicas int `yaml:"replicas"`
	// StatePrefix names the key-value buckets the service keeps its state
	// in: <prefix>_STATE, <prefix>_DIRTY, <prefix>_EXPORTS, <prefix>_LEASES,
	// <prefix>_REPLICAS.
	StatePrefix string `yaml:"state_prefix"`
	// MaxEventBytes: a larger event body is bad input.
	MaxEventBytes int `yaml:"max_event_bytes"`
	// MaxEventDepth: an event body whose arrays and objects nest deeper
	// is bad input (the body's own object counts as 1); default
	// DefaultMaxEventDepth, 1..MaxEventDepthLimit.
	MaxEventDepth int `yaml:"max_event_depth"`
	// MaxAckPending bounds the events in flight (delivered, not yet acked).
	MaxAckPending int `yaml:"max_ack_pending"`
	// AckWait is how long the server waits for an ack before redelivering.
	AckWait time.Duration `yaml:"ack_wait"`
	// Partitions > 1 splits the event stream by project into that many
	// partitions, and each replica holds, applies and exports only the
	// projects of the partitions it leases (events.Partitioning). 1: every
	// replica does all the work, sharing one consumer.
	Partitions int `yaml:"partitions"`
}

// Embedded configures the in-process NATS server used when URL is empty.
type Embedded struct {
	// Listen is the host:port the embedded server accepts clients on, so
	// that the platform (or `nats pub`) can publish to it.
	Listen string `yaml:"listen"`
	// StoreDir is where the embedded server keeps JetStream data.
	StoreDir string `yaml:"store_dir"`
}

// TLS configures TLS towards the NATS server.
type TLS struct {
	// CAFile verifies the server's certificate; empty: the system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client certificate and its key; they
	// are set together.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Connection is one bucket exports are written to. Exactly the block named
// by Type is set. A new connection type adds its block's field here and a
// line to Connection.blocks (blocks.go).
type Connection struct {
	// Name identifies the connection in Export.Connection:
	// [a-z0-9][a-z0-9-]*, unique.
	Name string `yaml:"name"`
	// Type is the kind of store.
	Type string `yaml:"type"` // local | s3 | gcs | azure
	// Local is set for type local.
	Local *Local `yaml:"local"`
	// S3 is set for type s3.
	S3 *S3 `yaml:"s3"`
	// GCS is set for type gcs.
	GCS *GCS `yaml:"gcs"`
	// Azure is set for type azure.
	Azure *Azure `yaml:"azure"`
	// Uploads bounds the exports writing to this connection at once, per
	// replica; each connection has its own, so a slow or unreachable
	// bucket holds up only its own exports. 0: the default, 2.
	Uploads int `yaml:"uploads"`
	// SignedURLExpiry is how long a signed download link stays valid;
	// 0: the default, 1h. At most 7 days (the S3 and GCS V4 limit).
	SignedURLExpiry time.Duration `yaml:"signed_url_expiry"`
}

// Connection defaults and limits.
const (
	DefaultUploads         = 2
	MaxUploads             = 64
	DefaultSignedURLExpiry = time.Hour
	MaxSignedURLExpiry     = 7 * 24 * time.Hour
)

// NATS limits.
const (
	// DefaultMaxEventDepth is NATS.MaxEventDepth when the file does not
	// set it.
	DefaultMaxEventDepth = 64
	// MaxEventDepthLimit is the largest NATS.MaxEventDepth:
	// encoding/json's own nesting limit.
	MaxEventDepthLimit = 10000
	// MaxPartitions is the largest NATS.Partitions.
	MaxPartitions = 1024
)

// defaultConnection names Default's one connection.
const defaultConnection = "local-disk"

// Connection types.
const (
	TypeLocal = "local"
	TypeS3    = "s3"
	TypeGCS   = "gcs"
	TypeAzure = "azure"
)

// Local is a folder on disk used as a bucket.
type Local struct {
	// Dir is the folder; required.
	Dir string `yaml:"dir"`
	// SignKey is the HMAC key of the download links the service serves
	// for this folder (http.public_url + /files/<connection>/<key>).
	// Replicas behind one address need the same key; empty: a random key
	// per process, so links die with the process.
	SignKey Secret `yaml:"sign_key"`
}

// S3 multipart part sizes.
const (
	// DefaultPartSize is S3.PartSize when the file does not set it: 5 MiB
	// (S3's minimum), which keeps the service within its memory budget
	// with every format on; objects are then limited to 10,000 parts,
	// about 48.8 GiB.
	DefaultPartSize = 5 << 20
	// MinPartSize is the smallest part S3 accepts: 5 MiB.
	MinPartSize = 5 << 20
	// MaxPartSize is the largest part S3 accepts: 5 GiB.
	MaxPartSize = 5 << 30
)

// S3 is an Amazon S3 bucket or an S3-compatible store.
type S3 struct {
	// Bucket is the bucket name; required.
	Bucket string `yaml:"bucket"`
	// Region is the bucket's region; empty: from the AWS environment.
	Region string `yaml:"region"`
	// Endpoint is an http(s) URL for S3-compatible stores; empty: AWS.
	Endpoint string `yaml:"endpoint"`
	// PathStyle addresses the bucket in the URL path instead of the host
	// name (most S3-compatible stores need it).
	PathStyle bool `yaml:"path_style"`
	// AccessKeyID and SecretAccessKey are static credentials, set together;
	// empty: the AWS default credential chain.
	AccessKeyID     string `yaml:"access_key_id"`
	SecretAccessKey Secret `yaml:"secret_access_key"`
	// SessionToken goes with temporary static credentials.
	SessionToken Secret `yaml:"session_token"`
	// PartSize is the multipart upload part size in bytes (minimum 5 MiB).
	PartSize int64 `yaml:"part_size"`
	// RoleARN, when set, is assumed (STS AssumeRole) with the credentials
	// found above; ExternalID goes with it when the role requires one.
	RoleARN    string `yaml:"role_arn"`
	ExternalID string `yaml:"external_id"`
	// SSE is the server-side encryption asked for on every object:
	// "" (the bucket's default), "AES256" (SSE-S3) or "aws:kms" (SSE-KMS,
	// with KMSKeyID or the account's default key).
	SSE      string `yaml:"sse"`
	KMSKeyID string `yaml:"kms_key_id"`
}

// S3 server-side encryption values.
const (
	SSEAES256 = "AES256"
	SSEKMS    = "aws:kms"
)

// GCS is a Google Cloud Storage bucket.
type GCS struct {
	// Bucket is the bucket name; required.
	Bucket string `yaml:"bucket"`
	// CredentialsFile is a service account key file; empty: Application
	// Default Credentials.
	CredentialsFile string `yaml:"credentials_file"`
	// Endpoint is an http(s) URL for emulators; empty: Google.
	Endpoint string `yaml:"endpoint"`
	// KMSKeyName is a Cloud KMS key (CMEK) the objects are encrypted
	// with: projects/P/locations/L/keyRings/R/cryptoKeys/K.
	KMSKeyName string `yaml:"kms_key_name"`
	// SigningAccount is the service account email download links are
	// signed as with the IAM signBlob API, when CredentialsFile holds no
	// private key (Application Default Credentials on GCE/GKE); empty:
	// the ADC account itself.
	SigningAccount string `yaml:"signing_account"`
}

// Azure is an Azure Blob Storage container. Exactly one of ConnectionString
// and AccountName is set.
type Azure struct {
	// Container is the container name; required.
	Container string `yaml:"container"`
	// ConnectionString authenticates and locates the account.
	ConnectionString Secret `yaml:"connection_string"`
	// AccountName names the storage account; with AccountKey it uses a
	// shared key, without it the Azure default credential chain.
	AccountName string `yaml:"account_name"`
	AccountKey  Secret `yaml:"account_key"`
	// SASToken authenticates with a shared access signature (with
	// AccountName, instead of AccountKey). It needs read, create, write,
	// delete and list permissions on the container.
	SASToken Secret `yaml:"sas_token"`
	// Endpoint is an http(s) service URL (e.g. Azurite); empty:
	// https://<account_name>.blob.core.windows.net/.
	Endpoint string `yaml:"endpoint"`
	// EncryptionScope names the container's encryption scope the blobs
	// are written with.
	EncryptionScope string `yaml:"encryption_scope"`
}

// Export is one export definition.
type Export struct {
	// Name identifies the export: [a-z0-9]+(-[a-z0-9]+)*, unique.
	Name string `yaml:"name"`
	// Project is the Diffgram project string id: [a-z0-9-]+.
	Project string `yaml:"project"`
	// Source selects the files exported.
	Source Source `yaml:"source"`
	// Completion selects files by completion state; default "complete".
	Completion string `yaml:"completion"` // complete | all | incomplete
	// IncludeRemovedInstances keeps instances marked as deleted.
	IncludeRemovedInstances bool `yaml:"include_removed_instances"`
	// Connection is the Name of the connection written to.
	Connection string `yaml:"connection"`
	// Path is the prefix inside the bucket: relative, ending in "/";
	// default "exports/<name>/". Two exports never share a connection and
	// path.
	Path string `yaml:"path"`
	// Coalesce says how long changes are gathered before exporting.
	Coalesce Coalesce `yaml:"coalesce"`
	// KeepLast, when > 0, keeps this export's newest KeepLast exports in
	// the bucket and deletes the data objects and manifests of older ones
	// that it wrote itself (never other objects under Path). 0 keeps all.
	KeepLast int `yaml:"keep_last"`
	// Formats are the formats written for each export: diffgram (always
	// written, listed or not), coco, yolo, jsonl (EXPORTS.md, "Formats
	// beside the Diffgram one"). Empty: [diffgram]. Kept as the file
	// lists them; each name at most once.
	Formats []string `yaml:"formats"`
	// Media, when set, signs fresh media links from the files' blob_path
	// (see Media); nil: links are copied as received.
	Media *Media `yaml:"media"`
}

// Export formats (Export.Formats), in the order they are written.
const (
	FormatDiffgram = "diffgram"
	FormatCOCO     = "coco"
	FormatYOLO     = "yolo"
	FormatJSONL    = "jsonl"
)

// formatNames are the format names an export may list, in the order they
// are written.
var formatNames = []string{FormatDiffgram, FormatCOCO, FormatYOLO, FormatJSONL}

// Export completion values.
const (
	CompletionComplete   = "complete"
	CompletionAll        = "all"
	CompletionIncomplete = "incomplete"
)

// Source selects the files of an export: exactly one field is set. IDs are
// positive.
type Source struct {
	// Directory is a dataset (directory) name in the project.
	Directory string `yaml:"directory"`
	// DirectoryID is a dataset (directory) id.
	DirectoryID *int64 `yaml:"directory_id"`
	// Job is a labeling job name in the project.
	Job string `yaml:"job"`
	// JobID is a labeling job id.
	JobID *int64 `yaml:"job_id"`
	// TaskID is a single task id.
	TaskID *int64 `yaml:"task_id"`
	// Project: true exports the whole project.
	Project bool `yaml:"project"`
}

// Coalesce says how long a definition waits before exporting: until no
// change has touched it for Quiet, but never longer than MaxDelay after the
// first change.
type Coalesce struct {
	// Quiet is the quiet period; default 5s, 0 allowed.
	Quiet time.Duration `yaml:"quiet"`
	// MaxDelay bounds the wait; default 60s, > 0 and >= Quiet.
	MaxDelay time.Duration `yaml:"max_delay"`
}

// Records is the retention of the export records: a record is deleted
// when it ended (completed_time, else created_time) more than MaxAge ago,
// or when its definition has KeepLast newer records. Ad-hoc exports count
// as one definition, "adhoc". A record still running, a definition's
// newest complete record and its newest skipped one are never deleted.
// Both 0: records are kept forever.
type Records struct {
	// KeepLast is how many of each definition's newest records are kept;
	// default DefaultRecordsKeepLast, 0: no limit by count.
	KeepLast int `yaml:"keep_last"`
	// MaxAge is how long a record is kept after it ended; default
	// DefaultRecordsMaxAge, 0: no limit by age.
	MaxAge time.Duration `yaml:"max_age"`
}

// Records defaults.
const (
	DefaultRecordsKeepLast = 1000
	DefaultRecordsMaxAge   = 30 * 24 * time.Hour
)

// Retry says how failed work is retried: a failed export attempt of a
// definition, and an event batch whose state write failed, are tried
// again after 0.5 s (0.25 s for batches) doubling up to MaxBackoff. An
// export is also retried at once when the NATS connection comes back or
// its bucket answers again.
type Retry struct {
	// MaxBackoff caps the wait between attempts; default
	// DefaultMaxBackoff, MinMaxBackoff..MaxMaxBackoff.
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// Retry defaults and limits.
const (
	DefaultMaxBackoff = 5 * time.Second
	MinMaxBackoff     = 100 * time.Millisecond
	MaxMaxBackoff     = time.Hour
)

// State is the local state store: a key-value store on disk (Pebble)
// where the service keeps a cache of the <prefix>_STATE bucket. It is
// only a cache: a missing or deleted store is rebuilt from the bucket at
// start, and a surviving one lets a restart resume from the bucket
// revision it recorded instead of reading the whole bucket again. Each
// replica needs its own: the store is locked by the process using it.
type State struct {
	// Dir is the folder of the store, created if missing; default
	// DefaultStateDir. A relative path is relative to the working
	// directory. CheckStateDir tells whether the service can use it.
	Dir string `yaml:"dir"`
}

// State defaults.
const (
	DefaultStateDir = "./data/state"
)

// HTTP configures the HTTP listener (API, UI, metrics, health).
type HTTP struct {
	// Listen is the host:port to listen on.
	Listen string `yaml:"listen"`
	// PublicURL is the base URL clients reach this service at, used in
	// the download links of local connections; empty: http://<listen>.
	PublicURL string `yaml:"public_url"`
	// Token is the bearer token the API asks for ("Authorization: Bearer
	// <token>"). Required when Listen is not a loopback address; empty on
	// loopback: no authentication.
	Token Secret `yaml:"token"`
	// MaxAdhocExports bounds the ad-hoc exports (POST /api/v1/exports
	// with a project and source) running at once on this replica; a
	// request beyond it is refused (429, Retry-After). Identical requests
	// made while one runs share its export and do not count again.
	// Default DefaultMaxAdhocExports, 1..MaxAdhocExportsLimit.
	MaxAdhocExports int `yaml:"max_adhoc_exports"`
}

// Ad-hoc export limits.
const (
	DefaultMaxAdhocExports = 4
	MaxAdhocExportsLimit   = 256
)

// Log configures logging.
type Log struct {
	// Level is the minimum level logged.
	Level string `yaml:"level"` // debug | info | warn | error
	// Format is the log line format.
	Format string `yaml:"format"` // json | text
}

// Default returns the configuration used when no file is given, and the
// base every file is decoded onto: an embedded NATS server on
// 127.0.0.1:4222 storing under ./data/nats, one connection "local-disk" of
// type local writing to ./data/bucket, no exports, export records kept
// for 30 days and at most 1000 per definition, retries backing off to at
// most 5 s, the local state store in
// ./data/state, HTTP on 127.0.0.1:8080 with at most 4 ad-hoc exports at
// once, JSON logs at level info, the host
// name as deployment. Each call returns a new Config; Default is valid if
// the host name is known and fits [A-Za-z0-9._-]+.
func Default() *Config {
	return &Config{
		NATS: NATS{
			URL:              "",
			Embedded:         Embedded{Listen: "127.0.0.1:4222", StoreDir: "./data/nats"},
			Stream:           "DIFFGRAM_EVENTS",
			Subjects:         []string{"diffgram.events.>"},
			CreateStream:     true,
			Consumer:         "exportstream",
			DeadLetterStream: "DIFFGRAM_EVENTS_DLQ",
			ExportsStream:    "DIFFGRAM_EXPORTS",
			Replicas:         1,
			StatePrefix:      "EXPORTSTREAM",
			MaxEventBytes:    1 << 20,
			MaxEventDepth:    DefaultMaxEventDepth,
			MaxAckPending:    20000,
			Partitions:       1,
			AckWait:          30 * time.Second,
		},
		Connections: []Connection{{
			Name:  defaultConnection,
			Type:  TypeLocal,
			Local: &Local{Dir: "./data/bucket"},
		}},
		Records:    Records{KeepLast: DefaultRecordsKeepLast, MaxAge: DefaultRecordsMaxAge},
		Retry:      Retry{MaxBackoff: DefaultMaxBackoff},
		State:      State{Dir: DefaultStateDir},
		HTTP:       HTTP{Listen: "127.0.0.1:8080", MaxAdhocExports: DefaultMaxAdhocExports},
		Log:        Log{Level: "info", Format: "json"},
		Deployment: hostname(),
	}
}

// hostname is the default Deployment: the host name with every character
// outside [A-Za-z0-9._-] turned into "-", or "" if it is unknown
// (Validate then asks for deployment).
func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	b := []byte(h)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	return string(b)
}

// fillDeployment gives a file that leaves deployment empty the host name.
func (c *Config) fillDeployment() {
	if c.Deployment == "" {
		c.Deployment = hostname()
	}
}

// defaultExport is what an export in a file starts from.
func defaultExport() Export {
	return Export{
		Completion: CompletionComplete,
		Coalesce:   Coalesce{Quiet: 5 * time.Second, MaxDelay: 60 * time.Second},
	}
}

// fillExportPaths gives each export without a path "exports/<name>/" (when
// the name is valid) and makes every non-empty path end in "/".
func (c *Config) fillExportPaths() {
	for i := range c.Exports {
		e := &c.Exports[i]
		if e.Path == "" && exportNameRE.MatchString(e.Name) {
			e.Path = "exports/" + e.Name + "/"
		}
		if e.Path != "" && e.Path[len(e.Path)-1] != '/' {
			e.Path += "/"
		}
	}
}
