package auth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"praxis/internal/httputil"
	"praxis/internal/users"
)

// Authentication stage and login types.
const (
	StageDummy             = "m.login.dummy"
	StagePassword          = "m.login.password"
	StageRegistrationToken = "m.login.registration_token"
)

// UIAError is the 401 answer of user-interactive authentication: the flows
// still open, the session and, after a failed stage, an errcode. Handlers
// write it with WriteUIAError; for any other writer it converts to an
// *httputil.Error carrying the same fields.
type UIAError struct {
	Flows     []Flow         `json:"flows"`
	Params    map[string]any `json:"params"`
	Session   string         `json:"session"`
	Completed []string       `json:"completed,omitempty"`
	ErrCode   string         `json:"errcode,omitempty"`
	Message   string         `json:"error,omitempty"`
}

// Flow is one way through the stages.
type Flow struct {
	Stages []string `json:"stages"`
}

func (e *UIAError) Error() string {
	if e.ErrCode != "" {
		return "user-interactive auth: " + e.ErrCode + ": " + e.Message
	}
	return "user-interactive auth required"
}

// As lets httputil.WriteError render a UIAError that reaches it.
func (e *UIAError) As(target any) bool {
	t, ok := target.(**httputil.Error)
	if !ok {
		return false
	}
	code := e.ErrCode
	if code == "" {
		code = "M_FORBIDDEN"
	}
	he := httputil.Errorf(http.StatusUnauthorized, code, "%s", e.Message)
	he.Extra = map[string]any{"flows": e.Flows, "params": e.Params, "session": e.Session}
	if len(e.Completed) > 0 {
		he.Extra["completed"] = e.Completed
	}
	*t = he
	return true
}

