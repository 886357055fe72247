package txn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/storage"
)

// PresenceStore records remote users' presence (users.Service).
type PresenceStore interface {
	SetRemotePresence(ctx context.Context, userID, presence, statusMsg string, lastActiveTS int64) error
}

// RoomACL answers whether a room's server ACL admits a server.
type RoomACL interface {
	ServerAllowedByACL(ctx context.Context, roomID, server string) (bool, error)
}

// maxStatusMsg bounds a remote status message we store (the EDU is
// already bounded by the request size; this keeps one user's row small).
const maxStatusMsg = 4096

// PresenceHandler stores m.presence EDUs (presence.enabled only: without
// it the handler is not registered and presence EDUs are ignored). An
// entry is taken only about a user of the origin server, who shares a
// joined room with one of our users, in a room whose server ACL admits
// the origin: presence is news only to room mates, and a server learns
// nothing about users it has no room with. Refused entries do not stop
// the others.
func PresenceHandler(db *storage.DB, store PresenceStore, acl RoomACL, serverName string, now func() time.Time) EDUHandler {
	return func(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
		var c struct {
			Push []struct {
				UserID          string  `json:"user_id"`
				Presence        string  `json:"presence"`
				LastActiveAgo   int64   `json:"last_active_ago"`
				CurrentlyActive bool    `json:"currently_active"`
				StatusMsg       *string `json:"status_msg"`
			} `json:"push"`
		}
		if err := json.Unmarshal(content, &c); err != nil {
			return fmt.Errorf("m.presence: %w", err)
		}
		var errs []error
		for _, p := range c.Push {
			if err := checkPresence(ctx, db, acl, serverName, origin, p.UserID, p.Presence); err != nil {
				errs = append(errs, err)
				continue
			}
			msg := ""
			if p.StatusMsg != nil {
				msg = *p.StatusMsg
			}
			if len(msg) > maxStatusMsg {
				errs = append(errs, fmt.Errorf("m.presence for %s: status_msg longer than %d bytes", p.UserID, maxStatusMsg))
				continue
			}
			// an age from the future or beyond the epoch says "just now"
			ago := p.LastActiveAgo
			if ago < 0 || ago > now().UnixMilli() {
				ago = 0
			}
			if err := store.SetRemotePresence(ctx, p.UserID, p.Presence, msg, now().UnixMilli()-ago); err != nil {
				return err
			}
		}
		return errors.Join(errs...)
	}
}

// checkPresence refuses a push entry with an unknown presence, about
// another server's user, or about a user who shares no room with ours
// under an ACL that admits origin.
func checkPresence(ctx context.Context, db *storage.DB, acl RoomACL, serverName string, origin spec.ServerName, userID, presence string) error {
	switch presence {
	case "online", "offline", "unavailable":
	default:
		return fmt.Errorf("m.presence for %s: unknown presence %q", userID, presence)
	}
	if _, err := spec.NewUserID(userID, true); err != nil || serverOf(userID) != string(origin) {
		return fmt.Errorf("m.presence from %s about %q (not its user)", origin, userID)
	}
	rooms, err := roomsSharedWithLocal(ctx, db, userID, serverName)
	if err != nil {
		return err
	}
	for _, room := range rooms {
		ok, err := acl.ServerAllowedByACL(ctx, room, string(origin))
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("m.presence for %s: shares no room with a user of ours that admits %s", userID, origin)
}

// roomsSharedWithLocal lists the rooms userID is joined to that have a
// joined member of ours.
func roomsSharedWithLocal(ctx context.Context, db *storage.DB, userID, serverName string) ([]string, error) {
	rooms, err := db.QueryStrings(ctx, `SELECT r.room_id FROM room_members m JOIN rooms r ON r.room_nid = m.room_nid
		WHERE m.user_id = $1 AND m.membership = 'join'
		AND EXISTS (SELECT 1 FROM room_members l WHERE l.room_nid = m.room_nid AND l.membership = 'join' AND l.user_id LIKE $2)`,
		userID, "%:"+serverName)
	if err != nil {
		return nil, fmt.Errorf("rooms of %s shared with ours: %w", userID, err)
	}
	return rooms, nil
}
