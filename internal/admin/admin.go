// Package admin serves the admin API: a subset of Synapse's admin API
// under /_synapse/admin/ (so that tools written for Synapse work for what
// it covers) and our own endpoints under /_praxis/admin/, and keeps the
// hash-chained audit log of every admin action.
package admin

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"praxis/clientapi/auth"
	"praxis/internal/config"
	"praxis/internal/httputil"
	"praxis/internal/ratelimit"
	"praxis/internal/storage"
	"praxis/internal/users"
	"praxis/roomserver"
)

// RoomReader answers the admin API's room questions (roomserver.Service).
type RoomReader interface {
	AdminRooms(ctx context.Context) ([]roomserver.RoomSummary, error)
	AdminRoom(ctx context.Context, roomID string) (*roomserver.RoomSummary, error)
	AdminRoomMembers(ctx context.Context, roomID string) ([]string, error)
	AdminJoinedRooms(ctx context.Context, userID string) ([]string, error)
}

// RoomLeaver makes a deactivated user leave every room (roomserver).
type RoomLeaver interface {
	LeaveAllRooms(ctx context.Context, userID string) error
}

// Service is the admin API.
type Service struct {
	cfg   *config.Config
	db    *storage.DB
	users *users.Service
	rooms RoomReader
	// leaver is nil until the room service can do it; deactivation then
	// only locks the account.
	leaver RoomLeaver
	audit  *AuditLog
	// limiter throttles shared-secret registration per client address
	// (nil = unlimited).
	limiter *ratelimit.Limiter
	// practiceOf resolves a caller who is not a server admin to the
	// practice they administer ("" for none); nil until internal/care
	// provides it.
	practiceOf PracticeScope
	now        func() time.Time
}

// PracticeScope tells which practice a caller administers: "" when the
// caller is no practice admin. Practice admins see their practice's
// audit entries and nothing else of the admin API.
type PracticeScope func(ctx context.Context, caller *users.Device) (practice string, err error)

// New returns the admin API. rooms may be nil (room endpoints then answer
// 404 M_UNRECOGNIZED) for a node without a room service.
func New(cfg *config.Config, db *storage.DB, u *users.Service, rooms RoomReader) *Service {
	return &Service{cfg: cfg, db: db, users: u, rooms: rooms, audit: NewAuditLog(db), now: time.Now}
}

// SetRoomLeaver lets user deactivation make the user leave their rooms.
func (s *Service) SetRoomLeaver(l RoomLeaver) { s.leaver = l }

// SetLimiter throttles shared-secret registration attempts per client
// address; homeserver shares the login and registration limiter.
func (s *Service) SetLimiter(l *ratelimit.Limiter) { s.limiter = l }

// SetPracticeScope lets practice admins (internal/care) read their
// practice's part of the audit log.
func (s *Service) SetPracticeScope(f PracticeScope) { s.practiceOf = f }

// Audit returns the audit log, for other services that audit their own
// administrative actions (e.g. internal/care).
func (s *Service) Audit() *AuditLog { return s.audit }

const (
	synV1  = "/_synapse/admin/v1"
	synV2  = "/_synapse/admin/v2"
	praxV1 = "/_praxis/admin/v1"
)

