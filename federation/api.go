package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"praxis/federation/keyring"
	"praxis/internal/httputil"
)

// API is the federation HTTP surface.
type API struct {
	ServerName string
	Key        *keyring.SigningKey
	// OldKeys are retired keys still published as old_verify_keys so that
	// events signed with them stay verifiable.
	OldKeys map[string]OldKey
	Now     func() time.Time

	// Verifier checks X-Matrix request signatures (the key ring).
	Verifier gomatrixserverlib.JSONVerifier
	// Allow is the partner allowlist; nil refuses every origin.
	Allow *Allowlist
	// Client is the outbound client, for notary look-ups.
	Client fclient.FederationClient
	// Txn processes inbound PUT /send transactions.
	Txn TxnProcessor
	// PartnerUp, if set, is told the origin of every signed request that
	// succeeded: the partner is up, so the sender ends its backoff.
	PartnerUp func(ctx context.Context, origin spec.ServerName)
}

// TxnProcessor runs an inbound transaction (federation/txn). The body is
// the verified request content; the result is the response JSON.
type TxnProcessor interface {
	Process(ctx context.Context, origin spec.ServerName, txnID string, body []byte) (any, error)
}

func (a *API) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// Routes mounts the federation and key endpoints this package serves.
// Other federation areas mount theirs on the same mux with Authed.
func (a *API) Routes(mux *http.ServeMux) {
	mux.Handle("GET /_matrix/key/v2/server", http.HandlerFunc(a.serverKeys))
	mux.Handle("GET /_matrix/key/v2/server/{keyId}", http.HandlerFunc(a.serverKeys))
	mux.Handle("POST /_matrix/key/v2/query", httputil.JSONHandler(a.queryKeys))
	mux.Handle("GET /_matrix/key/v2/query/{serverName}", httputil.JSONHandler(a.queryServerKeys))
	mux.Handle("GET /_matrix/key/v2/query/{serverName}/{keyId}", httputil.JSONHandler(a.queryServerKeys))
	mux.Handle("GET /_matrix/federation/v1/version", httputil.JSONHandler(a.version))
	mux.Handle("PUT /_matrix/federation/v1/send/{txnId}", Authed(a, a.send))
	// Every other federation path still needs a signed request from an
	// allowed origin before it is told the endpoint does not exist.
	mux.Handle("/_matrix/federation/", Authed(a, func(r *http.Request, _ spec.ServerName) (any, error) {
		return nil, httputil.Unrecognized("unrecognized federation endpoint " + r.URL.Path)
	}))
}

// Authed wraps a federation handler: the request must carry a valid
// X-Matrix signature (else 401 M_UNAUTHORIZED) from an allowlisted origin
// (else 403 M_FORBIDDEN, checked before any key is fetched). The verified
// body is put back in r.Body for httputil.DecodeJSON.
func Authed[T any](a *API, fn func(r *http.Request, origin spec.ServerName) (T, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin, body, err := a.Verify(r)
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		res, err := fn(r, origin)
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		if a.PartnerUp != nil {
			a.PartnerUp(r.Context(), origin)
		}
		httputil.WriteJSON(w, http.StatusOK, res)
	})
}

// Verify authenticates a federation request and returns its origin and
// body.
func (a *API) Verify(r *http.Request) (spec.ServerName, []byte, error) {
	var origin spec.ServerName
	for _, h := range r.Header.Values("Authorization") {
		if scheme, o, _, _, _ := fclient.ParseAuthorization(h); scheme == "X-Matrix" {
			origin = o
			break
		}
	}
	if origin == "" {
		return "", nil, httputil.Errorf(http.StatusUnauthorized, "M_UNAUTHORIZED", "missing Authorization: X-Matrix header")
	}
	if !a.Allow.Allowed(string(origin)) {
		slog.WarnContext(r.Context(), "federation request refused: origin not allowed", "origin", origin, "path", r.URL.Path)
		return "", nil, httputil.Forbidden("server " + string(origin) + " is not a federation partner of " + a.ServerName)
	}
	// Verification reads the body; bound it like every JSON body.
	body, err := httputil.ReadBody(r)
	if err != nil {
		return "", nil, err
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	req, resp := fclient.VerifyHTTPRequest(r, a.now(), spec.ServerName(a.ServerName), nil, a.Verifier)
	if req == nil {
		msg := "request signature check failed"
		if b, err := json.Marshal(resp.JSON); err == nil {
			if m := gjson.GetBytes(b, "message").String(); m != "" {
				msg = m
			}
		}
		if resp.Code >= 500 {
			slog.ErrorContext(r.Context(), "federation request verification failed", "origin", origin, "detail", msg)
			return "", nil, httputil.Errorf(http.StatusInternalServerError, "M_UNKNOWN", "could not verify the request")
		}
		slog.InfoContext(r.Context(), "federation request refused: bad signature", "origin", origin, "path", r.URL.Path)
		return "", nil, httputil.Errorf(http.StatusUnauthorized, "M_UNAUTHORIZED", "%s", strings.TrimSpace(msg))
	}
	return req.Origin(), req.Content(), nil
}
