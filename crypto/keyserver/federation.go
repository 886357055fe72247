package keyserver

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/tidwall/gjson"
)

// UserDevices is the answer to GET /_matrix/federation/v1/user/devices/{userId}.
type UserDevices struct {
	UserID         string          `json:"user_id"`
	StreamID       int64           `json:"stream_id"`
	Devices        []DeviceEntry   `json:"devices"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// DeviceEntry is one device in UserDevices.
type DeviceEntry struct {
	DeviceID    string          `json:"device_id"`
	DisplayName string          `json:"device_display_name,omitempty"`
	Keys        json.RawMessage `json:"keys"`
}

// LocalUserDevices lists a local user's devices with keys for another
// server. stream_id is the position of the user's latest device change
// (the stream_id of the last m.device_list_update sent for the user), so
// the remote side can chain the updates that follow. It is read before
// the devices: a change landing in between makes the list newer than the
// stream_id, and the partner then applies that change's update again,
// which is harmless; the other order would lose it.
func (s *Service) LocalUserDevices(ctx context.Context, userID string) (*UserDevices, error) {
	out := &UserDevices{UserID: userID, Devices: []DeviceEntry{}}
	if err := s.db.QueryRow(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM device_list_changes WHERE user_id = $1 AND device_id <> ''`,
		userID).Scan(&out.StreamID); err != nil {
		return nil, fmt.Errorf("read device list position of %s: %w", userID, err)
	}
	q, err := s.Query(ctx, "", map[string][]string{userID: nil})
	if err != nil {
		return nil, err
	}
	out.MasterKey, out.SelfSigningKey = q.MasterKeys[userID], q.SelfSigningKeys[userID]
	for id, keys := range q.DeviceKeys[userID] {
		out.Devices = append(out.Devices, DeviceEntry{DeviceID: id, DisplayName: gjson.GetBytes(keys, "unsigned.device_display_name").String(), Keys: keys})
	}
	sort.Slice(out.Devices, func(i, j int) bool { return out.Devices[i].DeviceID < out.Devices[j].DeviceID })
	return out, nil
}
