// Package config is exportstream's configuration: the YAML file ops write,
// its defaults, and its validation.
//
// Load applies defaults, decodes strictly (unknown keys are errors), expands
// ${VAR} in string values only, and runs Validate, which reports every
// problem at once, each with its YAML path. Secret values print as
// "<secret>" wherever they are formatted, logged or marshalled.
//
// The package imports nothing from the rest of the project.
package config

import "time"

// Config is the whole configuration file.
type Config struct {
	NATS        NATS         `yaml:"nats"`
	Connections []Connection `yaml:"connections"`
	Exports     []Export     `yaml:"exports"`
	HTTP        HTTP         `yaml:"http"`
	Log         Log          `yaml:"log"`
}

// NATS says where the events come from and where the service keeps state.
type NATS struct {
	// URL of the NATS server(s), comma separated. Empty: start the embedded
	// server described by Embedded.
	URL             string   `yaml:"url"`
	Embedded        Embedded `yaml:"embedded"`
	CredentialsFile string   `yaml:"credentials_file"`
	User            string   `yaml:"user"`
	Password        Secret   `yaml:"password"`
	Token           Secret   `yaml:"token"`
	TLS             TLS      `yaml:"tls"`

	Stream           string   `yaml:"stream"`
	Subjects         []string `yaml:"subjects"`
	CreateStream     bool     `yaml:"create_stream"`
	Consumer         string   `yaml:"consumer"`
	DeadLetterStream string   `yaml:"dead_letter_stream"`
	// ExportsStream captures the diffgram.exports.> completion events the
	// service publishes (created when CreateStream is true).
	ExportsStream string `yaml:"exports_stream"`
	Replicas      int    `yaml:"replicas"`
	// StatePrefix names the key-value buckets the service keeps its state
	// in: <prefix>_STATE, <prefix>_DIRTY, <prefix>_EXPORTS, <prefix>_LEASES.
	StatePrefix string `yaml:"state_prefix"`
	// MaxEventBytes: a larger event body is bad input.
	MaxEventBytes int `yaml:"max_event_bytes"`
	// MaxAckPending bounds the events in flight (delivered, not yet acked).
	MaxAckPending int `yaml:"max_ack_pending"`
	// AckWait is how long the server waits for an ack before redelivering.
	AckWait time.Duration `yaml:"ack_wait"`
}

// Embedded configures the in-process NATS server used when URL is empty.
type Embedded struct {
	Listen   string `yaml:"listen"`
	StoreDir string `yaml:"store_dir"`
}

// TLS configures TLS towards the NATS server.
type TLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Connection is one bucket exports are written to.
type Connection struct {
	Name  string `yaml:"name"`
	Type  string `yaml:"type"` // local | s3 | gcs | azure
	Local *Local `yaml:"local"`
	S3    *S3    `yaml:"s3"`
	GCS   *GCS   `yaml:"gcs"`
	Azure *Azure `yaml:"azure"`
}

// Local is a folder on disk used as a bucket.
type Local struct {
	Dir string `yaml:"dir"`
}

// S3 is an Amazon S3 bucket or an S3-compatible store.
type S3 struct {
	Bucket          string `yaml:"bucket"`
	Region          string `yaml:"region"`
	Endpoint        string `yaml:"endpoint"`
	PathStyle       bool   `yaml:"path_style"`
	AccessKeyID     string `yaml:"access_key_id"`
	SecretAccessKey Secret `yaml:"secret_access_key"`
	SessionToken    Secret `yaml:"session_token"`
	// PartSize is the multipart upload part size in bytes (minimum 5 MiB).
	PartSize int64 `yaml:"part_size"`
}

// GCS is a Google Cloud Storage bucket.
type GCS struct {
	Bucket          string `yaml:"bucket"`
	CredentialsFile string `yaml:"credentials_file"`
	Endpoint        string `yaml:"endpoint"`
}

// Azure is an Azure Blob Storage container.
type Azure struct {
	Container        string `yaml:"container"`
	ConnectionString Secret `yaml:"connection_string"`
	AccountName      string `yaml:"account_name"`
	AccountKey       Secret `yaml:"account_key"`
	Endpoint         string `yaml:"endpoint"`
}

// Export is one export definition.
type Export struct {
	Name                    string   `yaml:"name"`
	Project                 string   `yaml:"project"`
	Source                  Source   `yaml:"source"`
	Completion              string   `yaml:"completion"` // complete | all | incomplete
	IncludeRemovedInstances bool     `yaml:"include_removed_instances"`
	Connection              string   `yaml:"connection"`
	Path                    string   `yaml:"path"`
	Coalesce                Coalesce `yaml:"coalesce"`
}

// Source selects the files of an export: exactly one field is set.
type Source struct {
	Directory   string `yaml:"directory"`
	DirectoryID *int64 `yaml:"directory_id"`
	Job         string `yaml:"job"`
	JobID       *int64 `yaml:"job_id"`
	TaskID      *int64 `yaml:"task_id"`
	Project     bool   `yaml:"project"`
}

// Coalesce says how long a definition waits before exporting: until no
// change has touched it for Quiet, but never longer than MaxDelay after the
// first change.
type Coalesce struct {
	Quiet    time.Duration `yaml:"quiet"`
	MaxDelay time.Duration `yaml:"max_delay"`
}

// HTTP configures the HTTP listener (API, UI, metrics, health).
type HTTP struct {
	Listen string `yaml:"listen"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // json | text
}
