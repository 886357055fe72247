package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"unicode/utf8"

	"praxis/internal/httputil"
	"praxis/internal/users"
)

// profilePropagator sends new m.room.member events with the changed
// profile into the user's joined rooms (the room service).
type profilePropagator interface {
	PropagateProfile(ctx context.Context, userID, displayName, avatarURL string) error
}

// maxDisplayNameRunes follows the limit other servers enforce, so a name
// set here is accepted everywhere the user's member events travel.
const maxDisplayNameRunes = 256

// validUserID checks the grammar of a user ID in a path.
func validUserID(userID string) error {
	local, server, ok := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	if !strings.HasPrefix(userID, "@") || !ok || local == "" || server == "" || len(userID) > 255 {
		return httputil.InvalidParam("invalid user ID")
	}
	return nil
}

// localProfile reads the profile of a local user: 404 for unknown users
// and, since we do not query other servers for profiles, remote ones.
func (a *API) localProfile(ctx context.Context, userID string) (*users.Profile, error) {
	if err := validUserID(userID); err != nil {
		return nil, err
	}
	if !a.Users.IsLocal(userID) {
		// another server's user: ask it (federation query/profile)
		dn, av, err := a.Rooms.RemoteProfile(ctx, userID)
		if err != nil {
			return nil, err
		}
		return &users.Profile{DisplayName: dn, AvatarURL: av}, nil
	}
	p, err := a.Users.Profile(ctx, userID)
	if errors.Is(err, users.ErrNotFound) {
		return nil, httputil.NotFound("profile not found")
	}
	return p, err
}

