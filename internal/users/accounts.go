package users

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"math/big"

	"praxis/internal/storage"
)

// ErrInvalidUsername is returned for a localpart that new accounts may not use.
var ErrInvalidUsername = errors.New("invalid username")

// maxUserIDLength is the spec's limit on a whole user ID.
const maxUserIDLength = 255

// ValidateLocalpart checks a localpart requested for a new account: the
// spec's user ID grammar (a-z 0-9 . _ = - / +), no leading underscore
// (reserved for bridges), not purely numeric (the random form we hand out
// to nobody, kept free for guests), and the whole ID within 255 bytes.
func (s *Service) ValidateLocalpart(localpart string) error {
	if localpart == "" {
		return fmt.Errorf("%w: must not be empty", ErrInvalidUsername)
	}
	numeric := true
	for _, c := range localpart {
		switch {
		case c >= 'a' && c <= 'z', c == '.', c == '_', c == '=', c == '-', c == '/', c == '+':
			numeric = false
		case c >= '0' && c <= '9':
		case c >= 'A' && c <= 'Z':
			return fmt.Errorf("%w: user IDs may not contain upper-case letters", ErrInvalidUsername)
		default:
			return fmt.Errorf("%w: user IDs may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+'", ErrInvalidUsername)
		}
	}
	if localpart[0] == '_' {
		return fmt.Errorf("%w: user IDs may not start with '_'", ErrInvalidUsername)
	}
	if numeric {
		return fmt.Errorf("%w: user IDs may not be purely numeric", ErrInvalidUsername)
	}
	if len(s.UserID(localpart)) > maxUserIDLength {
		return fmt.Errorf("%w: user ID is longer than %d bytes", ErrInvalidUsername, maxUserIDLength)
	}
	return nil
}

// RandomLocalpart returns a localpart for a registration that named none.
func RandomLocalpart() string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 12)
	for i := range b {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(letters))))
		if err != nil {
			panic("crypto/rand failed: " + err.Error())
		}
		b[i] = letters[n.Int64()]
	}
	b[0] = 'u' // never purely numeric, never '_'
	return string(b)
}

// LocalpartAvailable reports whether no account (active or deactivated)
// uses localpart: a deactivated user's ID is never handed out again.
func (s *Service) LocalpartAvailable(ctx context.Context, localpart string) (bool, error) {
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 FROM accounts WHERE localpart = $1`, localpart).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("check localpart: %w", err)
	}
	return false, nil
}

// Registration is a completed POST /register.
type Registration struct {
	Localpart   string
	Password    string
	Kind        string
	DeviceID    string
	DisplayName string // initial device display name
	IP          string
	// InhibitLogin creates the account without a device or token.
	InhibitLogin bool
	WithRefresh  bool
	// UIASession is the session whose stages authorised the registration;
	// a registration token it reserved is counted as used.
	UIASession string
}

// Register creates the account, counts its registration token and opens
// its first session, all in one transaction: a failure leaves nothing.
func (s *Service) Register(ctx context.Context, reg Registration) (*Account, *Session, error) {
	var hash sql.NullString
	if reg.Password != "" {
		h, err := s.HashPassword(reg.Password)
		if err != nil {
			return nil, nil, err
		}
		hash = sql.NullString{String: h, Valid: true}
	}
	if reg.Kind == "" {
		reg.Kind = "user"
	}
	a := &Account{UserID: s.UserID(reg.Localpart), Localpart: reg.Localpart, CreatedTS: s.now().UnixMilli(), Kind: reg.Kind}
	var sess *Session
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		_, err := tx.Exec(ctx, `INSERT INTO accounts (user_id, localpart, password_hash, created_ts, is_admin, kind) VALUES ($1, $2, $3, $4, FALSE, $5)`,
			a.UserID, a.Localpart, hash, a.CreatedTS, a.Kind)
		if storage.IsUniqueViolation(err) {
			return ErrUserInUse
		}
		if err != nil {
			return fmt.Errorf("create account %s: %w", a.UserID, err)
		}
		if reg.UIASession != "" {
			if err := s.finishUIASession(ctx, tx, reg.UIASession, true); err != nil {
				return err
			}
		}
		if reg.InhibitLogin {
			return nil
		}
		sess, err = s.createSession(ctx, tx, a.UserID, reg.DeviceID, reg.DisplayName, reg.IP, reg.WithRefresh)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return a, sess, nil
}

// Deactivate marks userID deactivated and removes its password, tokens,
// devices and pushers. The account row stays so that the user ID is never
// reused. Leaving rooms is the caller's business (the room service).
func (s *Service) Deactivate(ctx context.Context, userID string) error {
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		res, err := tx.Exec(ctx, `UPDATE accounts SET deactivated = TRUE, password_hash = NULL WHERE user_id = $1`, userID)
		if err != nil {
			return fmt.Errorf("deactivate %s: %w", userID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		ids, err := deviceIDs(ctx, tx, userID)
		if err != nil {
			return err
		}
		if err := s.deleteDevices(ctx, tx, userID, ids); err != nil {
			return err
		}
		// Tokens without a device row (should not exist) go too.
		for _, table := range []string{"access_tokens", "refresh_tokens", "pushers"} {
			if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE user_id = $1`, userID); err != nil {
				return fmt.Errorf("deactivate %s: clear %s: %w", userID, table, err)
			}
		}
		return nil
	})
}

