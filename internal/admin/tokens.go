package admin

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"

	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/internal/users"
)

// tokenJSON is a registration token as Synapse shows it.
type tokenJSON struct {
	Token       string `json:"token"`
	UsesAllowed *int   `json:"uses_allowed"`
	Pending     int    `json:"pending"`
	Completed   int    `json:"completed"`
	ExpiryTime  *int64 `json:"expiry_time"`
}

func tokenOf(t *users.RegistrationToken) *tokenJSON {
	return &tokenJSON{Token: t.Token, UsesAllowed: t.UsesAllowed, Pending: t.Pending, Completed: t.Completed, ExpiryTime: t.ExpiryTime}
}

// auditTarget names a registration token in the audit log without storing
// the token itself, which would let any reader of the log register.
func auditTarget(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "registration_token:sha256:" + hex.EncodeToString(sum[:8])
}

func tokenError(err error) error {
	switch {
	case errors.Is(err, users.ErrNotFound):
		return httputil.NotFound("No such registration token")
	case errors.Is(err, users.ErrTokenExists):
		return httputil.InvalidParam("Token already in use")
	}
	return userError(err)
}

// listTokens serves GET /_synapse/admin/v1/registration_tokens[?valid=true|false].
func (s *Service) listTokens(r *http.Request, caller *users.Device) (any, error) {
	valid, err := queryBool(r, "valid")
	if err != nil {
		return nil, err
	}
	ts, err := s.users.RegistrationTokens(r.Context(), valid)
	if err != nil {
		return nil, err
	}
	out := make([]*tokenJSON, 0, len(ts))
	for i := range ts {
		out = append(out, tokenOf(&ts[i]))
	}
	return map[string]any{"registration_tokens": out}, nil
}

// getToken serves GET /_synapse/admin/v1/registration_tokens/{token}.
func (s *Service) getToken(r *http.Request, caller *users.Device) (any, error) {
	t, err := s.users.RegistrationToken(r.Context(), r.PathValue("token"))
	if err != nil {
		return nil, tokenError(err)
	}
	return tokenOf(t), nil
}

// optionalField decodes one field of a body decoded as raw fields: absent
// leaves set false, null sets it with a nil value.
func optionalField[T any](fields map[string]json.RawMessage, name string) (v *T, set bool, err error) {
	raw, ok := fields[name]
	if !ok {
		return nil, false, nil
	}
	if string(raw) == "null" {
		return nil, true, nil
	}
	v = new(T)
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, false, httputil.InvalidParam(name + " has the wrong type")
	}
	return v, true, nil
}

// tokenAlphabet is what Synapse allows in registration tokens.
const tokenAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-"

func randomToken(n int) string {
	b := make([]byte, n)
	for i := range b {
		k, err := rand.Int(rand.Reader, big.NewInt(int64(len(tokenAlphabet))))
		if err != nil {
			panic("crypto/rand failed: " + err.Error())
		}
		b[i] = tokenAlphabet[k.Int64()]
	}
	return string(b)
}

// createToken serves POST /_synapse/admin/v1/registration_tokens/new (and
// the same without /new): token, uses_allowed, expiry_time, length.
func (s *Service) createToken(r *http.Request, caller *users.Device) (any, error) {
	ctx := r.Context()
	var fields map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, &fields); err != nil {
		return nil, err
	}
	tok, _, err := optionalField[string](fields, "token")
	if err != nil {
		return nil, err
	}
	uses, _, err := optionalField[int](fields, "uses_allowed")
	if err != nil {
		return nil, err
	}
	expiry, _, err := optionalField[int64](fields, "expiry_time")
	if err != nil {
		return nil, err
	}
	length, _, err := optionalField[int](fields, "length")
	if err != nil {
		return nil, err
	}
	t := users.RegistrationToken{UsesAllowed: uses, ExpiryTime: expiry}
	switch {
	case tok != nil:
		t.Token = *tok
	case length != nil && (*length < 1 || *length > 64):
		return nil, httputil.InvalidParam("length must be an integer between 1 and 64")
	case length != nil:
		t.Token = randomToken(*length)
	default:
		t.Token = randomToken(16)
	}
	var created *users.RegistrationToken
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		var err error
		if created, err = s.users.WithTx(tx).CreateRegistrationToken(ctx, t); err != nil {
			return tokenError(err)
		}
		_, err = s.audit.Append(ctx, tx, Record{Actor: caller.UserID, Action: "registration_token.create", Target: auditTarget(created.Token),
			Params: map[string]any{"uses_allowed": created.UsesAllowed, "expiry_time": created.ExpiryTime}})
		return err
	})
	if err != nil {
		return nil, err
	}
	return tokenOf(created), nil
}

// updateToken serves PUT /_synapse/admin/v1/registration_tokens/{token}:
// uses_allowed and expiry_time, each optional, null meaning unlimited.
func (s *Service) updateToken(r *http.Request, caller *users.Device) (any, error) {
	ctx := r.Context()
	token := r.PathValue("token")
	var fields map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, &fields); err != nil {
		return nil, err
	}
	uses, setUses, err := optionalField[int](fields, "uses_allowed")
	if err != nil {
		return nil, err
	}
	expiry, setExpiry, err := optionalField[int64](fields, "expiry_time")
	if err != nil {
		return nil, err
	}
	var updated *users.RegistrationToken
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		var err error
		if updated, err = s.users.WithTx(tx).UpdateRegistrationToken(ctx, token, uses, setUses, expiry, setExpiry); err != nil {
			return tokenError(err)
		}
		params := map[string]any{}
		if setUses {
			params["uses_allowed"] = uses
		}
		if setExpiry {
			params["expiry_time"] = expiry
		}
		_, err = s.audit.Append(ctx, tx, Record{Actor: caller.UserID, Action: "registration_token.update", Target: auditTarget(token), Params: params})
		return err
	})
	if err != nil {
		return nil, err
	}
	return tokenOf(updated), nil
}

// deleteToken serves DELETE /_synapse/admin/v1/registration_tokens/{token}.
func (s *Service) deleteToken(r *http.Request, caller *users.Device) (any, error) {
	ctx := r.Context()
	token := r.PathValue("token")
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		if err := s.users.WithTx(tx).DeleteRegistrationToken(ctx, token); err != nil {
			return tokenError(err)
		}
		_, err := s.audit.Append(ctx, tx, Record{Actor: caller.UserID, Action: "registration_token.delete", Target: auditTarget(token)})
		return err
	})
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
