package users

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
	"praxis/internal/streams"
)

func newTestService(t *testing.T, db *storage.DB) (*Service, *time.Time) {
	t.Helper()
	s := New(db, "hs.test")
	s.SetBcryptCost(bcrypt.MinCost)
	now := time.Unix(1_700_000_000, 0)
	s.SetClock(func() time.Time { return now })
	return s, &now
}

func ptr[T any](v T) *T { return &v }

func TestRegistrationTokens(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, now := newTestService(t, db)

		tok, err := s.CreateRegistrationToken(ctx, RegistrationToken{UsesAllowed: ptr(1)})
		if err != nil || tok.Token == "" {
			t.Fatalf("create random token: %v, %+v", err, tok)
		}
		if _, err := s.CreateRegistrationToken(ctx, RegistrationToken{Token: tok.Token}); !errors.Is(err, ErrTokenExists) {
			t.Errorf("duplicate token: got %v, want ErrTokenExists", err)
		}
		for _, bad := range []RegistrationToken{
			{Token: "has space"},
			{Token: "ok", UsesAllowed: ptr(-1)},
			{Token: "ok2", ExpiryTime: ptr(now.Add(-time.Hour).UnixMilli())},
		} {
			if _, err := s.CreateRegistrationToken(ctx, bad); !errors.Is(err, ErrInvalid) {
				t.Errorf("create %+v: got %v, want ErrInvalid", bad, err)
			}
		}
		exp := now.Add(time.Hour).UnixMilli()
		if _, err := s.CreateRegistrationToken(ctx, RegistrationToken{Token: "expiring", ExpiryTime: &exp}); err != nil {
			t.Fatal(err)
		}

		// Reserving the only use through a UIA session makes the token
		// invalid for everyone else; ending the session frees it again.
		u1, _ := s.CreateUIASession(ctx, "register", "")
		if _, err := s.UseRegistrationTokenStage(ctx, u1.ID, "m.login.registration_token", tok.Token); err != nil {
			t.Fatalf("use token: %v", err)
		}
		u2, _ := s.CreateUIASession(ctx, "register", "")
		if _, err := s.UseRegistrationTokenStage(ctx, u2.ID, "m.login.registration_token", tok.Token); !errors.Is(err, ErrInvalidRegistrationToken) {
			t.Errorf("second use of a one-use token: got %v", err)
		}
		if ok, _ := s.RegistrationTokenValid(ctx, tok.Token); ok {
			t.Error("token with its only use pending reported valid")
		}
		if err := s.DeleteUIASession(ctx, u1.ID); err != nil {
			t.Fatal(err)
		}
		if ok, _ := s.RegistrationTokenValid(ctx, tok.Token); !ok {
			t.Error("token not released when the session ended")
		}

		// A completed registration counts the use.
		u3, _ := s.CreateUIASession(ctx, "register", "")
		if _, err := s.UseRegistrationTokenStage(ctx, u3.ID, "m.login.registration_token", tok.Token); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Register(ctx, Registration{Localpart: "alice", Password: "pw", UIASession: u3.ID}); err != nil {
			t.Fatalf("register: %v", err)
		}
		got, err := s.RegistrationToken(ctx, tok.Token)
		if err != nil || got.Pending != 0 || got.Completed != 1 {
			t.Errorf("after registration: %+v, %v; want pending 0 completed 1", got, err)
		}

		valid, err := s.RegistrationTokens(ctx, ptr(true))
		if err != nil || len(valid) != 1 || valid[0].Token != "expiring" {
			t.Errorf("valid tokens: %+v, %v", valid, err)
		}
		all, _ := s.RegistrationTokens(ctx, nil)
		if len(all) != 2 {
			t.Errorf("all tokens: %d, want 2", len(all))
		}

		upd, err := s.UpdateRegistrationToken(ctx, tok.Token, ptr(5), true, nil, false)
		if err != nil || upd.UsesAllowed == nil || *upd.UsesAllowed != 5 || upd.Completed != 1 {
			t.Errorf("update uses: %+v, %v", upd, err)
		}
		upd, err = s.UpdateRegistrationToken(ctx, "expiring", nil, false, nil, true)
		if err != nil || upd.ExpiryTime != nil {
			t.Errorf("clear expiry: %+v, %v", upd, err)
		}
		if _, err := s.UpdateRegistrationToken(ctx, "missing", ptr(1), true, nil, false); !errors.Is(err, ErrNotFound) {
			t.Errorf("update missing: %v", err)
		}

		// Expiry makes a token invalid.
		*now = now.Add(2 * time.Hour)
		if _, err := s.UpdateRegistrationToken(ctx, "expiring", nil, false, ptr(now.Add(time.Minute).UnixMilli()), true); err != nil {
			t.Fatal(err)
		}
		*now = now.Add(2 * time.Minute)
		if ok, _ := s.RegistrationTokenValid(ctx, "expiring"); ok {
			t.Error("expired token valid")
		}

		if err := s.DeleteRegistrationToken(ctx, "expiring"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteRegistrationToken(ctx, "expiring"); !errors.Is(err, ErrNotFound) {
			t.Errorf("delete twice: %v", err)
		}
	})
}

