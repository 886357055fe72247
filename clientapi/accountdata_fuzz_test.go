package clientapi

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzValidateFilter: a filter upload never panics the server, and a filter
// it accepts is a JSON object that the sync code can decode again.
func FuzzValidateFilter(f *testing.F) {
	for _, seed := range []string{
		`{}`, `{"room":{"timeline":{"limit":10,"types":["m.room.message"]}}}`,
		`{"event_format":"client","event_fields":["content.body"]}`, `{"presence":{"limit":-1}}`,
		`[]`, `{"room":{"state":{"lazy_load_members":"yes"}}}`, `{`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if err := ValidateFilter(body); err != nil {
			return
		}
		trimmed := bytes.TrimSpace(body)
		if len(trimmed) == 0 {
			return // an empty body is the empty filter
		}
		var m map[string]any
		if err := json.Unmarshal(trimmed, &m); err != nil {
			t.Fatalf("accepted filter %q is not a JSON object: %v", body, err)
		}
		var again filterShape
		if err := json.Unmarshal(compactJSON(trimmed), &again); err != nil {
			t.Fatalf("accepted filter %q does not decode after compaction: %v", body, err)
		}
	})
}

// FuzzPushRuleActions: accepted actions are a list of known actions or
// set_tweak objects, so push evaluation never meets anything else.
func FuzzPushRuleActions(f *testing.F) {
	for _, seed := range []string{
		`["notify"]`, `[]`, `["notify",{"set_tweak":"sound","value":"default"}]`, `["explode"]`, `[{"value":1}]`, `{}`, `null`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) || validActions(raw) != nil {
			return
		}
		var actions []json.RawMessage
		if err := json.Unmarshal(raw, &actions); err != nil {
			t.Fatalf("accepted actions %q are not a list: %v", raw, err)
		}
		for _, a := range actions {
			var s string
			if json.Unmarshal(a, &s) == nil {
				if s != "notify" && s != "dont_notify" && s != "coalesce" {
					t.Fatalf("accepted unknown action %q", s)
				}
				continue
			}
			var tw struct {
				SetTweak string `json:"set_tweak"`
			}
			if err := json.Unmarshal(a, &tw); err != nil || tw.SetTweak == "" {
				t.Fatalf("accepted action %s without set_tweak", a)
			}
		}
	})
}
