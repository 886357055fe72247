package turn

import (
	"context"
	"encoding/json"
	"testing"
	"time"
)

func TestCallPolicy(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ms := func(ago time.Duration) int64 { return now.Add(-ago).UnixMilli() }
	invite := func(sender, call string, ago time.Duration) roomEvent {
		return roomEvent{Type: "m.call.invite", Sender: sender, OriginTS: ms(ago), Content: json.RawMessage(`{"call_id":"` + call + `","lifetime":60000}`)}
	}
	end := func(typ, sender, call string, ago time.Duration) roomEvent {
		return roomEvent{Type: typ, Sender: sender, OriginTS: ms(ago), Content: json.RawMessage(`{"call_id":"` + call + `"}`)}
	}
	const patient, doc, other = "@patient:hs1.test", "@doc:hs1.test", "@other:hs1.test"
	for _, tc := range []struct {
		name   string
		events []roomEvent // newest first
		want   bool
	}{
		{"no events", nil, false},
		{"ringing invite from staff", []roomEvent{invite(doc, "c1", 10*time.Second)}, true},
		{"invite from a non-staff member", []roomEvent{invite(other, "c1", 10*time.Second)}, false},
		{"invite past its lifetime", []roomEvent{invite(doc, "c1", 2*time.Minute)}, false},
		{"invite hung up by staff", []roomEvent{end("m.call.hangup", doc, "c1", 5*time.Second), invite(doc, "c1", 10*time.Second)}, false},
		{"invite rejected by the patient", []roomEvent{end("m.call.reject", patient, "c1", 5*time.Second), invite(doc, "c1", 10*time.Second)}, false},
		{"an older call ended, a new one rings", []roomEvent{invite(doc, "c2", 3*time.Second), end("m.call.hangup", doc, "c1", 5*time.Second)}, true},
		{"recent encrypted event from staff", []roomEvent{{Type: "m.room.encrypted", Sender: doc, OriginTS: ms(30 * time.Second)}}, true},
		{"old encrypted event from staff", []roomEvent{{Type: "m.room.encrypted", Sender: doc, OriginTS: ms(10 * time.Minute)}}, false},
		{"plain message from staff", []roomEvent{{Type: "m.room.message", Sender: doc, OriginTS: ms(time.Second)}}, false},
		{"the patient's own invite", []roomEvent{invite(patient, "c1", time.Second)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &CallPolicy{
				JoinedRooms: func(context.Context, string) ([]string, error) { return []string{"!a:hs1.test", "!b:hs1.test"}, nil },
				Recent: func(_ context.Context, user, room string, limit int) ([][]byte, error) {
					if user != patient || limit <= 0 {
						t.Fatalf("Recent(%s, limit %d)", user, limit)
					}
					if room != "!b:hs1.test" {
						return nil, nil
					}
					var out [][]byte
					for _, ev := range tc.events {
						b, err := json.Marshal(ev)
						if err != nil {
							t.Fatal(err)
						}
						out = append(out, b)
					}
					return out, nil
				},
				IsStaff: func(_ context.Context, u string) (bool, error) { return u == doc, nil },
				Now:     func() time.Time { return now },
			}
			got, err := p.InCallWithStaff(t.Context(), patient)
			if err != nil || got != tc.want {
				t.Fatalf("InCallWithStaff = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}
