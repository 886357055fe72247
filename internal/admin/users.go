package admin

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/internal/users"
)

// userDetails is a user as the Synapse admin API shows it. Fields Praxis
// has no notion of (guests, shadow bans, threepids) keep their neutral
// values so that tools written for Synapse can parse the answer.
type userDetails struct {
	Name         string  `json:"name"`
	DisplayName  *string `json:"displayname"`
	AvatarURL    *string `json:"avatar_url"`
	IsGuest      bool    `json:"is_guest"`
	Admin        bool    `json:"admin"`
	Deactivated  bool    `json:"deactivated"`
	Erased       bool    `json:"erased"`
	ShadowBanned bool    `json:"shadow_banned"`
	Locked       bool    `json:"locked"`
	// CreationTS is in seconds, as Synapse sends it and its admin
	// clients (synapse-admin, mautrix synapseadmin) read it.
	CreationTS   int64    `json:"creation_ts"`
	AppserviceID *string  `json:"appservice_id"`
	UserType     *string  `json:"user_type"`
	Threepids    []string `json:"threepids"`
	ExternalIDs  []string `json:"external_ids"`
	// Kind is the Praxis account kind: user, staff, patient or service.
	Kind string `json:"praxis_kind"`
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func detailsOf(a *users.Account) *userDetails {
	return &userDetails{
		Name: a.UserID, DisplayName: nullable(a.DisplayName), AvatarURL: nullable(a.AvatarURL),
		Admin: a.IsAdmin, Deactivated: a.Deactivated, CreationTS: a.CreatedTS / 1000, Kind: a.Kind,
		Threepids: []string{}, ExternalIDs: []string{},
	}
}

type userList struct {
	Users     []*userDetails `json:"users"`
	NextToken string         `json:"next_token,omitempty"`
	Total     int            `json:"total"`
}

// queryInt reads a non-negative integer query parameter.
func queryInt(r *http.Request, name string, def int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, httputil.InvalidParam("query parameter " + name + " must be a non-negative integer")
	}
	return n, nil
}

// queryBool reads a true/false query parameter; nil when absent.
func queryBool(r *http.Request, name string) (*bool, error) {
	switch r.URL.Query().Get(name) {
	case "":
		return nil, nil
	case "true":
		t := true
		return &t, nil
	case "false":
		f := false
		return &f, nil
	}
	return nil, httputil.InvalidParam("query parameter " + name + " must be true or false")
}

// queryDir reads dir=f|b; true means backwards.
func queryDir(r *http.Request) (bool, error) {
	switch r.URL.Query().Get("dir") {
	case "", "f":
		return false, nil
	case "b":
		return true, nil
	}
	return false, httputil.InvalidParam("query parameter dir must be f or b")
}

// listUsers serves GET /_synapse/admin/v2/users: from (offset), limit,
// user_id, name, guests, deactivated, admins, order_by, dir.
func (s *Service) listUsers(r *http.Request, caller *users.Device) (any, error) {
	q := users.AccountQuery{}
	var err error
	if q.From, err = queryInt(r, "from", 0); err != nil {
		return nil, err
	}
	if q.Limit, err = queryInt(r, "limit", 100); err != nil {
		return nil, err
	}
	if q.Limit == 0 || q.Limit > 1000 {
		return nil, httputil.InvalidParam("limit must be between 1 and 1000")
	}
	qv := r.URL.Query()
	q.UserID, q.Name = qv.Get("user_id"), qv.Get("name")
	if _, err := queryBool(r, "guests"); err != nil {
		return nil, err // there are no guest accounts: either value lists the same users
	}
	deact, err := queryBool(r, "deactivated")
	if err != nil {
		return nil, err
	}
	q.Deactivated = deact != nil && *deact
	if q.Admins, err = queryBool(r, "admins"); err != nil {
		return nil, err
	}
	q.OrderBy = qv.Get("order_by")
	if !users.ValidAccountOrder(q.OrderBy) {
		return nil, httputil.InvalidParam("unknown order_by " + quote(q.OrderBy))
	}
	if q.Backwards, err = queryDir(r); err != nil {
		return nil, err
	}
	accts, total, err := s.users.ListAccounts(r.Context(), q)
	if err != nil {
		return nil, err
	}
	out := &userList{Users: make([]*userDetails, 0, len(accts)), Total: total}
	for i := range accts {
		out.Users = append(out.Users, detailsOf(&accts[i]))
	}
	if q.From+len(accts) < total {
		out.NextToken = strconv.Itoa(q.From + len(accts))
	}
	return out, nil
}

