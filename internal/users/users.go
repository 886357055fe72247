// Package users owns accounts, devices, access and refresh tokens,
// user-interactive auth sessions, registration tokens, profiles, account
// data (with room tags), filters, push rules, pushers and presence.
//
// Everything a client's next request may need lives in the database, never
// only in memory: a UIA session started on one process is completed on
// another. Account data writes, push rule changes included (as the
// m.push_rules entry), take a position on the global stream so /sync sees
// them in order.
package users

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"praxis/internal/storage"
	"praxis/internal/streams"
)

// Errors callers map to Matrix error codes.
var (
	ErrUserInUse    = errors.New("user ID already taken")
	ErrNotFound     = errors.New("not found")
	ErrBadPassword  = errors.New("wrong password")
	ErrDeactivated  = errors.New("account deactivated")
	ErrUnknownToken = errors.New("unknown or expired token")
	ErrTokenExpired = errors.New("access token expired")
)

// Device is an authenticated session: what a handler knows about its caller.
type Device struct {
	UserID   string
	DeviceID string
	IsAdmin  bool
	// Kind is the account kind (user, staff, patient, service).
	Kind string
}

// Account is a user account.
type Account struct {
	UserID      string
	Localpart   string
	CreatedTS   int64
	IsAdmin     bool
	Deactivated bool
	Kind        string
	DisplayName string
	AvatarURL   string
}

// Service is the accounts and devices store.
type Service struct {
	db         *storage.DB
	serverName string
	now        func() time.Time
	// bcryptCost is lowered in tests and benchmarks only.
	bcryptCost int

	deviceHooks []DeviceHook
	// notifier wakes /sync after account data changes; nil in store tests.
	notifier *streams.Notifier
}

// New returns a users service for serverName.
func New(db *storage.DB, serverName string) *Service {
	return &Service{db: db, serverName: serverName, now: time.Now, bcryptCost: bcrypt.DefaultCost}
}

// SetNotifier makes account data writes wake waiting /sync requests.
func (s *Service) SetNotifier(n *streams.Notifier) { s.notifier = n }

// SetClock replaces the time source (tests).
func (s *Service) SetClock(now func() time.Time) { s.now = now }

// SetBcryptCost sets the password hashing cost (tests use bcrypt.MinCost).
func (s *Service) SetBcryptCost(cost int) { s.bcryptCost = cost }

// ServerName is the server part of local user IDs.
func (s *Service) ServerName() string { return s.serverName }

// UserID builds the full user ID of a local localpart.
func (s *Service) UserID(localpart string) string {
	return "@" + localpart + ":" + s.serverName
}

// IsLocal reports whether userID belongs to this server.
func (s *Service) IsLocal(userID string) bool {
	return strings.HasSuffix(userID, ":"+s.serverName)
}

// HashToken returns the stored form of a token.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// RandomString returns n random bytes, URL-safe base64 encoded.
func RandomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// HashPassword hashes a password with bcrypt.
func (s *Service) HashPassword(password string) (string, error) {
	// bcrypt ignores bytes past 72; hash a digest of longer passwords
	// rather than silently truncating them.
	p := []byte(password)
	if len(p) > 72 {
		sum := sha256.Sum256(p)
		p = []byte(base64.StdEncoding.EncodeToString(sum[:]))
	}
	h, err := bcrypt.GenerateFromPassword(p, s.bcryptCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

func checkPassword(hash, password string) bool {
	p := []byte(password)
	if len(p) > 72 {
		sum := sha256.Sum256(p)
		p = []byte(base64.StdEncoding.EncodeToString(sum[:]))
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), p) == nil
}

// CreateAccount creates a local account. An empty password creates an
// account that cannot log in with a password.
func (s *Service) CreateAccount(ctx context.Context, localpart, password string, admin bool, kind string) (*Account, error) {
	var hash sql.NullString
	if password != "" {
		h, err := s.HashPassword(password)
		if err != nil {
			return nil, err
		}
		hash = sql.NullString{String: h, Valid: true}
	}
	if kind == "" {
		kind = "user"
	}
	a := &Account{UserID: s.UserID(localpart), Localpart: localpart, CreatedTS: s.now().UnixMilli(), IsAdmin: admin, Kind: kind}
	_, err := s.db.Exec(ctx, `INSERT INTO accounts (user_id, localpart, password_hash, created_ts, is_admin, kind) VALUES ($1, $2, $3, $4, $5, $6)`,
		a.UserID, localpart, hash, a.CreatedTS, admin, kind)
	if storage.IsUniqueViolation(err) {
		return nil, ErrUserInUse
	}
	if err != nil {
		return nil, fmt.Errorf("create account %s: %w", a.UserID, err)
	}
	return a, nil
}

// Account returns the account of userID.
func (s *Service) Account(ctx context.Context, userID string) (*Account, error) {
	var a Account
	var dn, av sql.NullString
	err := s.db.QueryRow(ctx, `SELECT user_id, localpart, created_ts, is_admin, deactivated, kind, displayname, avatar_url FROM accounts WHERE user_id = $1`, userID).
		Scan(&a.UserID, &a.Localpart, &a.CreatedTS, &a.IsAdmin, &a.Deactivated, &a.Kind, &dn, &av)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read account %s: %w", userID, err)
	}
	a.DisplayName, a.AvatarURL = dn.String, av.String
	return &a, nil
}