// Routes mounts the admin API on mux: one line per endpoint.
func (s *Service) Routes(mux *http.ServeMux) {
	// shared-secret registration: authenticated by the MAC, not a token (register.go)
	mux.Handle("GET "+synV1+"/register", httputil.JSONHandler(s.registerNonce))
	mux.Handle("POST "+synV1+"/register", httputil.JSONHandler(s.registerSharedSecret))

	mux.Handle("GET "+synV1+"/server_version", s.admin(s.serverVersion))
	mux.Handle("GET "+praxV1+"/server", s.admin(s.serverInfo))

	// users and their devices (users.go, devices.go)
	mux.Handle("GET "+synV2+"/users", s.admin(s.listUsers))
	mux.Handle("GET "+synV2+"/users/{userId}", s.admin(s.getUser))
	mux.Handle("PUT "+synV2+"/users/{userId}", s.admin(s.putUser))
	mux.Handle("GET "+synV1+"/username_available", s.admin(s.usernameAvailable))
	mux.Handle("POST "+synV1+"/deactivate/{userId}", s.admin(s.deactivateUser))
	mux.Handle("POST "+synV1+"/reset_password/{userId}", s.admin(s.resetPassword))
	mux.Handle("GET "+synV2+"/users/{userId}/devices", s.admin(s.listDevices))
	mux.Handle("DELETE "+synV2+"/users/{userId}/devices/{deviceId}", s.admin(s.deleteDevice))
	mux.Handle("POST "+synV2+"/users/{userId}/delete_devices", s.admin(s.deleteDevices))
	mux.Handle("GET "+synV1+"/users/{userId}/joined_rooms", s.admin(s.joinedRooms))
	mux.Handle("GET "+synV1+"/whois/{userId}", s.admin(s.whois))
	mux.Handle("GET "+synV1+"/users/{userId}/admin", s.admin(s.getAdmin))
	mux.Handle("PUT "+synV1+"/users/{userId}/admin", s.admin(s.putAdmin))

	// rooms (rooms.go)
	mux.Handle("GET "+synV1+"/rooms", s.admin(s.listRooms))
	mux.Handle("GET "+synV1+"/rooms/{roomId}", s.admin(s.getRoom))
	mux.Handle("GET "+synV1+"/rooms/{roomId}/members", s.admin(s.roomMembers))

	// registration tokens (tokens.go)
	mux.Handle("GET "+synV1+"/registration_tokens", s.admin(s.listTokens))
	mux.Handle("POST "+synV1+"/registration_tokens", s.admin(s.createToken))
	mux.Handle("POST "+synV1+"/registration_tokens/new", s.admin(s.createToken))
	mux.Handle("GET "+synV1+"/registration_tokens/{token}", s.admin(s.getToken))
	mux.Handle("PUT "+synV1+"/registration_tokens/{token}", s.admin(s.updateToken))
	mux.Handle("DELETE "+synV1+"/registration_tokens/{token}", s.admin(s.deleteToken))

	// audit log (audithttp.go)
	mux.Handle("GET "+praxV1+"/audit", s.adminOrPracticeAdmin(s.listAudit))
	mux.Handle("GET "+praxV1+"/audit/verify", s.admin(s.verifyAudit))

	mux.Handle("/_synapse/admin/", unrecognized(mux, "/_synapse/admin/"))
	mux.Handle("/_praxis/admin/", unrecognized(mux, "/_praxis/admin/"))
}

// withStatus makes a handler answer with a status other than 200.
type withStatus struct {
	status int
	body   any
}

// admin adapts a handler that only server admins may call: no token is
// 401, a token of a non-admin 403 M_FORBIDDEN.
func (s *Service) admin(fn func(r *http.Request, caller *users.Device) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dev, err := auth.Device(r, s.users)
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		if !dev.IsAdmin {
			httputil.WriteError(w, r, httputil.Forbidden("You are not a server admin"))
			return
		}
		r = r.WithContext(auth.WithDevice(r.Context(), dev))
		resp, err := fn(r, dev)
		if err != nil {
			if r.Method != http.MethodGet {
				s.auditFailure(r, dev, err)
			}
			httputil.WriteError(w, r, err)
			return
		}
		if ws, ok := resp.(withStatus); ok {
			httputil.WriteJSON(w, ws.status, ws.body)
			return
		}
		httputil.WriteJSON(w, http.StatusOK, resp)
	})
}

// adminOrPracticeAdmin adapts a handler that server admins may call
// without restriction and practice admins for their own practice only:
// practice is nil for a server admin.
func (s *Service) adminOrPracticeAdmin(fn func(r *http.Request, caller *users.Device, practice *string) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dev, err := auth.Device(r, s.users)
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		var practice *string
		if !dev.IsAdmin {
			p := ""
			if s.practiceOf != nil {
				if p, err = s.practiceOf(r.Context(), dev); err != nil {
					httputil.WriteError(w, r, err)
					return
				}
			}
			if p == "" {
				httputil.WriteError(w, r, httputil.Forbidden("You are not a server admin"))
				return
			}
			practice = &p
		}
		r = r.WithContext(auth.WithDevice(r.Context(), dev))
		resp, err := fn(r, dev, practice)
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		httputil.WriteJSON(w, http.StatusOK, resp)
	})
}

