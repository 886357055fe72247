package clientapi

import (
	"context"
	"net/http"

	"praxis/internal/httputil"
	"praxis/internal/users"
)

// OpenIDIssuer issues OpenID tokens (federation.OpenID), which third
// parties check through the federation /openid/userinfo endpoint.
type OpenIDIssuer interface {
	Issue(ctx context.Context, userID string) (any, error)
}

// requestOpenIDToken serves POST /_matrix/client/v3/user/{userId}/openid/request_token:
// a token proving to a third party (e.g. a call service) who the caller
// is. Only for oneself.
func (a *API) requestOpenIDToken(r *http.Request, dev *users.Device) (any, error) {
	if r.PathValue("userId") != dev.UserID {
		return nil, httputil.Forbidden("cannot request an OpenID token for another user")
	}
	var body map[string]any
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if a.OpenID == nil {
		return nil, httputil.Errorf(http.StatusNotFound, "M_UNRECOGNIZED", "OpenID tokens are not offered by this server")
	}
	return a.OpenID.Issue(r.Context(), dev.UserID)
}
