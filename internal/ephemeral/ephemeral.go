// Package ephemeral stores typing notifications and read receipts. Both are
// kept in the database rather than in memory so that every process of a
// deployment agrees on them, and both take positions on the global stream
// so that /sync (and the federation sender) pick them up in order.
package ephemeral

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"praxis/internal/storage"
	"praxis/internal/streams"
)

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// MaxTypingTimeout caps how long one typing notification lasts; clients
// renew it while the user keeps typing.
const MaxTypingTimeout = 2 * time.Minute

// Service is the typing and receipt store.
type Service struct {
	db       *storage.DB
	notifier *streams.Notifier
	now      func() time.Time

	mu      sync.Mutex
	timer   *time.Timer
	timerAt time.Time
	closed  bool
}

// New returns the store. Call Start once to expire typing notifications
// left over from before a restart.
func New(db *storage.DB, notifier *streams.Notifier) *Service {
	return &Service{db: db, notifier: notifier, now: time.Now}
}

// SetClock replaces the clock (tests).
func (s *Service) SetClock(now func() time.Time) { s.now = now }

// Start expires typing notifications whose time ran out while no process
// was watching them.
func (s *Service) Start(ctx context.Context) error {
	return s.expireTyping(ctx)
}

// Close stops the expiry timer.
func (s *Service) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
	}
}

func (s *Service) nowMS() int64 { return s.now().UnixMilli() }

func (s *Service) publish(pos int64) {
	if s.notifier != nil {
		s.notifier.Publish(pos)
	}
}

// SetTyping records that userID started (typing=true, for timeout) or
// stopped typing in roomID. Renewing a notification that is still running
// only moves its expiry: the set of typing users did not change, so no
// stream position is taken and no syncing client is woken.
func (s *Service) SetTyping(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration) error {
	now := s.nowMS()
	timeout = min(max(timeout, 0), MaxTypingTimeout)
	expires := int64(0)
	if typing {
		expires = now + timeout.Milliseconds()
		if expires <= now {
			// a zero timeout means "typing, but not for long": treat it
			// as stopping so that no notification lingers
			typing, expires = false, 0
		}
	}
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		var wasUntil int64
		err := tx.QueryRow(ctx, `SELECT expires_ts FROM typing WHERE room_id = $1 AND user_id = $2`, roomID, userID).Scan(&wasUntil)
		wasTyping := err == nil && wasUntil > now
		if err != nil && !isNoRows(err) {
			return fmt.Errorf("read typing: %w", err)
		}
		if typing && wasTyping {
			_, err := tx.Exec(ctx, `UPDATE typing SET expires_ts = $1 WHERE room_id = $2 AND user_id = $3`, expires, roomID, userID)
			return err
		}
		if !typing && !wasTyping {
			return nil // nothing a client could observe changes
		}
		// Lock the row first, take the stream position last (see
		// storage.NextStreamPos), then stamp the already locked row.
		if _, err := tx.Exec(ctx, `INSERT INTO typing (room_id, user_id, expires_ts, stream_pos) VALUES ($1, $2, $3, 0)
			ON CONFLICT (room_id, user_id) DO UPDATE SET expires_ts = excluded.expires_ts`, roomID, userID, expires); err != nil {
			return fmt.Errorf("write typing: %w", err)
		}
		p, err := tx.NextStreamPos(ctx, 1)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE typing SET stream_pos = $1 WHERE room_id = $2 AND user_id = $3`, p, roomID, userID); err != nil {
			return fmt.Errorf("stamp typing: %w", err)
		}
		tx.AfterCommit(func() { s.publish(p) })
		return nil
	})
	if err != nil {
		return fmt.Errorf("set typing in %s: %w", roomID, err)
	}
	if typing {
		s.scheduleExpiry(time.UnixMilli(expires))
	}
	return nil
}

// scheduleExpiry makes sure the expiry sweep runs no later than at.
func (s *Service) scheduleExpiry(at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if s.timer != nil && !s.timerAt.After(at) {
		return // an earlier sweep is already due; it reschedules itself
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	s.timerAt = at
	s.timer = time.AfterFunc(max(time.Until(at), 0)+10*time.Millisecond, func() {
		s.mu.Lock()
		s.timer = nil
		s.mu.Unlock()
		ctx := context.Background()
		if err := s.expireTyping(ctx); err != nil {
			slog.ErrorContext(ctx, "expire typing notifications", "err", err)
		}
	})
}

// expireTyping turns lapsed typing notifications into "stopped" at a new
// stream position, so syncing clients see the user stop, and schedules the
// next sweep.
func (s *Service) expireTyping(ctx context.Context) error {
	now := s.nowMS()
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		rows, err := tx.Query(ctx, `UPDATE typing SET expires_ts = 0 WHERE expires_ts > 0 AND expires_ts <= $1 RETURNING room_id, user_id`, now)
		if err != nil {
			return fmt.Errorf("expire typing: %w", err)
		}
		var keys [][2]string
		for rows.Next() {
			var k [2]string
			if err := rows.Scan(&k[0], &k[1]); err != nil {
				rows.Close()
				return err
			}
			keys = append(keys, k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(keys) == 0 {
			return nil
		}
		p, err := tx.NextStreamPos(ctx, 1)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if _, err := tx.Exec(ctx, `UPDATE typing SET stream_pos = $1 WHERE room_id = $2 AND user_id = $3`, p, k[0], k[1]); err != nil {
				return fmt.Errorf("stamp expired typing: %w", err)
			}
		}
		tx.AfterCommit(func() { s.publish(p) })
		return nil
	})
	if err != nil {
		return err
	}
	var next int64
	err = s.db.QueryRow(ctx, `SELECT COALESCE(MIN(expires_ts), 0) FROM typing WHERE expires_ts > 0`).Scan(&next)
	if err != nil {
		return fmt.Errorf("next typing expiry: %w", err)
	}
	if next > 0 {
		s.scheduleExpiry(time.UnixMilli(next))
	}
	return nil
}

// Typing returns, for each room of roomIDs whose typing set changed in
// (since, upto] (or, with since 0, that has anyone typing), the users
// typing now. A room whose last typist stopped maps to an empty list.
func (s *Service) Typing(ctx context.Context, roomIDs []string, since, upto int64) (map[string][]string, error) {
	out := map[string][]string{}
	if len(roomIDs) == 0 {
		return out, nil
	}
	now := s.nowMS()
	q, args := storage.In(`SELECT room_id, user_id, expires_ts, stream_pos FROM typing
		WHERE room_id IN ($IN) AND room_id IN (
			SELECT room_id FROM typing WHERE stream_pos > $1 AND stream_pos <= $2 OR (expires_ts > $3 AND $1 = 0)
		) ORDER BY room_id, stream_pos, user_id`, 3, roomIDs)
	rows, err := s.db.Query(ctx, q, append([]any{since, upto, now}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("read typing: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var room, user string
		var expires, pos int64
		if err := rows.Scan(&room, &user, &expires, &pos); err != nil {
			return nil, err
		}
		list := out[room]
		if expires > now && pos <= upto {
			list = append(list, user)
		}
		if list == nil {
			list = []string{}
		}
		out[room] = list
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if since == 0 {
		// an initial sync only needs rooms where someone is typing
		for room, list := range out {
			if len(list) == 0 {
				delete(out, room)
			}
		}
	}
	return out, nil
}
