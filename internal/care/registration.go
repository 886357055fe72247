package care

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"praxis/internal/httputil"
	"praxis/internal/storage"
)

// Coupling at registration. A node that requires a token to register
// (registration.requires_token) also takes a coupling code at the
// m.login.registration_token stage: the practice hands out the code, the
// patient registers with it and is coupled in the same step. The code is
// checked at the stage and bound to the register session; it is claimed
// just before the account is created, so that two registrations cannot
// both use one one-time code and nobody gets an account with a code that
// is no longer good; it is given back if the account is not created; and
// the coupling room is made once the account exists.

// registrationBindingTTL bounds how long a code given at the stage waits
// for its registration (register sessions are shorter-lived).
const registrationBindingTTL = 24 * time.Hour

// RegistrationCodeValid reports whether code is a usable coupling code
// (GET /_matrix/client/v1/register/m.login.registration_token/validity).
func (s *Service) RegistrationCodeValid(ctx context.Context, code string) (bool, error) {
	_, err := s.usableCode(ctx, s.db, hashCode(code))
	var he *httputil.Error
	if errors.As(err, &he) {
		return false, nil
	}
	return err == nil, err
}

// BindRegistrationCode serves the registration token stage for a coupling
// code: it reports whether code is a usable coupling code and, if so,
// binds it to the register session. Nothing is used up yet.
func (s *Service) BindRegistrationCode(ctx context.Context, sessionID, code string) (bool, error) {
	ok, err := s.RegistrationCodeValid(ctx, code)
	if !ok || err != nil {
		return false, err
	}
	now := s.now().UnixMilli()
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		// bindings of registrations that were abandoned
		if _, err := tx.Exec(ctx, `DELETE FROM care_registration_codes WHERE created_ts < $1`, now-registrationBindingTTL.Milliseconds()); err != nil {
			return fmt.Errorf("expire registration codes: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO care_registration_codes (session_id, code_hash, created_ts) VALUES ($1, $2, $3)
			ON CONFLICT (session_id) DO UPDATE SET code_hash = excluded.code_hash, created_ts = excluded.created_ts`, sessionID, hashCode(code), now); err != nil {
			return fmt.Errorf("bind registration code: %w", err)
		}
		return nil
	})
	return err == nil, err
}

// registrationCode returns the code bound to a register session; nil when
// there is none (the session used an ordinary registration token).
func (s *Service) registrationCode(ctx context.Context, db *storage.DB, sessionID string) (*codeRow, string, error) {
	var c codeRow
	var codeHash string
	err := db.QueryRow(ctx, `SELECT r.code_hash, c.practice_id, c.kind, c.code_id FROM care_registration_codes r
		JOIN care_codes c ON c.code_hash = r.code_hash WHERE r.session_id = $1`, sessionID).Scan(&codeHash, &c.practiceID, &c.kind, &c.codeID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("registration code of a session: %w", err)
	}
	return &c, codeHash, nil
}

// ClaimRegistrationCode takes one use of the code bound to a completed
// register session, before the account is created. It reports whether
// there was one; a code that was used up, withdrawn or expired since the
// stage is 403 and no account must be created.
func (s *Service) ClaimRegistrationCode(ctx context.Context, sessionID string) (bool, error) {
	claimed := false
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		c, codeHash, err := s.registrationCode(ctx, tx, sessionID)
		if err != nil || c == nil {
			return err
		}
		if _, err := s.claimCode(ctx, tx, codeHash); err != nil {
			return err
		}
		claimed = true
		return nil
	})
	return claimed, err
}

// ReleaseRegistrationCode gives back the use ClaimRegistrationCode took
// when the account was not created after all; the binding stays, so the
// client may retry with the same session.
func (s *Service) ReleaseRegistrationCode(ctx context.Context, sessionID string) {
	c, codeHash, err := s.registrationCode(ctx, s.db, sessionID)
	if err != nil || c == nil {
		if err != nil {
			slog.WarnContext(ctx, "release registration code", "err", err)
		}
		return
	}
	s.releaseCode(ctx, codeHash, c.codeID)
}

// CoupleRegistered couples the account a register session created with
// the code claimed for it: a fresh coupling room, as when the code is
// redeemed by joining. It returns the room ID ("" without a code). If
// the room cannot be made, the code's use is given back.
func (s *Service) CoupleRegistered(ctx context.Context, sessionID, userID string) (string, error) {
	c, codeHash, err := s.registrationCode(ctx, s.db, sessionID)
	if err != nil || c == nil {
		return "", err
	}
	if _, err := s.db.Exec(ctx, `DELETE FROM care_registration_codes WHERE session_id = $1`, sessionID); err != nil {
		return "", fmt.Errorf("unbind registration code: %w", err)
	}
	if err := s.MarkSelfRegistered(ctx, userID); err != nil {
		s.releaseCode(ctx, codeHash, c.codeID)
		return "", err
	}
	roomID, err := s.createCouplingRoom(ctx, userID, c.practiceID, c.kind, c.codeID)
	if err != nil {
		s.releaseCode(ctx, codeHash, c.codeID)
		return "", err
	}
	return roomID, nil
}
