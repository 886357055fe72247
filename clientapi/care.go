package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"

	"praxis/clientapi/auth"
	"praxis/crypto/keyserver"
	"praxis/internal/care"
	"praxis/internal/httputil"
	"praxis/internal/users"
)

// The care domain's part of the client API: the contact policy on the
// read paths that reveal other users (profiles, user directory, device
// keys, room directory), and the request board for staff. The write
// paths (invites, joins, createRoom) are guarded in the room authority
// itself, through roomserver.Policy.

const praxisV1 = "/_praxis/client/v1"

// RegistrationCodes lets codes of another domain pass the registration
// token stage and act on the account they admit: the care domain's
// coupling codes, so that a patient registers and couples in one step.
// Around the creation of the account: ClaimRegistrationCode takes the
// code bound at the stage (reporting whether there was one),
// ReleaseRegistrationCode gives it back if no account was created, and
// CoupleRegistered couples the new account.
type RegistrationCodes interface {
	auth.RegistrationCodes
	RegistrationCodeValid(ctx context.Context, code string) (bool, error)
	ClaimRegistrationCode(ctx context.Context, sessionID string) (bool, error)
	ReleaseRegistrationCode(ctx context.Context, sessionID string)
	CoupleRegistered(ctx context.Context, sessionID, userID string) (roomID string, err error)
}

// careRegister serves POST /_matrix/client/v3/register: under the health
// rules a self-registered account is a patient.
func (a *API) careRegister(r *http.Request) (*registerResponse, error) {
	resp, err := a.register(r)
	if err != nil || a.Care == nil {
		return resp, err
	}
	if err := a.Care.MarkSelfRegistered(r.Context(), resp.UserID); err != nil {
		return nil, err
	}
	return resp, nil
}

// careProfile guards GET /profile/{userId}[/…]: under the health rules
// lookups need a token, and a patient sees only the profiles of users
// they share a room with (403, as the spec allows for
// limit_profile_requests_to_users_who_share_rooms).
func (a *API) careProfile(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.Care == nil || !a.Care.Enforced() {
			next.ServeHTTP(w, r)
			return
		}
		dev, err := auth.Device(r, a.Users)
		if err == nil {
			err = a.careVisible(r, dev, r.PathValue("userId"))
		}
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *API) careVisible(r *http.Request, dev *users.Device, target string) error {
	vis, err := a.Care.Visible(r.Context(), dev.UserID, []string{target})
	if err != nil {
		return err
	}
	if !vis[target] {
		return httputil.Forbidden("you can only look up users you share a room with")
	}
	return nil
}

