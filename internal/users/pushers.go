package users

import (
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
	Presence     string
	StatusMsg    string
	LastActiveTS int64
}

// SetPresence records userID's presence.
func (s *Service) SetPresence(ctx context.Context, userID, presence, statusMsg string) error {
	var msg any
	if statusMsg != "" {
		msg = statusMsg
	}
	_, err := s.db.Exec(ctx, `INSERT INTO presence (user_id, presence, status_msg, last_active_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id) DO UPDATE SET presence = $2, status_msg = $3, last_active_ts = $4`, userID, presence, msg, s.now().UnixMilli())
	if err != nil {
		return fmt.Errorf("set presence of %s: %w", userID, err)
	}
	return nil
}

// Presence returns userID's recorded presence; ErrNotFound if never set.
func (s *Service) Presence(ctx context.Context, userID string) (*Presence, error) {
	var p Presence
	var msg sql.NullString
	err := s.db.QueryRow(ctx, `SELECT presence, status_msg, last_active_ts FROM presence WHERE user_id = $1`, userID).Scan(&p.Presence, &msg, &p.LastActiveTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read presence of %s: %w", userID, err)
	}
	p.StatusMsg = msg.String
	return &p, nil
}

// Now is the service clock in milliseconds (presence ages are relative to it).
func (s *Service) Now() int64 { return s.now().UnixMilli() }
