package users

import (
	"time"

	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"praxis/internal/storage"
)

// Pusher is a push gateway registration. Raw is the pusher as the client
// sent it (without "append"), kept whole so that fields such as data.format
// or vendor extensions reach the push gateway unchanged.
type Pusher struct {
	UserID   string
	AppID    string
	PushKey  string
	DeviceID string
	Raw      json.RawMessage
}

// SetPusher adds or replaces the pusher (userID, appID, pushKey). Unless
// appendOthers, pushers of other users with the same app ID and push key
// are removed: the key now belongs to this user (the spec's "append").
func (s *Service) SetPusher(ctx context.Context, p Pusher, appendOthers bool) error {
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		if !appendOthers {
			if _, err := tx.Exec(ctx, `DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3`, p.AppID, p.PushKey, p.UserID); err != nil {
				return fmt.Errorf("replace pushers: %w", err)
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO pushers (user_id, app_id, pushkey, pusher, device_id, created_ts) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET pusher = $4, device_id = $5`,
			p.UserID, p.AppID, p.PushKey, string(p.Raw), p.DeviceID, s.now().UnixMilli())
		if err != nil {
			return fmt.Errorf("store pusher: %w", err)
		}
		return nil
	})
}

// DeletePusher removes a pusher; deleting one that does not exist is fine
// (the spec treats kind: null as idempotent).
func (s *Service) DeletePusher(ctx context.Context, userID, appID, pushKey string) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`, userID, appID, pushKey); err != nil {
		return fmt.Errorf("delete pusher: %w", err)
	}
	return nil
}

// Pushers lists userID's pushers, oldest first.
func (s *Service) Pushers(ctx context.Context, userID string) ([]Pusher, error) {
	rows, err := s.db.Query(ctx, `SELECT app_id, pushkey, pusher, device_id FROM pushers WHERE user_id = $1 ORDER BY created_ts, app_id, pushkey`, userID)
	if err != nil {
		return nil, fmt.Errorf("list pushers of %s: %w", userID, err)
	}
	defer rows.Close()
	out := []Pusher{}
	for rows.Next() {
		p := Pusher{UserID: userID}
		var raw string
		if err := rows.Scan(&p.AppID, &p.PushKey, &raw, &p.DeviceID); err != nil {
			return nil, err
		}
		p.Raw = json.RawMessage(raw)
		out = append(out, p)
	}
	return out, rows.Err()
}

// Presence is a user's presence as last set.
type Presence struct {
	UserID       string
	Presence     string
	StatusMsg    string
	LastActiveTS int64
	// StreamPos is the stream position of the last change of Presence or
	// StatusMsg (activity alone does not move it).
	StreamPos int64
}

// presenceActivityEvery bounds how often mere activity (a /sync with the
// same presence) refreshes last_active_ts: a write per request would cost
// more than an age that is a minute off.
const presenceActivityEvery = time.Minute

// SetPresence records userID's presence and status message, giving the
// change a stream position (which wakes /sync) when either differs from
// what is stored.
func (s *Service) SetPresence(ctx context.Context, userID, presence, statusMsg string) error {
	return s.updatePresence(ctx, userID, presence, &statusMsg, s.now().UnixMilli())
}

// SetRemotePresence records the presence of another server's user as its
// m.presence EDU reports it (last active at lastActiveTS on our clock).
// A change takes a stream position like a local one, so /sync shows it
// to the user's room mates here.
func (s *Service) SetRemotePresence(ctx context.Context, userID, presence, statusMsg string, lastActiveTS int64) error {
	return s.updatePresence(ctx, userID, presence, &statusMsg, lastActiveTS)
}

// TouchPresence records that userID is active with the given presence
// (/sync's set_presence), keeping the status message. It writes nothing
// when the presence is unchanged and the last activity is recent.
func (s *Service) TouchPresence(ctx context.Context, userID, presence string) error {
	p, err := s.Presence(ctx, userID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if p != nil && p.Presence == presence && s.now().UnixMilli()-p.LastActiveTS < presenceActivityEvery.Milliseconds() {
		return nil
	}
	return s.updatePresence(ctx, userID, presence, nil, s.now().UnixMilli())
}

// updatePresence writes a presence active at now (unix ms); statusMsg nil
// keeps the stored one.
func (s *Service) updatePresence(ctx context.Context, userID, presence string, statusMsg *string, now int64) error {
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		var oldPresence string
		var oldMsg sql.NullString
		err := tx.QueryRow(ctx, `SELECT presence, status_msg FROM presence WHERE user_id = $1`, userID).Scan(&oldPresence, &oldMsg)
		exists := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read presence of %s: %w", userID, err)
		}
		msg := oldMsg.String
		if statusMsg != nil {
			msg = *statusMsg
		}
		var msgArg any
		if msg != "" {
			msgArg = msg
		}
		if exists && oldPresence == presence && oldMsg.String == msg {
			// activity only: no stream position, nobody to wake
			if _, err := tx.Exec(ctx, `UPDATE presence SET last_active_ts = $2 WHERE user_id = $1`, userID, now); err != nil {
				return fmt.Errorf("set presence of %s: %w", userID, err)
			}
			return nil
		}
		pos, err := tx.NextStreamPos(ctx, 1)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO presence (user_id, presence, status_msg, last_active_ts, stream_pos) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (user_id) DO UPDATE SET presence = $2, status_msg = $3, last_active_ts = $4, stream_pos = $5`,
			userID, presence, msgArg, now, pos); err != nil {
			return fmt.Errorf("set presence of %s: %w", userID, err)
		}
		s.publishAfterCommit(tx, pos)
		return nil
	})
}

// Presence returns userID's recorded presence; ErrNotFound if never set.
func (s *Service) Presence(ctx context.Context, userID string) (*Presence, error) {
	p := Presence{UserID: userID}
	var msg sql.NullString
	err := s.db.QueryRow(ctx, `SELECT presence, status_msg, last_active_ts, stream_pos FROM presence WHERE user_id = $1`, userID).
		Scan(&p.Presence, &msg, &p.LastActiveTS, &p.StreamPos)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read presence of %s: %w", userID, err)
	}
	p.StatusMsg = msg.String
	return &p, nil
}

// PresencesOf returns the recorded presences of userIDs (users who never
// set one are left out).
func (s *Service) PresencesOf(ctx context.Context, userIDs []string) ([]Presence, error) {
	if len(userIDs) == 0 {
		return nil, nil
	}
	q, args := storage.In(`SELECT user_id, presence, status_msg, last_active_ts, stream_pos FROM presence WHERE user_id IN ($IN)`, 0, userIDs)
	return s.queryPresence(ctx, q, args...)
}

// PresenceChanges returns the presences whose last change has a stream
// position in (since, upto], oldest first.
func (s *Service) PresenceChanges(ctx context.Context, since, upto int64) ([]Presence, error) {
	return s.queryPresence(ctx, `SELECT user_id, presence, status_msg, last_active_ts, stream_pos FROM presence
		WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY stream_pos`, since, upto)
}

func (s *Service) queryPresence(ctx context.Context, q string, args ...any) ([]Presence, error) {
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read presence: %w", err)
	}
	defer rows.Close()
	var out []Presence
	for rows.Next() {
		var p Presence
		var msg sql.NullString
		if err := rows.Scan(&p.UserID, &p.Presence, &msg, &p.LastActiveTS, &p.StreamPos); err != nil {
			return nil, fmt.Errorf("read presence: %w", err)
		}
		p.StatusMsg = msg.String
		out = append(out, p)
	}
	return out, rows.Err()
}

// Now is the service clock in milliseconds (presence ages are relative to it).
func (s *Service) Now() int64 { return s.now().UnixMilli() }
