package users

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"praxis/internal/storage"
)

// This file holds the queries only the admin API needs (internal/admin):
// listing accounts and flipping flags an ordinary client cannot touch.

// WithTx returns a view of s whose every query and write runs inside tx,
// so an admin action and its audit row commit together. Methods that open
// their own transaction simply join tx.
func (s *Service) WithTx(tx *storage.DB) *Service {
	c := *s
	c.db = tx
	return &c
}

// AccountQuery selects accounts for the admin user list.
type AccountQuery struct {
	From, Limit int
	// UserID keeps accounts whose user ID contains it.
	UserID string
	// Name keeps accounts whose localpart or display name contains it
	// (case-insensitive); it takes precedence over UserID.
	Name string
	// Deactivated includes deactivated accounts.
	Deactivated bool
	// Admins, when set, keeps only admins (true) or only non-admins (false).
	Admins *bool
	// OrderBy is a column: name (default), displayname, admin,
	// deactivated, creation_ts, kind.
	OrderBy string
	// Backwards sorts descending.
	Backwards bool
}

var accountOrder = map[string]string{
	"":            "user_id",
	"name":        "user_id",
	"displayname": "displayname",
	"admin":       "is_admin",
	"is_guest":    "user_id", // there are no guests: every order is by name
	"deactivated": "deactivated",
	"creation_ts": "created_ts",
	"user_type":   "kind",
	"kind":        "kind",
}

// ValidAccountOrder reports whether ListAccounts can sort by key.
func ValidAccountOrder(key string) bool { _, ok := accountOrder[key]; return ok }

// escapeLike quotes the LIKE wildcards of s for use with ESCAPE '!'.
func escapeLike(s string) string {
	return strings.NewReplacer("!", "!!", "%", "!%", "_", "!_").Replace(s)
}

// ListAccounts returns one page of accounts and the number of accounts
// matching q across all pages.
func (s *Service) ListAccounts(ctx context.Context, q AccountQuery) ([]Account, int, error) {
	var where []string
	var args []any
	add := func(cond string, vals ...any) {
		for _, v := range vals {
			args = append(args, v)
			cond = strings.Replace(cond, "?", fmt.Sprintf("$%d", len(args)), 1)
		}
		where = append(where, cond)
	}
	switch {
	case q.Name != "":
		pat := "%" + escapeLike(strings.ToLower(q.Name)) + "%"
		add(`(LOWER(localpart) LIKE ? ESCAPE '!' OR LOWER(COALESCE(displayname, '')) LIKE ? ESCAPE '!')`, pat, pat)
	case q.UserID != "":
		add(`user_id LIKE ? ESCAPE '!'`, "%"+escapeLike(q.UserID)+"%")
	}
	if !q.Deactivated {
		add(`deactivated = ?`, false)
	}
	if q.Admins != nil {
		add(`is_admin = ?`, *q.Admins)
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	var total int
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM accounts`+cond, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count accounts: %w", err)
	}
	col, ok := accountOrder[q.OrderBy]
	if !ok {
		col = "user_id"
	}
	dir := "ASC"
	if q.Backwards {
		dir = "DESC"
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	// user_id breaks ties so that pages never overlap or skip.
	query := fmt.Sprintf(`SELECT user_id, localpart, created_ts, is_admin, deactivated, kind, displayname, avatar_url FROM accounts%s ORDER BY %s %s, user_id %s LIMIT $%d OFFSET $%d`,
		cond, col, dir, dir, len(args)+1, len(args)+2)
	rows, err := s.db.Query(ctx, query, append(args, q.Limit, q.From)...)
	if err != nil {
		return nil, 0, fmt.Errorf("list accounts: %w", err)
	}
	defer rows.Close()
	out := []Account{}
	for rows.Next() {
		var a Account
		var dn, av sql.NullString
		if err := rows.Scan(&a.UserID, &a.Localpart, &a.CreatedTS, &a.IsAdmin, &a.Deactivated, &a.Kind, &dn, &av); err != nil {
			return nil, 0, fmt.Errorf("list accounts: %w", err)
		}
		a.DisplayName, a.AvatarURL = dn.String, av.String
		out = append(out, a)
	}
	return out, total, rows.Err()
}

// SetAdmin grants or revokes server admin rights.
func (s *Service) SetAdmin(ctx context.Context, userID string, admin bool) error {
	return s.updateAccount(ctx, userID, `is_admin = $1`, admin)
}

// Reactivate clears the deactivated flag. The account has no devices left
// and needs a new password to log in again.
func (s *Service) Reactivate(ctx context.Context, userID string) error {
	return s.updateAccount(ctx, userID, `deactivated = $1`, false)
}

func (s *Service) updateAccount(ctx context.Context, userID, set string, v any) error {
	res, err := s.db.Exec(ctx, `UPDATE accounts SET `+set+` WHERE user_id = $2`, v, userID)
	if err != nil {
		return fmt.Errorf("update account %s: %w", userID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}
