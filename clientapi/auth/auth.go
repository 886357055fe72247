// Package auth authenticates Client-Server API requests.
package auth

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"praxis/internal/httputil"
	"praxis/internal/users"
)

type deviceKey struct{}

// Authenticator resolves access tokens.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (*users.Device, error)
}

// Token extracts the access token from the Authorization header or, as the
// spec still allows, the access_token query parameter.
func Token(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		// RFC 9110: the scheme name is case-insensitive.
		scheme, t, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(t)
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}

// Device resolves the caller of r: M_MISSING_TOKEN without a token,
// M_UNKNOWN_TOKEN (with soft_logout for expired tokens) for a bad one.
func Device(r *http.Request, a Authenticator) (*users.Device, error) {
	if d, ok := r.Context().Value(deviceKey{}).(*users.Device); ok {
		return d, nil
	}
	tok := Token(r)
	if tok == "" {
		return nil, httputil.MissingToken("missing access token")
	}
	d, err := a.Authenticate(r.Context(), tok)
	switch {
	case errors.Is(err, users.ErrTokenExpired):
		e := httputil.UnknownToken("access token expired")
		e.Extra = map[string]any{"soft_logout": true}
		return nil, e
	case errors.Is(err, users.ErrUnknownToken):
		return nil, httputil.UnknownToken("unknown access token")
	case err != nil:
		return nil, err
	}
	return d, nil
}

// WithDevice stores the authenticated device in ctx.
func WithDevice(ctx context.Context, d *users.Device) context.Context {
	return context.WithValue(ctx, deviceKey{}, d)
}

// FromContext returns the device stored by WithDevice.
func FromContext(ctx context.Context) *users.Device {
	d, _ := ctx.Value(deviceKey{}).(*users.Device)
	return d
}
