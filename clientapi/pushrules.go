package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"praxis/internal/httputil"
	"praxis/internal/users"
)

func pushRuleError(err error) error {
	switch {
	case errors.Is(err, users.ErrPushRuleNotFound):
		return httputil.NotFound("push rule not found")
	case errors.Is(err, users.ErrPushRuleAnchor):
		// The spec's example answer for this case.
		return httputil.Unknown(err.Error())
	case errors.Is(err, users.ErrInvalid):
		return httputil.InvalidParam(err.Error())
	}
	return err
}

// pushRulePath validates {scope}, {kind} and {ruleId}. A rule of a kind we
// do not know (such as an MSC's "postcontent") does not exist: 404, the
// answer the spec gives for reading or changing a missing rule, so clients
// that probe for optional rules carry on. Creating one is a bad request.
func pushRulePath(r *http.Request) (kind, ruleID string, err error) {
	if r.PathValue("scope") != "global" {
		return "", "", httputil.InvalidParam("the only push rule scope is global")
	}
	kind, ruleID = r.PathValue("kind"), r.PathValue("ruleId")
	if !slices.Contains(users.PushRuleKinds, kind) {
		if r.Method == http.MethodPut && !strings.HasSuffix(r.URL.Path, "/enabled") && !strings.HasSuffix(r.URL.Path, "/actions") {
			return "", "", httputil.InvalidParam("unknown push rule kind " + kind)
		}
		return "", "", httputil.NotFound("no push rule kind " + kind)
	}
	if ruleID == "" || len(ruleID) > 255 || strings.ContainsAny(ruleID, "/\\") {
		return "", "", httputil.InvalidParam("invalid push rule ID")
	}
	return kind, ruleID, nil
}

type pushRulesResponse struct {
	Global *users.PushRuleset `json:"global"`
}

// pushRules serves GET /_matrix/client/v3/pushrules/.
func (a *API) pushRules(r *http.Request, dev *users.Device) (*pushRulesResponse, error) {
	rs, err := a.Users.PushRules(r.Context(), dev.UserID)
	if err != nil {
		return nil, err
	}
	return &pushRulesResponse{Global: rs}, nil
}

// pushRulesScope serves GET /_matrix/client/v3/pushrules/{scope}/.
func (a *API) pushRulesScope(r *http.Request, dev *users.Device) (*users.PushRuleset, error) {
	if r.PathValue("scope") != "global" {
		return nil, httputil.InvalidParam("the only push rule scope is global")
	}
	return a.Users.PushRules(r.Context(), dev.UserID)
}

// pushRule serves GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}.
func (a *API) pushRule(r *http.Request, dev *users.Device) (*users.PushRule, error) {
	kind, id, err := pushRulePath(r)
	if err != nil {
		return nil, err
	}
	rule, err := a.Users.PushRule(r.Context(), dev.UserID, kind, id)
	return rule, pushRuleError(err)
}

type putPushRuleRequest struct {
	Actions    json.RawMessage `json:"actions"`
	Conditions json.RawMessage `json:"conditions"`
	Pattern    *string         `json:"pattern"`
}

// validActions checks a push rule's actions: "notify" (and the legacy
// "dont_notify"/"coalesce", which mean no notification) or set_tweak objects.
func validActions(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return httputil.MissingParam("actions is required")
	}
	var actions []json.RawMessage
	if err := json.Unmarshal(raw, &actions); err != nil {
		return httputil.BadJSON("actions must be an array")
	}
	for _, a := range actions {
		var s string
		if json.Unmarshal(a, &s) == nil {
			switch s {
			case "notify", "dont_notify", "coalesce":
				continue
			}
			return httputil.InvalidParam("unknown push rule action " + s)
		}
		var tweak struct {
			SetTweak *string `json:"set_tweak"`
		}
		if err := json.Unmarshal(a, &tweak); err != nil || tweak.SetTweak == nil || *tweak.SetTweak == "" {
			return httputil.InvalidParam("a push rule action must be a string or an object with set_tweak")
		}
	}
	return nil
}

