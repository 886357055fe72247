package txn

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/ephemeral"
)

// Memberships answers whether a user is joined to a room.
type Memberships interface {
	Membership(ctx context.Context, roomID, userID string) (string, error)
	SyncEventPosition(ctx context.Context, roomID, eventID string) (int64, error)
	ServerAllowedByACL(ctx context.Context, roomID, server string) (bool, error)
}

// remoteTypingTimeout is how long a remote user's typing lasts without a
// renewal (the EDU carries no timeout; senders renew well within this).
const remoteTypingTimeout = 30 * time.Second

// checkSender refuses an EDU about a user of another server than origin,
// from a server the room's ACL denies, or about a room the user is not
// joined to.
func checkSender(ctx context.Context, m Memberships, origin spec.ServerName, roomID, userID string) error {
	if serverOf(userID) != string(origin) {
		return fmt.Errorf("EDU from %s about %s (another server's user)", origin, userID)
	}
	if ok, err := m.ServerAllowedByACL(ctx, roomID, string(origin)); err != nil || !ok {
		return fmt.Errorf("the server ACL of %s denies %s", roomID, origin)
	}
	ms, err := m.Membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if ms != "join" {
		return fmt.Errorf("%s is not joined to %s", userID, roomID)
	}
	return nil
}

// TypingHandler stores m.typing EDUs.
func TypingHandler(eph *ephemeral.Service, m Memberships) EDUHandler {
	return func(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
		var c struct {
			RoomID string `json:"room_id"`
			UserID string `json:"user_id"`
			Typing bool   `json:"typing"`
		}
		if err := json.Unmarshal(content, &c); err != nil {
			return fmt.Errorf("m.typing: %w", err)
		}
		if err := checkSender(ctx, m, origin, c.RoomID, c.UserID); err != nil {
			return err
		}
		return eph.SetTyping(ctx, c.RoomID, c.UserID, c.Typing, remoteTypingTimeout)
	}
}

// ReceiptHandler stores m.receipt EDUs.
func ReceiptHandler(eph *ephemeral.Service, m Memberships) EDUHandler {
	return func(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
		var c map[string]map[string]map[string]struct {
			EventIDs []string `json:"event_ids"`
			Data     struct {
				TS       int64  `json:"ts"`
				ThreadID string `json:"thread_id"`
			} `json:"data"`
		}
		if err := json.Unmarshal(content, &c); err != nil {
			return fmt.Errorf("m.receipt: %w", err)
		}
		for roomID, types := range c {
			for rType, users := range types {
				for userID, r := range users {
					if err := checkSender(ctx, m, origin, roomID, userID); err != nil {
						return err
					}
					for _, eventID := range r.EventIDs {
						pos, err := m.SyncEventPosition(ctx, roomID, eventID)
						if err != nil {
							continue // an event we do not (yet) have
						}
						if _, err := eph.PutReceipt(ctx, ephemeral.Receipt{
							RoomID: roomID, UserID: userID, Type: rType, ThreadID: r.Data.ThreadID,
							EventID: eventID, EventStreamPos: pos, TS: r.Data.TS,
						}); err != nil {
							return err
						}
					}
				}
			}
		}
		return nil
	}
}
