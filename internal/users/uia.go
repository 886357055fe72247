package users

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"praxis/internal/storage"
)

// UIASessionLifetime bounds how long a client may take to complete the
// stages of one user-interactive authentication.
const UIASessionLifetime = 30 * time.Minute

// UIASession is the server side of a user-interactive authentication.
type UIASession struct {
	ID      string
	Purpose string
	// UserID is the authenticated user the session belongs to; empty for
	// registration.
	UserID    string
	Completed []string
	CreatedTS int64
}

// Done reports whether stage has been completed.
func (u *UIASession) Done(stage string) bool { return slices.Contains(u.Completed, stage) }

// CreateUIASession starts a session for purpose. Expired sessions are
// swept on the way, releasing the registration tokens they reserved.
func (s *Service) CreateUIASession(ctx context.Context, purpose, userID string) (*UIASession, error) {
	u := &UIASession{ID: RandomString(18), Purpose: purpose, UserID: userID, Completed: []string{}, CreatedTS: s.now().UnixMilli()}
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		if err := s.sweepUIASessions(ctx, tx); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO uia_sessions (session_id, purpose, user_id, completed, created_ts) VALUES ($1, $2, $3, '[]', $4)`,
			u.ID, purpose, userID, u.CreatedTS)
		if err != nil {
			return fmt.Errorf("create UIA session: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return u, nil
}

func (s *Service) sweepUIASessions(ctx context.Context, tx *storage.DB) error {
	cutoff := s.now().Add(-UIASessionLifetime).UnixMilli()
	rows, err := tx.Query(ctx, `SELECT session_id FROM uia_sessions WHERE created_ts < $1`, cutoff)
	if err != nil {
		return fmt.Errorf("find expired UIA sessions: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, id := range ids {
		if err := s.finishUIASession(ctx, tx, id, false); err != nil {
			return err
		}
	}
	return nil
}

// UIASession returns a live session; ErrNotFound when it is unknown or
// expired.
func (s *Service) UIASession(ctx context.Context, id string) (*UIASession, error) {
	return s.uiaSession(ctx, s.db, id)
}

func (s *Service) uiaSession(ctx context.Context, db *storage.DB, id string) (*UIASession, error) {
	u := &UIASession{ID: id}
	var completed string
	err := db.QueryRowWrite(ctx, `SELECT purpose, user_id, completed, created_ts FROM uia_sessions WHERE session_id = $1`, id).
		Scan(&u.Purpose, &u.UserID, &completed, &u.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read UIA session: %w", err)
	}
	if s.now().UnixMilli()-u.CreatedTS > UIASessionLifetime.Milliseconds() {
		return nil, ErrNotFound
	}
	if err := json.Unmarshal([]byte(completed), &u.Completed); err != nil {
		return nil, fmt.Errorf("decode UIA session: %w", err)
	}
	return u, nil
}

// CompleteUIAStage records stage as done and returns the updated session.
func (s *Service) CompleteUIAStage(ctx context.Context, id, stage string) (*UIASession, error) {
	var u *UIASession
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		var err error
		u, err = s.completeStage(ctx, tx, id, stage)
		return err
	})
	return u, err
}

func (s *Service) completeStage(ctx context.Context, tx *storage.DB, id, stage string) (*UIASession, error) {
	u, err := s.uiaSession(ctx, tx, id)
	if err != nil {
		return nil, err
	}
	if u.Done(stage) {
		return u, nil
	}
	u.Completed = append(u.Completed, stage)
	b, _ := json.Marshal(u.Completed)
	if _, err := tx.Exec(ctx, `UPDATE uia_sessions SET completed = $1 WHERE session_id = $2`, string(b), id); err != nil {
		return nil, fmt.Errorf("complete UIA stage: %w", err)
	}
	return u, nil
}

// UseRegistrationTokenStage completes the m.login.registration_token stage
// of a register session if token is valid, reserving one use of it
// (pending) until the registration completes or the session expires.
// It returns ErrNotFound for an unknown session and ErrInvalidRegistrationToken
// for a token that is unknown, used up or expired.
func (s *Service) UseRegistrationTokenStage(ctx context.Context, sessionID, stage, token string) (*UIASession, error) {
	var u *UIASession
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		var err error
		u, err = s.uiaSession(ctx, tx, sessionID)
		if err != nil {
			return err
		}
		if u.Done(stage) {
			return nil
		}
		// The conditional UPDATE is the check and the reservation in one
		// statement, so two concurrent registrations cannot both take the
		// last use.
		res, err := tx.Exec(ctx, `UPDATE registration_tokens SET pending = pending + 1
			WHERE token = $1 AND (uses_allowed IS NULL OR pending + completed < uses_allowed) AND (expiry_time IS NULL OR expiry_time > $2)`,
			token, s.now().UnixMilli())
		if err != nil {
			return fmt.Errorf("reserve registration token: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrInvalidRegistrationToken
		}
		if _, err := tx.Exec(ctx, `UPDATE uia_sessions SET reg_token = $1 WHERE session_id = $2`, token, sessionID); err != nil {
			return fmt.Errorf("bind registration token: %w", err)
		}
		u, err = s.completeStage(ctx, tx, sessionID, stage)
		return err
	})
	return u, err
}

// DeleteUIASession ends a session, releasing a reserved registration token.
func (s *Service) DeleteUIASession(ctx context.Context, id string) error {
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		return s.finishUIASession(ctx, tx, id, false)
	})
}

// finishUIASession deletes a session; a registration token it reserved
// moves from pending to completed when used, or back to free when not.
func (s *Service) finishUIASession(ctx context.Context, tx *storage.DB, id string, used bool) error {
	var tok sql.NullString
	err := tx.QueryRow(ctx, `DELETE FROM uia_sessions WHERE session_id = $1 RETURNING reg_token`, id).Scan(&tok)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("end UIA session: %w", err)
	}
	if !tok.Valid {
		return nil
	}
	q := `UPDATE registration_tokens SET pending = pending - 1 WHERE token = $1 AND pending > 0`
	if used {
		q = `UPDATE registration_tokens SET pending = pending - 1, completed = completed + 1 WHERE token = $1 AND pending > 0`
	}
	if _, err := tx.Exec(ctx, q, tok.String); err != nil {
		return fmt.Errorf("settle registration token: %w", err)
	}
	return nil
}
