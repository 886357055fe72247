package care

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/internal/users"
	"praxis/roomserver"
)

// Staff is a staff member of a practice.
type Staff struct {
	UserID     string `json:"user_id"`
	PracticeID string `json:"practice_id"`
	Role       string `json:"role"`
	OnDuty     bool   `json:"on_duty"`
	AddedTS    int64  `json:"added_ts"`
}

func validRole(role string) error {
	switch role {
	case RoleAdmin, RoleDoctor, RoleAssistant:
		return nil
	}
	return httputil.InvalidParam("role must be admin, doctor or assistant")
}

// AddStaff makes an existing local account a staff member of a practice
// and invites them into the request board.
func (s *Service) AddStaff(ctx context.Context, actor, practiceID, userID, role string) (*Staff, error) {
	if err := validRole(role); err != nil {
		return nil, err
	}
	if _, err := s.Practice(ctx, practiceID); err != nil {
		return nil, err
	}
	acc, err := s.users.Account(ctx, userID)
	if errors.Is(err, users.ErrNotFound) {
		return nil, httputil.NotFound("no local account " + userID + " (create it first: praxisctl user create)")
	}
	if err != nil {
		return nil, err
	}
	switch {
	case acc.Deactivated:
		return nil, httputil.InvalidParam(userID + " is deactivated")
	case acc.Kind == KindService:
		return nil, httputil.InvalidParam(userID + " is a practice's service account")
	case acc.Kind == KindPatient:
		// a patient's couplings and rooms would suddenly face a staff member
		return nil, httputil.InvalidParam(userID + " is a patient account; staff need their own account")
	}
	st := &Staff{UserID: userID, PracticeID: practiceID, Role: role, OnDuty: true, AddedTS: s.now().UnixMilli()}
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		_, err := tx.Exec(ctx, `INSERT INTO care_staff (user_id, practice_id, role, on_duty, added_ts) VALUES ($1, $2, $3, TRUE, $4)`,
			userID, practiceID, role, st.AddedTS)
		if storage.IsUniqueViolation(err) {
			return httputil.Errorf(http.StatusConflict, "M_USER_IN_USE", "%s is already staff of a practice", userID)
		}
		if err != nil {
			return fmt.Errorf("add staff %s: %w", userID, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE accounts SET kind = $1 WHERE user_id = $2`, KindStaff, userID); err != nil {
			return fmt.Errorf("mark %s as staff: %w", userID, err)
		}
		return s.audit(ctx, tx, AuditRecord{Actor: actor, Action: "staff.add", Target: userID, Practice: practiceID, Params: map[string]any{"role": role}})
	})
	if err != nil {
		return nil, err
	}
	board, err := s.ensureBoard(ctx, practiceID)
	if err != nil {
		return nil, err
	}
	p, err := s.Practice(ctx, practiceID)
	if err != nil {
		return nil, err
	}
	if _, err := s.rooms.Invite(ctx, roomserver.MembershipRequest{RoomID: board, Sender: p.ServiceUser, Target: userID}); err != nil {
		// the staff member exists; an admin can re-run staff add after fixing the room
		slog.WarnContext(ctx, "invite staff into request board", "user_id", userID, "room_id", board, "err", err)
	}
	return st, nil
}

// StaffOf returns a user's staff record; nil when they are no staff.
func (s *Service) StaffOf(ctx context.Context, userID string) (*Staff, error) {
	return s.staffOf(ctx, s.db, userID)
}

func (s *Service) staffOf(ctx context.Context, db *storage.DB, userID string) (*Staff, error) {
	var st Staff
	err := db.QueryRow(ctx, `SELECT user_id, practice_id, role, on_duty, added_ts FROM care_staff WHERE user_id = $1`, userID).
		Scan(&st.UserID, &st.PracticeID, &st.Role, &st.OnDuty, &st.AddedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read staff %s: %w", userID, err)
	}
	return &st, nil
}

// ListStaff lists a practice's staff.
func (s *Service) ListStaff(ctx context.Context, practiceID string) ([]Staff, error) {
	if _, err := s.Practice(ctx, practiceID); err != nil {
		return nil, err
	}
	rows, err := s.db.Query(ctx, `SELECT user_id, practice_id, role, on_duty, added_ts FROM care_staff WHERE practice_id = $1 ORDER BY user_id`, practiceID)
	if err != nil {
		return nil, fmt.Errorf("list staff of %s: %w", practiceID, err)
	}
	defer rows.Close()
	out := []Staff{}
	for rows.Next() {
		var st Staff
		if err := rows.Scan(&st.UserID, &st.PracticeID, &st.Role, &st.OnDuty, &st.AddedTS); err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, rows.Err()
}

// practiceStaff returns the user IDs of a practice's staff (on duty only
// when onDutyOnly).
func (s *Service) practiceStaff(ctx context.Context, practiceID string, onDutyOnly bool) ([]string, error) {
	q := `SELECT user_id FROM care_staff WHERE practice_id = $1`
	if onDutyOnly {
		q += ` AND on_duty = TRUE`
	}
	rows, err := s.db.Query(ctx, q+` ORDER BY user_id`, practiceID)
	if err != nil {
		return nil, fmt.Errorf("staff of %s: %w", practiceID, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// SetStaff changes a staff member's role and/or duty flag.
func (s *Service) SetStaff(ctx context.Context, actor, practiceID, userID string, role *string, onDuty *bool) (*Staff, error) {
	if role != nil {
		if err := validRole(*role); err != nil {
			return nil, err
		}
	}
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		st, err := s.staffOf(ctx, tx, userID)
		if err != nil {
			return err
		}
		if st == nil || st.PracticeID != practiceID {
			return httputil.NotFound(userID + " is no staff of practice " + practiceID)
		}
		params := map[string]any{}
		if role != nil {
			params["role"] = *role
			if _, err := tx.Exec(ctx, `UPDATE care_staff SET role = $1 WHERE user_id = $2`, *role, userID); err != nil {
				return fmt.Errorf("set role of %s: %w", userID, err)
			}
		}
		if onDuty != nil {
			params["on_duty"] = *onDuty
			if _, err := tx.Exec(ctx, `UPDATE care_staff SET on_duty = $1 WHERE user_id = $2`, *onDuty, userID); err != nil {
				return fmt.Errorf("set duty of %s: %w", userID, err)
			}
		}
		return s.audit(ctx, tx, AuditRecord{Actor: actor, Action: "staff.set", Target: userID, Practice: practiceID, Params: params})
	})
	if err != nil {
		return nil, err
	}
	return s.StaffOf(ctx, userID)
}

// RemoveStaff ends a staff membership: the account becomes an ordinary
// (and, under the health rules, restricted) account and leaves the board.
func (s *Service) RemoveStaff(ctx context.Context, actor, practiceID, userID string) error {
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		res, err := tx.Exec(ctx, `DELETE FROM care_staff WHERE user_id = $1 AND practice_id = $2`, userID, practiceID)
		if err != nil {
			return fmt.Errorf("remove staff %s: %w", userID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return httputil.NotFound(userID + " is no staff of practice " + practiceID)
		}
		if _, err := tx.Exec(ctx, `UPDATE accounts SET kind = $1 WHERE user_id = $2`, KindUser, userID); err != nil {
			return fmt.Errorf("unmark %s as staff: %w", userID, err)
		}
		return s.audit(ctx, tx, AuditRecord{Actor: actor, Action: "staff.remove", Target: userID, Practice: practiceID})
	})
	if err != nil {
		return err
	}
	// Former staff leave the board and every coupling room of the
	// practice: patients must not stay reachable by them.
	p, err := s.Practice(ctx, practiceID)
	if err != nil {
		return err
	}
	rooms := []string{p.BoardRoom}
	couplings, err := s.Couplings(ctx, practiceID, "")
	if err != nil {
		return err
	}
	for _, c := range couplings {
		rooms = append(rooms, c.RoomID)
	}
	for _, room := range rooms {
		if room == "" {
			continue
		}
		if m, _ := s.rooms.Membership(ctx, room, userID); m == "join" || m == "invite" {
			if err := s.rooms.Kick(ctx, roomserver.MembershipRequest{RoomID: room, Sender: p.ServiceUser, Target: userID, Reason: "no longer staff"}); err != nil {
				slog.WarnContext(ctx, "remove former staff from room", "user_id", userID, "room_id", room, "err", err)
			}
		}
	}
	return nil
}

// PracticeAdminOf returns the practice userID administers ("" if none):
// the audit log's and the admin API's practice scope.
func (s *Service) PracticeAdminOf(ctx context.Context, userID string) (string, error) {
	st, err := s.StaffOf(ctx, userID)
	if err != nil || st == nil || st.Role != RoleAdmin {
		return "", err
	}
	return st.PracticeID, nil
}

// MarkSelfRegistered makes a self-registered account a patient under the
// health rules; staff and service accounts come only from the admin API.
func (s *Service) MarkSelfRegistered(ctx context.Context, userID string) error {
	if !s.enforce {
		return nil
	}
	if _, err := s.db.Exec(ctx, `UPDATE accounts SET kind = $1 WHERE user_id = $2 AND kind = $3`, KindPatient, userID, KindUser); err != nil {
		return fmt.Errorf("mark %s as patient: %w", userID, err)
	}
	return nil
}
