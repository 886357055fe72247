package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
)

// Space hierarchy (spec: client-server API, "Spaces",
// GET /_matrix/client/v1/rooms/{roomId}/hierarchy) over the rooms this
// server knows. A room this server is not in is not fetched over
// federation: it is left out, as an inaccessible room would be.

const (
	spaceChild = "m.space.child"
	// maxHierarchyRooms bounds one walk: a space graph is small in a
	// practice, and a cycle or a huge graph must not cost without bound.
	maxHierarchyRooms = 1000
)

// HierarchyQuery is one /hierarchy request.
type HierarchyQuery struct {
	SuggestedOnly bool
	// MaxDepth < 0 means no limit.
	MaxDepth int
	Limit    int
	From     string
}

// HierarchyRoom is one room of the walk (spec: SpaceHierarchyRoomsChunk).
type HierarchyRoom struct {
	PublicRoom
	ChildrenState []json.RawMessage `json:"children_state"`
}

// HierarchyPage is a page of the walk.
type HierarchyPage struct {
	Rooms     []HierarchyRoom `json:"rooms"`
	NextBatch string          `json:"next_batch,omitempty"`
}

type childLink struct {
	roomID    string
	order     string
	hasOrder  bool
	ts        int64
	suggested bool
	stripped  json.RawMessage
}

// spaceChildren returns the valid m.space.child links of a room (content
// with a non-empty via), in the spec's order: by order (those without one
// last), then by the link's timestamp, then by room ID.
func (s *Service) spaceChildren(ctx context.Context, roomNID int64) ([]childLink, error) {
	rows, err := s.currentStateEvents(ctx, []int64{roomNID}, &stateFilter{types: []string{spaceChild}})
	if err != nil {
		return nil, err
	}
	var out []childLink
	for _, r := range rows {
		c := gjson.GetBytes(r.JSON, "content")
		if r.StateKey == nil || *r.StateKey == "" || len(c.Get("via").Array()) == 0 {
			continue // an empty link is a removed one
		}
		l := childLink{roomID: *r.StateKey, ts: r.OriginTS, suggested: c.Get("suggested").Bool()}
		// order must be printable ASCII of at most 50 characters, else ignored
		if o := c.Get("order"); o.Type == gjson.String && len(o.Str) <= 50 && printableASCII(o.Str) {
			l.order, l.hasOrder = o.Str, true
		}
		l.stripped, _ = json.Marshal(map[string]any{
			"type": spaceChild, "state_key": *r.StateKey, "sender": r.Sender,
			"origin_server_ts": r.OriginTS, "content": json.RawMessage(c.Raw),
		})
		out = append(out, l)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.hasOrder != b.hasOrder {
			return a.hasOrder
		}
		if a.order != b.order {
			return a.order < b.order
		}
		if a.ts != b.ts {
			return a.ts < b.ts
		}
		return a.roomID < b.roomID
	})
	return out, nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// Hierarchy walks the space tree under roomID depth-first for userID,
// listing the rooms they could see or join (the same rule as the room
// summary). The root itself must be such a room: 403 otherwise. Links of
// rooms that are not spaces are not followed.
func (s *Service) Hierarchy(ctx context.Context, userID, roomID string, q HierarchyQuery) (*HierarchyPage, error) {
	if err := validRoomID(roomID); err != nil {
		return nil, err
	}
	offset := 0
	if q.From != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(q.From, "h"))
		if err != nil || n < 0 || !strings.HasPrefix(q.From, "h") {
			return nil, spec.InvalidParam("invalid from token")
		}
		offset = n
	}
	if _, err := s.RoomPreview(ctx, userID, roomID); err != nil {
		var me spec.MatrixError
		if errors.As(err, &me) && me.ErrCode == spec.ErrorNotFound {
			return nil, spec.Forbidden("you cannot see this space")
		}
		return nil, err
	}
	var all []HierarchyRoom
	seen := map[string]bool{}
	var walk func(id string, depth int) error
	walk = func(id string, depth int) error {
		if seen[id] || len(all) >= maxHierarchyRooms {
			return nil
		}
		seen[id] = true
		p, err := s.RoomPreview(ctx, userID, id)
		if err != nil {
			var me spec.MatrixError
			if errors.As(err, &me) {
				return nil // unknown here or not visible to the caller: left out
			}
			return err
		}
		hr := HierarchyRoom{PublicRoom: p.PublicRoom, ChildrenState: []json.RawMessage{}}
		var children []childLink
		if p.RoomType == "m.space" {
			room, err := s.readRoom(ctx, id)
			if err != nil {
				return err
			}
			if children, err = s.spaceChildren(ctx, room.nid); err != nil {
				return err
			}
			if q.SuggestedOnly {
				kept := children[:0]
				for _, c := range children {
					if c.suggested {
						kept = append(kept, c)
					}
				}
				children = kept
			}
			for _, c := range children {
				hr.ChildrenState = append(hr.ChildrenState, c.stripped)
			}
		}
		all = append(all, hr)
		if q.MaxDepth >= 0 && depth >= q.MaxDepth {
			return nil
		}
		for _, c := range children {
			if err := walk(c.roomID, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(roomID, 0); err != nil {
		return nil, err
	}
	page := &HierarchyPage{Rooms: []HierarchyRoom{}}
	if offset < len(all) {
		page.Rooms = all[offset:]
	}
	if q.Limit > 0 && len(page.Rooms) > q.Limit {
		page.Rooms = page.Rooms[:q.Limit]
		page.NextBatch = "h" + strconv.Itoa(offset+q.Limit)
	}
	return page, nil
}