// CheckPassword verifies userID's password.
func (s *Service) CheckPassword(ctx context.Context, userID, password string) error {
	var hash sql.NullString
	var deactivated bool
	err := s.db.QueryRow(ctx, `SELECT password_hash, deactivated FROM accounts WHERE user_id = $1`, userID).Scan(&hash, &deactivated)
	if errors.Is(err, sql.ErrNoRows) {
		// Spend the same time as a real check so that response timing
		// does not reveal which user IDs exist.
		checkPassword(dummyHash, password)
		return ErrBadPassword
	}
	if err != nil {
		return fmt.Errorf("read password of %s: %w", userID, err)
	}
	if !hash.Valid || !checkPassword(hash.String, password) {
		return ErrBadPassword
	}
	if deactivated {
		return ErrDeactivated
	}
	return nil
}

// dummyHash is a bcrypt hash at the default cost (of a string nobody
// types), checked against for unknown users so that a login for an
// unknown user takes as long as one with a wrong password. A literal, not
// computed at start-up: computing it cost every start 60 ms.
const dummyHash = "$2a$10$HkqUNsZoOUbk/wHxRGUOsO0fBFpdfqnM8UYmKHCg/2Q8jxYjpeTdW"

// SetPassword replaces userID's password.
func (s *Service) SetPassword(ctx context.Context, userID, password string) error {
	h, err := s.HashPassword(password)
	if err != nil {
		return err
	}
	res, err := s.db.Exec(ctx, `UPDATE accounts SET password_hash = $1 WHERE user_id = $2`, h, userID)
	if err != nil {
		return fmt.Errorf("set password of %s: %w", userID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// Session is a freshly issued login.
type Session struct {
	UserID       string
	DeviceID     string
	AccessToken  string
	RefreshToken string
	// ExpiresInMS is 0 for tokens that do not expire.
	ExpiresInMS int64
}

// AccessTokenLifetime applies to access tokens issued with a refresh token.
const AccessTokenLifetime = 30 * time.Minute

// CreateSession creates (or reuses) deviceID for userID and issues an
// access token. An empty deviceID creates a new device.
func (s *Service) CreateSession(ctx context.Context, userID, deviceID, displayName, ip string, withRefresh bool) (*Session, error) {
	return s.createSession(ctx, s.db, userID, deviceID, displayName, ip, withRefresh)
}

// createSession is CreateSession inside db, which may be a transaction.
func (s *Service) createSession(ctx context.Context, db *storage.DB, userID, deviceID, displayName, ip string, withRefresh bool) (*Session, error) {
	if deviceID == "" {
		deviceID = strings.ToUpper(RandomString(8))[:10]
	}
	now := s.now().UnixMilli()
	sess := &Session{UserID: userID, DeviceID: deviceID, AccessToken: "syt_" + RandomString(32)}
	err := db.Transact(ctx, func(tx *storage.DB) error {
		var dn any
		if displayName != "" {
			dn = displayName
		}
		_, err := tx.Exec(ctx, `INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip) VALUES ($1, $2, $3, $4, $4, $5)
			ON CONFLICT (user_id, device_id) DO UPDATE SET last_seen_ts = $4, last_seen_ip = $5`, userID, deviceID, dn, now, ip)
		if err != nil {
			return fmt.Errorf("upsert device: %w", err)
		}
		var expires int64
		var refreshHash any
		if withRefresh {
			sess.RefreshToken = "syr_" + RandomString(32)
			sess.ExpiresInMS = AccessTokenLifetime.Milliseconds()
			expires = now + sess.ExpiresInMS
			refreshHash = HashToken(sess.RefreshToken)
			if _, err := tx.Exec(ctx, `INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts) VALUES ($1, $2, $3, $4)`,
				refreshHash, userID, deviceID, now); err != nil {
				return fmt.Errorf("store refresh token: %w", err)
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts, refresh_hash) VALUES ($1, $2, $3, $4, $5, $6)`,
			HashToken(sess.AccessToken), userID, deviceID, now, expires, refreshHash)
		if err != nil {
			return fmt.Errorf("store access token: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sess, nil
}

// Authenticate resolves an access token to its device.
func (s *Service) Authenticate(ctx context.Context, token string) (*Device, error) {
	var d Device
	var expires int64
	var deactivated bool
	var lastSeen sql.NullInt64
	err := s.db.QueryRow(ctx, `SELECT t.user_id, t.device_id, t.expires_ts, a.is_admin, a.deactivated, a.kind, d.last_seen_ts
		FROM access_tokens t JOIN accounts a ON a.user_id = t.user_id
		LEFT JOIN devices d ON d.user_id = t.user_id AND d.device_id = t.device_id
		WHERE t.token_hash = $1`, HashToken(token)).
		Scan(&d.UserID, &d.DeviceID, &expires, &d.IsAdmin, &deactivated, &d.Kind, &lastSeen)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrUnknownToken
	}
	if err != nil {
		return nil, fmt.Errorf("look up access token: %w", err)
	}
	if deactivated {
		return nil, ErrUnknownToken
	}
	now := s.now().UnixMilli()
	if expires != 0 && now >= expires {
		return nil, ErrTokenExpired
	}
	if lastSeen.Valid && now-lastSeen.Int64 > lastSeenResolution.Milliseconds() {
		s.touchDevice(ctx, d.UserID, d.DeviceID, now)
	}
	return &d, nil
}

// lastSeenResolution bounds how often a device's last_seen_ts is written:
// clients (Element's session manager) flag devices unseen for months as
// inactive, so it must move, but not with a write on every request.
const lastSeenResolution = 5 * time.Minute

func (s *Service) touchDevice(ctx context.Context, userID, deviceID string, now int64) {
	_, err := s.db.Exec(ctx, `UPDATE devices SET last_seen_ts = $1 WHERE user_id = $2 AND device_id = $3 AND last_seen_ts < $4`,
		now, userID, deviceID, now-lastSeenResolution.Milliseconds())
	if err != nil && ctx.Err() == nil {
		slog.WarnContext(ctx, "update device last seen", "user_id", userID, "device_id", deviceID, "err", err)
	}
}

// Refresh exchanges a refresh token for a new access and refresh token
// pair. A refresh token works once.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (*Session, error) {
	now := s.now().UnixMilli()
	sess := &Session{AccessToken: "syt_" + RandomString(32), RefreshToken: "syr_" + RandomString(32), ExpiresInMS: AccessTokenLifetime.Milliseconds()}
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		old := HashToken(refreshToken)
		err := tx.QueryRow(ctx, `UPDATE refresh_tokens SET used = TRUE WHERE token_hash = $1 AND used = FALSE RETURNING user_id, device_id`, old).
			Scan(&sess.UserID, &sess.DeviceID)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrUnknownToken
		}
		if err != nil {
			return fmt.Errorf("use refresh token: %w", err)
		}
		// The access tokens issued from the old refresh token end now.
		if _, err := tx.Exec(ctx, `DELETE FROM access_tokens WHERE refresh_hash = $1`, old); err != nil {
			return err
		}
		nh := HashToken(sess.RefreshToken)
		if _, err := tx.Exec(ctx, `INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts) VALUES ($1, $2, $3, $4)`,
			nh, sess.UserID, sess.DeviceID, now); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts, refresh_hash) VALUES ($1, $2, $3, $4, $5, $6)`,
			HashToken(sess.AccessToken), sess.UserID, sess.DeviceID, now, now+sess.ExpiresInMS, nh)
		return err
	})
	if err != nil {
		return nil, err
	}
	return sess, nil
}

// DeleteDevices removes devices and every token they hold. The onDelete
// hooks (e.g. the key server dropping device keys) run in the same
// transaction.
func (s *Service) DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error {
	if len(deviceIDs) == 0 {
		return nil
	}
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		return s.deleteDevices(ctx, tx, userID, deviceIDs)
	})
}

