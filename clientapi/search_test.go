package clientapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

type searchAnswer struct {
	Status  int
	Errcode string `json:"errcode"`
	Cats    struct {
		RoomEvents *struct {
			Count      int      `json:"count"`
			Highlights []string `json:"highlights"`
			NextBatch  string   `json:"next_batch"`
			Results    []struct {
				Rank    float64     `json:"rank"`
				Result  event.Event `json:"result"`
				Context *struct {
					Before []event.Event `json:"events_before"`
					After  []event.Event `json:"events_after"`
				} `json:"context"`
			} `json:"results"`
		} `json:"room_events"`
	} `json:"search_categories"`
}

func (a searchAnswer) ids() []id.EventID {
	var out []id.EventID
	if a.Cats.RoomEvents != nil {
		for _, r := range a.Cats.RoomEvents.Results {
			out = append(out, r.Result.ID)
		}
	}
	return out
}

// searchFor posts a search; criteria is the room_events object.
func searchFor(t *testing.T, srv *hstest.Server, c *mautrix.Client, criteria any, nextBatch string) searchAnswer {
	t.Helper()
	body := map[string]any{"search_categories": map[string]any{"room_events": criteria}}
	if criteria == nil {
		body = map[string]any{}
	}
	js, _ := json.Marshal(body)
	u := srv.URL + "/_matrix/client/v3/search"
	if nextBatch != "" {
		u += "?next_batch=" + url.QueryEscape(nextBatch)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, u, bytes.NewReader(js))
	req.Header.Set("Authorization", "Bearer "+c.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a searchAnswer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatalf("search answer: %v", err)
	}
	a.Status = resp.StatusCode
	return a
}

