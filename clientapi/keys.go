package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"praxis/clientapi/auth"
	"praxis/crypto/keyserver"
	"praxis/internal/httputil"
	"praxis/internal/users"
)

type uploadKeysResponse struct {
	OneTimeKeyCounts map[string]int `json:"one_time_key_counts"`
}

// uploadKeys serves POST /_matrix/client/v3/keys/upload: the caller
// device's identity keys, one-time keys and fallback keys.
func (a *API) uploadKeys(r *http.Request, dev *users.Device) (*uploadKeysResponse, error) {
	var req keyserver.UploadRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	counts, err := a.Keys.Upload(r.Context(), dev.UserID, dev.DeviceID, req)
	if err != nil {
		return nil, err
	}
	return &uploadKeysResponse{OneTimeKeyCounts: counts}, nil
}

// queryKeys serves POST /_matrix/client/v3/keys/query.
func (a *API) queryKeys(r *http.Request, dev *users.Device) (*keyserver.QueryResponse, error) {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if len(req.DeviceKeys) > maxKeyUsers {
		return nil, httputil.InvalidParam("too many users in one query")
	}
	for u := range req.DeviceKeys {
		if !keysUserID(u) {
			return nil, httputil.InvalidParam("not a user ID: " + u)
		}
	}
	return a.Keys.Query(r.Context(), dev.UserID, req.DeviceKeys)
}

// maxKeyUsers bounds one /keys/query or /keys/claim so a single request
// cannot make the server read every key it holds.
const maxKeyUsers = 1000

// keysUserID is a cheap shape check for user IDs named in key requests.
func keysUserID(u string) bool {
	return strings.HasPrefix(u, "@") && strings.Contains(u, ":") && len(u) <= 255
}

// claimKeys serves POST /_matrix/client/v3/keys/claim.
func (a *API) claimKeys(r *http.Request, dev *users.Device) (*keyserver.ClaimResponse, error) {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if len(req.OneTimeKeys) > maxKeyUsers {
		return nil, httputil.InvalidParam("too many users in one claim")
	}
	for u, devs := range req.OneTimeKeys {
		if !keysUserID(u) {
			return nil, httputil.InvalidParam("not a user ID: " + u)
		}
		for _, alg := range devs {
			if alg == "" {
				return nil, httputil.InvalidParam("missing key algorithm")
			}
		}
	}
	return a.Keys.Claim(r.Context(), req.OneTimeKeys)
}

type keyChangesResponse struct {
	Changed []string `json:"changed"`
	Left    []string `json:"left"`
}

// keyChanges serves GET /_matrix/client/v3/keys/changes?from=…&to=…: users
// whose device lists changed between two sync tokens.
func (a *API) keyChanges(r *http.Request, dev *users.Device) (*keyChangesResponse, error) {
	q := r.URL.Query()
	if q.Get("from") == "" || q.Get("to") == "" {
		return nil, httputil.MissingParam("from and to are required")
	}
	from, err1 := streamPosOfToken(q.Get("from"))
	to, err2 := streamPosOfToken(q.Get("to"))
	if err1 != nil || err2 != nil {
		return nil, httputil.InvalidParam("from and to must be sync tokens")
	}
	changed, left, err := a.Keys.DeviceListChanges(r.Context(), dev.UserID, from, to)
	if err != nil {
		return nil, err
	}
	return &keyChangesResponse{Changed: changed, Left: left}, nil
}

// streamPosOfToken reads the global stream position out of a sync token
// ("s<pos>", possibly followed by other parts after a non-digit).
func streamPosOfToken(tok string) (int64, error) {
	rest, ok := strings.CutPrefix(tok, "s")
	if !ok {
		return 0, errors.New("not a sync token")
	}
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	return strconv.ParseInt(rest[:end], 10, 64)
}

