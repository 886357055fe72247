package turn

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// roomEvent is the little of a timeline event the call policy reads.
type roomEvent struct {
	Type     string          `json:"type"`
	Sender   string          `json:"sender"`
	OriginTS int64           `json:"origin_server_ts"`
	Content  json.RawMessage `json:"content"`
}

// CallPolicy is the CallChecker of turn.staff_only: a patient gets TURN
// credentials while a staff member is calling them. It reads the newest
// events of the rooms the patient is in:
//
//   - an m.call.invite from staff whose lifetime has not run out and that
//     no m.call.hangup or m.call.reject has ended yet means a call;
//   - in an encrypted room the server cannot see event types, so an
//     m.room.encrypted event from staff within EncryptedWindow counts as a
//     possible invite. That is the most the server can know without keys.
//
// The functions are supplied by the composition root, so this package
// needs neither the roomserver nor the users package.
type CallPolicy struct {
	JoinedRooms func(ctx context.Context, userID string) ([]string, error)
	// Recent returns the newest events of a room as userID sees them,
	// newest first, as event JSON.
	Recent  func(ctx context.Context, userID, roomID string, limit int) ([][]byte, error)
	IsStaff func(ctx context.Context, userID string) (bool, error)
	// EncryptedWindow is how recent an encrypted staff event must be (2 min when 0).
	EncryptedWindow time.Duration
	Now             func() time.Time
}

// Rooms and events looked at: a patient is in few rooms, and a ringing
// call is among the newest events.
const (
	policyMaxRooms  = 50
	policyRecentLen = 20
	// defaultInviteLifetime applies when an invite names none (the spec's
	// recommended 60 s is what clients send).
	defaultInviteLifetime = 60 * time.Second
)

// InCallWithStaff implements CallChecker.
func (p *CallPolicy) InCallWithStaff(ctx context.Context, userID string) (bool, error) {
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	window := p.EncryptedWindow
	if window == 0 {
		window = 2 * time.Minute
	}
	rooms, err := p.JoinedRooms(ctx, userID)
	if err != nil {
		return false, fmt.Errorf("joined rooms: %w", err)
	}
	if len(rooms) > policyMaxRooms {
		rooms = rooms[:policyMaxRooms]
	}
	staff := map[string]bool{}
	isStaff := func(u string) (bool, error) {
		if v, ok := staff[u]; ok {
			return v, nil
		}
		v, err := p.IsStaff(ctx, u)
		if err != nil {
			return false, err
		}
		staff[u] = v
		return v, nil
	}
	nowMS := now().UnixMilli()
	for _, room := range rooms {
		events, err := p.Recent(ctx, userID, room, policyRecentLen)
		if err != nil {
			return false, fmt.Errorf("recent events of %s: %w", room, err)
		}
		ended := map[string]bool{}   // call IDs hung up or rejected later than the invite
		for _, raw := range events { // newest first
			var ev roomEvent
			if json.Unmarshal(raw, &ev) != nil {
				continue
			}
			if ev.Sender == userID {
				if ev.Type == "m.call.hangup" || ev.Type == "m.call.reject" {
					ended[callID(ev.Content)] = true
				}
				continue
			}
			var ok bool
			switch ev.Type {
			case "m.call.hangup", "m.call.reject":
				ended[callID(ev.Content)] = true
				continue
			case "m.call.invite":
				var c struct {
					CallID   string `json:"call_id"`
					Lifetime int64  `json:"lifetime"`
				}
				_ = json.Unmarshal(ev.Content, &c)
				life := c.Lifetime
				if life <= 0 {
					life = defaultInviteLifetime.Milliseconds()
				}
				ok = !ended[c.CallID] && nowMS < ev.OriginTS+life
			case "m.room.encrypted":
				ok = nowMS < ev.OriginTS+window.Milliseconds()
			}
			if !ok {
				continue
			}
			if s, err := isStaff(ev.Sender); err != nil {
				return false, fmt.Errorf("is %s staff: %w", ev.Sender, err)
			} else if s {
				return true, nil
			}
		}
	}
	return false, nil
}

func callID(content json.RawMessage) string {
	var c struct {
		CallID string `json:"call_id"`
	}
	_ = json.Unmarshal(content, &c)
	return c.CallID
}
