package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"praxis/clientapi/auth"
	"praxis/internal/httputil"
	"praxis/internal/users"
)

// roomLeaver makes a deactivated user leave every room (the room service).
type roomLeaver interface {
	LeaveAllRooms(ctx context.Context, userID string) error
}

// authedUIA is authed for handlers that run user-interactive auth: a
// *auth.UIAError is written as the spec's bare 401 body.
func authedUIA[T any](a *API, fn func(r *http.Request, dev *users.Device) (T, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dev, err := auth.Device(r, a.Users)
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		r = r.WithContext(auth.WithDevice(r.Context(), dev))
		resp, err := fn(r, dev)
		if err != nil {
			if !auth.WriteUIAError(w, err) {
				httputil.WriteError(w, r, err)
			}
			return
		}
		httputil.WriteJSON(w, http.StatusOK, resp)
	})
}

// openUIA is open for handlers that run user-interactive auth.
func openUIA[T any](fn func(r *http.Request) (T, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := fn(r)
		if err != nil {
			if !auth.WriteUIAError(w, err) {
				httputil.WriteError(w, r, err)
			}
			return
		}
		httputil.WriteJSON(w, http.StatusOK, resp)
	})
}

func (a *API) uia() *auth.UIA { return &auth.UIA{Users: a.Users, Codes: a.RegistrationCodes} }

// clientIP is the address rate limits and device last-seen use: the TCP
// peer. Behind a reverse proxy every client shares the proxy's address, so
// operators should put the limit there or on the proxy.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// rateLimit takes a token for the caller's address.
func (a *API) rateLimit(r *http.Request) error {
	if ok, wait := a.AuthLimiter.Allow(clientIP(r)); !ok {
		return httputil.LimitExceeded(max(wait.Milliseconds(), 1))
	}
	return nil
}

// maxDeviceIDBytes keeps client-chosen device IDs within what every
// table and other servers accept.
const maxDeviceIDBytes = 255

func validDeviceID(id string) error {
	if len(id) > maxDeviceIDBytes || strings.ContainsAny(id, "\x00\n\r") {
		return httputil.InvalidParam("device_id is invalid")
	}
	return nil
}

// credentialAttempt throttles requests that carry a password for UIA, so
// that a stolen access token cannot be used to guess the account password.
func (a *API) credentialAttempt(r *http.Request, authDict json.RawMessage) error {
	if len(authDict) == 0 || string(authDict) == "null" {
		return nil
	}
	return a.rateLimit(r)
}

func (a *API) registrationEnabled() bool {
	return a.Config.Registration.Open || a.Config.Registration.RequiresToken
}

func (a *API) registrationFlows() [][]string {
	if a.Config.Registration.RequiresToken {
		return [][]string{{auth.StageRegistrationToken}}
	}
	return [][]string{{auth.StageDummy}}
}

type registerRequest struct {
	Auth                     json.RawMessage `json:"auth"`
	Username                 string          `json:"username"`
	Password                 string          `json:"password"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName string          `json:"initial_device_display_name"`
	InhibitLogin             bool            `json:"inhibit_login"`
	RefreshToken             bool            `json:"refresh_token"`
}

type registerResponse struct {
	UserID       string `json:"user_id"`
	AccessToken  string `json:"access_token,omitempty"`
	DeviceID     string `json:"device_id,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	ExpiresInMS  int64  `json:"expires_in_ms,omitempty"`
	HomeServer   string `json:"home_server"`
}

// maxPasswordBytes bounds passwords so hashing cannot be made a CPU sink.
const maxPasswordBytes = 512

