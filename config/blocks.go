package config

import "strings"

// block is a connection type's settings: the Local, S3, GCS or Azure
// block of a Connection. Adding a connection type means a block struct
// with these methods (and setDefaults, if its settings have defaults), its
// field in Connection, a Type constant and one line in Connection.blocks;
// the rest of the package goes through them.
type block interface {
	// check adds the block's problems, at paths under p (the block's
	// own path, "connections[1].s3").
	check(ch *checker, p string)
	// cannotSign says why the connection cannot sign links that outlive
	// the process, or "" if it can.
	cannotSign() string
	// redact hides what Redacted must not print beyond the secrets
	// (passwords in URLs); the block is a copy.
	redact()
}

// defaulter is a block whose settings start from defaults when the file
// has the block (newValue).
type defaulter interface{ setDefaults() }

// typedBlock is one connection type and, if set, its block.
type typedBlock struct {
	typ   string
	block block  // nil when the connection has no block of this type
	clone func() // replaces the block with a copy
}

// blocks lists the connection types, in the order of their fields in
// Connection, each with c's block of that type.
func (c *Connection) blocks() []typedBlock {
	return []typedBlock{
		blockOf(TypeLocal, &c.Local),
		blockOf(TypeS3, &c.S3),
		blockOf(TypeGCS, &c.GCS),
		blockOf(TypeAzure, &c.Azure),
	}
}

func blockOf[T any, P interface {
	*T
	block
}](typ string, field *P) typedBlock {
	b := typedBlock{typ: typ, clone: func() { *field = clonePtr(*field) }}
	if *field != nil {
		b.block = *field
	}
	return b
}

// connectionTypes lists the connection types: local, s3, gcs, azure.
func connectionTypes() []string {
	var out []string
	for _, b := range (&Connection{}).blocks() {
		out = append(out, b.typ)
	}
	return out
}

// block returns the block of the connection's type, or nil when it is
// not set (or the type is unknown).
func (c *Connection) block() block {
	for _, b := range c.blocks() {
		if b.typ == c.Type {
			return b.block
		}
	}
	return nil
}

func (l *Local) check(ch *checker, p string) {
	ch.required(p+".dir", l.Dir)
}

func (l *Local) cannotSign() string {
	if l.SignKey == "" {
		return "local.sign_key is not set, so its links are signed with a random key per process and stop working when the service restarts; set local.sign_key (the same on every replica)"
	}
	return ""
}

func (l *Local) redact() {}

func (s *S3) check(ch *checker, sp string) {
	ch.required(sp+".bucket", s.Bucket)
	ch.httpURL(sp+".endpoint", s.Endpoint)
	if s.AccessKeyID != "" && s.SecretAccessKey == "" {
		ch.addAbout(sp+".access_key_id", sp+".secret_access_key", "requires secret_access_key")
	}
	if s.SecretAccessKey != "" && s.AccessKeyID == "" {
		ch.addAbout(sp+".secret_access_key", sp+".access_key_id", "requires access_key_id")
	}
	if s.SessionToken != "" && (s.AccessKeyID == "" || s.SecretAccessKey == "") {
		ch.add(sp+".session_token", "requires access_key_id and secret_access_key")
	}
	if s.RoleARN != "" && !strings.HasPrefix(s.RoleARN, "arn:") {
		ch.add(sp+".role_arn", "%q is not an ARN (arn:aws:iam::<account>:role/<name>)", s.RoleARN)
	}
	if s.ExternalID != "" && s.RoleARN == "" {
		ch.addAbout(sp+".external_id", sp+".role_arn", "requires role_arn")
	}
	if s.SSE != "" {
		ch.oneOf(sp+".sse", s.SSE, SSEAES256, SSEKMS)
	}
	if s.KMSKeyID != "" && s.SSE != SSEKMS {
		ch.addAbout(sp+".kms_key_id", sp+".sse", "requires sse: %s", SSEKMS)
	}
	switch {
	case s.PartSize < MinPartSize:
		ch.add(sp+".part_size", "%d is less than the 5 MiB minimum (%d)", s.PartSize, MinPartSize)
	case s.PartSize > MaxPartSize:
		ch.add(sp+".part_size", "%d is more than the 5 GiB maximum (%d)", s.PartSize, MaxPartSize)
	}
}

func (s *S3) setDefaults() { s.PartSize = DefaultPartSize }

func (s *S3) cannotSign() string { return "" }

func (s *S3) redact() { s.Endpoint = redactURLs(s.Endpoint) }

func (g *GCS) check(ch *checker, p string) {
	ch.required(p+".bucket", g.Bucket)
	ch.httpURL(p+".endpoint", g.Endpoint)
}

// cannotSign: a GCS connection on default credentials finds out only
// when it signs: the export then fails saying what is missing.
func (g *GCS) cannotSign() string {
	if g.Endpoint != "" && g.CredentialsFile == "" {
		return "gcs.endpoint without gcs.credentials_file sends no credentials, so there is no key to sign with; set gcs.credentials_file to a service-account key"
	}
	return ""
}

func (g *GCS) redact() { g.Endpoint = redactURLs(g.Endpoint) }

func (a *Azure) check(ch *checker, ap string) {
	ch.required(ap+".container", a.Container)
	switch {
	case a.ConnectionString != "" && a.AccountName != "":
		ch.add(ap, "set only one of connection_string and account_name")
	case a.ConnectionString == "" && a.AccountName == "":
		ch.add(ap, "one of connection_string and account_name is required")
	}
	if a.AccountKey != "" && a.AccountName == "" {
		ch.addAbout(ap+".account_key", ap+".account_name", "requires account_name")
	}
	if a.SASToken != "" && a.AccountName == "" {
		ch.addAbout(ap+".sas_token", ap+".account_name", "requires account_name")
	}
	if a.SASToken != "" && a.AccountKey != "" {
		ch.add(ap, "set only one of account_key and sas_token")
	}
	ch.httpURL(ap+".endpoint", a.Endpoint)
}

func (a *Azure) cannotSign() string {
	cs := strings.ToLower(a.ConnectionString.Reveal())
	if a.SASToken != "" || strings.Contains(cs, "sharedaccesssignature=") && !strings.Contains(cs, "accountkey=") {
		return "it authenticates with a SAS token, which cannot sign links; use the account key (account_key, or a connection string with AccountKey) or an Azure AD identity (account_name alone) allowed to get user delegation keys"
	}
	return ""
}

func (a *Azure) redact() { a.Endpoint = redactURLs(a.Endpoint) }