// uploadCrossSigningKeys serves POST /_matrix/client/v3/keys/device_signing/upload.
// Replacing existing keys needs the password (UIA); the first upload does
// not (MSC3967), nor does repeating an upload that already succeeded.
func (a *API) uploadCrossSigningKeys(r *http.Request, dev *users.Device) (*empty, error) {
	var req struct {
		keyserver.CrossSigningKeys
		Auth json.RawMessage `json:"auth"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	need, err := a.Keys.CrossSigningNeedsAuth(r.Context(), dev.UserID, req.CrossSigningKeys)
	if err != nil {
		return nil, err
	}
	var session string
	if need {
		sess, err := a.uia().Check(r.Context(), auth.UIARequest{Purpose: "device_signing_upload", UserID: dev.UserID, Flows: passwordFlows, Auth: req.Auth})
		if err != nil {
			return nil, err
		}
		session = sess.ID
	}
	if err := a.Keys.UploadCrossSigning(r.Context(), dev.UserID, req.CrossSigningKeys); err != nil {
		return nil, err
	}
	if session != "" {
		_ = a.Users.DeleteUIASession(r.Context(), session)
	}
	return &empty{}, nil
}

type signaturesUploadResponse struct {
	Failures map[string]map[string]keyserver.SignatureFailure `json:"failures"`
}

// uploadSignatures serves POST /_matrix/client/v3/keys/signatures/upload.
func (a *API) uploadSignatures(r *http.Request, dev *users.Device) (*signaturesUploadResponse, error) {
	var req map[string]map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	failures, err := a.Keys.UploadSignatures(r.Context(), dev.UserID, req)
	if err != nil {
		return nil, err
	}
	return &signaturesUploadResponse{Failures: failures}, nil
}

// sendToDevice serves PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}.
func (a *API) sendToDevice(r *http.Request, dev *users.Device) (*empty, error) {
	var req struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if err := a.ToDevice.Send(r.Context(), dev.UserID, dev.DeviceID, r.PathValue("eventType"), r.PathValue("txnId"), req.Messages); err != nil {
		return nil, err
	}
	return &empty{}, nil
}

// msc3814 is the unstable prefix of dehydrated devices.
const msc3814 = "/_matrix/client/unstable/org.matrix.msc3814.v1"

// putDehydratedDevice serves PUT /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device.
func (a *API) putDehydratedDevice(r *http.Request, dev *users.Device) (map[string]string, error) {
	var req keyserver.DehydratedDevice
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if err := a.Keys.PutDehydratedDevice(r.Context(), dev.UserID, req); err != nil {
		return nil, err
	}
	return map[string]string{"device_id": req.DeviceID}, nil
}

// getDehydratedDevice serves GET /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device.
func (a *API) getDehydratedDevice(r *http.Request, dev *users.Device) (*keyserver.DehydratedDeviceData, error) {
	return a.Keys.GetDehydratedDevice(r.Context(), dev.UserID)
}

// deleteDehydratedDevice serves DELETE /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device.
func (a *API) deleteDehydratedDevice(r *http.Request, dev *users.Device) (map[string]string, error) {
	id, err := a.Keys.DeleteDehydratedDevice(r.Context(), dev.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]string{"device_id": id}, nil
}

type dehydratedEventsResponse struct {
	Events    []json.RawMessage `json:"events"`
	NextBatch string            `json:"next_batch"`
}

// dehydratedDeviceEvents serves POST /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/{deviceId}/events:
// the to-device messages that arrived for the dehydrated device, paged by
// next_batch; passing a next_batch acknowledges everything before it.
func (a *API) dehydratedDeviceEvents(r *http.Request, dev *users.Device) (*dehydratedEventsResponse, error) {
	var req struct {
		NextBatch string `json:"next_batch"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	deviceID := r.PathValue("deviceId")
	ok, err := a.Keys.IsDehydratedDevice(r.Context(), dev.UserID, deviceID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, httputil.Forbidden("not your dehydrated device")
	}
	var since int64
	if req.NextBatch != "" {
		if since, err = strconv.ParseInt(req.NextBatch, 10, 64); err != nil || since < 0 {
			return nil, httputil.InvalidParam("next_batch is not a token from this endpoint")
		}
	}
	msgs, next, err := a.ToDevice.Page(r.Context(), dev.UserID, deviceID, since, dehydratedPage)
	if err != nil {
		return nil, err
	}
	if msgs == nil {
		msgs = []json.RawMessage{}
	}
	return &dehydratedEventsResponse{Events: msgs, NextBatch: strconv.FormatInt(next, 10)}, nil
}

// dehydratedPage bounds one /events answer.
const dehydratedPage = 100
