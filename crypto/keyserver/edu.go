package keyserver

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/httputil"
)

// HandleDeviceListUpdateEDU takes an inbound m.device_list_update: a
// remote user's device changed, so local room-mates must re-query their
// keys (which go to the remote server through Remote). The signature
// matches federation/txn.EDUHandler.
func (s *Service) HandleDeviceListUpdateEDU(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	return s.remoteKeysChanged(ctx, origin, content)
}

// HandleSigningKeyUpdateEDU takes an inbound m.signing_key_update (a
// remote user's cross-signing keys changed).
func (s *Service) HandleSigningKeyUpdateEDU(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	return s.remoteKeysChanged(ctx, origin, content)
}

func (s *Service) remoteKeysChanged(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var edu struct {
		UserID string `json:"user_id"`
	}
	if err := json.Unmarshal(content, &edu); err != nil {
		return httputil.BadJSON("malformed device list EDU")
	}
	// A server speaks only for its own users.
	if serverOf(edu.UserID) != string(origin) || s.isLocal(edu.UserID) {
		return httputil.Forbidden(fmt.Sprintf("%s may not update devices of %s", origin, edu.UserID))
	}
	return s.MarkDeviceListChanged(ctx, edu.UserID)
}

// DeviceListChange is one entry of the local device-list stream.
type DeviceListChange struct {
	UserID    string
	StreamPos int64
	// DeviceID is the device that changed; "" for a change of the user
	// as a whole (cross-signing keys or signatures on them).
	DeviceID string
	// Deleted: the device was deleted (logout, deletion, deactivation).
	Deleted bool
	// PrevPos is the position of the user's previous device change (0 if
	// none): the prev_id of the m.device_list_update for this one, so a
	// partner can tell whether it missed an update. Changes of the user
	// as a whole are not device-list updates and are skipped.
	PrevPos int64
}

// LocalDeviceListChanges lists up to limit changes of local users'
// devices in (since, upto], oldest first: what the federation sender
// turns into outbound m.device_list_update (and m.signing_key_update)
// EDUs for servers sharing a room.
func (s *Service) LocalDeviceListChanges(ctx context.Context, since, upto int64, limit int) ([]DeviceListChange, error) {
	rows, err := s.db.Query(ctx, `SELECT user_id, stream_pos, device_id, deleted FROM device_list_changes
		WHERE stream_pos > $1 AND stream_pos <= $2 AND user_id LIKE $3 ORDER BY stream_pos LIMIT $4`,
		since, upto, "%:"+s.serverName, limit)
	if err != nil {
		return nil, fmt.Errorf("read device list stream: %w", err)
	}
	var out []DeviceListChange
	for rows.Next() {
		var c DeviceListChange
		if err := rows.Scan(&c.UserID, &c.StreamPos, &c.DeviceID, &c.Deleted); err != nil {
			rows.Close()
			return nil, err
		}
		// LIKE's _ matches any character: the suffix check is exact
		if s.isLocal(c.UserID) {
			out = append(out, c)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i, c := range out {
		if c.DeviceID == "" {
			continue
		}
		if err := s.db.QueryRow(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM device_list_changes
			WHERE user_id = $1 AND device_id <> '' AND stream_pos < $2`, c.UserID, c.StreamPos).Scan(&out[i].PrevPos); err != nil {
			return nil, fmt.Errorf("previous device-list change of %s: %w", c.UserID, err)
		}
	}
	return out, nil
}
