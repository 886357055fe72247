package users

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"praxis/internal/storage"
)

// Push rule kinds, in the order the spec evaluates them.
var PushRuleKinds = []string{"override", "content", "room", "sender", "underride"}

// PushRule is one rule as the Client-Server API shows it. Conditions and
// actions stay raw JSON: the server stores what the client sent, including
// condition kinds and tweaks it does not know.
type PushRule struct {
	RuleID     string          `json:"rule_id"`
	Default    bool            `json:"default"`
	Enabled    bool            `json:"enabled"`
	Conditions json.RawMessage `json:"conditions,omitempty"`
	Pattern    *string         `json:"pattern,omitempty"`
	Actions    json.RawMessage `json:"actions"`
}

// PushRuleset is a user's rules by kind.
type PushRuleset struct {
	Override  []PushRule `json:"override"`
	Content   []PushRule `json:"content"`
	Room      []PushRule `json:"room"`
	Sender    []PushRule `json:"sender"`
	Underride []PushRule `json:"underride"`
}

// Kind returns the rules of kind (nil for an unknown kind).
func (rs *PushRuleset) Kind(kind string) *[]PushRule {
	switch kind {
	case "override":
		return &rs.Override
	case "content":
		return &rs.Content
	case "room":
		return &rs.Room
	case "sender":
		return &rs.Sender
	case "underride":
		return &rs.Underride
	}
	return nil
}

// Push rule errors.
var (
	// ErrPushRuleNotFound: no such rule.
	ErrPushRuleNotFound = errors.New("push rule not found")
	// ErrPushRuleAnchor: before/after names no user-defined rule of the kind.
	ErrPushRuleAnchor = errors.New("before/after rule not found")
)

// defaultPushRules returns the spec's (v1.11) server-default rules for
// userID, by kind, in priority order.
func defaultPushRules(userID string) map[string][]PushRule {
	localpart := strings.TrimPrefix(userID, "@")
	if i := strings.IndexByte(localpart, ':'); i >= 0 {
		localpart = localpart[:i]
	}
	uid, _ := json.Marshal(userID)
	r := func(id string, enabled bool, conds, actions string) PushRule {
		return PushRule{RuleID: id, Default: true, Enabled: enabled, Conditions: json.RawMessage(conds), Actions: json.RawMessage(actions)}
	}
	const (
		notifySoundHighlight = `["notify",{"set_tweak":"sound","value":"default"},{"set_tweak":"highlight"}]`
		notifyHighlight      = `["notify",{"set_tweak":"highlight"}]`
		notifySound          = `["notify",{"set_tweak":"sound","value":"default"}]`
	)
	lpStr := localpart
	return map[string][]PushRule{
		"override": {
			r(".m.rule.master", false, `[]`, `[]`),
			r(".m.rule.suppress_notices", true, `[{"kind":"event_match","key":"content.msgtype","pattern":"m.notice"}]`, `[]`),
			r(".m.rule.invite_for_me", true, `[{"kind":"event_match","key":"type","pattern":"m.room.member"},{"kind":"event_match","key":"content.membership","pattern":"invite"},{"kind":"event_match","key":"state_key","pattern":`+string(uid)+`}]`, notifySound),
			r(".m.rule.member_event", true, `[{"kind":"event_match","key":"type","pattern":"m.room.member"}]`, `[]`),
			r(".m.rule.is_user_mention", true, `[{"kind":"event_property_contains","key":"content.m\\.mentions.user_ids","value":`+string(uid)+`}]`, notifySoundHighlight),
			r(".m.rule.contains_display_name", true, `[{"kind":"contains_display_name"}]`, notifySoundHighlight),
			r(".m.rule.is_room_mention", true, `[{"kind":"event_property_is","key":"content.m\\.mentions.room","value":true},{"kind":"sender_notification_permission","key":"room"}]`, notifyHighlight),
			r(".m.rule.roomnotif", true, `[{"kind":"sender_notification_permission","key":"room"},{"kind":"event_match","key":"content.body","pattern":"@room"}]`, notifyHighlight),
			r(".m.rule.tombstone", true, `[{"kind":"event_match","key":"type","pattern":"m.room.tombstone"},{"kind":"event_match","key":"state_key","pattern":""}]`, notifyHighlight),
			r(".m.rule.reaction", true, `[{"kind":"event_match","key":"type","pattern":"m.reaction"}]`, `[]`),
			r(".m.rule.room.server_acl", true, `[{"kind":"event_match","key":"type","pattern":"m.room.server_acl"},{"kind":"event_match","key":"state_key","pattern":""}]`, `[]`),
			r(".m.rule.suppress_edits", true, `[{"kind":"event_property_is","key":"content.m\\.relates_to.rel_type","value":"m.replace"}]`, `[]`),
		},
		"content": {
			{RuleID: ".m.rule.contains_user_name", Default: true, Enabled: true, Pattern: &lpStr, Actions: json.RawMessage(notifySoundHighlight)},
		},
		"underride": {
			r(".m.rule.call", true, `[{"kind":"event_match","key":"type","pattern":"m.call.invite"}]`, `["notify",{"set_tweak":"sound","value":"ring"}]`),
			r(".m.rule.encrypted_room_one_to_one", true, `[{"kind":"room_member_count","is":"2"},{"kind":"event_match","key":"type","pattern":"m.room.encrypted"}]`, notifySound),
			r(".m.rule.room_one_to_one", true, `[{"kind":"room_member_count","is":"2"},{"kind":"event_match","key":"type","pattern":"m.room.message"}]`, notifySound),
			r(".m.rule.message", true, `[{"kind":"event_match","key":"type","pattern":"m.room.message"}]`, `["notify"]`),
			r(".m.rule.encrypted", true, `[{"kind":"event_match","key":"type","pattern":"m.room.encrypted"}]`, `["notify"]`),
		},
	}
}