// getUser serves GET /_synapse/admin/v2/users/{userId}.
func (s *Service) getUser(r *http.Request, caller *users.Device) (any, error) {
	userID, err := s.localUser(r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	a, err := s.users.Account(r.Context(), userID)
	if err != nil {
		return nil, userError(err)
	}
	return detailsOf(a), nil
}

// putUserRequest is the body of PUT /_synapse/admin/v2/users/{userId}.
// Pointers distinguish "not given" from a zero value.
type putUserRequest struct {
	Password      *string `json:"password"`
	LogoutDevices *bool   `json:"logout_devices"`
	DisplayName   *string `json:"displayname"`
	AvatarURL     *string `json:"avatar_url"`
	Admin         *bool   `json:"admin"`
	Deactivated   *bool   `json:"deactivated"`
	UserType      *string `json:"user_type"`
	Locked        *bool   `json:"locked"`
}

// putUser serves PUT /_synapse/admin/v2/users/{userId}: it creates the
// account (201) or changes it (200), in one transaction with its audit row.
func (s *Service) putUser(r *http.Request, caller *users.Device) (any, error) {
	ctx := r.Context()
	userID, err := s.localUser(r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	var req putUserRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Password != nil {
		if err := checkPassword(*req.Password); err != nil {
			return nil, err
		}
	}
	if req.UserType != nil && *req.UserType != "" {
		return nil, httputil.InvalidParam("user_type is not supported")
	}
	if req.Locked != nil && *req.Locked {
		return nil, httputil.InvalidParam("locking accounts is not supported; deactivate instead")
	}
	if req.Admin != nil && !*req.Admin && userID == caller.UserID {
		return nil, httputil.Errorf(http.StatusBadRequest, "M_UNKNOWN", "You may not demote yourself.")
	}
	if _, err := s.users.Account(ctx, userID); errors.Is(err, users.ErrNotFound) {
		return s.createUser(ctx, caller, userID, &req)
	} else if err != nil {
		return nil, err
	}
	return s.modifyUser(ctx, caller, userID, &req)
}

func (s *Service) createUser(ctx context.Context, caller *users.Device, userID string, req *putUserRequest) (any, error) {
	localpart := userID[1 : len(userID)-len(":"+s.users.ServerName())]
	if err := s.users.ValidateLocalpart(localpart); err != nil {
		return nil, userError(err)
	}
	if req.Deactivated != nil && *req.Deactivated {
		return nil, httputil.InvalidParam("cannot create a deactivated user")
	}
	password := ""
	if req.Password != nil {
		password = *req.Password
	}
	admin := req.Admin != nil && *req.Admin
	var acct *users.Account
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		u := s.users.WithTx(tx)
		if _, err := u.CreateAccount(ctx, localpart, password, admin, "user"); err != nil {
			return userError(err)
		}
		if req.DisplayName != nil && *req.DisplayName != "" {
			if _, err := u.SetDisplayName(ctx, userID, *req.DisplayName); err != nil {
				return err
			}
		}
		if req.AvatarURL != nil && *req.AvatarURL != "" {
			if _, err := u.SetAvatarURL(ctx, userID, *req.AvatarURL); err != nil {
				return err
			}
		}
		var err error
		if acct, err = u.Account(ctx, userID); err != nil {
			return err
		}
		_, err = s.audit.Append(ctx, tx, Record{Actor: caller.UserID, Action: "user.create", Target: userID, Params: map[string]any{
			"admin": admin, "password_set": password != "", "displayname_set": acct.DisplayName != "",
		}})
		return err
	})
	if err != nil {
		return nil, err
	}
	slog.InfoContext(ctx, "admin created user", "actor", caller.UserID, "user_id", userID, "admin", admin)
	return withStatus{http.StatusCreated, detailsOf(acct)}, nil
}