type profileResponse struct {
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// profile serves GET /_matrix/client/v3/profile/{userId}.
func (a *API) profile(r *http.Request) (*profileResponse, error) {
	p, err := a.localProfile(r.Context(), r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	return &profileResponse{DisplayName: p.DisplayName, AvatarURL: p.AvatarURL}, nil
}

type displayNameResponse struct {
	DisplayName string `json:"displayname"`
}

// displayName serves GET /_matrix/client/v3/profile/{userId}/displayname;
// 404 when the user has none, as the spec says.
func (a *API) displayName(r *http.Request) (*displayNameResponse, error) {
	p, err := a.localProfile(r.Context(), r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	if p.DisplayName == "" {
		return nil, httputil.NotFound("no display name set")
	}
	return &displayNameResponse{DisplayName: p.DisplayName}, nil
}

type avatarURLResponse struct {
	AvatarURL string `json:"avatar_url"`
}

// avatarURL serves GET /_matrix/client/v3/profile/{userId}/avatar_url.
func (a *API) avatarURL(r *http.Request) (*avatarURLResponse, error) {
	p, err := a.localProfile(r.Context(), r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	if p.AvatarURL == "" {
		return nil, httputil.NotFound("no avatar set")
	}
	return &avatarURLResponse{AvatarURL: p.AvatarURL}, nil
}

// ownProfilePath checks that the path's user is the caller.
func ownProfilePath(r *http.Request, dev *users.Device) error {
	userID := r.PathValue("userId")
	if err := validUserID(userID); err != nil {
		return err
	}
	if userID != dev.UserID {
		return httputil.Forbidden("you can only change your own profile")
	}
	return nil
}

// setDisplayName serves PUT /_matrix/client/v3/profile/{userId}/displayname.
// null or "" removes the name.
func (a *API) setDisplayName(r *http.Request, dev *users.Device) (*empty, error) {
	if err := ownProfilePath(r, dev); err != nil {
		return nil, err
	}
	var req map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	name, err := optionalString(req, "displayname")
	if err != nil {
		return nil, err
	}
	if utf8.RuneCountInString(name) > maxDisplayNameRunes {
		return nil, httputil.InvalidParam("displayname is too long")
	}
	p, err := a.Users.SetDisplayName(r.Context(), dev.UserID, name)
	if err != nil {
		return nil, err
	}
	a.propagateProfile(r.Context(), dev.UserID, p)
	return &empty{}, nil
}

// setAvatarURL serves PUT /_matrix/client/v3/profile/{userId}/avatar_url.
func (a *API) setAvatarURL(r *http.Request, dev *users.Device) (*empty, error) {
	if err := ownProfilePath(r, dev); err != nil {
		return nil, err
	}
	var req map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	url, err := optionalString(req, "avatar_url")
	if err != nil {
		return nil, err
	}
	if url != "" && (!strings.HasPrefix(url, "mxc://") || len(url) > 1024) {
		return nil, httputil.InvalidParam("avatar_url must be an mxc:// URI")
	}
	p, err := a.Users.SetAvatarURL(r.Context(), dev.UserID, url)
	if err != nil {
		return nil, err
	}
	a.propagateProfile(r.Context(), dev.UserID, p)
	return &empty{}, nil
}

// optionalString reads a required key whose value is a string or null.
func optionalString(m map[string]json.RawMessage, key string) (string, error) {
	raw, ok := m[key]
	if !ok {
		return "", httputil.MissingParam(key + " is required")
	}
	if string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", httputil.BadJSON(key + " must be a string")
	}
	return s, nil
}

// propagateProfile updates the user's member events. The profile itself is
// already stored; a failure here is logged rather than failing the
// request, because the client cannot fix it by retrying.
func (a *API) propagateProfile(ctx context.Context, userID string, p *users.Profile) {
	if a.Profiles == nil {
		return
	}
	if err := a.Profiles.PropagateProfile(context.WithoutCancel(ctx), userID, p.DisplayName, p.AvatarURL); err != nil {
		slog.ErrorContext(ctx, "propagate profile to rooms", "user_id", userID, "err", err)
	}
}

type presenceResponse struct {
	Presence        string `json:"presence"`
	LastActiveAgo   *int64 `json:"last_active_ago,omitempty"`
	StatusMsg       string `json:"status_msg,omitempty"`
	CurrentlyActive *bool  `json:"currently_active,omitempty"`
}

// presence serves GET /_matrix/client/v3/presence/{userId}/status. With
// presence off (the default: who is online is health-adjacent data) other
// users always appear offline; the caller still sees what it set.
func (a *API) presence(r *http.Request, dev *users.Device) (*presenceResponse, error) {
	userID := r.PathValue("userId")
	if err := validUserID(userID); err != nil {
		return nil, err
	}
	if a.Users.IsLocal(userID) {
		if _, err := a.localProfile(r.Context(), userID); err != nil {
			return nil, httputil.NotFound("unknown user")
		}
	}
	if !a.Config.Presence.Enabled && userID != dev.UserID {
		return &presenceResponse{Presence: "offline"}, nil
	}
	p, err := a.Users.Presence(r.Context(), userID)
	if errors.Is(err, users.ErrNotFound) {
		return &presenceResponse{Presence: "offline"}, nil
	}
	if err != nil {
		return nil, err
	}
	ago := max(a.Users.Now()-p.LastActiveTS, 0)
	active := p.Presence == "online"
	return &presenceResponse{Presence: p.Presence, LastActiveAgo: &ago, StatusMsg: p.StatusMsg, CurrentlyActive: &active}, nil
}

type setPresenceRequest struct {
	Presence  string `json:"presence"`
	StatusMsg string `json:"status_msg"`
}

// setPresence serves PUT /_matrix/client/v3/presence/{userId}/status.
func (a *API) setPresence(r *http.Request, dev *users.Device) (*empty, error) {
	userID := r.PathValue("userId")
	if err := validUserID(userID); err != nil {
		return nil, err
	}
	if userID != dev.UserID {
		return nil, httputil.Forbidden("you can only set your own presence")
	}
	var req setPresenceRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	switch req.Presence {
	case "online", "offline", "unavailable":
	case "":
		return nil, httputil.MissingParam("presence is required")
	default:
		return nil, httputil.InvalidParam("presence must be online, offline or unavailable")
	}
	if err := a.Users.SetPresence(r.Context(), dev.UserID, req.Presence, req.StatusMsg); err != nil {
		return nil, err
	}
	return &empty{}, nil
}