// register serves POST /_matrix/client/v3/register. The username is
// checked before authentication so that a client learns about a taken
// name before it asks the user for anything else.
func (a *API) register(r *http.Request) (*registerResponse, error) {
	switch r.URL.Query().Get("kind") {
	case "", "user":
	case "guest":
		return nil, httputil.Errorf(http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN", "guest access is not allowed on this server")
	default:
		return nil, httputil.InvalidParam("kind must be user or guest")
	}
	if !a.registrationEnabled() {
		return nil, httputil.Forbidden("registration is disabled")
	}
	if err := a.rateLimit(r); err != nil {
		return nil, err
	}
	var req registerRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if len(req.Password) > maxPasswordBytes {
		return nil, httputil.InvalidParam("password is too long")
	}
	if err := validDeviceID(req.DeviceID); err != nil {
		return nil, err
	}
	// User IDs differing only in case must not coexist: the spec asks
	// servers to downcase new usernames (as Synapse and sytest expect).
	req.Username = asciiLower(req.Username)
	if req.Username != "" {
		if err := a.checkUsername(r.Context(), req.Username); err != nil {
			return nil, err
		}
	}
	sess, err := a.uia().Check(r.Context(), auth.UIARequest{Purpose: "register", Flows: a.registrationFlows(), Auth: req.Auth})
	if err != nil {
		return nil, err
	}
	// A coupling code given at the token stage is taken before the
	// account exists, so that a code used up meanwhile admits nobody.
	coupling := false
	if a.RegistrationCodes != nil {
		if coupling, err = a.RegistrationCodes.ClaimRegistrationCode(r.Context(), sess.ID); err != nil {
			return nil, err
		}
	}
	reg := users.Registration{
		Localpart: req.Username, Password: req.Password, DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName,
		IP: clientIP(r), InhibitLogin: req.InhibitLogin, WithRefresh: req.RefreshToken, UIASession: sess.ID,
	}
	random := reg.Localpart == ""
	var acct *users.Account
	var s *users.Session
	for range 5 {
		if random {
			reg.Localpart = users.RandomLocalpart()
		}
		acct, s, err = a.Users.Register(r.Context(), reg)
		if !errors.Is(err, users.ErrUserInUse) || !random {
			break
		}
	}
	if err != nil && coupling {
		a.RegistrationCodes.ReleaseRegistrationCode(r.Context(), sess.ID)
	}
	if errors.Is(err, users.ErrUserInUse) {
		return nil, httputil.Errorf(http.StatusBadRequest, "M_USER_IN_USE", "user ID already taken")
	}
	if err != nil {
		return nil, err
	}
	slog.InfoContext(r.Context(), "account registered", "user_id", acct.UserID)
	if coupling {
		// the account exists whatever happens to its coupling room: a
		// failure is logged, and the patient can still scan the code
		if roomID, err := a.RegistrationCodes.CoupleRegistered(r.Context(), sess.ID, acct.UserID); err != nil {
			slog.ErrorContext(r.Context(), "coupling at registration failed", "user_id", acct.UserID, "err", err)
		} else {
			slog.InfoContext(r.Context(), "coupled at registration", "user_id", acct.UserID, "room_id", roomID)
		}
	}
	resp := &registerResponse{UserID: acct.UserID, HomeServer: a.Users.ServerName()}
	if s != nil {
		resp.AccessToken, resp.DeviceID, resp.RefreshToken, resp.ExpiresInMS = s.AccessToken, s.DeviceID, s.RefreshToken, s.ExpiresInMS
	}
	return resp, nil
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

func (a *API) checkUsername(ctx context.Context, username string) error {
	if err := a.Users.ValidateLocalpart(username); err != nil {
		return httputil.Errorf(http.StatusBadRequest, "M_INVALID_USERNAME", "%v", err)
	}
	ok, err := a.Users.LocalpartAvailable(ctx, username)
	if err != nil {
		return err
	}
	if !ok {
		return httputil.Errorf(http.StatusBadRequest, "M_USER_IN_USE", "user ID already taken")
	}
	return nil
}

type availableResponse struct {
	Available bool `json:"available"`
}

// registerAvailable serves GET /_matrix/client/v3/register/available.
func (a *API) registerAvailable(r *http.Request) (*availableResponse, error) {
	if err := a.rateLimit(r); err != nil {
		return nil, err
	}
	username := r.URL.Query().Get("username")
	if username == "" {
		return nil, httputil.MissingParam("username is required")
	}
	if err := a.checkUsername(r.Context(), username); err != nil {
		return nil, err
	}
	return &availableResponse{Available: true}, nil
}

type validityResponse struct {
	Valid bool `json:"valid"`
}

// registrationTokenValidity serves
// GET /_matrix/client/v1/register/m.login.registration_token/validity.
func (a *API) registrationTokenValidity(r *http.Request) (*validityResponse, error) {
	if !a.Config.Registration.RequiresToken {
		return nil, httputil.Forbidden("registration tokens are not used on this server")
	}
	if err := a.rateLimit(r); err != nil {
		return nil, err
	}
	tok := r.URL.Query().Get("token")
	if tok == "" {
		return nil, httputil.MissingParam("token is required")
	}
	ok, err := a.Users.RegistrationTokenValid(r.Context(), tok)
	if err == nil && !ok && a.RegistrationCodes != nil {
		ok, err = a.RegistrationCodes.RegistrationCodeValid(r.Context(), tok)
	}
	if err != nil {
		return nil, err
	}
	return &validityResponse{Valid: ok}, nil
}

type loginFlow struct {
	Type string `json:"type"`
}

type loginFlowsResponse struct {
	Flows []loginFlow `json:"flows"`
}

// loginFlows serves GET /_matrix/client/v3/login.
func (a *API) loginFlows(r *http.Request) (*loginFlowsResponse, error) {
	return &loginFlowsResponse{Flows: []loginFlow{{Type: auth.StagePassword}}}, nil
}

type loginRequest struct {
	Type                     string          `json:"type"`
	Identifier               json.RawMessage `json:"identifier"`
	User                     string          `json:"user"`
	Password                 string          `json:"password"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName string          `json:"initial_device_display_name"`
	RefreshToken             bool            `json:"refresh_token"`
}

type loginResponse struct {
	UserID       string `json:"user_id"`
	AccessToken  string `json:"access_token"`
	DeviceID     string `json:"device_id"`
	RefreshToken string `json:"refresh_token,omitempty"`
	ExpiresInMS  int64  `json:"expires_in_ms,omitempty"`
	HomeServer   string `json:"home_server"`
	WellKnown    struct {
		Homeserver struct {
			BaseURL string `json:"base_url"`
		} `json:"m.homeserver"`
	} `json:"well_known"`
}

// login serves POST /_matrix/client/v3/login. A wrong password and an
// unknown user get the same 403, so the answer does not reveal accounts.
func (a *API) login(r *http.Request) (*loginResponse, error) {
	if err := a.rateLimit(r); err != nil {
		return nil, err
	}
	var req loginRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Type != auth.StagePassword {
		return nil, httputil.Errorf(http.StatusBadRequest, "M_UNKNOWN", "login type %q is not supported", req.Type)
	}
	if err := validDeviceID(req.DeviceID); err != nil {
		return nil, err
	}
	userID, err := auth.ResolveUser(req.Identifier, req.User, a.Users.ServerName())
	if err != nil {
		return nil, err
	}
	userID, err = a.canonicalUserID(r.Context(), userID)
	if err != nil {
		return nil, err
	}
	if len(req.Password) > maxPasswordBytes || !a.Users.IsLocal(userID) {
		return nil, httputil.Forbidden("invalid username or password")
	}
	switch err := a.Users.CheckPassword(r.Context(), userID, req.Password); {
	case errors.Is(err, users.ErrBadPassword):
		return nil, httputil.Forbidden("invalid username or password")
	case errors.Is(err, users.ErrDeactivated):
		return nil, httputil.Errorf(http.StatusForbidden, "M_USER_DEACTIVATED", "this account has been deactivated")
	case err != nil:
		return nil, err
	}
	s, err := a.Users.CreateSession(r.Context(), userID, req.DeviceID, req.InitialDeviceDisplayName, clientIP(r), req.RefreshToken)
	if err != nil {
		return nil, err
	}
	resp := &loginResponse{UserID: s.UserID, AccessToken: s.AccessToken, DeviceID: s.DeviceID, RefreshToken: s.RefreshToken, ExpiresInMS: s.ExpiresInMS, HomeServer: a.Users.ServerName()}
	resp.WellKnown.Homeserver.BaseURL = a.Config.PublicBaseURL
	return resp, nil
}

// canonicalUserID maps a login name typed with upper-case letters to the
// lower-case account registration creates, unless an account with exactly
// that ID exists (accounts made by an admin may keep their case).
func (a *API) canonicalUserID(ctx context.Context, userID string) (string, error) {
	lower := strings.ToLower(userID)
	if lower == userID {
		return userID, nil
	}
	_, err := a.Users.Account(ctx, userID)
	switch {
	case err == nil:
		return userID, nil
	case errors.Is(err, users.ErrNotFound):
		return lower, nil
	}
	return "", err
}

type refreshRequest struct {
	RefreshToken string `json:"refresh_token"`
}

type refreshResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresInMS  int64  `json:"expires_in_ms"`
}

// refresh serves POST /_matrix/client/v3/refresh. A refresh token works
// once; the access token it issued earlier ends with it.
func (a *API) refresh(r *http.Request) (*refreshResponse, error) {
	var req refreshRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.RefreshToken == "" {
		return nil, httputil.MissingParam("refresh_token is required")
	}
	s, err := a.Users.Refresh(r.Context(), req.RefreshToken)
	if errors.Is(err, users.ErrUnknownToken) {
		e := httputil.UnknownToken("unknown refresh token")
		e.Extra = map[string]any{"soft_logout": false}
		return nil, e
	}
	if err != nil {
		return nil, err
	}
	return &refreshResponse{AccessToken: s.AccessToken, RefreshToken: s.RefreshToken, ExpiresInMS: s.ExpiresInMS}, nil
}

// logout serves POST /_matrix/client/v3/logout: the device goes with its token.
func (a *API) logout(r *http.Request, dev *users.Device) (*empty, error) {
	if err := a.Users.DeleteDevices(r.Context(), dev.UserID, []string{dev.DeviceID}); err != nil {
		return nil, err
	}
	return &empty{}, nil
}

// logoutAll serves POST /_matrix/client/v3/logout/all.
func (a *API) logoutAll(r *http.Request, dev *users.Device) (*empty, error) {
	if err := a.Users.DeleteOtherDevices(r.Context(), dev.UserID, ""); err != nil {
		return nil, err
	}
	return &empty{}, nil
}

type whoamiResponse struct {
	UserID   string `json:"user_id"`
	DeviceID string `json:"device_id,omitempty"`
	IsGuest  bool   `json:"is_guest"`
}

// whoami serves GET /_matrix/client/v3/account/whoami.
func (a *API) whoami(r *http.Request, dev *users.Device) (*whoamiResponse, error) {
	return &whoamiResponse{UserID: dev.UserID, DeviceID: dev.DeviceID}, nil
}

var passwordFlows = [][]string{{auth.StagePassword}}

type passwordRequest struct {
	Auth          json.RawMessage `json:"auth"`
	NewPassword   *string         `json:"new_password"`
	LogoutDevices *bool           `json:"logout_devices"`
}

// changePassword serves POST /_matrix/client/v3/account/password. By
// default every other device is logged out; the calling one stays.
func (a *API) changePassword(r *http.Request, dev *users.Device) (*empty, error) {
	var req passwordRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.NewPassword == nil || *req.NewPassword == "" {
		return nil, httputil.MissingParam("new_password is required")
	}
	if len(*req.NewPassword) > maxPasswordBytes {
		return nil, httputil.InvalidParam("new_password is too long")
	}
	if err := a.credentialAttempt(r, req.Auth); err != nil {
		return nil, err
	}
	sess, err := a.uia().Check(r.Context(), auth.UIARequest{Purpose: "password", UserID: dev.UserID, Flows: passwordFlows, Auth: req.Auth})
	if err != nil {
		return nil, err
	}
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	if err := a.Users.ChangePassword(r.Context(), dev.UserID, *req.NewPassword, dev.DeviceID, logout); err != nil {
		return nil, err
	}
	if err := a.Users.DeleteUIASession(r.Context(), sess.ID); err != nil {
		return nil, err
	}
	slog.InfoContext(r.Context(), "password changed", "user_id", dev.UserID, "logout_devices", logout)
	return &empty{}, nil
}

type deactivateRequest struct {
	Auth json.RawMessage `json:"auth"`
}

type deactivateResponse struct {
	IDServerUnbindResult string `json:"id_server_unbind_result"`
}

// deactivate serves POST /_matrix/client/v3/account/deactivate.
func (a *API) deactivate(r *http.Request, dev *users.Device) (*deactivateResponse, error) {
	var req deactivateRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if err := a.credentialAttempt(r, req.Auth); err != nil {
		return nil, err
	}
	sess, err := a.uia().Check(r.Context(), auth.UIARequest{Purpose: "deactivate", UserID: dev.UserID, Flows: passwordFlows, Auth: req.Auth})
	if err != nil {
		return nil, err
	}
	if err := a.Users.Deactivate(r.Context(), dev.UserID); err != nil {
		return nil, err
	}
	_ = a.Users.DeleteUIASession(r.Context(), sess.ID)
	slog.InfoContext(r.Context(), "account deactivated", "user_id", dev.UserID)
	if a.RoomLeaver != nil {
		// The account is already closed; a failure here leaves memberships
		// behind, which the log must show, but the user cannot retry.
		if err := a.RoomLeaver.LeaveAllRooms(context.WithoutCancel(r.Context()), dev.UserID); err != nil {
			slog.ErrorContext(r.Context(), "leave rooms after deactivation", "user_id", dev.UserID, "err", err)
		}
	}
	return &deactivateResponse{IDServerUnbindResult: "no-support"}, nil
}

type devicesResponse struct {
	Devices []users.DeviceInfo `json:"devices"`
}

// devices serves GET /_matrix/client/v3/devices.
func (a *API) devices(r *http.Request, dev *users.Device) (*devicesResponse, error) {
	ds, err := a.Users.Devices(r.Context(), dev.UserID)
	if err != nil {
		return nil, err
	}
	return &devicesResponse{Devices: ds}, nil
}

// device serves GET /_matrix/client/v3/devices/{deviceId}.
func (a *API) device(r *http.Request, dev *users.Device) (*users.DeviceInfo, error) {
	d, err := a.Users.Device(r.Context(), dev.UserID, r.PathValue("deviceId"))
	if errors.Is(err, users.ErrNotFound) {
		return nil, httputil.NotFound("unknown device")
	}
	return d, err
}

type updateDeviceRequest struct {
	DisplayName *string `json:"display_name"`
}

// updateDevice serves PUT /_matrix/client/v3/devices/{deviceId}.
func (a *API) updateDevice(r *http.Request, dev *users.Device) (*empty, error) {
	var req updateDeviceRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	id := r.PathValue("deviceId")
	var err error
	if req.DisplayName != nil {
		err = a.Users.SetDeviceDisplayName(r.Context(), dev.UserID, id, *req.DisplayName)
	} else {
		_, err = a.Users.Device(r.Context(), dev.UserID, id)
	}
	if errors.Is(err, users.ErrNotFound) {
		return nil, httputil.NotFound("unknown device")
	}
	if err != nil {
		return nil, err
	}
	if req.DisplayName != nil && a.Keys != nil {
		// Other users see device names in /keys/query; a rename is a
		// device-list change for everyone who shares a room, partners'
		// users included (so it names the device).
		if err := a.Keys.MarkDeviceChanged(r.Context(), dev.UserID, id); err != nil {
			return nil, err
		}
	}
	return &empty{}, nil
}

type deleteDeviceRequest struct {
	Auth json.RawMessage `json:"auth"`
}

// deleteDevice serves DELETE /_matrix/client/v3/devices/{deviceId}.
func (a *API) deleteDevice(r *http.Request, dev *users.Device) (*empty, error) {
	var req deleteDeviceRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	id := r.PathValue("deviceId")
	if _, err := a.Users.Device(r.Context(), dev.UserID, id); errors.Is(err, users.ErrNotFound) {
		return nil, httputil.NotFound("unknown device")
	} else if err != nil {
		return nil, err
	}
	return a.deleteDevicesUIA(r, dev, req.Auth, []string{id})
}

type deleteDevicesRequest struct {
	Auth    json.RawMessage `json:"auth"`
	Devices *[]string       `json:"devices"`
}

// deleteDevices serves POST /_matrix/client/v3/delete_devices. Unknown
// device IDs are skipped.
func (a *API) deleteDevices(r *http.Request, dev *users.Device) (*empty, error) {
	var req deleteDevicesRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Devices == nil {
		return nil, httputil.MissingParam("devices is required")
	}
	return a.deleteDevicesUIA(r, dev, req.Auth, *req.Devices)
}

func (a *API) deleteDevicesUIA(r *http.Request, dev *users.Device, authDict json.RawMessage, ids []string) (*empty, error) {
	if err := a.credentialAttempt(r, authDict); err != nil {
		return nil, err
	}
	sess, err := a.uia().Check(r.Context(), auth.UIARequest{Purpose: "delete_devices", UserID: dev.UserID, Flows: passwordFlows, Auth: authDict})
	if err != nil {
		return nil, err
	}
	if err := a.Users.DeleteDevices(r.Context(), dev.UserID, ids); err != nil {
		return nil, err
	}
	if err := a.Users.DeleteUIASession(r.Context(), sess.ID); err != nil {
		return nil, err
	}
	return &empty{}, nil
}

type threePIDsResponse struct {
	ThreePIDs []struct{} `json:"threepids"`
}

// threePIDs serves GET /_matrix/client/v3/account/3pid. Praxis binds no
// e-mail addresses or phone numbers (m.3pid_changes is off), but clients
// list them in their settings and expect an answer.
func (a *API) threePIDs(r *http.Request, dev *users.Device) (*threePIDsResponse, error) {
	return &threePIDsResponse{ThreePIDs: []struct{}{}}, nil
}
