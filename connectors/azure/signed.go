package azure

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/exportstream/exportstream/connectors"
)

const (
	// MaxDelegatedExpiry is the longest a URL signed with a user
	// delegation key (Azure AD credentials) stays valid: the longest such
	// a key lives.
	MaxDelegatedExpiry = 7 * 24 * time.Hour

	// clockSkew is how far in the past a user delegation key starts, for
	// servers whose clock is a little ahead.
	clockSkew = 5 * time.Minute
)

// SignedURL returns a read-only service SAS URL for the blob key, valid
// for expiry, on the configured endpoint. It is signed with the account
// key when the bucket has one (no network I/O); with Azure AD credentials
// it is signed with a user delegation key (Get User Delegation Key, which
// needs the Storage Blob Delegator role or a data role that includes it),
// fetched once for MaxDelegatedExpiry and reused, and expiry may be at most
// MaxDelegatedExpiry. A bucket that authenticates with a SAS token cannot
// sign: the error wraps connectors.ErrNotSupported.
func (b *driver) SignedURL(ctx context.Context, key string, expiry time.Duration) (string, error) {
	if expiry <= 0 {
		return "", fmt.Errorf("azure: signed URL for %q: expiry %v is not positive", key, expiry)
	}
	now := time.Now().UTC()
	values := sas.BlobSignatureValues{
		Protocol:      sas.ProtocolHTTPS,
		ExpiryTime:    now.Add(expiry),
		Permissions:   to.Ptr(sas.BlobPermissions{Read: true}).String(),
		ContainerName: b.name,
		BlobName:      key,
	}
	if u, err := url.Parse(b.auth.serviceURL); err == nil && u.Scheme == "http" {
		values.Protocol = sas.ProtocolHTTPSandHTTP
	}
	var (
		query sas.QueryParameters
		err   error
	)
	switch {
	case b.auth.sharedKey != nil:
		query, err = values.SignWithSharedKey(b.auth.sharedKey)
	case b.service != nil:
		if expiry > MaxDelegatedExpiry {
			return "", fmt.Errorf("azure: signed URL for %q: expiry %v is longer than a user delegation key lives (%v)", key, expiry, MaxDelegatedExpiry)
		}
		var cred *service.UserDelegationCredential
		cred, err = b.delegationKey(ctx, now, values.ExpiryTime)
		if err != nil {
			return "", b.mapErr("sign", key, err, nil)
		}
		query, err = values.SignWithUserDelegation(cred)
	default:
		return "", fmt.Errorf("azure: signed URL for %q: %w: the connection authenticates with a SAS token, which cannot sign links; "+
			"configure the account key (account_key, or a connection string with AccountKey) or an Azure AD identity (account_name alone) "+
			"allowed to get user delegation keys", key, connectors.ErrNotSupported)
	}
	if err != nil {
		return "", fmt.Errorf("azure: signed URL for %q: %w", key, b.redact.wrap(err))
	}
	return b.client.NewBlobClient(key).URL() + "?" + query.Encode(), nil
}

// delegationKey returns a user delegation key valid at least until
// until, fetching a new one (valid for MaxDelegatedExpiry) when the one
// held expires earlier.
func (b *driver) delegationKey(ctx context.Context, now, until time.Time) (*service.UserDelegationCredential, error) {
	d := &b.delegation
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cred != nil && !d.expires.Before(until) {
		return d.cred, nil
	}
	expires := now.Add(MaxDelegatedExpiry)
	cred, err := b.service.GetUserDelegationCredential(ctx, service.KeyInfo{
		Start:  to.Ptr(now.Add(-clockSkew).Format(time.RFC3339)),
		Expiry: to.Ptr(expires.Format(time.RFC3339)),
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("get user delegation key: %w", err)
	}
	if cred == nil {
		return nil, errors.New("get user delegation key: no key returned")
	}
	d.cred, d.expires = cred, expires
	return cred, nil
}