// deleteDevices is DeleteDevices inside tx.
func (s *Service) deleteDevices(ctx context.Context, tx *storage.DB, userID string, deviceIDs []string) error {
	if len(deviceIDs) == 0 {
		return nil
	}
	for _, table := range []string{"access_tokens", "refresh_tokens", "devices"} {
		q, args := storage.In(`DELETE FROM `+table+` WHERE user_id = $1 AND device_id IN ($IN)`, 1, deviceIDs)
		if _, err := tx.Exec(ctx, q, append([]any{userID}, args...)...); err != nil {
			return fmt.Errorf("delete devices of %s from %s: %w", userID, table, err)
		}
	}
	// Pushers registered from a deleted device must stop too.
	q, args := storage.In(`DELETE FROM pushers WHERE user_id = $1 AND device_id IN ($IN)`, 1, deviceIDs)
	if _, err := tx.Exec(ctx, q, append([]any{userID}, args...)...); err != nil {
		return fmt.Errorf("delete pushers of %s: %w", userID, err)
	}
	for _, h := range s.deviceHooks {
		if err := h(ctx, tx, userID, deviceIDs); err != nil {
			return err
		}
	}
	return nil
}

// DeviceHook runs inside the transaction that deletes devices.
type DeviceHook func(ctx context.Context, tx *storage.DB, userID string, deviceIDs []string) error