// IsDefaultPushRule reports whether kind/ruleID names a server-default rule.
func IsDefaultPushRule(kind, ruleID string) bool {
	for _, r := range defaultPushRules("@x:x")[kind] {
		if r.RuleID == ruleID {
			return true
		}
	}
	return false
}

// PushRules returns userID's full ruleset: the server defaults with the
// user's changes applied and the user's own rules in place. Order follows
// the spec: .m.rule.master first, then user rules before the other
// defaults of their kind.
func (s *Service) PushRules(ctx context.Context, userID string) (*PushRuleset, error) {
	return s.pushRules(ctx, s.db, userID)
}

func (s *Service) pushRules(ctx context.Context, db *storage.DB, userID string) (*PushRuleset, error) {
	defs := defaultPushRules(userID)
	type override struct {
		enabled *bool
		actions json.RawMessage
	}
	changes := map[string]override{}
	rows, err := db.Query(ctx, `SELECT rule_id, enabled, actions FROM push_rule_defaults WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("read push rule changes of %s: %w", userID, err)
	}
	for rows.Next() {
		var id string
		var en sql.NullBool
		var act sql.NullString
		if err := rows.Scan(&id, &en, &act); err != nil {
			rows.Close()
			return nil, err
		}
		o := override{}
		if en.Valid {
			o.enabled = &en.Bool
		}
		if act.Valid {
			o.actions = json.RawMessage(act.String)
		}
		changes[id] = o
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for kind, rules := range defs {
		for i := range rules {
			if o, ok := changes[rules[i].RuleID]; ok {
				if o.enabled != nil {
					rules[i].Enabled = *o.enabled
				}
				if o.actions != nil {
					rules[i].Actions = o.actions
				}
			}
		}
		defs[kind] = rules
	}

	own := map[string][]PushRule{}
	rows, err = db.Query(ctx, `SELECT kind, rule_id, conditions, pattern, actions, enabled FROM push_rules WHERE user_id = $1 ORDER BY kind, ord`, userID)
	if err != nil {
		return nil, fmt.Errorf("read push rules of %s: %w", userID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var kind string
		var r PushRule
		var conds, pat sql.NullString
		var actions string
		if err := rows.Scan(&kind, &r.RuleID, &conds, &pat, &actions, &r.Enabled); err != nil {
			return nil, err
		}
		if conds.Valid {
			r.Conditions = json.RawMessage(conds.String)
		}
		if pat.Valid {
			r.Pattern = &pat.String
		}
		r.Actions = json.RawMessage(actions)
		own[kind] = append(own[kind], r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rs := &PushRuleset{}
	for _, kind := range PushRuleKinds {
		out := rs.Kind(kind)
		*out = []PushRule{}
		d := defs[kind]
		if kind == "override" && len(d) > 0 {
			*out = append(*out, d[0]) // .m.rule.master outranks everything
			d = d[1:]
		}
		*out = append(*out, own[kind]...)
		*out = append(*out, d...)
	}
	return rs, nil
}

// pushRulesJSON renders the ruleset as the m.push_rules account data.
func (s *Service) pushRulesJSON(ctx context.Context, db *storage.DB, userID string) (json.RawMessage, error) {
	rs, err := s.pushRules(ctx, db, userID)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(map[string]any{"global": rs})
	if err != nil {
		return nil, fmt.Errorf("encode push rules: %w", err)
	}
	return b, nil
}

// PushRule returns one rule of userID; ErrPushRuleNotFound when missing.
func (s *Service) PushRule(ctx context.Context, userID, kind, ruleID string) (*PushRule, error) {
	rs, err := s.PushRules(ctx, userID)
	if err != nil {
		return nil, err
	}
	return findRule(rs, kind, ruleID)
}

func findRule(rs *PushRuleset, kind, ruleID string) (*PushRule, error) {
	rules := rs.Kind(kind)
	if rules == nil {
		return nil, ErrPushRuleNotFound
	}
	for i := range *rules {
		if (*rules)[i].RuleID == ruleID {
			return &(*rules)[i], nil
		}
	}
	return nil, ErrPushRuleNotFound
}

// PutPushRule creates or replaces a user-defined rule. before/after name a
// user-defined rule of the same kind to insert next to (ErrPushRuleAnchor
// when it does not exist). A replaced rule keeps its place unless
// before/after says otherwise; a new rule goes first among the user's rules
// of its kind, as the spec prescribes.
func (s *Service) PutPushRule(ctx context.Context, userID, kind string, rule PushRule, before, after string) error {
	if IsDefaultPushRule(kind, rule.RuleID) || strings.HasPrefix(rule.RuleID, ".") {
		return fmt.Errorf("%w: rule IDs starting with '.' are reserved for server-default rules", ErrInvalid)
	}
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		rows, err := tx.Query(ctx, `SELECT rule_id FROM push_rules WHERE user_id = $1 AND kind = $2 ORDER BY ord`, userID, kind)
		if err != nil {
			return fmt.Errorf("read push rules: %w", err)
		}
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		existing := slices.Index(ids, rule.RuleID)
		anchor := before
		if anchor == "" {
			anchor = after
		}
		if anchor != "" {
			if anchor == rule.RuleID || !slices.Contains(ids, anchor) {
				return fmt.Errorf("%w: %s", ErrPushRuleAnchor, anchor)
			}
		}
		switch {
		case anchor != "":
			if existing >= 0 {
				ids = slices.Delete(ids, existing, existing+1)
			}
			i := slices.Index(ids, anchor)
			if after != "" && before == "" {
				i++
			}
			ids = slices.Insert(ids, i, rule.RuleID)
		case existing < 0:
			ids = slices.Insert(ids, 0, rule.RuleID)
		}
		var conds, pat any
		if rule.Conditions != nil {
			conds = string(rule.Conditions)
		}
		if rule.Pattern != nil {
			pat = *rule.Pattern
		}
		_, err = tx.Exec(ctx, `INSERT INTO push_rules (user_id, kind, rule_id, ord, conditions, pattern, actions, enabled) VALUES ($1, $2, $3, 0, $4, $5, $6, TRUE)
			ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET conditions = $4, pattern = $5, actions = $6`,
			userID, kind, rule.RuleID, conds, pat, string(rule.Actions))
		if err != nil {
			return fmt.Errorf("store push rule: %w", err)
		}
		// A user has a handful of rules: renumbering them all is simpler
		// than fractional positions and cannot run out of gaps.
		for i, id := range ids {
			if _, err := tx.Exec(ctx, `UPDATE push_rules SET ord = $1 WHERE user_id = $2 AND kind = $3 AND rule_id = $4`, int64(i), userID, kind, id); err != nil {
				return fmt.Errorf("order push rules: %w", err)
			}
		}
		return s.publishPushRules(ctx, tx, userID)
	})
}

// DeletePushRule deletes a user-defined rule.
func (s *Service) DeletePushRule(ctx context.Context, userID, kind, ruleID string) error {
	if IsDefaultPushRule(kind, ruleID) {
		return fmt.Errorf("%w: server-default rules cannot be deleted", ErrInvalid)
	}
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		res, err := tx.Exec(ctx, `DELETE FROM push_rules WHERE user_id = $1 AND kind = $2 AND rule_id = $3`, userID, kind, ruleID)
		if err != nil {
			return fmt.Errorf("delete push rule: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrPushRuleNotFound
		}
		return s.publishPushRules(ctx, tx, userID)
	})
}

// SetPushRuleEnabled enables or disables any rule, default or own.
func (s *Service) SetPushRuleEnabled(ctx context.Context, userID, kind, ruleID string, enabled bool) error {
	return s.changePushRule(ctx, userID, kind, ruleID, "enabled", enabled)
}

// SetPushRuleActions replaces the actions of any rule, default or own.
func (s *Service) SetPushRuleActions(ctx context.Context, userID, kind, ruleID string, actions json.RawMessage) error {
	return s.changePushRule(ctx, userID, kind, ruleID, "actions", string(actions))
}

func (s *Service) changePushRule(ctx context.Context, userID, kind, ruleID, column string, value any) error {
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		if IsDefaultPushRule(kind, ruleID) {
			// column is "enabled" or "actions", never user input.
			_, err := tx.Exec(ctx, `INSERT INTO push_rule_defaults (user_id, rule_id, `+column+`) VALUES ($1, $2, $3)
				ON CONFLICT (user_id, rule_id) DO UPDATE SET `+column+` = $3`, userID, ruleID, value)
			if err != nil {
				return fmt.Errorf("change default push rule: %w", err)
			}
		} else {
			res, err := tx.Exec(ctx, `UPDATE push_rules SET `+column+` = $1 WHERE user_id = $2 AND kind = $3 AND rule_id = $4`, value, userID, kind, ruleID)
			if err != nil {
				return fmt.Errorf("change push rule: %w", err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return ErrPushRuleNotFound
			}
		}
		return s.publishPushRules(ctx, tx, userID)
	})
}

// publishPushRules stores the new ruleset as m.push_rules account data so
// that /sync carries the change to the user's other devices.
func (s *Service) publishPushRules(ctx context.Context, tx *storage.DB, userID string) error {
	b, err := s.pushRulesJSON(ctx, tx, userID)
	if err != nil {
		return err
	}
	return s.putAccountData(ctx, tx, userID, "", PushRulesType, b)
}

// CopyRoomPushRule gives toRoom the room push rule userID has for
// fromRoom (a room upgraded into toRoom), so that a muted room stays
// muted after an upgrade. A rule the user already set for toRoom wins.
func (s *Service) CopyRoomPushRule(ctx context.Context, userID, fromRoom, toRoom string) error {
	old, err := s.PushRule(ctx, userID, "room", fromRoom)
	if errors.Is(err, ErrPushRuleNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := s.PushRule(ctx, userID, "room", toRoom); err == nil {
		return nil
	} else if !errors.Is(err, ErrPushRuleNotFound) {
		return err
	}
	rule := PushRule{RuleID: toRoom, Enabled: old.Enabled, Actions: old.Actions}
	if err := s.PutPushRule(ctx, userID, "room", rule, "", ""); err != nil {
		return err
	}
	if !old.Enabled {
		return s.SetPushRuleEnabled(ctx, userID, "room", toRoom, false)
	}
	return nil
}
