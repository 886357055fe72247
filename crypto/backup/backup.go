// Package backup is server-side key backup (/room_keys): the encrypted
// Megolm session keys a client chooses to store with its recovery key.
// The server sees only ciphertext (session_data) and the few plain fields
// the spec needs to keep the better of two copies of a session.
package backup

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"praxis/internal/httputil"
	"praxis/internal/storage"
)

// Service owns backup_versions and backup_keys.
type Service struct {
	db *storage.DB
}

// New returns the key backup service.
func New(db *storage.DB) *Service { return &Service{db: db} }

// Version is a backup version as served by GET /room_keys/version.
type Version struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int             `json:"count"`
	ETag      string          `json:"etag"`
	Version   string          `json:"version"`
}

// KeyData is one backed-up session (the spec's KeyBackupData).
type KeyData struct {
	FirstMessageIndex int64           `json:"first_message_index"`
	ForwardedCount    int64           `json:"forwarded_count"`
	IsVerified        bool            `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// Validate checks the fields the server relies on.
func (k *KeyData) Validate() error {
	if k.FirstMessageIndex < 0 || k.ForwardedCount < 0 {
		return httputil.InvalidParam("first_message_index and forwarded_count must not be negative")
	}
	if len(k.SessionData) == 0 || k.SessionData[0] != '{' {
		return httputil.BadJSON("session_data must be an object")
	}
	return nil
}

// Counts is the answer to a key upload or deletion.
type Counts struct {
	ETag  string `json:"etag"`
	Count int    `json:"count"`
}

// Keys maps room ID → session ID → key.
type Keys map[string]map[string]KeyData

var errNoVersion = httputil.NotFound("unknown backup version")

func parseVersion(v string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, errNoVersion
	}
	return n, nil
}

func validAuthData(algorithm string, authData json.RawMessage) error {
	if algorithm == "" {
		return httputil.MissingParam("missing algorithm")
	}
	if len(authData) == 0 || authData[0] != '{' || !json.Valid(authData) {
		return httputil.BadJSON("auth_data must be an object")
	}
	return nil
}

// CreateVersion creates a new backup version, which becomes the current
// one, and returns its number.
func (s *Service) CreateVersion(ctx context.Context, userID, algorithm string, authData json.RawMessage) (string, error) {
	if err := validAuthData(algorithm, authData); err != nil {
		return "", err
	}
	var v int64
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		// Deleted versions keep their rows, so numbers are never reused.
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM backup_versions WHERE user_id = $1`, userID).Scan(&v); err != nil {
			return fmt.Errorf("next backup version of %s: %w", userID, err)
		}
		_, err := tx.Exec(ctx, `INSERT INTO backup_versions (user_id, version, algorithm, auth_data, etag) VALUES ($1, $2, $3, $4, 0)`,
			userID, v, algorithm, string(authData))
		if err != nil {
			return fmt.Errorf("create backup version of %s: %w", userID, err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	slog.InfoContext(ctx, "key backup version created", "user_id", userID, "version", v)
	return strconv.FormatInt(v, 10), nil
}

// current returns the number of the user's current (newest live) version,
// or 0.
func current(ctx context.Context, db *storage.DB, userID string) (int64, error) {
	var v sql.NullInt64
	if err := db.QueryRow(ctx, `SELECT MAX(version) FROM backup_versions WHERE user_id = $1 AND deleted = FALSE`, userID).Scan(&v); err != nil {
		return 0, fmt.Errorf("read current backup version of %s: %w", userID, err)
	}
	return v.Int64, nil
}

// GetVersion returns a version; "" means the current one.
func (s *Service) GetVersion(ctx context.Context, userID, version string) (*Version, error) {
	var n int64
	if version == "" {
		var err error
		if n, err = current(ctx, s.db, userID); err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, httputil.NotFound("no current backup version")
		}
	} else {
		var err error
		if n, err = parseVersion(version); err != nil {
			return nil, err
		}
	}
	var out Version
	var auth string
	var etag int64
	err := s.db.QueryRow(ctx, `SELECT algorithm, auth_data, etag FROM backup_versions WHERE user_id = $1 AND version = $2 AND deleted = FALSE`, userID, n).
		Scan(&out.Algorithm, &auth, &etag)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errNoVersion
	}
	if err != nil {
		return nil, fmt.Errorf("read backup version of %s: %w", userID, err)
	}
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM backup_keys WHERE user_id = $1 AND version = $2`, userID, n).Scan(&out.Count); err != nil {
		return nil, fmt.Errorf("count backup keys of %s: %w", userID, err)
	}
	out.AuthData = json.RawMessage(auth)
	out.ETag = strconv.FormatInt(etag, 10)
	out.Version = strconv.FormatInt(n, 10)
	return &out, nil
}

// UpdateVersion replaces a version's auth_data. The algorithm cannot
// change: keys already stored were encrypted for it.
func (s *Service) UpdateVersion(ctx context.Context, userID, version, bodyVersion, algorithm string, authData json.RawMessage) error {
	n, err := parseVersion(version)
	if err != nil {
		return err
	}
	if bodyVersion != "" && bodyVersion != version {
		return httputil.InvalidParam("version in the body does not match the version in the path")
	}
	if err := validAuthData(algorithm, authData); err != nil {
		return err
	}
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		var alg string
		err := tx.QueryRow(ctx, `SELECT algorithm FROM backup_versions WHERE user_id = $1 AND version = $2 AND deleted = FALSE`, userID, n).Scan(&alg)
		if errors.Is(err, sql.ErrNoRows) {
			return errNoVersion
		}
		if err != nil {
			return fmt.Errorf("read backup version of %s: %w", userID, err)
		}
		if alg != algorithm {
			return httputil.InvalidParam("the algorithm of a backup version cannot change")
		}
		_, err = tx.Exec(ctx, `UPDATE backup_versions SET auth_data = $1 WHERE user_id = $2 AND version = $3`, string(authData), userID, n)
		return err
	})
}

// DeleteVersion deletes a version and all its keys.
func (s *Service) DeleteVersion(ctx context.Context, userID, version string) error {
	n, err := parseVersion(version)
	if err != nil {
		return err
	}
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		res, err := tx.Exec(ctx, `UPDATE backup_versions SET deleted = TRUE WHERE user_id = $1 AND version = $2 AND deleted = FALSE`, userID, n)
		if err != nil {
			return fmt.Errorf("delete backup version of %s: %w", userID, err)
		}
		if k, _ := res.RowsAffected(); k == 0 {
			return errNoVersion
		}
		if _, err = tx.Exec(ctx, `DELETE FROM backup_keys WHERE user_id = $1 AND version = $2`, userID, n); err != nil {
			return fmt.Errorf("delete keys of backup version of %s: %w", userID, err)
		}
		tx.AfterCommit(func() { slog.InfoContext(ctx, "key backup version deleted", "user_id", userID, "version", n) })
		return nil
	})
}

// wrongVersion is the spec's answer to uploading into a version that is
// not the current one.
func wrongVersion(cur int64) error {
	e := httputil.Errorf(http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION", "backup version is not the current one")
	e.Extra = map[string]any{"current_version": strconv.FormatInt(cur, 10)}
	return e
}

// better reports whether a new copy of a session should replace the old
// one (spec, "Server-side key backups"): a verified copy beats an
// unverified one, then a lower first_message_index (it decrypts more),
// then a lower forwarded_count.
func better(newK, old KeyData) bool {
	if newK.IsVerified != old.IsVerified {
		return newK.IsVerified
	}
	if newK.FirstMessageIndex != old.FirstMessageIndex {
		return newK.FirstMessageIndex < old.FirstMessageIndex
	}
	return newK.ForwardedCount < old.ForwardedCount
}

// PutKeys stores keys into the current version, keeping the better copy of
// each session.
func (s *Service) PutKeys(ctx context.Context, userID, version string, keys Keys) (*Counts, error) {
	n, err := parseVersion(version)
	if err != nil {
		return nil, err
	}
	for _, sessions := range keys {
		for _, k := range sessions {
			if err := k.Validate(); err != nil {
				return nil, err
			}
		}
	}
	var out *Counts
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		cur, err := current(ctx, tx, userID)
		if err != nil {
			return err
		}
		if cur == 0 {
			return errNoVersion
		}
		if cur != n {
			return wrongVersion(cur)
		}
		changed := false
		for roomID, sessions := range keys {
			for sessionID, k := range sessions {
				var old KeyData
				var data string
				err := tx.QueryRow(ctx, `SELECT first_message_index, forwarded_count, is_verified, session_data FROM backup_keys
					WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4`, userID, n, roomID, sessionID).
					Scan(&old.FirstMessageIndex, &old.ForwardedCount, &old.IsVerified, &data)
				switch {
				case errors.Is(err, sql.ErrNoRows):
					_, err = tx.Exec(ctx, `INSERT INTO backup_keys (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
						VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, userID, n, roomID, sessionID, k.FirstMessageIndex, k.ForwardedCount, k.IsVerified, string(k.SessionData))
				case err != nil:
				case better(k, old):
					_, err = tx.Exec(ctx, `UPDATE backup_keys SET first_message_index = $1, forwarded_count = $2, is_verified = $3, session_data = $4
						WHERE user_id = $5 AND version = $6 AND room_id = $7 AND session_id = $8`,
						k.FirstMessageIndex, k.ForwardedCount, k.IsVerified, string(k.SessionData), userID, n, roomID, sessionID)
				default:
					continue
				}
				if err != nil {
					return fmt.Errorf("store backup key of %s: %w", userID, err)
				}
				changed = true
			}
		}
		out, err = bump(ctx, tx, userID, n, changed)
		return err
	})
	return out, err
}

