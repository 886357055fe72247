package users

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"praxis/internal/storage"
)

// Registration token errors.
var (
	// ErrInvalidRegistrationToken: unknown, used up or expired.
	ErrInvalidRegistrationToken = errors.New("invalid registration token")
	// ErrTokenExists: CreateRegistrationToken with a token that exists.
	ErrTokenExists = errors.New("registration token already exists")
	// ErrInvalid wraps a bad argument (map it to M_INVALID_PARAM).
	ErrInvalid = errors.New("invalid argument")
)

// RegistrationToken gates registration when registration.requires_token is
// set. UsesAllowed nil means unlimited; ExpiryTime (ms since the epoch) nil
// means it never expires.
type RegistrationToken struct {
	Token       string
	UsesAllowed *int
	Pending     int
	Completed   int
	ExpiryTime  *int64
}

// maxRegistrationTokenLength follows the limit other servers use, so tokens
// move between deployments.
const maxRegistrationTokenLength = 64

func validRegistrationToken(tok string) bool {
	if tok == "" || len(tok) > maxRegistrationTokenLength {
		return false
	}
	for _, c := range tok {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '~', c == '-':
		default:
			return false
		}
	}
	return true
}

// CreateRegistrationToken stores t; an empty t.Token gets a random one.
// Pending and Completed are ignored (a new token has no uses).
func (s *Service) CreateRegistrationToken(ctx context.Context, t RegistrationToken) (*RegistrationToken, error) {
	if t.Token == "" {
		t.Token = RandomString(12)
	} else if !validRegistrationToken(t.Token) {
		return nil, fmt.Errorf("%w: token must be 1–%d characters of A-Z a-z 0-9 . _ ~ -", ErrInvalid, maxRegistrationTokenLength)
	}
	if t.UsesAllowed != nil && *t.UsesAllowed < 0 {
		return nil, fmt.Errorf("%w: uses_allowed must be a non-negative integer", ErrInvalid)
	}
	if t.ExpiryTime != nil && *t.ExpiryTime < s.now().UnixMilli() {
		return nil, fmt.Errorf("%w: expiry_time must not be in the past", ErrInvalid)
	}
	t.Pending, t.Completed = 0, 0
	_, err := s.db.Exec(ctx, `INSERT INTO registration_tokens (token, uses_allowed, pending, completed, expiry_time) VALUES ($1, $2, 0, 0, $3)`,
		t.Token, nullInt(t.UsesAllowed), nullInt64(t.ExpiryTime))
	if storage.IsUniqueViolation(err) {
		return nil, ErrTokenExists
	}
	if err != nil {
		return nil, fmt.Errorf("create registration token: %w", err)
	}
	return &t, nil
}

const regTokenColumns = `token, uses_allowed, pending, completed, expiry_time`

func scanRegToken(sc interface{ Scan(...any) error }) (*RegistrationToken, error) {
	var t RegistrationToken
	var uses, exp sql.NullInt64
	if err := sc.Scan(&t.Token, &uses, &t.Pending, &t.Completed, &exp); err != nil {
		return nil, err
	}
	if uses.Valid {
		n := int(uses.Int64)
		t.UsesAllowed = &n
	}
	if exp.Valid {
		t.ExpiryTime = &exp.Int64
	}
	return &t, nil
}

// RegistrationTokens lists tokens; valid non-nil keeps only the valid
// (true) or only the invalid (false) ones.
func (s *Service) RegistrationTokens(ctx context.Context, valid *bool) ([]RegistrationToken, error) {
	rows, err := s.db.Query(ctx, `SELECT `+regTokenColumns+` FROM registration_tokens ORDER BY token`)
	if err != nil {
		return nil, fmt.Errorf("list registration tokens: %w", err)
	}
	defer rows.Close()
	now := s.now().UnixMilli()
	out := []RegistrationToken{}
	for rows.Next() {
		t, err := scanRegToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list registration tokens: %w", err)
		}
		if valid != nil && t.Valid(now) != *valid {
			continue
		}
		out = append(out, *t)
	}
	return out, rows.Err()
}

// Valid reports whether the token can still be used at now (ms).
func (t *RegistrationToken) Valid(now int64) bool {
	if t.UsesAllowed != nil && t.Pending+t.Completed >= *t.UsesAllowed {
		return false
	}
	return t.ExpiryTime == nil || *t.ExpiryTime > now
}

// RegistrationToken returns one token; ErrNotFound when missing.
func (s *Service) RegistrationToken(ctx context.Context, token string) (*RegistrationToken, error) {
	t, err := scanRegToken(s.db.QueryRowWrite(ctx, `SELECT `+regTokenColumns+` FROM registration_tokens WHERE token = $1`, token))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read registration token: %w", err)
	}
	return t, nil
}

// RegistrationTokenValid answers GET /register/m.login.registration_token/validity.
func (s *Service) RegistrationTokenValid(ctx context.Context, token string) (bool, error) {
	t, err := s.RegistrationToken(ctx, token)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return t.Valid(s.now().UnixMilli()), nil
}

// UpdateRegistrationToken changes uses_allowed (when setUses; nil =
// unlimited) and expiry_time (when setExpiry; nil = never).
func (s *Service) UpdateRegistrationToken(ctx context.Context, token string, usesAllowed *int, setUses bool, expiry *int64, setExpiry bool) (*RegistrationToken, error) {
	if setUses && usesAllowed != nil && *usesAllowed < 0 {
		return nil, fmt.Errorf("%w: uses_allowed must be a non-negative integer", ErrInvalid)
	}
	if setExpiry && expiry != nil && *expiry < s.now().UnixMilli() {
		return nil, fmt.Errorf("%w: expiry_time must not be in the past", ErrInvalid)
	}
	var t *RegistrationToken
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		if setUses {
			if _, err := tx.Exec(ctx, `UPDATE registration_tokens SET uses_allowed = $1 WHERE token = $2`, nullInt(usesAllowed), token); err != nil {
				return fmt.Errorf("update registration token: %w", err)
			}
		}
		if setExpiry {
			if _, err := tx.Exec(ctx, `UPDATE registration_tokens SET expiry_time = $1 WHERE token = $2`, nullInt64(expiry), token); err != nil {
				return fmt.Errorf("update registration token: %w", err)
			}
		}
		var err error
		t, err = scanRegToken(tx.QueryRow(ctx, `SELECT `+regTokenColumns+` FROM registration_tokens WHERE token = $1`, token))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// DeleteRegistrationToken removes a token; ErrNotFound when missing.
func (s *Service) DeleteRegistrationToken(ctx context.Context, token string) error {
	res, err := s.db.Exec(ctx, `DELETE FROM registration_tokens WHERE token = $1`, token)
	if err != nil {
		return fmt.Errorf("delete registration token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

func nullInt(p *int) any {
	if p == nil {
		return nil
	}
	return int64(*p)
}

func nullInt64(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}
