package sync

import (
	"context"
	"encoding/json"
	"slices"

	"praxis/internal/users"
)

// Presence is the presence stream of /sync, plugged in only when
// presence.enabled is on: it is off by default, because who is online
// when is health-adjacent data.
type Presence interface {
	// TouchPresence marks the user active with a presence (set_presence).
	TouchPresence(ctx context.Context, userID, presence string) error
	// PresenceChanges lists presences last changed in (since, upto].
	PresenceChanges(ctx context.Context, since, upto int64) ([]users.Presence, error)
	// PresencesOf returns the presences of the given users.
	PresencesOf(ctx context.Context, userIDs []string) ([]users.Presence, error)
}

// SetPresence plugs in the presence stream.
func (s *Service) SetPresence(p Presence) { s.presence = p }

// presenceBatch bounds the user IDs of one co-membership query.
const presenceBatch = 500

// presenceEvents renders the presence changes in (since, upto] that the
// caller may see: their own and those of users sharing a joined room with
// them, plus (incrementally) the current presence of users who came to
// share a room with them in the window. Only the newest of the filter's
// limit are kept.
func (s *Service) presenceEvents(ctx context.Context, req *Request, since, upto int64) ([]json.RawMessage, error) {
	changes, err := s.presence.PresenceChanges(ctx, since, upto)
	if err != nil {
		return nil, err
	}
	if since > 0 {
		mates, err := s.rooms.NewRoomMates(ctx, req.UserID, since, upto)
		if err != nil {
			return nil, err
		}
		if len(mates) > 0 {
			known := map[string]bool{}
			for _, p := range changes {
				known[p.UserID] = true
			}
			mates = slices.DeleteFunc(mates, func(u string) bool { return known[u] })
			older, err := s.presence.PresencesOf(ctx, mates)
			if err != nil {
				return nil, err
			}
			// older changes first, as in the stream
			changes = append(older, changes...)
		}
	}
	if len(changes) == 0 {
		return nil, nil
	}
	f := &req.Filter.Presence
	var others []string
	for _, p := range changes {
		if p.UserID != req.UserID && f.Allows("m.presence", p.UserID) {
			others = append(others, p.UserID)
		}
	}
	visible := map[string]bool{req.UserID: f.Allows("m.presence", req.UserID)}
	for len(others) > 0 {
		n := min(len(others), presenceBatch)
		share, err := s.rooms.SharingARoom(ctx, req.UserID, others[:n])
		if err != nil {
			return nil, err
		}
		for u := range share {
			visible[u] = true
		}
		others = others[n:]
	}
	now := s.now().UnixMilli()
	var out []json.RawMessage
	for _, p := range changes {
		if !visible[p.UserID] {
			continue
		}
		content := map[string]any{
			"presence":         p.Presence,
			"last_active_ago":  max(0, now-p.LastActiveTS),
			"currently_active": p.Presence == "online",
		}
		if p.StatusMsg != "" {
			content["status_msg"] = p.StatusMsg
		}
		ev, err := json.Marshal(map[string]any{"type": "m.presence", "sender": p.UserID, "content": content})
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	if f.Limit != nil && *f.Limit >= 0 && len(out) > *f.Limit {
		out = out[len(out)-*f.Limit:]
	}
	return out, nil
}
