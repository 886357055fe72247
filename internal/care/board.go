package care

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/roomserver"
)

// Request statuses.
const (
	StatusOpen    = "open"
	StatusClaimed = "claimed"
	StatusClosed  = "closed"
)

// Request is an entry of a practice's request board: routing data only.
type Request struct {
	RoomID     string `json:"room_id"`
	PracticeID string `json:"practice_id"`
	Status     string `json:"status"`
	ClaimedBy  string `json:"claimed_by,omitempty"`
	CreatedTS  int64  `json:"created_ts"`
	ClaimedTS  int64  `json:"claimed_ts,omitempty"`
	ClosedTS   int64  `json:"closed_ts,omitempty"`
	Verified   bool   `json:"verified"`
}

func (s *Service) request(ctx context.Context, db *storage.DB, roomID string) (*Request, error) {
	var r Request
	err := db.QueryRow(ctx, `SELECT r.room_id, r.practice_id, r.status, r.claimed_by, r.created_ts, r.claimed_ts, r.closed_ts, c.verified
		FROM care_requests r JOIN care_couplings c ON c.room_id = r.room_id WHERE r.room_id = $1`, roomID).
		Scan(&r.RoomID, &r.PracticeID, &r.Status, &r.ClaimedBy, &r.CreatedTS, &r.ClaimedTS, &r.ClosedTS, &r.Verified)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, httputil.NotFound("no request for room " + roomID)
	}
	if err != nil {
		return nil, fmt.Errorf("read request %s: %w", roomID, err)
	}
	return &r, nil
}

