package admin

import (
	"net/http"

	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/internal/users"
)

type deviceJSON struct {
	DeviceID    string  `json:"device_id"`
	DisplayName *string `json:"display_name"`
	LastSeenIP  *string `json:"last_seen_ip"`
	LastSeenTS  int64   `json:"last_seen_ts"`
	UserID      string  `json:"user_id"`
}

// listDevices serves GET /_synapse/admin/v2/users/{userId}/devices.
func (s *Service) listDevices(r *http.Request, caller *users.Device) (any, error) {
	ctx := r.Context()
	userID, err := s.localUser(r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	if _, err := s.users.Account(ctx, userID); err != nil {
		return nil, userError(err)
	}
	ds, err := s.users.Devices(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := make([]deviceJSON, 0, len(ds))
	for _, d := range ds {
		out = append(out, deviceJSON{DeviceID: d.DeviceID, DisplayName: nullable(d.DisplayName), LastSeenIP: nullable(d.LastSeenIP), LastSeenTS: d.LastSeenTS, UserID: userID})
	}
	return map[string]any{"devices": out, "total": len(out)}, nil
}

// deleteDevice serves DELETE /_synapse/admin/v2/users/{userId}/devices/{deviceId}:
// the remote logout of one device (its tokens, keys and to-device inbox go).
func (s *Service) deleteDevice(r *http.Request, caller *users.Device) (any, error) {
	userID, err := s.localUser(r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	return s.removeDevices(r, caller, userID, []string{r.PathValue("deviceId")})
}

// deleteDevices serves POST /_synapse/admin/v2/users/{userId}/delete_devices {"devices": [...]}.
func (s *Service) deleteDevices(r *http.Request, caller *users.Device) (any, error) {
	userID, err := s.localUser(r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	var req struct {
		Devices []string `json:"devices"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Devices == nil {
		return nil, httputil.MissingParam("devices is required")
	}
	return s.removeDevices(r, caller, userID, req.Devices)
}

// removeDevices deletes devices of userID and audits it. Unknown device
// IDs are ignored, as in the client API: the result is the same.
func (s *Service) removeDevices(r *http.Request, caller *users.Device, userID string, deviceIDs []string) (any, error) {
	ctx := r.Context()
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		u := s.users.WithTx(tx)
		if _, err := u.Account(ctx, userID); err != nil {
			return userError(err)
		}
		if err := u.DeleteDevices(ctx, userID, deviceIDs); err != nil {
			return err
		}
		_, err := s.audit.Append(ctx, tx, Record{Actor: caller.UserID, Action: "user.delete_devices", Target: userID,
			Params: map[string]any{"devices": deviceIDs}})
		return err
	})
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

type connection struct {
	IP        string `json:"ip"`
	LastSeen  int64  `json:"last_seen"`
	UserAgent string `json:"user_agent"`
}

type session struct {
	Connections []connection `json:"connections"`
}

type deviceSessions struct {
	Sessions []session `json:"sessions"`
}

// whois serves GET /_synapse/admin/v1/whois/{userId}: the last address
// and time each device was seen (the server keeps no connection history
// beyond that, and no user agents).
func (s *Service) whois(r *http.Request, caller *users.Device) (any, error) {
	ctx := r.Context()
	userID, err := s.localUser(r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	if _, err := s.users.Account(ctx, userID); err != nil {
		return nil, userError(err)
	}
	ds, err := s.users.Devices(ctx, userID)
	if err != nil {
		return nil, err
	}
	devices := map[string]deviceSessions{}
	for _, d := range ds {
		conns := []connection{}
		if d.LastSeenIP != "" || d.LastSeenTS != 0 {
			conns = append(conns, connection{IP: d.LastSeenIP, LastSeen: d.LastSeenTS})
		}
		devices[d.DeviceID] = deviceSessions{Sessions: []session{{Connections: conns}}}
	}
	return map[string]any{"user_id": userID, "devices": devices}, nil
}
