package admin

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/internal/users"
)

// nonceLifetime is how long a registration nonce stays usable, as in
// Synapse: long enough for a script, short enough to be useless later.
const nonceLifetime = 60 * time.Second

// sharedSecret returns the configured secret or the error Synapse gives
// when shared-secret registration is off.
func (s *Service) sharedSecret() (string, error) {
	if s.cfg.Registration.SharedSecret == "" {
		return "", httputil.Errorf(http.StatusBadRequest, "M_UNKNOWN", "Shared secret registration is not enabled")
	}
	return s.cfg.Registration.SharedSecret, nil
}

// registerNonce serves GET /_synapse/admin/v1/register: a fresh nonce for
// one registration attempt.
func (s *Service) registerNonce(r *http.Request) (any, error) {
	ctx := r.Context()
	if _, err := s.sharedSecret(); err != nil {
		return nil, err
	}
	if err := s.throttle(r); err != nil {
		return nil, err
	}
	nonce := users.RandomString(24)
	now := s.now()
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		if _, err := tx.Exec(ctx, `DELETE FROM admin_register_nonces WHERE created_ts < $1`, now.Add(-nonceLifetime).UnixMilli()); err != nil {
			return fmt.Errorf("sweep registration nonces: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO admin_register_nonces (nonce, created_ts) VALUES ($1, $2)`, nonce, now.UnixMilli()); err != nil {
			return fmt.Errorf("store registration nonce: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return map[string]string{"nonce": nonce}, nil
}

type sharedSecretRequest struct {
	Nonce       string  `json:"nonce"`
	Username    string  `json:"username"`
	DisplayName string  `json:"displayname"`
	Password    string  `json:"password"`
	Admin       bool    `json:"admin"`
	UserType    *string `json:"user_type"`
	MAC         string  `json:"mac"`
}

type registerResponse struct {
	AccessToken string `json:"access_token"`
	UserID      string `json:"user_id"`
	HomeServer  string `json:"home_server"`
	DeviceID    string `json:"device_id"`
}

// RegistrationMAC computes the hex HMAC-SHA1 of the shared-secret
// registration protocol: nonce, username, password and "admin" or
// "notadmin", NUL-separated, plus the user type when there is one.
func RegistrationMAC(secret, nonce, username, password string, admin bool, userType string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(nonce))
	m.Write([]byte{0})
	m.Write([]byte(username))
	m.Write([]byte{0})
	m.Write([]byte(password))
	m.Write([]byte{0})
	if admin {
		m.Write([]byte("admin"))
	} else {
		m.Write([]byte("notadmin"))
	}
	if userType != "" {
		m.Write([]byte{0})
		m.Write([]byte(userType))
	}
	return hex.EncodeToString(m.Sum(nil))
}

// registerSharedSecret serves POST /_synapse/admin/v1/register: it creates
// an account, admin or not, for whoever knows the shared secret, and logs
// it in. The nonce is spent before the MAC is checked, so a nonce allows
// exactly one guess.
func (s *Service) registerSharedSecret(r *http.Request) (any, error) {
	ctx := r.Context()
	secret, err := s.sharedSecret()
	if err != nil {
		return nil, err
	}
	if err := s.throttle(r); err != nil {
		return nil, err
	}
	var req sharedSecretRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Nonce == "" || req.MAC == "" || req.Username == "" {
		return nil, httputil.MissingParam("nonce, username and mac are required")
	}
	if err := s.spendNonce(ctx, req.Nonce); err != nil {
		return nil, err
	}
	userType := ""
	if req.UserType != nil {
		userType = *req.UserType
	}
	want := RegistrationMAC(secret, req.Nonce, req.Username, req.Password, req.Admin, userType)
	got, err := hex.DecodeString(req.MAC)
	wantBytes, _ := hex.DecodeString(want)
	if err != nil || !hmac.Equal(got, wantBytes) {
		slog.WarnContext(ctx, "shared-secret registration with a wrong MAC", "username", req.Username)
		return nil, httputil.Forbidden("HMAC incorrect")
	}
	if userType != "" {
		return nil, httputil.InvalidParam("user_type is not supported")
	}
	if err := checkPassword(req.Password); err != nil {
		return nil, err
	}
	// The MAC covers the name as sent; the account gets it in lower case,
	// as /register and Synapse do, since user IDs cannot hold capitals.
	localpart := strings.ToLower(req.Username)
	if err := s.users.ValidateLocalpart(localpart); err != nil {
		return nil, userError(err)
	}
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	var sess *users.Session
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		u := s.users.WithTx(tx)
		a, err := u.CreateAccount(ctx, localpart, req.Password, req.Admin, "user")
		if err != nil {
			return userError(err)
		}
		if req.DisplayName != "" {
			if _, err := u.SetDisplayName(ctx, a.UserID, req.DisplayName); err != nil {
				return err
			}
		}
		if sess, err = u.CreateSession(ctx, a.UserID, "", "shared-secret registration", ip, false); err != nil {
			return err
		}
		_, err = s.audit.Append(ctx, tx, Record{Actor: "shared-secret", Action: "user.register", Target: a.UserID,
			Params: map[string]any{"admin": req.Admin}})
		return err
	})
	if err != nil {
		return nil, err
	}
	slog.InfoContext(ctx, "user registered with the shared secret", "user_id", sess.UserID, "admin", req.Admin)
	return &registerResponse{AccessToken: sess.AccessToken, UserID: sess.UserID, HomeServer: s.users.ServerName(), DeviceID: sess.DeviceID}, nil
}

// throttle refuses a client address that tries too often: every nonce
// is a database row and every POST a guess at the secret.
func (s *Service) throttle(r *http.Request) error {
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	if ok, wait := s.limiter.Allow("admin-register:" + ip); !ok {
		return httputil.LimitExceeded(wait.Milliseconds())
	}
	return nil
}

// spendNonce deletes nonce, which must exist and be fresh. It commits on
// its own: a failed attempt must not give the nonce back.
func (s *Service) spendNonce(ctx context.Context, nonce string) error {
	var created int64
	err := s.db.QueryRowWrite(ctx, `DELETE FROM admin_register_nonces WHERE nonce = $1 RETURNING created_ts`, nonce).Scan(&created)
	if errors.Is(err, sql.ErrNoRows) {
		return httputil.Errorf(http.StatusBadRequest, "M_UNKNOWN", "unrecognised nonce")
	}
	if err != nil {
		return fmt.Errorf("spend registration nonce: %w", err)
	}
	if s.now().Sub(time.UnixMilli(created)) > nonceLifetime {
		return httputil.Errorf(http.StatusBadRequest, "M_UNKNOWN", "unrecognised nonce")
	}
	return nil
}
