package clientapi

import (
	"encoding/json"
	"net/http"

	"praxis/crypto/backup"
	"praxis/internal/httputil"
	"praxis/internal/users"
)

type backupVersionBody struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   string          `json:"version"`
}

type createBackupResponse struct {
	Version string `json:"version"`
}

// createBackupVersion serves POST /_matrix/client/v3/room_keys/version.
func (a *API) createBackupVersion(r *http.Request, dev *users.Device) (*createBackupResponse, error) {
	var req backupVersionBody
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	v, err := a.Backup.CreateVersion(r.Context(), dev.UserID, req.Algorithm, req.AuthData)
	if err != nil {
		return nil, err
	}
	return &createBackupResponse{Version: v}, nil
}

// backupVersion serves GET /_matrix/client/v3/room_keys/version[/{version}].
func (a *API) backupVersion(r *http.Request, dev *users.Device) (*backup.Version, error) {
	return a.Backup.GetVersion(r.Context(), dev.UserID, r.PathValue("version"))
}

// updateBackupVersion serves PUT /_matrix/client/v3/room_keys/version/{version}.
func (a *API) updateBackupVersion(r *http.Request, dev *users.Device) (*empty, error) {
	var req backupVersionBody
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if err := a.Backup.UpdateVersion(r.Context(), dev.UserID, r.PathValue("version"), req.Version, req.Algorithm, req.AuthData); err != nil {
		return nil, err
	}
	return &empty{}, nil
}

// deleteBackupVersion serves DELETE /_matrix/client/v3/room_keys/version/{version}.
func (a *API) deleteBackupVersion(r *http.Request, dev *users.Device) (*empty, error) {
	if err := a.Backup.DeleteVersion(r.Context(), dev.UserID, r.PathValue("version")); err != nil {
		return nil, err
	}
	return &empty{}, nil
}

func backupVersionParam(r *http.Request) (string, error) {
	v := r.URL.Query().Get("version")
	if v == "" {
		return "", httputil.MissingParam("the version query parameter is required")
	}
	return v, nil
}

type roomKeysBody struct {
	Rooms map[string]struct {
		Sessions map[string]backup.KeyData `json:"sessions"`
	} `json:"rooms"`
}

// putBackupKeys serves PUT /_matrix/client/v3/room_keys/keys[/{roomId}[/{sessionId}]].
func (a *API) putBackupKeys(r *http.Request, dev *users.Device) (*backup.Counts, error) {
	version, err := backupVersionParam(r)
	if err != nil {
		return nil, err
	}
	roomID, sessionID := r.PathValue("roomId"), r.PathValue("sessionId")
	keys := backup.Keys{}
	switch {
	case sessionID != "":
		var k backup.KeyData
		if err := httputil.DecodeJSON(r, &k); err != nil {
			return nil, err
		}
		keys[roomID] = map[string]backup.KeyData{sessionID: k}
	case roomID != "":
		var body struct {
			Sessions map[string]backup.KeyData `json:"sessions"`
		}
		if err := httputil.DecodeJSON(r, &body); err != nil {
			return nil, err
		}
		keys[roomID] = body.Sessions
	default:
		var body roomKeysBody
		if err := httputil.DecodeJSON(r, &body); err != nil {
			return nil, err
		}
		for room, rk := range body.Rooms {
			keys[room] = rk.Sessions
		}
	}
	return a.Backup.PutKeys(r.Context(), dev.UserID, version, keys)
}

// backupKeys serves GET /_matrix/client/v3/room_keys/keys[/{roomId}[/{sessionId}]].
func (a *API) backupKeys(r *http.Request, dev *users.Device) (any, error) {
	version, err := backupVersionParam(r)
	if err != nil {
		return nil, err
	}
	roomID, sessionID := r.PathValue("roomId"), r.PathValue("sessionId")
	keys, err := a.Backup.GetKeys(r.Context(), dev.UserID, version, roomID, sessionID)
	if err != nil {
		return nil, err
	}
	switch {
	case sessionID != "":
		k, ok := keys[roomID][sessionID]
		if !ok {
			return nil, httputil.NotFound("no backed-up key for this session")
		}
		return k, nil
	case roomID != "":
		sessions := keys[roomID]
		if sessions == nil {
			sessions = map[string]backup.KeyData{}
		}
		return map[string]any{"sessions": sessions}, nil
	}
	rooms := map[string]any{}
	for room, sessions := range keys {
		rooms[room] = map[string]any{"sessions": sessions}
	}
	return map[string]any{"rooms": rooms}, nil
}

// deleteBackupKeys serves DELETE /_matrix/client/v3/room_keys/keys[/{roomId}[/{sessionId}]].
func (a *API) deleteBackupKeys(r *http.Request, dev *users.Device) (*backup.Counts, error) {
	version, err := backupVersionParam(r)
	if err != nil {
		return nil, err
	}
	return a.Backup.DeleteKeys(r.Context(), dev.UserID, version, r.PathValue("roomId"), r.PathValue("sessionId"))
}