// careNoPatients keeps patients out of an endpoint (the public room
// directory) under the health rules.
func (a *API) careNoPatients(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.Care != nil && a.Care.Enforced() {
			dev, err := auth.Device(r, a.Users)
			if err != nil {
				httputil.WriteError(w, r, err)
				return
			}
			restricted, err := a.Care.Restricted(r.Context(), dev.UserID)
			if err != nil {
				httputil.WriteError(w, r, err)
				return
			}
			if restricted {
				httputil.WriteError(w, r, httputil.Forbidden("the room directory is not available to patients"))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// careSearchUsers serves POST /_matrix/client/v3/user_directory/search: a
// patient finds only users they share a room with.
func (a *API) careSearchUsers(r *http.Request, dev *users.Device) (*userSearchResponse, error) {
	resp, err := a.searchUsers(r, dev)
	if err != nil || a.Care == nil || !a.Care.Enforced() {
		return resp, err
	}
	ids := make([]string, len(resp.Results))
	for i, u := range resp.Results {
		ids[i] = u.UserID
	}
	vis, err := a.Care.Visible(r.Context(), dev.UserID, ids)
	if err != nil {
		return nil, err
	}
	kept := resp.Results[:0]
	for _, u := range resp.Results {
		if vis[u.UserID] {
			kept = append(kept, u)
		}
	}
	resp.Results = kept
	return resp, nil
}

// careQueryKeys serves POST /_matrix/client/v3/keys/query: a patient does
// not learn the devices of users they share no room with; those users are
// left out of the answer as if unknown.
func (a *API) careQueryKeys(r *http.Request, dev *users.Device) (*keyserver.QueryResponse, error) {
	if a.Care == nil || !a.Care.Enforced() {
		return a.queryKeys(r, dev)
	}
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if len(req.DeviceKeys) > maxKeyUsers {
		return nil, httputil.InvalidParam("too many users in one query")
	}
	ids := make([]string, 0, len(req.DeviceKeys))
	for u := range req.DeviceKeys {
		if !keysUserID(u) {
			return nil, httputil.InvalidParam("not a user ID: " + u)
		}
		ids = append(ids, u)
	}
	vis, err := a.Care.Visible(r.Context(), dev.UserID, ids)
	if err != nil {
		return nil, err
	}
	for u := range req.DeviceKeys {
		if !vis[u] {
			delete(req.DeviceKeys, u)
		}
	}
	return a.Keys.Query(r.Context(), dev.UserID, req.DeviceKeys)
}

type boardResponse struct {
	Requests []care.Request `json:"requests"`
}

// board serves GET /_praxis/client/v1/board: the caller's practice's
// requests (staff only).
func (a *API) board(r *http.Request, dev *users.Device) (*boardResponse, error) {
	if a.Care == nil {
		return nil, httputil.Unrecognized("the care domain is not enabled")
	}
	reqs, err := a.Care.Board(r.Context(), dev.UserID)
	if err != nil {
		return nil, err
	}
	return &boardResponse{Requests: reqs}, nil
}

// claimRequest serves POST /_praxis/client/v1/board/{roomId}/claim: the
// first claim wins, later ones get 409 DE.PRAXIS.ALREADY_CLAIMED.
func (a *API) claimRequest(r *http.Request, dev *users.Device) (*care.Request, error) {
	if a.Care == nil {
		return nil, httputil.Unrecognized("the care domain is not enabled")
	}
	return a.Care.Claim(r.Context(), dev.UserID, r.PathValue("roomId"))
}

// closeRequest serves POST /_praxis/client/v1/board/{roomId}/close.
func (a *API) closeRequest(r *http.Request, dev *users.Device) (*care.Request, error) {
	if a.Care == nil {
		return nil, httputil.Unrecognized("the care domain is not enabled")
	}
	return a.Care.Close(r.Context(), dev.UserID, r.PathValue("roomId"))
}

// verifyCoupling serves POST /_praxis/client/v1/couplings/{roomId}/verify:
// staff confirm a coupling made with the practice's general code.
func (a *API) verifyCoupling(r *http.Request, dev *users.Device) (*care.Coupling, error) {
	if a.Care == nil {
		return nil, httputil.Unrecognized("the care domain is not enabled")
	}
	return a.Care.Verify(r.Context(), dev.UserID, r.PathValue("roomId"))
}

// careSendToDevice serves PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}:
// to-device messages are a contact channel too, so a patient's messages
// reach only users they share a room with; the rest are dropped, as for
// unknown users.
func (a *API) careSendToDevice(r *http.Request, dev *users.Device) (*empty, error) {
	if a.Care == nil || !a.Care.Enforced() {
		return a.sendToDevice(r, dev)
	}
	var req struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if err := careFilterUsers(a, r, dev, req.Messages); err != nil {
		return nil, err
	}
	if err := a.ToDevice.Send(r.Context(), dev.UserID, dev.DeviceID, r.PathValue("eventType"), r.PathValue("txnId"), req.Messages); err != nil {
		return nil, err
	}
	return &empty{}, nil
}

// careClaimKeys serves POST /_matrix/client/v3/keys/claim: a patient
// cannot drain the one-time keys of users they share no room with.
func (a *API) careClaimKeys(r *http.Request, dev *users.Device) (*keyserver.ClaimResponse, error) {
	if a.Care == nil || !a.Care.Enforced() {
		return a.claimKeys(r, dev)
	}
	body, err := httputil.ReadBody(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := httputil.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	if err := careFilterUsers(a, r, dev, req.OneTimeKeys); err != nil {
		return nil, err
	}
	filtered, _ := json.Marshal(map[string]any{"one_time_keys": req.OneTimeKeys})
	r.Body = io.NopCloser(bytes.NewReader(filtered))
	r.ContentLength = int64(len(filtered))
	return a.claimKeys(r, dev)
}

// careFilterUsers deletes the users a restricted caller may not reach
// from a map keyed by user ID.
func careFilterUsers[V any](a *API, r *http.Request, dev *users.Device, m map[string]V) error {
	ids := make([]string, 0, len(m))
	for u := range m {
		ids = append(ids, u)
	}
	vis, err := a.Care.Visible(r.Context(), dev.UserID, ids)
	if err != nil {
		return err
	}
	for u := range m {
		if !vis[u] {
			delete(m, u)
		}
	}
	return nil
}
