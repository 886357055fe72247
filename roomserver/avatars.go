package roomserver

import (
	"context"
	"fmt"

	"github.com/tidwall/gjson"
)

// RoomAvatarsInUse reports which of the given mxc:// URIs are the current
// avatar of some room, so that media retention spares them.
func (s *Service) RoomAvatarsInUse(ctx context.Context, mxcs []string) (map[string]bool, error) {
	used := map[string]bool{}
	if len(mxcs) == 0 {
		return used, nil
	}
	want := make(map[string]bool, len(mxcs))
	for _, m := range mxcs {
		want[m] = true
	}
	rows, err := s.db.Query(ctx, `SELECT e.json FROM current_state cs JOIN events e ON e.event_nid = cs.event_nid
		WHERE cs.type = 'm.room.avatar' AND cs.state_key = ''`)
	if err != nil {
		return nil, fmt.Errorf("room avatars in use: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var js []byte
		if err := rows.Scan(&js); err != nil {
			return nil, err
		}
		if u := gjson.GetBytes(js, "content.url").String(); want[u] {
			used[u] = true
		}
	}
	return used, rows.Err()
}
