// Package todevice is the to-device inbox: messages one device sends
// straight to others (Olm-encrypted room keys, verification requests),
// held until the recipient's /sync acknowledges them by syncing past them.
package todevice

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/internal/streams"
)

// Service owns to_device_messages and to_device_txns.
type Service struct {
	db         *storage.DB
	notifier   *streams.Notifier
	serverName string
	now        func() time.Time
	// remote sends messages to users on other servers; nil until
	// federation provides it (such messages are then dropped, as the spec
	// allows for undeliverable to-device messages).
	remote Remote
}

// Remote delivers to-device messages to another server (federation).
type Remote interface {
	SendToDevice(ctx context.Context, sender, eventType string, messages map[string]map[string]json.RawMessage) error
}

// New returns the to-device service.
func New(db *storage.DB, notifier *streams.Notifier, serverName string) *Service {
	return &Service{db: db, notifier: notifier, serverName: serverName, now: time.Now}
}

// SetRemote plugs in federation for recipients on other servers.
func (s *Service) SetRemote(r Remote) { s.remote = r }

// Send delivers messages (user → device or "*" → content) from the
// sender's device. A txnID the device already used delivers nothing again.
func (s *Service) Send(ctx context.Context, sender, senderDevice, eventType, txnID string, messages map[string]map[string]json.RawMessage) error {
	if eventType == "" {
		return httputil.InvalidParam("missing event type")
	}
	type msg struct {
		user, device string
		content      json.RawMessage
	}
	var local []msg
	remote := map[string]map[string]map[string]json.RawMessage{}
	for user, devices := range messages {
		if !strings.HasPrefix(user, "@") || !strings.Contains(user, ":") {
			return httputil.InvalidParam(fmt.Sprintf("%q is not a user ID", user))
		}
		for device, content := range devices {
			if !json.Valid(content) || len(content) == 0 || content[0] != '{' {
				return httputil.BadJSON("each message's content must be an object")
			}
			if !strings.HasSuffix(user, ":"+s.serverName) {
				_, srv, _ := strings.Cut(user, ":")
				if remote[srv] == nil {
					remote[srv] = map[string]map[string]json.RawMessage{}
				}
				if remote[srv][user] == nil {
					remote[srv][user] = map[string]json.RawMessage{}
				}
				remote[srv][user][device] = content
				continue
			}
			local = append(local, msg{user, device, content})
		}
	}
	var pos int64
	duplicate := false
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		// ON CONFLICT rather than catching the unique violation: on
		// Postgres a failed statement aborts the whole transaction.
		res, err := tx.Exec(ctx, `INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts) VALUES ($1, $2, $3, $4)
			ON CONFLICT (user_id, device_id, txn_id) DO NOTHING`,
			sender, senderDevice, txnID, s.now().UnixMilli())
		if err != nil {
			return fmt.Errorf("record to-device txn: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			duplicate = true
			return nil
		}
		// Deliver only to devices that exist (a session's device or the
		// user's dehydrated device): messages for unknown devices would
		// never be acknowledged and pile up. "*" means all of them.
		devices := map[string][]string{}
		var targets []msg
		for _, m := range local {
			list, ok := devices[m.user]
			if !ok {
				var err error
				if list, err = deviceIDs(ctx, tx, m.user); err != nil {
					return err
				}
				devices[m.user] = list
			}
			for _, d := range list {
				if m.device == "*" || m.device == d {
					targets = append(targets, msg{m.user, d, m.content})
				}
			}
		}
		// Transaction IDs only need to outlive client retries.
		if _, err := tx.Exec(ctx, `DELETE FROM to_device_txns WHERE user_id = $1 AND device_id = $2 AND created_ts < $3`,
			sender, senderDevice, s.now().Add(-txnLifetime).UnixMilli()); err != nil {
			return fmt.Errorf("expire to-device txns: %w", err)
		}
		if len(targets) == 0 {
			return nil
		}
		// Each message gets its own position so that a capped /sync can
		// stop between two messages and resume exactly there.
		sort.Slice(targets, func(i, j int) bool {
			if targets[i].user != targets[j].user {
				return targets[i].user < targets[j].user
			}
			return targets[i].device < targets[j].device
		})
		head, err := tx.NextStreamPos(ctx, int64(len(targets)))
		if err != nil {
			return err
		}
		first := head - int64(len(targets)) + 1
		for i, m := range targets {
			if _, err := tx.Exec(ctx, `INSERT INTO to_device_messages (user_id, device_id, stream_pos, sender, type, content) VALUES ($1, $2, $3, $4, $5, $6)`,
				m.user, m.device, first+int64(i), sender, eventType, string(m.content)); err != nil {
				return fmt.Errorf("store to-device message for %s: %w", m.device, err)
			}
		}
		pos = head
		return nil
	})
	if err != nil {
		return err
	}
	if pos > 0 && s.notifier != nil {
		s.notifier.Publish(pos)
	}
	if duplicate {
		return nil
	}
	for srv, msgs := range remote {
		if s.remote == nil {
			continue
		}
		if err := s.remote.SendToDevice(ctx, sender, eventType, msgs); err != nil {
			return fmt.Errorf("send to-device messages to %s: %w", srv, err)
		}
	}
	return nil
}