func TestUIASessionExpiryReleasesToken(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, now := newTestService(t, db)
		if _, err := s.CreateRegistrationToken(ctx, RegistrationToken{Token: "one", UsesAllowed: ptr(1)}); err != nil {
			t.Fatal(err)
		}
		u, _ := s.CreateUIASession(ctx, "register", "")
		if _, err := s.UseRegistrationTokenStage(ctx, u.ID, "m.login.registration_token", "one"); err != nil {
			t.Fatal(err)
		}
		*now = now.Add(UIASessionLifetime + time.Minute)
		if _, err := s.UIASession(ctx, u.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("expired session: %v, want ErrNotFound", err)
		}
		// Creating any session sweeps the expired one.
		if _, err := s.CreateUIASession(ctx, "register", ""); err != nil {
			t.Fatal(err)
		}
		if ok, _ := s.RegistrationTokenValid(ctx, "one"); !ok {
			t.Error("expired session still holds the token")
		}
	})
}

func TestUIAStages(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db)
		u, err := s.CreateUIASession(ctx, "password", "@a:hs.test")
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // completing twice is idempotent
			if u, err = s.CompleteUIAStage(ctx, u.ID, "m.login.password"); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.UIASession(ctx, u.ID)
		if err != nil || got.Purpose != "password" || got.UserID != "@a:hs.test" || len(got.Completed) != 1 || !got.Done("m.login.password") {
			t.Errorf("session: %+v, %v", got, err)
		}
		if _, err := s.CompleteUIAStage(ctx, "nope", "m.login.dummy"); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown session: %v", err)
		}
	})
}

func TestAccountLifecycle(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db)
		var deleted []string
		s.OnDeleteDevices(func(ctx context.Context, tx *storage.DB, userID string, ids []string) error {
			deleted = append(deleted, ids...)
			return nil
		})
		acct, sess, err := s.Register(ctx, Registration{Localpart: "bob", Password: "old", DeviceID: "D1", DisplayName: "phone"})
		if err != nil {
			t.Fatal(err)
		}
		if sess.DeviceID != "D1" || acct.UserID != "@bob:hs.test" {
			t.Fatalf("register: %+v %+v", acct, sess)
		}
		if _, _, err := s.Register(ctx, Registration{Localpart: "bob"}); !errors.Is(err, ErrUserInUse) {
			t.Errorf("register twice: %v", err)
		}
		if _, sess, err := s.Register(ctx, Registration{Localpart: "quiet", InhibitLogin: true}); err != nil || sess != nil {
			t.Errorf("inhibit_login: session %+v, %v", sess, err)
		}
		if ok, _ := s.LocalpartAvailable(ctx, "bob"); ok {
			t.Error("bob reported available")
		}
		s2, _ := s.CreateSession(ctx, acct.UserID, "D2", "", "", false)
		s3, _ := s.CreateSession(ctx, acct.UserID, "D3", "", "", false)

		if err := s.ChangePassword(ctx, acct.UserID, "new", "D1", true); err != nil {
			t.Fatal(err)
		}
		for _, tok := range []string{s2.AccessToken, s3.AccessToken} {
			if _, err := s.Authenticate(ctx, tok); !errors.Is(err, ErrUnknownToken) {
				t.Errorf("other device token after password change: %v", err)
			}
		}
		if _, err := s.Authenticate(ctx, sess.AccessToken); err != nil {
			t.Errorf("own token after password change: %v", err)
		}
		if err := s.CheckPassword(ctx, acct.UserID, "new"); err != nil {
			t.Errorf("new password: %v", err)
		}

		if err := s.Deactivate(ctx, acct.UserID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Authenticate(ctx, sess.AccessToken); !errors.Is(err, ErrUnknownToken) {
			t.Errorf("token after deactivation: %v", err)
		}
		if ds, _ := s.Devices(ctx, acct.UserID); len(ds) != 0 {
			t.Errorf("devices after deactivation: %v", ds)
		}
		if err := s.CheckPassword(ctx, acct.UserID, "new"); !errors.Is(err, ErrBadPassword) {
			t.Errorf("password after deactivation: %v", err)
		}
		if len(deleted) != 3 {
			t.Errorf("device hooks saw %v, want D2, D3, D1", deleted)
		}
		if err := s.Deactivate(ctx, "@nobody:hs.test"); !errors.Is(err, ErrNotFound) {
			t.Errorf("deactivate unknown: %v", err)
		}
	})
}