func (s *Service) modifyUser(ctx context.Context, caller *users.Device, userID string, req *putUserRequest) (any, error) {
	deactivate := req.Deactivated != nil && *req.Deactivated
	reactivate := req.Deactivated != nil && !*req.Deactivated
	params := map[string]any{}
	var acct *users.Account
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		u := s.users.WithTx(tx)
		before, err := u.Account(ctx, userID)
		if err != nil {
			return userError(err)
		}
		if reactivate && before.Deactivated {
			// A reactivated account has no password left: it needs one to
			// be usable at all.
			if req.Password == nil {
				return httputil.MissingParam("a password is required to reactivate a user")
			}
			if err := u.Reactivate(ctx, userID); err != nil {
				return err
			}
			params["deactivated"] = false
		}
		if req.Password != nil {
			logout := req.LogoutDevices == nil || *req.LogoutDevices
			if err := u.ChangePassword(ctx, userID, *req.Password, "", logout); err != nil {
				return userError(err)
			}
			params["password_changed"], params["logout_devices"] = true, logout
		}
		if req.DisplayName != nil && *req.DisplayName != before.DisplayName {
			if _, err := u.SetDisplayName(ctx, userID, *req.DisplayName); err != nil {
				return err
			}
			params["displayname_changed"] = true
		}
		if req.AvatarURL != nil && *req.AvatarURL != before.AvatarURL {
			if _, err := u.SetAvatarURL(ctx, userID, *req.AvatarURL); err != nil {
				return err
			}
			params["avatar_url_changed"] = true
		}
		if req.Admin != nil && *req.Admin != before.IsAdmin {
			if err := u.SetAdmin(ctx, userID, *req.Admin); err != nil {
				return err
			}
			params["admin"] = *req.Admin
		}
		if deactivate && !before.Deactivated {
			if err := u.Deactivate(ctx, userID); err != nil {
				return err
			}
			params["deactivated"] = true
		}
		if acct, err = u.Account(ctx, userID); err != nil {
			return err
		}
		if len(params) == 0 {
			return nil // nothing changed: nothing to audit
		}
		_, err = s.audit.Append(ctx, tx, Record{Actor: caller.UserID, Action: "user.modify", Target: userID, Params: params})
		return err
	})
	if err != nil {
		return nil, err
	}
	if deactivate {
		if err := s.leaveRooms(ctx, userID); err != nil {
			return nil, err
		}
	}
	return detailsOf(acct), nil
}

// leaveRooms makes a freshly deactivated user leave their rooms. It runs
// after the deactivation committed: the room service writes in its own
// transactions, and a failure here is retried by deactivating again.
func (s *Service) leaveRooms(ctx context.Context, userID string) error {
	if s.leaver == nil {
		return nil
	}
	if err := s.leaver.LeaveAllRooms(ctx, userID); err != nil {
		slog.ErrorContext(ctx, "deactivated user could not leave all rooms", "user_id", userID, "err", err)
		return err
	}
	return nil
}

