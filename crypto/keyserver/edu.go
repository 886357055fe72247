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
}

// LocalDeviceListChanges lists the changes of local users' devices in
// (since, upto], oldest first: what the federation sender turns into
// outbound m.device_list_update EDUs for servers sharing a room.
func (s *Service) LocalDeviceListChanges(ctx context.Context, since, upto int64) ([]DeviceListChange, error) {
	rows, err := s.db.Query(ctx, `SELECT user_id, stream_pos FROM device_list_changes WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY stream_pos`, since, upto)
	if err != nil {
		return nil, fmt.Errorf("read device list stream: %w", err)
	}
	defer rows.Close()
	var out []DeviceListChange
	for rows.Next() {
		var c DeviceListChange
		if err := rows.Scan(&c.UserID, &c.StreamPos); err != nil {
			return nil, err
		}
		if s.isLocal(c.UserID) {
			out = append(out, c)
		}
	}
	return out, rows.Err()
}