// auditFailure records an admin's change that was refused or failed. A
// failed action rolled back its own audit row, but an attempt is worth
// knowing about too. The target is the user or room from the path, never
// the path itself: it may hold a registration token.
func (s *Service) auditFailure(r *http.Request, caller *users.Device, err error) {
	e := httputil.ToError(err)
	target := r.PathValue("userId")
	if target == "" {
		target = r.PathValue("roomId")
	}
	ctx := context.WithoutCancel(r.Context())
	_, aerr := s.audit.Append(ctx, nil, Record{Actor: caller.UserID, Action: "request.failed", Target: target, Result: e.ErrCode,
		Params: map[string]any{"endpoint": r.Pattern, "status": e.Status}})
	if aerr != nil {
		slog.ErrorContext(ctx, "audit a failed admin request", "err", aerr)
	}
}

// unrecognized answers unknown admin paths with the JSON the rest of the
// API uses: 405 when another method would match, else 404.
func unrecognized(mux *http.ServeMux, prefix string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
			if m == r.Method {
				continue
			}
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "" && !strings.HasSuffix(pattern, prefix) {
				httputil.WriteJSON(w, http.StatusMethodNotAllowed, map[string]string{"errcode": "M_UNRECOGNIZED", "error": "method not allowed"})
				return
			}
		}
		httputil.WriteJSON(w, http.StatusNotFound, map[string]string{"errcode": "M_UNRECOGNIZED", "error": "unrecognized request"})
	})
}

// Version is the server version reported by server_version.
func Version() string {
	v := "devel"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	return "Praxis " + v
}

// serverVersion serves GET /_synapse/admin/v1/server_version.
func (s *Service) serverVersion(r *http.Request, caller *users.Device) (any, error) {
	return map[string]string{"server_version": Version()}, nil
}

// serverInfo serves GET /_praxis/admin/v1/server: what praxisctl needs to
// know about the node (it cannot use /whoami when the admin API has its
// own listener).
func (s *Service) serverInfo(r *http.Request, caller *users.Device) (any, error) {
	return map[string]string{"server_name": s.users.ServerName(), "server_version": Version()}, nil
}

// localUser checks a user ID from the path: well-formed and ours.
func (s *Service) localUser(raw string) (string, error) {
	local, server, ok := strings.Cut(strings.TrimPrefix(raw, "@"), ":")
	if !strings.HasPrefix(raw, "@") || !ok || local == "" || server == "" {
		return "", httputil.InvalidParam("invalid user ID " + quote(raw))
	}
	if !s.users.IsLocal(raw) {
		return "", httputil.InvalidParam("only local users can be managed here")
	}
	return raw, nil
}

// quote keeps user input in error messages short and unambiguous.
func quote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return "\"" + s + "\""
}

// userError maps users service errors to Matrix errors.
func userError(err error) error {
	switch {
	case errors.Is(err, users.ErrNotFound):
		return httputil.NotFound("User not found")
	case errors.Is(err, users.ErrUserInUse):
		return httputil.Errorf(http.StatusBadRequest, "M_USER_IN_USE", "User ID already taken")
	case errors.Is(err, users.ErrInvalidUsername):
		return httputil.Errorf(http.StatusBadRequest, "M_INVALID_USERNAME", "%s", err.Error())
	case errors.Is(err, users.ErrInvalid):
		return httputil.InvalidParam(strings.TrimPrefix(err.Error(), users.ErrInvalid.Error()+": "))
	}
	return err
}

// maxPasswordLength bounds passwords as Synapse does.
const maxPasswordLength = 512

func checkPassword(pw string) error {
	if pw == "" {
		return httputil.MissingParam("password must not be empty")
	}
	if len(pw) > maxPasswordLength {
		return httputil.InvalidParam("password is too long")
	}
	return nil
}
