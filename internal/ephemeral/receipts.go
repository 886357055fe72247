package ephemeral

import (
	"context"
	"fmt"
	"strings"

	"praxis/internal/storage"
)

// Receipt types of the spec.
const (
	ReceiptRead        = "m.read"
	ReceiptReadPrivate = "m.read.private"
)

// Receipt is one user's receipt of one type on one event.
type Receipt struct {
	RoomID string
	UserID string
	Type   string
	// ThreadID is "" for an unthreaded receipt, "main" for the main timeline.
	ThreadID string
	EventID  string
	// EventStreamPos is the receipted event's stream position.
	EventStreamPos int64
	TS             int64
	StreamPos      int64
}

// PutReceipt stores r unless the user already has a receipt of the same
// type and thread on a later event: a receipt only moves forward, so a
// client that sends receipts out of order cannot resurrect old unreads.
// It reports whether anything changed.
func (s *Service) PutReceipt(ctx context.Context, r Receipt) (bool, error) {
	if r.TS == 0 {
		r.TS = s.nowMS()
	}
	changed := false
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		res, err := tx.Exec(ctx, `INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, event_stream_pos, ts, stream_pos)
			VALUES ($1, $2, $3, $4, $5, $6, $7, 0)
			ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE
			SET event_id = excluded.event_id, event_stream_pos = excluded.event_stream_pos, ts = excluded.ts, stream_pos = 0
			WHERE receipts.event_stream_pos < excluded.event_stream_pos`,
			r.RoomID, r.UserID, r.Type, r.ThreadID, r.EventID, r.EventStreamPos, r.TS)
		if err != nil {
			return fmt.Errorf("write receipt: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		p, err := tx.NextStreamPos(ctx, 1)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE receipts SET stream_pos = $1 WHERE room_id = $2 AND user_id = $3 AND receipt_type = $4 AND thread_id = $5`,
			p, r.RoomID, r.UserID, r.Type, r.ThreadID); err != nil {
			return fmt.Errorf("stamp receipt: %w", err)
		}
		changed = true
		tx.AfterCommit(func() { s.publish(p) })
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("put %s receipt in %s: %w", r.Type, r.RoomID, err)
	}
	return changed, nil
}

// Receipts returns the receipts in roomIDs that changed in (since, upto]
// (all of them with since 0), grouped by room. Private receipts are only
// returned to their owner, viewer.
func (s *Service) Receipts(ctx context.Context, viewer string, roomIDs []string, since, upto int64) (map[string][]Receipt, error) {
	out := map[string][]Receipt{}
	if len(roomIDs) == 0 {
		return out, nil
	}
	q, args := storage.In(`SELECT room_id, user_id, receipt_type, thread_id, event_id, event_stream_pos, ts, stream_pos FROM receipts
		WHERE stream_pos > $1 AND stream_pos <= $2 AND (receipt_type <> $3 OR user_id = $4) AND room_id IN ($IN)
		ORDER BY room_id, stream_pos`, 4, roomIDs)
	rows, err := s.db.Query(ctx, q, append([]any{since, upto, ReceiptReadPrivate, viewer}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("read receipts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r Receipt
		if err := rows.Scan(&r.RoomID, &r.UserID, &r.Type, &r.ThreadID, &r.EventID, &r.EventStreamPos, &r.TS, &r.StreamPos); err != nil {
			return nil, err
		}
		out[r.RoomID] = append(out[r.RoomID], r)
	}
	return out, rows.Err()
}

// Changed reports whether typing or a receipt viewer may see changed in
// any of roomIDs in (since, upto]: the cheap test of a waiting /sync.
func (s *Service) Changed(ctx context.Context, viewer string, roomIDs []string, since, upto int64) (bool, error) {
	if len(roomIDs) == 0 {
		return false, nil
	}
	q, args := storage.In(`SELECT 1 FROM typing WHERE stream_pos > $1 AND stream_pos <= $2 AND room_id IN ($IN)`, 4, roomIDs)
	q2 := `SELECT 1 FROM receipts WHERE stream_pos > $1 AND stream_pos <= $2 AND (receipt_type <> $3 OR user_id = $4) AND room_id IN (` +
		q[strings.Index(q, "room_id IN (")+len("room_id IN ("):]
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 WHERE EXISTS (`+q+`) OR EXISTS (`+q2+`)`,
		append([]any{since, upto, ReceiptReadPrivate, viewer}, args...)...).Scan(&one)
	if isNoRows(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("check typing and receipts: %w", err)
	}
	return true, nil
}

// ReadPositions is how far a user has read in one room, by receipt thread.
type ReadPositions struct {
	// Unthreaded is the latest receipt without a thread: it covers the
	// main timeline and every thread.
	Unthreaded int64
	// Main is the latest receipt for the main timeline only.
	Main int64
	// Threads maps a thread root to the latest receipt in that thread.
	Threads map[string]int64
}

// ReadPositionsOf returns userID's read positions (public and private
// receipts alike) in each of roomIDs where there is one.
func (s *Service) ReadPositionsOf(ctx context.Context, userID string, roomIDs []string) (map[string]*ReadPositions, error) {
	out := map[string]*ReadPositions{}
	if len(roomIDs) == 0 {
		return out, nil
	}
	q, args := storage.In(`SELECT room_id, thread_id, MAX(event_stream_pos) FROM receipts
		WHERE user_id = $1 AND receipt_type IN ($2, $3) AND room_id IN ($IN)
		GROUP BY room_id, thread_id`, 3, roomIDs)
	rows, err := s.db.Query(ctx, q, append([]any{userID, ReceiptRead, ReceiptReadPrivate}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("read receipt positions of %s: %w", userID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var room, thread string
		var pos int64
		if err := rows.Scan(&room, &thread, &pos); err != nil {
			return nil, err
		}
		rp := out[room]
		if rp == nil {
			rp = &ReadPositions{Threads: map[string]int64{}}
			out[room] = rp
		}
		switch thread {
		case "":
			rp.Unthreaded = pos
		case "main":
			rp.Main = pos
		default:
			rp.Threads[thread] = pos
		}
	}
	return out, rows.Err()
}
