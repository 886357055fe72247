package sync

import "testing"

func TestParseFilter(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"empty object", `{}`, true},
		{"lazy loading", `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":5}}}`, true},
		{"not JSON", `{"room":`, false},
		{"array", `[]`, false},
		{"limit of wrong type", `{"room":{"timeline":{"limit":"ten"}}}`, false},
		{"negative limit", `{"room":{"timeline":{"limit":-1}}}`, false},
		{"types not a list", `{"room":{"timeline":{"types":"m.room.message"}}}`, false},
		{"unknown event format", `{"event_format":"xml"}`, false},
		{"unknown keys are ignored", `{"org.example":1}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFilter([]byte(tc.in))
			if (err == nil) != tc.ok {
				t.Errorf("ParseFilter(%s) error = %v, want ok=%v", tc.in, err, tc.ok)
			}
		})
	}
}

func TestEventFilterAllows(t *testing.T) {
	list := func(s ...string) *[]string { return &s }
	for _, tc := range []struct {
		name   string
		f      EventFilter
		typ    string
		sender string
		want   bool
	}{
		{"no restriction", EventFilter{}, "m.room.message", "@a:hs", true},
		{"type listed", EventFilter{Types: list("m.room.message")}, "m.room.message", "@a:hs", true},
		{"type not listed", EventFilter{Types: list("m.room.message")}, "m.room.topic", "@a:hs", false},
		{"wildcard", EventFilter{Types: list("m.room.*")}, "m.room.topic", "@a:hs", true},
		{"wildcard does not match other namespace", EventFilter{Types: list("m.room.*")}, "m.call.invite", "@a:hs", false},
		{"empty types match nothing", EventFilter{Types: list()}, "m.room.message", "@a:hs", false},
		{"not_types wins", EventFilter{Types: list("m.room.*"), NotTypes: []string{"m.room.member"}}, "m.room.member", "@a:hs", false},
		{"sender listed", EventFilter{Senders: list("@a:hs")}, "m.room.message", "@a:hs", true},
		{"sender excluded", EventFilter{NotSenders: []string{"@a:hs"}}, "m.room.message", "@a:hs", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.f.Allows(tc.typ, tc.sender); got != tc.want {
				t.Errorf("Allows(%q, %q) = %v, want %v", tc.typ, tc.sender, got, tc.want)
			}
		})
	}
}

func TestGlobMatch(t *testing.T) {
	for _, tc := range []struct {
		p, s string
		want bool
	}{
		{"*", "", true},
		{"*", "anything", true},
		{"m.*", "m.room.message", true},
		{"*.message", "m.room.message", true},
		{"m.*.message", "m.room.message", true},
		{"m.*.message", "m.message", false},
		{"m.room.message", "m.room.messages", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "acb", false},
	} {
		if got := globMatch(tc.p, tc.s); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tc.p, tc.s, got, tc.want)
		}
	}
}

func FuzzParseFilter(f *testing.F) {
	f.Add(`{"room":{"timeline":{"limit":5,"types":["m.*"]}}}`)
	f.Add(`{"room":{"state":{"lazy_load_members":true}}}`)
	f.Add(`{`)
	f.Fuzz(func(t *testing.T, s string) {
		flt, err := ParseFilter([]byte(s))
		if err != nil {
			return
		}
		if l := flt.TimelineLimit(); l < 0 || l > MaxTimelineLimit {
			t.Fatalf("accepted filter %q gives timeline limit %d", s, l)
		}
		// an accepted filter can be applied without panicking
		flt.Room.Timeline.AllowsEvent("m.room.message", "@a:hs", false)
		flt.Room.AllowsRoom("!r:hs")
	})
}