// TestSearch covers POST /search (Complement TestSearch): matching,
// ordering, pagination, context, redactions and who may find what.
func TestSearch(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob, carol := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Wartezimmer"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		if _, err := bob.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		var numbered []id.EventID
		for i := range 15 {
			numbered = append(numbered, say(t, alice, room, fmt.Sprintf("Message number %d", i)))
		}
		hello := say(t, bob, room, "Hello, World")
		twice := say(t, bob, room, "appointment appointment tomorrow")
		once := say(t, bob, room, "an appointment")
		secret := say(t, alice, room, "redact me please")
		if _, err := alice.RedactEvent(ctx, room, secret); err != nil {
			t.Fatal(err)
		}
		inRoom := map[string]any{"rooms": []id.RoomID{room}}

		t.Run("finds a message by a word of its body, any case", func(t *testing.T) {
			a := searchFor(t, srv, bob, map[string]any{"search_term": "WORLD", "keys": []string{"content.body"}}, "")
			if a.Status != 200 || a.Cats.RoomEvents == nil || a.Cats.RoomEvents.Count != 1 || !slices.Equal(a.ids(), []id.EventID{hello}) {
				t.Fatalf("search world: %d %+v", a.Status, a.Cats.RoomEvents)
			}
			if r := a.Cats.RoomEvents.Results[0].Result; r.RoomID != room || r.Content.Raw["body"] != "Hello, World" {
				t.Errorf("result event: %+v", r)
			}
		})

		t.Run("every word must match", func(t *testing.T) {
			a := searchFor(t, srv, bob, map[string]any{"search_term": "hello mars"}, "")
			if a.Status != 200 || a.Cats.RoomEvents.Count != 0 || len(a.ids()) != 0 {
				t.Fatalf("hello mars: %+v", a.Cats.RoomEvents)
			}
		})

		t.Run("redacted events are not found", func(t *testing.T) {
			for _, order := range []string{"rank", "recent"} {
				a := searchFor(t, srv, alice, map[string]any{"search_term": "redact", "order_by": order}, "")
				if a.Status != 200 || len(a.ids()) != 0 {
					t.Errorf("order %s: found %v", order, a.ids())
				}
			}
		})

		t.Run("rank puts more matches first, recent the newest", func(t *testing.T) {
			a := searchFor(t, srv, bob, map[string]any{"search_term": "appointment", "order_by": "rank"}, "")
			if !slices.Equal(a.ids(), []id.EventID{twice, once}) {
				t.Errorf("rank: %v, want %v", a.ids(), []id.EventID{twice, once})
			}
			a = searchFor(t, srv, bob, map[string]any{"search_term": "appointment", "order_by": "recent"}, "")
			if !slices.Equal(a.ids(), []id.EventID{once, twice}) {
				t.Errorf("recent: %v, want %v", a.ids(), []id.EventID{once, twice})
			}
		})

		t.Run("pages with next_batch", func(t *testing.T) {
			crit := map[string]any{"search_term": "message", "order_by": "recent", "filter": map[string]any{"limit": 10, "rooms": []id.RoomID{room}}}
			first := searchFor(t, srv, bob, crit, "")
			want := slices.Clone(numbered)
			slices.Reverse(want)
			if first.Cats.RoomEvents.Count != 15 || !slices.Equal(first.ids(), want[:10]) || first.Cats.RoomEvents.NextBatch == "" {
				t.Fatalf("first page: count %d, %v, next %q", first.Cats.RoomEvents.Count, first.ids(), first.Cats.RoomEvents.NextBatch)
			}
			second := searchFor(t, srv, bob, crit, first.Cats.RoomEvents.NextBatch)
			if second.Cats.RoomEvents.Count != 15 || !slices.Equal(second.ids(), want[10:]) || second.Cats.RoomEvents.NextBatch != "" {
				t.Fatalf("second page: count %d, %v, next %q", second.Cats.RoomEvents.Count, second.ids(), second.Cats.RoomEvents.NextBatch)
			}
		})

		t.Run("context around a hit", func(t *testing.T) {
			a := searchFor(t, srv, bob, map[string]any{"search_term": "number 4", "order_by": "recent", "filter": inRoom,
				"event_context": map[string]any{"before_limit": 2, "after_limit": 2}}, "")
			if len(a.ids()) != 1 || a.ids()[0] != numbered[4] || a.Cats.RoomEvents.Results[0].Context == nil {
				t.Fatalf("number 4: %+v", a.Cats.RoomEvents)
			}
			cx := a.Cats.RoomEvents.Results[0].Context
			var before, after []id.EventID
			for _, e := range cx.Before {
				before = append(before, e.ID)
			}
			for _, e := range cx.After {
				after = append(after, e.ID)
			}
			if !slices.Equal(before, []id.EventID{numbered[3], numbered[2]}) || !slices.Equal(after, []id.EventID{numbered[5], numbered[6]}) {
				t.Errorf("context: before %v after %v", before, after)
			}
		})

		t.Run("room names are searched by content.name", func(t *testing.T) {
			a := searchFor(t, srv, bob, map[string]any{"search_term": "wartezimmer", "keys": []string{"content.name"}}, "")
			if len(a.ids()) != 1 || a.Cats.RoomEvents.Results[0].Result.Type != event.StateRoomName {
				t.Errorf("room name: %+v", a.Cats.RoomEvents)
			}
		})

		t.Run("a stranger finds nothing, even naming the room", func(t *testing.T) {
			a := searchFor(t, srv, carol, map[string]any{"search_term": "message", "filter": inRoom}, "")
			if a.Status != 200 || a.Cats.RoomEvents.Count != 0 {
				t.Errorf("carol: %+v", a.Cats.RoomEvents)
			}
		})

		t.Run("bad requests", func(t *testing.T) {
			for _, tc := range []struct {
				name     string
				criteria any
				next     string
				errcode  string
			}{
				{"no search_categories", nil, "", "M_MISSING_PARAM"},
				{"no search_term", map[string]any{"keys": []string{"content.body"}}, "", "M_MISSING_PARAM"},
				{"unknown key", map[string]any{"search_term": "x", "keys": []string{"content.url"}}, "", "M_INVALID_PARAM"},
				{"unknown order", map[string]any{"search_term": "x", "order_by": "alphabetical"}, "", "M_INVALID_PARAM"},
				{"bad next_batch", map[string]any{"search_term": "x"}, "garbage", "M_INVALID_PARAM"},
				{"negative limit", map[string]any{"search_term": "x", "filter": map[string]any{"limit": -1}}, "", "M_INVALID_PARAM"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					if a := searchFor(t, srv, bob, tc.criteria, tc.next); a.Status != 400 || a.Errcode != tc.errcode {
						t.Errorf("got %d %q, want 400 %s", a.Status, a.Errcode, tc.errcode)
					}
				})
			}
		})
	})
}
