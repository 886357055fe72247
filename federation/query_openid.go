package federation

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"time"

	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/internal/users"
)

// OpenID issues the short-lived tokens with which a user proves their
// identity to a third party (an integration, a call service), and answers
// that party's GET /_matrix/federation/v1/openid/userinfo. The endpoint
// carries no X-Matrix signature — the caller is not a homeserver — so the
// token itself is the credential: random, stored only as its SHA-256,
// valid for an hour.
type OpenID struct {
	DB         *storage.DB
	ServerName string
	Now        func() time.Time
}

// openIDLifetime is how long an OpenID token is valid.
const openIDLifetime = time.Hour

func (o *OpenID) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// Token is the client's answer to request_token.
type Token struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	MatrixServerName string `json:"matrix_server_name"`
	ExpiresIn        int64  `json:"expires_in"`
}

// Issue creates a token for a local user (clientapi.OpenIDIssuer).
func (o *OpenID) Issue(ctx context.Context, userID string) (any, error) {
	return o.issue(ctx, userID)
}

func (o *OpenID) issue(ctx context.Context, userID string) (*Token, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	now := o.now()
	err := o.DB.Transact(ctx, func(tx *storage.DB) error {
		// expired tokens go as new ones come: no sweeper needed
		if _, err := tx.Exec(ctx, `DELETE FROM openid_tokens WHERE expires_ts < $1`, now.UnixMilli()); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`,
			users.HashToken(tok), userID, now.Add(openIDLifetime).UnixMilli())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("issue OpenID token: %w", err)
	}
	return &Token{AccessToken: tok, TokenType: "Bearer", MatrixServerName: o.ServerName, ExpiresIn: int64(openIDLifetime / time.Second)}, nil
}

// Routes mounts GET /_matrix/federation/v1/openid/userinfo.
func (o *OpenID) Routes(mux *http.ServeMux) {
	mux.Handle("GET /_matrix/federation/v1/openid/userinfo", httputil.JSONHandler(o.userInfo))
}

// userInfo serves GET /_matrix/federation/v1/openid/userinfo?access_token=….
func (o *OpenID) userInfo(r *http.Request) (map[string]string, error) {
	tok := r.URL.Query().Get("access_token")
	if tok == "" {
		return nil, httputil.Errorf(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "access_token is required")
	}
	var userID string
	var expires int64
	err := o.DB.QueryRow(r.Context(), `SELECT user_id, expires_ts FROM openid_tokens WHERE token_hash = $1`, users.HashToken(tok)).Scan(&userID, &expires)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && expires < o.now().UnixMilli()) {
		return nil, httputil.Errorf(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "the token is unknown or expired")
	}
	if err != nil {
		return nil, fmt.Errorf("check OpenID token: %w", err)
	}
	return map[string]string{"sub": userID}, nil
}