func TestValidateLocalpart(t *testing.T) {
	s := New(nil, "hs.test")
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"alice", true},
		{"a.b_c=d-e/f+g", true},
		{"user1", true},
		{"", false},
		{"Alice", false},
		{"_bridge", false},
		{"12345", false},
		{"a b", false},
		{"a:b", false},
		{"ä", false},
		{string(make([]byte, 250)), false},
	} {
		err := s.ValidateLocalpart(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateLocalpart(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
	for range 20 {
		if lp := RandomLocalpart(); s.ValidateLocalpart(lp) != nil {
			t.Errorf("random localpart %q is invalid", lp)
		}
	}
}

func TestAccountData(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db)
		n := streams.NewNotifier(0)
		s.SetNotifier(n)
		const u = "@a:hs.test"

		// Initial sync always carries the push rules.
		all, err := s.AccountDataSince(ctx, u, 0)
		if err != nil || len(all) != 1 || all[0].Type != PushRulesType {
			t.Fatalf("empty account data: %+v, %v", all, err)
		}

		if err := s.SetAccountData(ctx, u, "", "m.direct", json.RawMessage(`{"a":1}`)); err != nil {
			t.Fatal(err)
		}
		p1 := n.Position()
		if p1 == 0 {
			t.Error("notifier not advanced by the write")
		}
		if err := s.SetAccountData(ctx, u, "!r:hs.test", "org.example", json.RawMessage(`{"b":2}`)); err != nil {
			t.Fatal(err)
		}
		if err := s.SetAccountData(ctx, u, "", "m.direct", json.RawMessage(`{"a":3}`)); err != nil {
			t.Fatal(err)
		}
		if err := s.SetAccountData(ctx, u, "", "x", json.RawMessage(`[1]`)); !errors.Is(err, ErrInvalid) {
			t.Errorf("non-object content: %v", err)
		}
		got, err := s.AccountData(ctx, u, "", "m.direct")
		if err != nil || string(got) != `{"a":3}` {
			t.Errorf("m.direct = %s, %v", got, err)
		}
		if _, err := s.AccountData(ctx, u, "!r:hs.test", "m.direct"); !errors.Is(err, ErrNotFound) {
			t.Errorf("room m.direct: %v", err)
		}

		since, err := s.AccountDataSince(ctx, u, p1)
		if err != nil {
			t.Fatal(err)
		}
		if len(since) != 2 || since[0].RoomID != "!r:hs.test" || since[1].Type != "m.direct" || string(since[1].Content) != `{"a":3}` || since[0].StreamPos >= since[1].StreamPos {
			t.Errorf("since %d: %+v", p1, since)
		}
		all, _ = s.AccountDataSince(ctx, u, 0)
		if len(all) != 3 {
			t.Errorf("all account data: %d entries, want push rules + 2", len(all))
		}
		if others, _ := s.AccountDataSince(ctx, "@b:hs.test", p1); len(others) != 0 {
			t.Errorf("another user sees %+v", others)
		}

		err = s.UpdateAccountData(ctx, u, "!r:hs.test", "m.tag", func(old json.RawMessage) (json.RawMessage, error) {
			if old != nil {
				t.Errorf("first update sees %s", old)
			}
			return json.RawMessage(`{"tags":{}}`), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		err = s.UpdateAccountData(ctx, u, "!r:hs.test", "m.tag", func(old json.RawMessage) (json.RawMessage, error) {
			if string(old) != `{"tags":{}}` {
				t.Errorf("second update sees %s", old)
			}
			return json.RawMessage(`{"tags":{"u.x":{}}}`), nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

func TestFilters(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db)
		id, err := s.CreateFilter(ctx, "@a:hs.test", json.RawMessage(`{"room":{"timeline":{"limit":5}}}`))
		if err != nil {
			t.Fatal(err)
		}
		f, err := s.Filter(ctx, "@a:hs.test", id)
		if err != nil || string(f) != `{"room":{"timeline":{"limit":5}}}` {
			t.Errorf("filter = %s, %v", f, err)
		}
		for _, tc := range []struct{ user, id string }{{"@b:hs.test", id}, {"@a:hs.test", "999"}, {"@a:hs.test", "x"}} {
			if _, err := s.Filter(ctx, tc.user, tc.id); !errors.Is(err, ErrNotFound) {
				t.Errorf("Filter(%s, %s) = %v, want ErrNotFound", tc.user, tc.id, err)
			}
		}
	})
}

func ruleIDs(rules []PushRule) []string {
	var ids []string
	for _, r := range rules {
		ids = append(ids, r.RuleID)
	}
	return ids
}

func TestPushRules(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db)
		const u = "@a:hs.test"
		rs, err := s.PushRules(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs.Override) != 12 || rs.Override[0].RuleID != ".m.rule.master" || rs.Override[0].Enabled {
			t.Errorf("default overrides: %v", ruleIDs(rs.Override))
		}
		if len(rs.Content) != 1 || *rs.Content[0].Pattern != "a" {
			t.Errorf("default content rules: %+v", rs.Content)
		}
		if len(rs.Underride) != 5 || rs.Room == nil || len(rs.Room) != 0 {
			t.Errorf("default underride/room: %v %v", ruleIDs(rs.Underride), rs.Room)
		}

		put := func(id, before, after string) {
			t.Helper()
			r := PushRule{RuleID: id, Conditions: json.RawMessage(`[]`), Actions: json.RawMessage(`["notify"]`)}
			if err := s.PutPushRule(ctx, u, "override", r, before, after); err != nil {
				t.Fatalf("put %s: %v", id, err)
			}
		}
		put("one", "", "")
		put("two", "", "")      // new rules go first
		put("three", "", "one") // after one
		put("four", "two", "")  // before two
		put("one", "four", "")  // moving an existing rule
		put("two", "", "")      // replacing keeps the place
		rs, _ = s.PushRules(ctx, u)
		want := []string{".m.rule.master", "one", "four", "two", "three", ".m.rule.suppress_notices"}
		if got := ruleIDs(rs.Override)[:6]; !equal(got, want) {
			t.Errorf("override order = %v, want %v", got, want)
		}
		r := PushRule{RuleID: "x", Actions: json.RawMessage(`[]`)}
		if err := s.PutPushRule(ctx, u, "override", r, "missing", ""); !errors.Is(err, ErrPushRuleAnchor) {
			t.Errorf("before a missing rule: %v", err)
		}
		r.RuleID = ".m.rule.master"
		if err := s.PutPushRule(ctx, u, "override", r, "", ""); !errors.Is(err, ErrInvalid) {
			t.Errorf("put a default rule: %v", err)
		}

		if err := s.SetPushRuleEnabled(ctx, u, "override", ".m.rule.master", true); err != nil {
			t.Fatal(err)
		}
		if err := s.SetPushRuleActions(ctx, u, "underride", ".m.rule.message", json.RawMessage(`[]`)); err != nil {
			t.Fatal(err)
		}
		if err := s.SetPushRuleEnabled(ctx, u, "override", "three", false); err != nil {
			t.Fatal(err)
		}
		if err := s.SetPushRuleEnabled(ctx, u, "content", "three", false); !errors.Is(err, ErrPushRuleNotFound) {
			t.Errorf("enable a rule of another kind: %v", err)
		}
		master, _ := s.PushRule(ctx, u, "override", ".m.rule.master")
		msg, _ := s.PushRule(ctx, u, "underride", ".m.rule.message")
		three, _ := s.PushRule(ctx, u, "override", "three")
		if !master.Enabled || string(msg.Actions) != `[]` || three.Enabled {
			t.Errorf("after changes: master %+v message %+v three %+v", master, msg, three)
		}
		if err := s.DeletePushRule(ctx, u, "override", "three"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeletePushRule(ctx, u, "override", "three"); !errors.Is(err, ErrPushRuleNotFound) {
			t.Errorf("delete twice: %v", err)
		}
		if err := s.DeletePushRule(ctx, u, "override", ".m.rule.master"); !errors.Is(err, ErrInvalid) {
			t.Errorf("delete default: %v", err)
		}
		// Every change is on the account data stream for /sync.
		ad, err := s.AccountData(ctx, u, "", PushRulesType)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Global PushRuleset `json:"global"`
		}
		if err := json.Unmarshal(ad, &doc); err != nil || !doc.Global.Override[0].Enabled || len(doc.Global.Override) != 15 {
			t.Errorf("m.push_rules account data: %v %v", err, ruleIDs(doc.Global.Override))
		}
	})
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPushersAndPresence(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db)
		p := Pusher{UserID: "@a:hs.test", AppID: "app", PushKey: "k", DeviceID: "D", Raw: json.RawMessage(`{"app_id":"app"}`)}
		if err := s.SetPusher(ctx, p, false); err != nil {
			t.Fatal(err)
		}
		p.UserID = "@b:hs.test"
		if err := s.SetPusher(ctx, p, true); err != nil {
			t.Fatal(err)
		}
		if ps, _ := s.Pushers(ctx, "@a:hs.test"); len(ps) != 1 {
			t.Errorf("append kept %d pushers of a, want 1", len(ps))
		}
		p.UserID = "@c:hs.test"
		if err := s.SetPusher(ctx, p, false); err != nil {
			t.Fatal(err)
		}
		if ps, _ := s.Pushers(ctx, "@a:hs.test"); len(ps) != 0 {
			t.Errorf("without append the key stays with a: %+v", ps)
		}
		if err := s.DeletePusher(ctx, "@c:hs.test", "app", "k"); err != nil {
			t.Fatal(err)
		}
		if ps, _ := s.Pushers(ctx, "@c:hs.test"); len(ps) != 0 {
			t.Errorf("deleted pusher listed: %+v", ps)
		}

		if _, err := s.Presence(ctx, "@a:hs.test"); !errors.Is(err, ErrNotFound) {
			t.Errorf("presence never set: %v", err)
		}
		if err := s.SetPresence(ctx, "@a:hs.test", "unavailable", "lunch"); err != nil {
			t.Fatal(err)
		}
		pr, err := s.Presence(ctx, "@a:hs.test")
		if err != nil || pr.Presence != "unavailable" || pr.StatusMsg != "lunch" {
			t.Errorf("presence: %+v, %v", pr, err)
		}
	})
}