// deactivateUser serves POST /_synapse/admin/v1/deactivate/{userId}. It is
// idempotent: deactivating again retries leaving rooms.
func (s *Service) deactivateUser(r *http.Request, caller *users.Device) (any, error) {
	ctx := r.Context()
	userID, err := s.localUser(r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	var req struct {
		Erase bool `json:"erase"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Erase {
		return nil, httputil.InvalidParam("erase is not supported")
	}
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		if err := s.users.WithTx(tx).Deactivate(ctx, userID); err != nil {
			return userError(err)
		}
		_, err := s.audit.Append(ctx, tx, Record{Actor: caller.UserID, Action: "user.deactivate", Target: userID})
		return err
	})
	if err != nil {
		return nil, err
	}
	slog.InfoContext(ctx, "admin deactivated user", "actor", caller.UserID, "user_id", userID)
	if err := s.leaveRooms(ctx, userID); err != nil {
		return nil, err
	}
	return map[string]string{"id_server_unbind_result": "success"}, nil
}

// resetPassword serves POST /_synapse/admin/v1/reset_password/{userId}:
// new_password, logout_devices (default true).
func (s *Service) resetPassword(r *http.Request, caller *users.Device) (any, error) {
	ctx := r.Context()
	userID, err := s.localUser(r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	var req struct {
		NewPassword   *string `json:"new_password"`
		LogoutDevices *bool   `json:"logout_devices"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.NewPassword == nil {
		return nil, httputil.MissingParam("new_password is required")
	}
	if err := checkPassword(*req.NewPassword); err != nil {
		return nil, err
	}
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		u := s.users.WithTx(tx)
		a, err := u.Account(ctx, userID)
		if err != nil {
			return userError(err)
		}
		if a.Deactivated {
			return httputil.Errorf(http.StatusBadRequest, "M_USER_DEACTIVATED", "the user is deactivated")
		}
		if err := u.ChangePassword(ctx, userID, *req.NewPassword, "", logout); err != nil {
			return userError(err)
		}
		_, err = s.audit.Append(ctx, tx, Record{Actor: caller.UserID, Action: "user.reset_password", Target: userID,
			Params: map[string]any{"logout_devices": logout}})
		return err
	})
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// getAdmin serves GET /_synapse/admin/v1/users/{userId}/admin.
func (s *Service) getAdmin(r *http.Request, caller *users.Device) (any, error) {
	userID, err := s.localUser(r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	a, err := s.users.Account(r.Context(), userID)
	if err != nil {
		return nil, userError(err)
	}
	return map[string]bool{"admin": a.IsAdmin}, nil
}

// putAdmin serves PUT /_synapse/admin/v1/users/{userId}/admin {"admin": bool}.
func (s *Service) putAdmin(r *http.Request, caller *users.Device) (any, error) {
	ctx := r.Context()
	userID, err := s.localUser(r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	var req struct {
		Admin *bool `json:"admin"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Admin == nil {
		return nil, httputil.MissingParam("admin is required")
	}
	if !*req.Admin && userID == caller.UserID {
		return nil, httputil.Errorf(http.StatusBadRequest, "M_UNKNOWN", "You may not demote yourself.")
	}
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		if err := s.users.WithTx(tx).SetAdmin(ctx, userID, *req.Admin); err != nil {
			return userError(err)
		}
		_, err := s.audit.Append(ctx, tx, Record{Actor: caller.UserID, Action: "user.set_admin", Target: userID,
			Params: map[string]any{"admin": *req.Admin}})
		return err
	})
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// usernameAvailable serves GET /_synapse/admin/v1/username_available?username=:
// like the client API's register/available, but open to admins even when
// registration is closed.
func (s *Service) usernameAvailable(r *http.Request, caller *users.Device) (any, error) {
	localpart := r.URL.Query().Get("username")
	if localpart == "" {
		return nil, httputil.MissingParam("username is required")
	}
	if err := s.users.ValidateLocalpart(localpart); err != nil {
		return nil, userError(err)
	}
	ok, err := s.users.LocalpartAvailable(r.Context(), localpart)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, userError(users.ErrUserInUse)
	}
	return map[string]bool{"available": true}, nil
}
