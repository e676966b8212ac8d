package azure

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/exportstream/exportstream/connectors"
)

// auth is how a Bucket authenticates: exactly one of sharedKey, token and
// sas is set.
type auth struct {
	serviceURL string // the blob service, ending in "/"
	sharedKey  *container.SharedKeyCredential
	token      azcore.TokenCredential
	sas        string // a SAS query without "?"
	redact     redactor
}

// newAuth resolves validated options into an endpoint and a credential.
// Its errors may quote secrets: wrap them with the returned redactor.
func newAuth(o Options) (auth, error) {
	var a auth
	name, key, sas := o.AccountName, o.AccountKey, o.SASToken
	endpoint := o.Endpoint
	if o.ConnectionString != "" {
		cs, err := parseConnectionString(o.ConnectionString)
		if err != nil {
			return a, err
		}
		name, key, sas = cs.accountName, cs.accountKey, cs.sas
		if endpoint == "" {
			endpoint = cs.endpoint
		}
	}
	sas = strings.TrimPrefix(sas, "?")
	a.redact = newRedactor(key, sas)
	if endpoint == "" {
		endpoint = fmt.Sprintf(defaultEndpoint, name)
	}
	a.serviceURL = strings.TrimSuffix(endpoint, "/") + "/"
	switch {
	case key != "":
		cred, err := container.NewSharedKeyCredential(name, key)
		if err != nil {
			return a, fmt.Errorf("account key: %w", err)
		}
		a.sharedKey = cred
	case sas != "":
		a.sas = sas
	case o.Credential != nil:
		a.token = tokenCredential{o.Credential}
	default:
		cred, err := azidentity.NewDefaultAzureCredential(nil)
		if err != nil {
			return a, fmt.Errorf("%w: default Azure credential: %w", connectors.ErrNoCredentials, err)
		}
		a.token = tokenCredential{cred}
	}
	return a, nil
}

// tokenCredential marks every failure to get a token (no identity found,
// or one refused by Azure AD) as connectors.ErrNoCredentials.
type tokenCredential struct{ cred azcore.TokenCredential }

func (c tokenCredential) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tok, err := c.cred.GetToken(ctx, opts)
	if err != nil && ctx.Err() == nil {
		err = fmt.Errorf("%w: %w", connectors.ErrNoCredentials, err)
	}
	return tok, err
}

// connectionString is what a storage connection string says about blobs.
type connectionString struct {
	endpoint    string // BlobEndpoint, or built from the protocol, name and suffix
	accountName string
	accountKey  string
	sas         string
}

// parseConnectionString reads "Key=Value;..." pairs (keys case-
// insensitive) the way the SDK does: BlobEndpoint, or AccountName with
// DefaultEndpointsProtocol (https) and EndpointSuffix (core.windows.net),
// locate the account; AccountName and AccountKey, or SharedAccessSignature,
// authenticate. Its errors never quote the string.
func parseConnectionString(s string) (connectionString, error) {
	kv := map[string]string{}
	for part := range strings.SplitSeq(s, ";") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return connectionString{}, errors.New("connection string is malformed (want Key=Value pairs separated by ';')")
		}
		kv[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	cs := connectionString{
		accountName: kv["accountname"],
		accountKey:  kv["accountkey"],
		sas:         strings.TrimPrefix(kv["sharedaccesssignature"], "?"),
		endpoint:    kv["blobendpoint"],
	}
	var errs []error
	if cs.endpoint == "" {
		if cs.accountName == "" {
			errs = append(errs, errors.New("connection string needs AccountName or BlobEndpoint"))
		}
		proto := cmp.Or(kv["defaultendpointsprotocol"], "https")
		suffix := cmp.Or(kv["endpointsuffix"], "core.windows.net")
		cs.endpoint = fmt.Sprintf("%s://%s.blob.%s/", proto, cs.accountName, suffix)
	}
	if u, err := url.Parse(cs.endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		errs = append(errs, errors.New("connection string's blob endpoint is not an http(s) URL without a query"))
	}
	switch {
	case cs.accountKey != "" && cs.accountName == "":
		errs = append(errs, errors.New("connection string's AccountKey needs an AccountName"))
	case cs.accountKey != "":
		cs.sas = "" // the SDK prefers the key too
	case cs.sas != "":
		if err := checkSAS(cs.sas); err != nil {
			errs = append(errs, fmt.Errorf("connection string's SharedAccessSignature: %w", err))
		}
	default:
		errs = append(errs, errors.New("connection string needs AccountKey or SharedAccessSignature"))
	}
	return cs, errors.Join(errs...)
}

// checkSAS checks that sas (with or without "?") is a query with a
// signature. Its errors never quote sas.
func checkSAS(sas string) error {
	q, err := url.ParseQuery(strings.TrimPrefix(sas, "?"))
	if err != nil {
		return errors.New("not a URL query (want sv=...&sig=...)")
	}
	if q.Get("sig") == "" {
		return errors.New("has no signature (sig=...)")
	}
	return nil
}