// bump advances the version's etag if its keys changed and returns the
// etag and key count.
func bump(ctx context.Context, tx *storage.DB, userID string, n int64, changed bool) (*Counts, error) {
	if changed {
		if _, err := tx.Exec(ctx, `UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2`, userID, n); err != nil {
			return nil, fmt.Errorf("bump backup etag of %s: %w", userID, err)
		}
	}
	var etag int64
	var c Counts
	if err := tx.QueryRow(ctx, `SELECT etag FROM backup_versions WHERE user_id = $1 AND version = $2`, userID, n).Scan(&etag); err != nil {
		return nil, fmt.Errorf("read backup etag of %s: %w", userID, err)
	}
	if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM backup_keys WHERE user_id = $1 AND version = $2`, userID, n).Scan(&c.Count); err != nil {
		return nil, fmt.Errorf("count backup keys of %s: %w", userID, err)
	}
	c.ETag = strconv.FormatInt(etag, 10)
	return &c, nil
}

// liveVersion checks that a version exists and is not deleted.
func liveVersion(ctx context.Context, db *storage.DB, userID string, n int64) error {
	var one int
	err := db.QueryRow(ctx, `SELECT 1 FROM backup_versions WHERE user_id = $1 AND version = $2 AND deleted = FALSE`, userID, n).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return errNoVersion
	}
	if err != nil {
		return fmt.Errorf("read backup version of %s: %w", userID, err)
	}
	return nil
}

// GetKeys returns the keys of a version, optionally limited to one room
// or one session ("" = all).
func (s *Service) GetKeys(ctx context.Context, userID, version, roomID, sessionID string) (Keys, error) {
	n, err := parseVersion(version)
	if err != nil {
		return nil, err
	}
	if err := liveVersion(ctx, s.db, userID, n); err != nil {
		return nil, err
	}
	q := `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data FROM backup_keys WHERE user_id = $1 AND version = $2`
	args := []any{userID, n}
	if roomID != "" {
		q += ` AND room_id = $3`
		args = append(args, roomID)
		if sessionID != "" {
			q += ` AND session_id = $4`
			args = append(args, sessionID)
		}
	}
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read backup keys of %s: %w", userID, err)
	}
	defer rows.Close()
	out := Keys{}
	for rows.Next() {
		var room, session, data string
		var k KeyData
		if err := rows.Scan(&room, &session, &k.FirstMessageIndex, &k.ForwardedCount, &k.IsVerified, &data); err != nil {
			return nil, err
		}
		k.SessionData = json.RawMessage(data)
		if out[room] == nil {
			out[room] = map[string]KeyData{}
		}
		out[room][session] = k
	}
	return out, rows.Err()
}

// DeleteKeys deletes keys of a version: all, one room's or one session.
func (s *Service) DeleteKeys(ctx context.Context, userID, version, roomID, sessionID string) (*Counts, error) {
	n, err := parseVersion(version)
	if err != nil {
		return nil, err
	}
	var out *Counts
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		if err := liveVersion(ctx, tx, userID, n); err != nil {
			return err
		}
		q := `DELETE FROM backup_keys WHERE user_id = $1 AND version = $2`
		args := []any{userID, n}
		if roomID != "" {
			q += ` AND room_id = $3`
			args = append(args, roomID)
			if sessionID != "" {
				q += ` AND session_id = $4`
				args = append(args, sessionID)
			}
		}
		res, err := tx.Exec(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("delete backup keys of %s: %w", userID, err)
		}
		k, _ := res.RowsAffected()
		out, err = bump(ctx, tx, userID, n, k > 0)
		return err
	})
	return out, err
}

// DeleteDevices is a users.DeviceHook: device deletion (logout, logout
// everywhere, a password change) keeps backups, but when the transaction
// deactivates the account every backup of it is deleted — nobody can
// restore it any more, and the practice keeps no ciphertext it has no use
// for.
func (s *Service) DeleteDevices(ctx context.Context, tx *storage.DB, userID string, _ []string) error {
	var deactivated bool
	err := tx.QueryRow(ctx, `SELECT deactivated FROM accounts WHERE user_id = $1`, userID).Scan(&deactivated)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !deactivated) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read account state of %s: %w", userID, err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM backup_keys WHERE user_id = $1`, userID); err != nil {
		return fmt.Errorf("delete backups of %s: %w", userID, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE backup_versions SET deleted = TRUE, auth_data = '{}' WHERE user_id = $1`, userID); err != nil {
		return fmt.Errorf("delete backup versions of %s: %w", userID, err)
	}
	return nil
}