// txnLifetime is how long a sent transaction ID is remembered.
const txnLifetime = 24 * time.Hour

// deviceIDs lists userID's devices that can receive to-device messages.
func deviceIDs(ctx context.Context, tx *storage.DB, userID string) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT device_id FROM devices WHERE user_id = $1
		UNION SELECT device_id FROM dehydrated_devices WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list devices of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// ToDevice returns the messages for a device with positions in
// (since, upto], at most limit, each as {"sender","type","content"}. next
// is the position of the last message returned, or upto when there are no
// more in the range.
func (s *Service) ToDevice(ctx context.Context, userID, deviceID string, since, upto int64, limit int) ([]json.RawMessage, int64, error) {
	if limit <= 0 || upto <= since {
		return nil, upto, nil
	}
	rows, err := s.db.Query(ctx, `SELECT stream_pos, sender, type, content FROM to_device_messages
		WHERE user_id = $1 AND device_id = $2 AND stream_pos > $3 AND stream_pos <= $4 ORDER BY stream_pos LIMIT $5`,
		userID, deviceID, since, upto, limit+1)
	if err != nil {
		return nil, 0, fmt.Errorf("read to-device inbox of %s: %w", deviceID, err)
	}
	defer rows.Close()
	var out []json.RawMessage
	next := upto
	for rows.Next() {
		var pos int64
		var sender, typ, content string
		if err := rows.Scan(&pos, &sender, &typ, &content); err != nil {
			return nil, 0, err
		}
		if len(out) == limit {
			break // more remain: resume after the last one returned
		}
		out = append(out, render(sender, typ, content))
		next = pos
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	if len(out) < limit {
		next = upto
	}
	return out, next, nil
}

func render(sender, typ, content string) json.RawMessage {
	s, _ := json.Marshal(sender)
	t, _ := json.Marshal(typ)
	b := make([]byte, 0, len(content)+len(s)+len(t)+32)
	b = append(b, `{"sender":`...)
	b = append(b, s...)
	b = append(b, `,"type":`...)
	b = append(b, t...)
	b = append(b, `,"content":`...)
	b = append(b, content...)
	b = append(b, '}')
	return b
}

// AckToDevice deletes the device's messages up to and including upto: the
// client has synced past them.
func (s *Service) AckToDevice(ctx context.Context, userID, deviceID string, upto int64) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3`, userID, deviceID, upto); err != nil {
		return fmt.Errorf("acknowledge to-device messages of %s: %w", deviceID, err)
	}
	return nil
}

// DeleteDevices drops the inboxes of deleted devices (a users.DeviceHook).
func (s *Service) DeleteDevices(ctx context.Context, tx *storage.DB, userID string, deviceIDs []string) error {
	for _, table := range []string{"to_device_messages", "to_device_txns"} {
		q, args := storage.In(`DELETE FROM `+table+` WHERE user_id = $1 AND device_id IN ($IN)`, 1, deviceIDs)
		if _, err := tx.Exec(ctx, q, append([]any{userID}, args...)...); err != nil {
			return fmt.Errorf("delete %s of %s: %w", table, userID, err)
		}
	}
	return nil
}

// Page serves a dehydrated device's inbox (MSC3814 /events): it deletes
// what the caller acknowledged by passing since, and returns up to limit
// newer messages with the token to pass next time.
func (s *Service) Page(ctx context.Context, userID, deviceID string, since int64, limit int) ([]json.RawMessage, int64, error) {
	if err := s.AckToDevice(ctx, userID, deviceID, since); err != nil {
		return nil, 0, err
	}
	head, err := s.db.StreamHead(ctx)
	if err != nil {
		return nil, 0, err
	}
	if head < since {
		head = since
	}
	return s.ToDevice(ctx, userID, deviceID, since, head, limit)
}