// DeleteOtherDevices deletes every device of userID except keep ("" keeps
// none): logout/all and a password change with logout_devices.
func (s *Service) DeleteOtherDevices(ctx context.Context, userID, keep string) error {
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		return s.deleteOtherDevices(ctx, tx, userID, keep)
	})
}

func (s *Service) deleteOtherDevices(ctx context.Context, tx *storage.DB, userID, keep string) error {
	ids, err := deviceIDs(ctx, tx, userID)
	if err != nil {
		return err
	}
	var del []string
	for _, id := range ids {
		if id != keep {
			del = append(del, id)
		}
	}
	return s.deleteDevices(ctx, tx, userID, del)
}

// ChangePassword sets a new password and, with logoutOthers, deletes every
// other device of the user in the same transaction.
func (s *Service) ChangePassword(ctx context.Context, userID, password, keepDevice string, logoutOthers bool) error {
	h, err := s.HashPassword(password)
	if err != nil {
		return err
	}
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		res, err := tx.Exec(ctx, `UPDATE accounts SET password_hash = $1 WHERE user_id = $2`, h, userID)
		if err != nil {
			return fmt.Errorf("set password of %s: %w", userID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		if !logoutOthers {
			return nil
		}
		return s.deleteOtherDevices(ctx, tx, userID, keepDevice)
	})
}

func deviceIDs(ctx context.Context, db *storage.DB, userID string) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT device_id FROM devices WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("list devices of %s: %w", userID, err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// Profile is a user's public profile.
type Profile struct {
	DisplayName string
	AvatarURL   string
}

// Profile returns userID's profile; ErrNotFound for unknown users.
func (s *Service) Profile(ctx context.Context, userID string) (*Profile, error) {
	var dn, av sql.NullString
	err := s.db.QueryRow(ctx, `SELECT displayname, avatar_url FROM accounts WHERE user_id = $1`, userID).Scan(&dn, &av)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read profile of %s: %w", userID, err)
	}
	return &Profile{DisplayName: dn.String, AvatarURL: av.String}, nil
}

// SetDisplayName sets (or with "" clears) userID's display name and
// returns the whole profile after the change.
func (s *Service) SetDisplayName(ctx context.Context, userID, name string) (*Profile, error) {
	return s.setProfileField(ctx, userID, "displayname", name)
}

// SetAvatarURL sets (or with "" clears) userID's avatar and returns the
// whole profile after the change.
func (s *Service) SetAvatarURL(ctx context.Context, userID, url string) (*Profile, error) {
	return s.setProfileField(ctx, userID, "avatar_url", url)
}

func (s *Service) setProfileField(ctx context.Context, userID, column, value string) (*Profile, error) {
	var v any
	if value != "" {
		v = value
	}
	var dn, av sql.NullString
	// column is one of two constants above, never user input.
	err := s.db.QueryRowWrite(ctx, `UPDATE accounts SET `+column+` = $1 WHERE user_id = $2 RETURNING displayname, avatar_url`, v, userID).Scan(&dn, &av)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("set %s of %s: %w", column, userID, err)
	}
	return &Profile{DisplayName: dn.String, AvatarURL: av.String}, nil
}