func validConditions(raw json.RawMessage) error {
	var conds []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &conds); err != nil {
		return httputil.BadJSON("conditions must be an array of objects")
	}
	for _, c := range conds {
		var kind string
		if err := json.Unmarshal(c["kind"], &kind); err != nil || kind == "" {
			return httputil.BadJSON("every condition needs a string kind")
		}
	}
	return nil
}

// putPushRule serves PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}
// with the optional before/after query parameters.
func (a *API) putPushRule(r *http.Request, dev *users.Device) (*empty, error) {
	kind, id, err := pushRulePath(r)
	if err != nil {
		return nil, err
	}
	var req putPushRuleRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if err := validActions(req.Actions); err != nil {
		return nil, err
	}
	rule := users.PushRule{RuleID: id, Actions: compactJSON(req.Actions)}
	switch kind {
	case "override", "underride":
		rule.Conditions = json.RawMessage(`[]`)
		if len(req.Conditions) > 0 && string(req.Conditions) != "null" {
			if err := validConditions(req.Conditions); err != nil {
				return nil, err
			}
			rule.Conditions = compactJSON(req.Conditions)
		}
	case "content":
		if req.Pattern == nil || *req.Pattern == "" {
			return nil, httputil.MissingParam("content rules need a pattern")
		}
		rule.Pattern = req.Pattern
	case "room":
		if !validRoomID(id) {
			return nil, httputil.InvalidParam("room rules are named by a room ID")
		}
	case "sender":
		if err := validUserID(id); err != nil {
			return nil, httputil.InvalidParam("sender rules are named by a user ID")
		}
	}
	q := r.URL.Query()
	before, after := q.Get("before"), q.Get("after")
	for _, anchor := range []string{before, after} {
		if anchor != "" && users.IsDefaultPushRule(kind, anchor) {
			return nil, httputil.Unknown("before/after must name one of your own rules, not a server-default rule")
		}
	}
	if err := a.Users.PutPushRule(r.Context(), dev.UserID, kind, rule, before, after); err != nil {
		return nil, pushRuleError(err)
	}
	return &empty{}, nil
}

// validRoomID accepts "!opaque:server" and room version 12's
// server-less "!hash" form.
func validRoomID(id string) bool {
	return len(id) > 1 && len(id) <= 255 && id[0] == '!' && !strings.ContainsAny(id, " /")
}

// deletePushRule serves DELETE /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}.
func (a *API) deletePushRule(r *http.Request, dev *users.Device) (*empty, error) {
	kind, id, err := pushRulePath(r)
	if err != nil {
		return nil, err
	}
	if err := a.Users.DeletePushRule(r.Context(), dev.UserID, kind, id); err != nil {
		return nil, pushRuleError(err)
	}
	return &empty{}, nil
}

type pushRuleEnabled struct {
	Enabled *bool `json:"enabled"`
}

// pushRuleEnabled serves GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/enabled.
func (a *API) pushRuleEnabled(r *http.Request, dev *users.Device) (*pushRuleEnabled, error) {
	kind, id, err := pushRulePath(r)
	if err != nil {
		return nil, err
	}
	rule, err := a.Users.PushRule(r.Context(), dev.UserID, kind, id)
	if err != nil {
		return nil, pushRuleError(err)
	}
	return &pushRuleEnabled{Enabled: &rule.Enabled}, nil
}

// setPushRuleEnabled serves PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/enabled.
func (a *API) setPushRuleEnabled(r *http.Request, dev *users.Device) (*empty, error) {
	kind, id, err := pushRulePath(r)
	if err != nil {
		return nil, err
	}
	var req pushRuleEnabled
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Enabled == nil {
		return nil, httputil.MissingParam("enabled is required")
	}
	if err := a.Users.SetPushRuleEnabled(r.Context(), dev.UserID, kind, id, *req.Enabled); err != nil {
		return nil, pushRuleError(err)
	}
	return &empty{}, nil
}