func TestUpdateAccountDataConcurrent(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db)
		const n = 8
		errs := make(chan error, n)
		for i := range n {
			go func() {
				errs <- s.UpdateAccountData(ctx, "@a:hs.test", "!r:hs.test", "m.tag", func(old json.RawMessage) (json.RawMessage, error) {
					tags := map[string]any{}
					if old != nil {
						var c struct {
							Tags map[string]any `json:"tags"`
						}
						if err := json.Unmarshal(old, &c); err != nil {
							return nil, err
						}
						tags = c.Tags
					}
					tags[string(rune('a'+i))] = map[string]any{}
					return json.Marshal(map[string]any{"tags": tags})
				})
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.AccountData(ctx, "@a:hs.test", "!r:hs.test", "m.tag")
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			Tags map[string]any `json:"tags"`
		}
		if err := json.Unmarshal(got, &c); err != nil || len(c.Tags) != n {
			t.Errorf("after %d concurrent tag writes: %s (%v)", n, got, err)
		}
	})
}

func TestAuthenticateTouchesDevice(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, now := newTestService(t, db)
		_, sess, err := s.Register(ctx, Registration{Localpart: "a", DeviceID: "D"})
		if err != nil {
			t.Fatal(err)
		}
		seen := func() int64 {
			d, err := s.Device(ctx, "@a:hs.test", "D")
			if err != nil {
				t.Fatal(err)
			}
			return d.LastSeenTS
		}
		login := seen()
		*now = now.Add(time.Minute)
		if _, err := s.Authenticate(ctx, sess.AccessToken); err != nil {
			t.Fatal(err)
		}
		if got := seen(); got != login {
			t.Errorf("last_seen_ts moved after a minute: %d → %d", login, got)
		}
		*now = now.Add(10 * time.Minute)
		if _, err := s.Authenticate(ctx, sess.AccessToken); err != nil {
			t.Fatal(err)
		}
		if got := seen(); got != now.UnixMilli() {
			t.Errorf("last_seen_ts = %d after 11 minutes, want %d", got, now.UnixMilli())
		}
	})
}

// The timing equaliser for unknown users must cost what a real check
// costs: a valid bcrypt hash at the default cost.
func TestDummyHashHasTheDefaultCost(t *testing.T) {
	cost, err := bcrypt.Cost([]byte(dummyHash))
	if err != nil || cost != bcrypt.DefaultCost {
		t.Fatalf("dummy hash cost = %d, %v; want %d", cost, err, bcrypt.DefaultCost)
	}
}