// Board lists a practice's requests, open ones first, for its staff.
func (s *Service) Board(ctx context.Context, staffUser string) ([]Request, error) {
	st, err := s.StaffOf(ctx, staffUser)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, httputil.Forbidden("the request board is for staff only")
	}
	rows, err := s.db.Query(ctx, `SELECT r.room_id, r.practice_id, r.status, r.claimed_by, r.created_ts, r.claimed_ts, r.closed_ts, c.verified
		FROM care_requests r JOIN care_couplings c ON c.room_id = r.room_id
		WHERE r.practice_id = $1 ORDER BY CASE r.status WHEN 'open' THEN 0 WHEN 'claimed' THEN 1 ELSE 2 END, r.created_ts`, st.PracticeID)
	if err != nil {
		return nil, fmt.Errorf("read board: %w", err)
	}
	defer rows.Close()
	out := []Request{}
	for rows.Next() {
		var r Request
		if err := rows.Scan(&r.RoomID, &r.PracticeID, &r.Status, &r.ClaimedBy, &r.CreatedTS, &r.ClaimedTS, &r.ClosedTS, &r.Verified); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Claim gives an open request to a staff member of its practice. The
// first claim wins; a later (or concurrent) one gets 409
// DE.PRAXIS.ALREADY_CLAIMED. The claimer is joined to the coupling room.
func (s *Service) Claim(ctx context.Context, staffUser, roomID string) (*Request, error) {
	st, err := s.StaffOf(ctx, staffUser)
	if err != nil {
		return nil, err
	}
	now := s.now().UnixMilli()
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		r, err := s.request(ctx, tx, roomID)
		if err != nil {
			return err
		}
		if st == nil || st.PracticeID != r.PracticeID {
			return httputil.Forbidden("only staff of the practice can claim its requests")
		}
		// the conditional UPDATE is the arbiter: of two concurrent
		// claims exactly one changes the row
		res, err := tx.Exec(ctx, `UPDATE care_requests SET status = 'claimed', claimed_by = $1, claimed_ts = $2 WHERE room_id = $3 AND status = 'open'`,
			staffUser, now, roomID)
		if err != nil {
			return fmt.Errorf("claim request: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			cur, err := s.request(ctx, tx, roomID)
			if err != nil {
				return err
			}
			if cur.Status == StatusClaimed {
				return errClaimed(cur.ClaimedBy)
			}
			return httputil.Errorf(409, ErrCodeClaimed, "the request is %s", cur.Status)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := s.bringIn(ctx, roomID, st.PracticeID, staffUser); err != nil {
		slog.WarnContext(ctx, "join claimed room", "room_id", roomID, "user_id", staffUser, "err", err)
	}
	s.withdrawInvites(ctx, roomID, st.PracticeID, staffUser)
	s.postRequest(ctx, roomID)
	return s.request(ctx, s.db, roomID)
}

// Close closes a request (claimed or open) of the staff member's practice.
func (s *Service) Close(ctx context.Context, staffUser, roomID string) (*Request, error) {
	st, err := s.StaffOf(ctx, staffUser)
	if err != nil {
		return nil, err
	}
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		r, err := s.request(ctx, tx, roomID)
		if err != nil {
			return err
		}
		if st == nil || st.PracticeID != r.PracticeID {
			return httputil.Forbidden("only staff of the practice can close its requests")
		}
		_, err = tx.Exec(ctx, `UPDATE care_requests SET status = 'closed', closed_ts = $1 WHERE room_id = $2`, s.now().UnixMilli(), roomID)
		return wrap(err, "close request")
	})
	if err != nil {
		return nil, err
	}
	s.postRequest(ctx, roomID)
	return s.request(ctx, s.db, roomID)
}

// reopen puts a closed request back on the board: the patient wrote again.
func (s *Service) reopen(ctx context.Context, roomID string) error {
	res, err := s.db.Exec(ctx, `UPDATE care_requests SET status = 'open', claimed_by = '', claimed_ts = 0, closed_ts = 0, created_ts = $1
		WHERE room_id = $2 AND status = 'closed'`, s.now().UnixMilli(), roomID)
	if err != nil {
		return fmt.Errorf("reopen request: %w", err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		s.postRequest(ctx, roomID)
	}
	return nil
}

// postRequest mirrors a request into the board room as state, so that
// staff see the board in any Matrix client. Failures are logged: the
// table is the truth, the board event a view of it.
func (s *Service) postRequest(ctx context.Context, roomID string) {
	r, err := s.request(ctx, s.db, roomID)
	if err == nil {
		var p *Practice
		if p, err = s.Practice(ctx, r.PracticeID); err == nil && p.BoardRoom != "" {
			content, _ := json.Marshal(r)
			_, err = s.rooms.Send(ctx, roomserver.SendRequest{RoomID: p.BoardRoom, Sender: p.ServiceUser, Type: RequestEvent, StateKey: &roomID, Content: content})
		}
	}
	if err != nil {
		slog.WarnContext(ctx, "update request board", "room_id", roomID, "err", err)
	}
}

// bringIn joins a staff member to a coupling room, inviting them first
// when they were not on duty (or not yet staff) when it was created. Such
// a late member cannot decrypt what was sent before their invite: the
// patient's client never shared those keys with them.
func (s *Service) bringIn(ctx context.Context, roomID, practiceID, staffUser string) error {
	m, err := s.rooms.Membership(ctx, roomID, staffUser)
	if err != nil {
		return err
	}
	if m == "join" {
		return nil
	}
	if m != "invite" {
		p, err := s.Practice(ctx, practiceID)
		if err != nil {
			return err
		}
		if _, err := s.rooms.Invite(ctx, roomserver.MembershipRequest{RoomID: roomID, Sender: p.ServiceUser, Target: staffUser}); err != nil {
			return err
		}
	}
	_, err = s.rooms.Join(ctx, staffUser, roomID, "")
	return err
}

// joinClaims makes a staff member's join into a coupling room with an
// open request their claim: with a stock client, accepting the invite is
// how staff pick a request up. The conditional UPDATE keeps the first
// claim; a later joiner simply joins.
func (s *Service) joinClaims(ctx context.Context, roomID, userID string) error {
	st, err := s.StaffOf(ctx, userID)
	if err != nil || st == nil {
		return err
	}
	res, err := s.db.Exec(ctx, `UPDATE care_requests SET status = 'claimed', claimed_by = $1, claimed_ts = $2
		WHERE room_id = $3 AND practice_id = $4 AND status = 'open'`, userID, s.now().UnixMilli(), roomID, st.PracticeID)
	if err != nil {
		return fmt.Errorf("claim by join: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil // no open request here, or a colleague was first
	}
	s.withdrawInvites(ctx, roomID, st.PracticeID, userID)
	s.postRequest(ctx, roomID)
	return nil
}

// withdrawInvites takes back the invites of the practice's other staff
// once a request is claimed: the patient's next messages are then
// encrypted for the claimer (and whoever they invite) only.
func (s *Service) withdrawInvites(ctx context.Context, roomID, practiceID, claimer string) {
	staff, err := s.practiceStaff(ctx, practiceID, false)
	if err == nil {
		var p *Practice
		if p, err = s.Practice(ctx, practiceID); err == nil {
			for _, u := range staff {
				if u == claimer {
					continue
				}
				if m, _ := s.rooms.Membership(ctx, roomID, u); m == "invite" {
					if kerr := s.rooms.Kick(ctx, roomserver.MembershipRequest{RoomID: roomID, Sender: p.ServiceUser, Target: u, Reason: "claimed by a colleague"}); kerr != nil {
						slog.WarnContext(ctx, "withdraw invite", "room_id", roomID, "user_id", u, "err", kerr)
					}
				}
			}
		}
	}
	if err != nil {
		slog.WarnContext(ctx, "withdraw invites", "room_id", roomID, "err", err)
	}
}
