package keyserver

import (
	"context"
	"fmt"
	"sort"

	"praxis/internal/storage"
)

// DeviceListChanges answers /sync's device_lists and /keys/changes for
// userID between two stream positions (since, upto]:
//
//   - changed: users sharing a joined room with userID (and userID itself)
//     whose devices or cross-signing keys changed, plus users who began
//     sharing a room with userID (either side joined);
//   - left: users who shared a room with userID during the range but no
//     longer share any.
func (s *Service) DeviceListChanges(ctx context.Context, userID string, since, upto int64) (changed, left []string, err error) {
	if upto <= since {
		return []string{}, []string{}, nil
	}
	// Most sync windows hold only messages: one probe of two indexes tells
	// whether any key or membership changed at all, before the joins below.
	if since > 0 {
		var any bool
		err := s.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM device_list_changes WHERE stream_pos > $1 AND stream_pos <= $2)
			OR EXISTS (SELECT 1 FROM room_members WHERE stream_pos > $1 AND stream_pos <= $2)`, since, upto).Scan(&any)
		if err != nil {
			return nil, nil, fmt.Errorf("probe device list window: %w", err)
		}
		if !any {
			return []string{}, []string{}, nil
		}
	}
	changedSet := map[string]bool{}
	// Key changes of userID itself and of everyone sharing a room now.
	rows, err := s.db.Query(ctx, `SELECT DISTINCT c.user_id FROM device_list_changes c
		WHERE c.stream_pos > $2 AND c.stream_pos <= $3 AND (c.user_id = $1 OR c.user_id IN (
			SELECT o.user_id FROM room_members me JOIN room_members o ON o.room_nid = me.room_nid
			WHERE me.user_id = $1 AND me.membership = 'join' AND o.membership = 'join'))`, userID, since, upto)
	if err != nil {
		return nil, nil, fmt.Errorf("read device list changes for %s: %w", userID, err)
	}
	if err := collect(rows, changedSet); err != nil {
		return nil, nil, err
	}
	// New room-mates: someone joined a room userID is in, or userID joined
	// a room with others in it — then userID too, for their other devices,
	// which now have new users to share keys with.
	rows, err = s.db.Query(ctx, `SELECT DISTINCT o.user_id, me.stream_pos > $2 AND me.stream_pos <= $3
		FROM room_members me JOIN room_members o ON o.room_nid = me.room_nid
		WHERE me.user_id = $1 AND me.membership = 'join' AND o.membership = 'join' AND o.user_id <> $1
		AND ((o.stream_pos > $2 AND o.stream_pos <= $3) OR (me.stream_pos > $2 AND me.stream_pos <= $3))`, userID, since, upto)
	if err != nil {
		return nil, nil, fmt.Errorf("read new room-mates of %s: %w", userID, err)
	}
	for rows.Next() {
		var mate string
		var iJoined bool
		if err := rows.Scan(&mate, &iJoined); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("read new room-mates of %s: %w", userID, err)
		}
		changedSet[mate] = true
		if iJoined && since > 0 {
			changedSet[userID] = true
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read new room-mates of %s: %w", userID, err)
	}
	// Former room-mates: someone left a room userID is in, or userID left
	// a room others are still in; kept only if no joined room is shared.
	candidates := map[string]bool{}
	rows, err = s.db.Query(ctx, `SELECT DISTINCT o.user_id FROM room_members me JOIN room_members o ON o.room_nid = me.room_nid
		WHERE me.user_id = $1 AND o.user_id <> $1 AND (
			(me.membership = 'join' AND o.membership IN ('leave', 'ban') AND o.stream_pos > $2 AND o.stream_pos <= $3)
			OR (me.membership IN ('leave', 'ban') AND me.stream_pos > $2 AND me.stream_pos <= $3 AND o.membership = 'join'))`, userID, since, upto)
	if err != nil {
		return nil, nil, fmt.Errorf("read former room-mates of %s: %w", userID, err)
	}
	if err := collect(rows, candidates); err != nil {
		return nil, nil, err
	}
	if len(candidates) > 0 {
		sharing := map[string]bool{}
		rows, err = s.db.Query(ctx, `SELECT DISTINCT o.user_id FROM room_members me JOIN room_members o ON o.room_nid = me.room_nid
			WHERE me.user_id = $1 AND me.membership = 'join' AND o.membership = 'join'`, userID)
		if err != nil {
			return nil, nil, fmt.Errorf("read room-mates of %s: %w", userID, err)
		}
		if err := collect(rows, sharing); err != nil {
			return nil, nil, err
		}
		for u := range candidates {
			if !sharing[u] {
				left = append(left, u)
				delete(changedSet, u)
			}
		}
	}
	for u := range changedSet {
		changed = append(changed, u)
	}
	sort.Strings(changed)
	sort.Strings(left)
	if changed == nil {
		changed = []string{}
	}
	if left == nil {
		left = []string{}
	}
	return changed, left, nil
}

type rowsScanner interface {
	Next() bool
	Scan(...any) error
	Close() error
	Err() error
}

func collect(rows rowsScanner, into map[string]bool) error {
	defer rows.Close()
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return err
		}
		into[u] = true
	}
	return rows.Err()
}

// MarkDeviceListChanged records that users' devices changed without a
// local key upload: federation calls it for m.device_list_update and
// m.signing_key_update EDUs about remote users, so local room-mates
// re-query their keys.
func (s *Service) MarkDeviceListChanged(ctx context.Context, userIDs ...string) error {
	if len(userIDs) == 0 {
		return nil
	}
	var pos int64
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		var err error
		pos, err = markChanged(ctx, tx, usersChanged(userIDs...)...)
		return err
	})
	if err != nil {
		return err
	}
	s.publish(pos)
	return nil
}

// MarkDeviceChanged records that one device of a local user changed
// without a key upload (a rename: other users see device names in
// /keys/query). The change names the device, so federation sends its
// partners an m.device_list_update for it; a change of the user as a
// whole would go out only as a cross-signing update.
func (s *Service) MarkDeviceChanged(ctx context.Context, userID, deviceID string) error {
	var pos int64
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		var err error
		pos, err = markChanged(ctx, tx, change{userID: userID, deviceID: deviceID})
		return err
	})
	if err != nil {
		return err
	}
	s.publish(pos)
	return nil
}