type pushRuleActions struct {
	Actions json.RawMessage `json:"actions"`
}

// pushRuleActions serves GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/actions.
func (a *API) pushRuleActions(r *http.Request, dev *users.Device) (*pushRuleActions, error) {
	kind, id, err := pushRulePath(r)
	if err != nil {
		return nil, err
	}
	rule, err := a.Users.PushRule(r.Context(), dev.UserID, kind, id)
	if err != nil {
		return nil, pushRuleError(err)
	}
	return &pushRuleActions{Actions: rule.Actions}, nil
}

// setPushRuleActions serves PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/actions.
func (a *API) setPushRuleActions(r *http.Request, dev *users.Device) (*empty, error) {
	kind, id, err := pushRulePath(r)
	if err != nil {
		return nil, err
	}
	var req pushRuleActions
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if err := validActions(req.Actions); err != nil {
		return nil, err
	}
	if err := a.Users.SetPushRuleActions(r.Context(), dev.UserID, kind, id, compactJSON(req.Actions)); err != nil {
		return nil, pushRuleError(err)
	}
	return &empty{}, nil
}

type pushersResponse struct {
	Pushers []json.RawMessage `json:"pushers"`
}

// pushers serves GET /_matrix/client/v3/pushers.
func (a *API) pushers(r *http.Request, dev *users.Device) (*pushersResponse, error) {
	ps, err := a.Users.Pushers(r.Context(), dev.UserID)
	if err != nil {
		return nil, err
	}
	out := &pushersResponse{Pushers: make([]json.RawMessage, len(ps))}
	for i, p := range ps {
		out.Pushers[i] = p.Raw
	}
	return out, nil
}

type setPusherRequest struct {
	PushKey           string  `json:"pushkey"`
	Kind              *string `json:"kind"`
	AppID             string  `json:"app_id"`
	AppDisplayName    string  `json:"app_display_name"`
	DeviceDisplayName string  `json:"device_display_name"`
	ProfileTag        string  `json:"profile_tag"`
	Lang              string  `json:"lang"`
	Data              *struct {
		URL    string `json:"url"`
		Format string `json:"format"`
	} `json:"data"`
	Append bool `json:"append"`
}

// setPusher serves POST /_matrix/client/v3/pushers/set. kind null deletes
// the pusher.
func (a *API) setPusher(r *http.Request, dev *users.Device) (*empty, error) {
	body, err := httputil.ReadBody(r)
	if err != nil {
		return nil, err
	}
	var req setPusherRequest
	if err := httputil.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	if req.PushKey == "" || req.AppID == "" {
		return nil, httputil.MissingParam("pushkey and app_id are required")
	}
	if len(req.AppID) > 64 || len(req.PushKey) > 512 {
		return nil, httputil.InvalidParam("app_id or pushkey is too long")
	}
	if req.Kind == nil {
		if err := a.Users.DeletePusher(r.Context(), dev.UserID, req.AppID, req.PushKey); err != nil {
			return nil, err
		}
		return &empty{}, nil
	}
	if *req.Kind != "http" {
		return nil, httputil.InvalidParam("only http pushers are supported")
	}
	if req.AppDisplayName == "" || req.DeviceDisplayName == "" || req.Lang == "" || req.Data == nil {
		return nil, httputil.MissingParam("app_display_name, device_display_name, lang and data are required")
	}
	u, err := url.Parse(req.Data.URL)
	if req.Data.URL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, httputil.InvalidParam("data.url must be an http(s) URL of a push gateway")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, httputil.BadJSON("pusher must be an object")
	}
	delete(raw, "append")
	stored, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	p := users.Pusher{UserID: dev.UserID, AppID: req.AppID, PushKey: req.PushKey, DeviceID: dev.DeviceID, Raw: stored}
	if err := a.Users.SetPusher(r.Context(), p, req.Append); err != nil {
		return nil, err
	}
	return &empty{}, nil
}
