package clientapi_test

import (
	"context"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// TestSpaceHierarchy covers GET /rooms/{roomId}/hierarchy (Complement
// TestClientSpacesSummary, TestClientSpacesSummaryJoinRules): depth-first
// order, child ordering, max_depth, suggested_only, pagination, removed
// links, rooms that are not spaces, and rooms the caller may not see.
func TestSpaceHierarchy(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		mk := func(c *mautrix.Client, name string, space bool, preset string) id.RoomID {
			t.Helper()
			req := &mautrix.ReqCreateRoom{Preset: preset, Name: name}
			if space {
				req.CreationContent = map[string]any{"type": "m.space"}
			}
			resp, err := c.CreateRoom(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			return resp.RoomID
		}
		link := func(parent, child id.RoomID, content event.SpaceChildEventContent) {
			t.Helper()
			if _, err := alice.SendStateEvent(ctx, parent, event.StateSpaceChild, child.String(), &content); err != nil {
				t.Fatal(err)
			}
		}
		via := []string{"hs1.test"}
		root := mk(alice, "Praxis", true, "public_chat")
		r1 := mk(alice, "Empfang", false, "public_chat")
		sub := mk(alice, "Team", true, "public_chat")
		r2 := mk(alice, "Labor", false, "public_chat")
		r3 := mk(alice, "Intern", false, "private_chat") // bob may not see it
		r4 := mk(alice, "Hinter Labor", false, "public_chat")
		link(root, r1, event.SpaceChildEventContent{Via: via, Suggested: true})
		link(root, sub, event.SpaceChildEventContent{Via: via})
		link(root, r2, event.SpaceChildEventContent{Via: via, Suggested: true, Order: "a"}) // order sorts first
		link(sub, r3, event.SpaceChildEventContent{Via: via})
		link(r2, r4, event.SpaceChildEventContent{Via: via})    // r2 is no space: not followed
		link(sub, root, event.SpaceChildEventContent{Via: via}) // a cycle

		walk := func(c *mautrix.Client, req *mautrix.ReqHierarchy) ([]id.RoomID, *mautrix.RespHierarchy) {
			t.Helper()
			resp, err := c.Hierarchy(ctx, root, req)
			if err != nil {
				t.Fatalf("hierarchy: %v", err)
			}
			var ids []id.RoomID
			for _, r := range resp.Rooms {
				ids = append(ids, r.RoomID)
			}
			return ids, resp
		}
		one := 1
		for _, tc := range []struct {
			name string
			c    *mautrix.Client
			req  *mautrix.ReqHierarchy
			want []id.RoomID
		}{
			{"whole tree, depth first, ordered", alice, nil, []id.RoomID{root, r2, r1, sub, r3}},
			{"max_depth 1", alice, &mautrix.ReqHierarchy{MaxDepth: &one}, []id.RoomID{root, r2, r1, sub}},
			{"suggested only", alice, &mautrix.ReqHierarchy{SuggestedOnly: true}, []id.RoomID{root, r2, r1}},
			{"bob does not see the private room", bob, nil, []id.RoomID{root, r2, r1, sub}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if got, _ := walk(tc.c, tc.req); !slices.Equal(got, tc.want) {
					t.Errorf("rooms %v, want %v", got, tc.want)
				}
			})
		}

		t.Run("children_state of spaces only", func(t *testing.T) {
			_, resp := walk(alice, nil)
			for _, r := range resp.Rooms {
				if r.RoomID == root && len(r.ChildrenState) != 3 {
					t.Errorf("root has %d children_state, want 3", len(r.ChildrenState))
				}
				if r.RoomID == r2 && len(r.ChildrenState) != 0 {
					t.Errorf("a room that is no space lists %d children", len(r.ChildrenState))
				}
				if r.RoomID == sub && r.RoomType != "m.space" {
					t.Errorf("room_type %q, want m.space", r.RoomType)
				}
			}
		})

		t.Run("pages", func(t *testing.T) {
			first, resp := walk(alice, &mautrix.ReqHierarchy{Limit: 2})
			if !slices.Equal(first, []id.RoomID{root, r2}) || resp.NextBatch == "" {
				t.Fatalf("first page %v, next %q", first, resp.NextBatch)
			}
			second, resp := walk(alice, &mautrix.ReqHierarchy{Limit: 2, From: resp.NextBatch})
			if !slices.Equal(second, []id.RoomID{r1, sub}) {
				t.Fatalf("second page %v", second)
			}
			last, resp := walk(alice, &mautrix.ReqHierarchy{Limit: 2, From: resp.NextBatch})
			if !slices.Equal(last, []id.RoomID{r3}) || resp.NextBatch != "" {
				t.Fatalf("last page %v, next %q", last, resp.NextBatch)
			}
		})

		t.Run("an emptied link is removed", func(t *testing.T) {
			if _, err := alice.SendStateEvent(ctx, root, event.StateSpaceChild, sub.String(), map[string]any{}); err != nil {
				t.Fatal(err)
			}
			if got, _ := walk(alice, nil); !slices.Equal(got, []id.RoomID{root, r2, r1}) {
				t.Errorf("rooms %v after unlinking the sub-space", got)
			}
		})

		t.Run("errors", func(t *testing.T) {
			private := mk(alice, "Geheim", true, "private_chat")
			if _, err := bob.Hierarchy(ctx, private, nil); hstest.ErrCode(err) != "M_FORBIDDEN" {
				t.Errorf("bob walks a private space: %v, want M_FORBIDDEN", err)
			}
			for _, q := range []map[string]string{{"from": "garbage"}, {"max_depth": "-1"}, {"suggested_only": "yes"}, {"limit": "0"}} {
				u := alice.BuildURLWithQuery(mautrix.ClientURLPath{"v1", "rooms", root, "hierarchy"}, q)
				if _, err := alice.MakeRequest(ctx, "GET", u, nil, nil); hstest.ErrCode(err) != "M_INVALID_PARAM" {
					t.Errorf("%v: %v, want M_INVALID_PARAM", q, err)
				}
			}
		})
	})
}