// WriteUIAError writes err if it is a UIAError (exactly as the spec shows:
// no errcode before a stage failed) and reports whether it did.
func WriteUIAError(w http.ResponseWriter, err error) bool {
	var ue *UIAError
	if !errors.As(err, &ue) {
		return false
	}
	if ue.Params == nil {
		ue.Params = map[string]any{}
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="matrix"`)
	httputil.WriteJSON(w, http.StatusUnauthorized, ue)
	return true
}

// UIA runs user-interactive authentication with sessions kept in the
// database, so a client's next step may reach another process.
type UIA struct {
	Users *users.Service
	// Codes, when set, lets another kind of code pass the registration
	// token stage (the care domain's coupling codes).
	Codes RegistrationCodes
}

// RegistrationCodes is a source of codes that pass the
// m.login.registration_token stage besides the registration tokens:
// BindRegistrationCode reports whether code is one of its codes and
// usable, and if so remembers it for the register session.
type RegistrationCodes interface {
	BindRegistrationCode(ctx context.Context, sessionID, code string) (bool, error)
}

// UIARequest describes what a request needs.
type UIARequest struct {
	// Purpose binds the session to one kind of operation: a session
	// completed for "password" cannot authorise "deactivate".
	Purpose string
	// UserID is the caller; stages must authenticate as this user. Empty
	// for registration.
	UserID string
	Flows  [][]string
	Params map[string]any
	// Auth is the request body's "auth" object (nil when absent).
	Auth json.RawMessage
}

type authDict struct {
	Type       string          `json:"type"`
	Session    string          `json:"session"`
	Password   string          `json:"password"`
	Identifier json.RawMessage `json:"identifier"`
	User       string          `json:"user"`
	Token      string          `json:"token"`
}

// Check advances the session by the stage in req.Auth. It returns the
// session once one flow is complete; the caller performs the operation and
// then ends the session. Otherwise it returns a *UIAError (401) or a
// Matrix error.
func (u *UIA) Check(ctx context.Context, req UIARequest) (*users.UIASession, error) {
	var ad authDict
	if len(req.Auth) > 0 && string(req.Auth) != "null" {
		if err := json.Unmarshal(req.Auth, &ad); err != nil {
			return nil, httputil.BadJSON("auth must be an object with string fields")
		}
	}
	flows := make([]Flow, len(req.Flows))
	for i, f := range req.Flows {
		flows[i] = Flow{Stages: f}
	}
	challenge := func(sess *users.UIASession, code, msg string) *UIAError {
		return &UIAError{Flows: flows, Params: req.Params, Session: sess.ID, Completed: sess.Completed, ErrCode: code, Message: msg}
	}

	var sess *users.UIASession
	var err error
	if ad.Session == "" {
		sess, err = u.Users.CreateUIASession(ctx, req.Purpose, req.UserID)
		if err != nil {
			return nil, err
		}
		if ad.Type == "" {
			return nil, challenge(sess, "", "")
		}
	} else {
		sess, err = u.Users.UIASession(ctx, ad.Session)
		if errors.Is(err, users.ErrNotFound) || (err == nil && (sess.Purpose != req.Purpose || sess.UserID != req.UserID)) {
			return nil, httputil.Errorf(http.StatusBadRequest, "M_UNKNOWN", "unknown or expired user-interactive auth session")
		}
		if err != nil {
			return nil, err
		}
	}

	if ad.Type != "" {
		offered := slices.ContainsFunc(req.Flows, func(f []string) bool { return slices.Contains(f, ad.Type) })
		if !offered {
			return nil, challenge(sess, "M_UNRECOGNIZED", "authentication stage "+ad.Type+" is not offered")
		}
		switch ad.Type {
		case StageDummy:
			sess, err = u.Users.CompleteUIAStage(ctx, sess.ID, StageDummy)
		case StagePassword:
			// The caller is known from its access token; an identifier,
			// when given, must name the same user (in any letter case).
			who := req.UserID
			if len(ad.Identifier) > 0 || ad.User != "" || who == "" {
				who, err = ResolveUser(ad.Identifier, ad.User, u.Users.ServerName())
				if err != nil {
					return nil, err
				}
				if strings.EqualFold(who, req.UserID) {
					who = req.UserID
				}
			}
			if who != req.UserID {
				// Not a failed stage but a request that can never succeed:
				// a plain 403, as other servers answer.
				return nil, httputil.Forbidden("the identifier does not match the logged-in user")
			}
			if perr := u.Users.CheckPassword(ctx, who, ad.Password); perr != nil {
				if errors.Is(perr, users.ErrBadPassword) || errors.Is(perr, users.ErrDeactivated) {
					return nil, challenge(sess, "M_FORBIDDEN", "invalid password")
				}
				return nil, perr
			}
			sess, err = u.Users.CompleteUIAStage(ctx, sess.ID, StagePassword)
		case StageRegistrationToken:
			if ad.Token == "" {
				return nil, httputil.MissingParam("auth.token is required")
			}
			var next *users.UIASession
			next, err = u.Users.UseRegistrationTokenStage(ctx, sess.ID, StageRegistrationToken, ad.Token)
			if errors.Is(err, users.ErrInvalidRegistrationToken) && u.Codes != nil && req.Purpose == "register" {
				var ok bool
				if ok, err = u.Codes.BindRegistrationCode(ctx, sess.ID, ad.Token); err == nil {
					err = users.ErrInvalidRegistrationToken
					if ok {
						next, err = u.Users.CompleteUIAStage(ctx, sess.ID, StageRegistrationToken)
					}
				}
			}
			if errors.Is(err, users.ErrInvalidRegistrationToken) {
				return nil, challenge(sess, "M_UNAUTHORIZED", "invalid registration token")
			}
			if err == nil {
				sess = next
			}
		default:
			return nil, challenge(sess, "M_UNRECOGNIZED", "authentication stage "+ad.Type+" is not supported")
		}
		if errors.Is(err, users.ErrNotFound) {
			return nil, httputil.Errorf(http.StatusBadRequest, "M_UNKNOWN", "unknown or expired user-interactive auth session")
		}
		if err != nil {
			return nil, err
		}
	}

	for _, f := range req.Flows {
		if !slices.ContainsFunc(f, func(stage string) bool { return !sess.Done(stage) }) {
			return sess, nil
		}
	}
	return nil, challenge(sess, "", "")
}

// ResolveUser turns a login identifier (or the legacy "user" field) into a
// full local user ID. A bare localpart or a full ID are both accepted.
func ResolveUser(identifier json.RawMessage, legacyUser, serverName string) (string, error) {
	user := legacyUser
	if len(identifier) > 0 && string(identifier) != "null" {
		var id struct {
			Type string `json:"type"`
			User string `json:"user"`
		}
		if err := json.Unmarshal(identifier, &id); err != nil {
			return "", httputil.BadJSON("identifier must be an object")
		}
		if id.Type != "m.id.user" {
			return "", httputil.Errorf(http.StatusBadRequest, "M_UNKNOWN", "identifier type %q is not supported", id.Type)
		}
		user = id.User
	}
	if user == "" {
		return "", httputil.MissingParam("identifier.user is required")
	}
	if strings.HasPrefix(user, "@") {
		return user, nil
	}
	return "@" + user + ":" + serverName, nil
}
