package federation_test

import (
	"context"
	"io"
	"net/url"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// hierarchyGet sends a GET signed by server from (unsigned when from is nil)
// to server to and returns the status and the body.
func hierarchyGet(t *testing.T, n *hstest.Network, from *hstest.Server, to, path string) (int, gjson.Result) {
	t.Helper()
	origin := spec.ServerName("hs2.test")
	if from != nil {
		origin = spec.ServerName(from.Config.ServerName)
	}
	req := fclient.NewFederationRequest("GET", origin, spec.ServerName(to), path)
	if from != nil {
		if err := req.Sign(origin, gomatrixserverlib.KeyID(from.SigningKey.KeyID), from.SigningKey.PrivateKey); err != nil {
			t.Fatal(err)
		}
	}
	hreq, err := req.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := n.RoundTrip(hreq.WithContext(context.Background()))
	if err != nil {
		t.Fatalf("round trip: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, gjson.ParseBytes(body)
}

// roomIDs lists the room IDs of a JSON array of room chunks (or of strings).
func roomIDs(r gjson.Result) []string {
	var out []string
	for _, e := range r.Array() {
		if e.Type == gjson.String {
			out = append(out, e.Str)
		} else {
			out = append(out, e.Get("room_id").Str)
		}
	}
	return out
}

func TestFederatedHierarchy(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, testFederatedHierarchy)
}

func testFederatedHierarchy(t *testing.T, n *hstest.Network) {
	ctx := context.Background()
	hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
	alice, bob := hs1.Register(t, "alice"), hs2.Register(t, "bob")

	mk := func(name, preset string, space bool, state ...*event.Event) id.RoomID {
		t.Helper()
		req := &mautrix.ReqCreateRoom{Preset: preset, Name: name, InitialState: state}
		if space {
			req.CreationContent = map[string]any{"type": "m.space"}
		}
		resp, err := alice.CreateRoom(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.RoomID
	}
	link := func(parent, child id.RoomID, order string) {
		t.Helper()
		c := event.SpaceChildEventContent{Via: []string{"hs1.test"}, Order: order}
		if _, err := alice.SendStateEvent(ctx, parent, event.StateSpaceChild, child.String(), &c); err != nil {
			t.Fatal(err)
		}
	}
	space := mk("Praxis", "public_chat", true)
	public := mk("Empfang", "public_chat", false)
	private := mk("Intern", "private_chat", false)
	readable := mk("Aushang", "private_chat", false, &event.Event{
		Type: event.StateHistoryVisibility, StateKey: ptr(""),
		Content: event.Content{Raw: map[string]any{"history_visibility": "world_readable"}},
	})
	restricted := mk("Team", "private_chat", false, &event.Event{
		Type: event.StateJoinRules, StateKey: ptr(""),
		Content: event.Content{Raw: map[string]any{"join_rule": "restricted",
			"allow": []any{map[string]any{"type": "m.room_membership", "room_id": space.String()}}}},
	})
	sub := mk("Labor", "public_chat", true)
	subChild := mk("Proben", "public_chat", false)
	link(space, public, "a")
	link(space, private, "b")
	link(space, readable, "c")
	link(space, restricted, "d")
	link(space, sub, "e")
	link(sub, subChild, "")

	walk := func(req *mautrix.ReqHierarchy) []id.RoomID {
		t.Helper()
		resp, err := bob.Hierarchy(ctx, space, req)
		if err != nil {
			t.Fatalf("bob's hierarchy: %v", err)
		}
		var got []id.RoomID
		for _, r := range resp.Rooms {
			got = append(got, r.RoomID)
			if r.RoomID == space && len(r.ChildrenState) != 5 {
				t.Errorf("the space lists %d children_state, want 5", len(r.ChildrenState))
			}
		}
		return got
	}

	t.Run("direct requests", func(t *testing.T) {
		path := func(room id.RoomID) string {
			return "/_matrix/federation/v1/hierarchy/" + url.PathEscape(room.String())
		}
		if status, body := hierarchyGet(t, n, nil, "hs1.test", path(space)); status != 401 || body.Get("errcode").Str != "M_UNAUTHORIZED" {
			t.Errorf("unsigned: %d %s, want 401 M_UNAUTHORIZED", status, body.Get("errcode"))
		}
		for _, tc := range []struct {
			name string
			room id.RoomID
		}{
			{"unknown room", "!nowhere:hs1.test"},
			{"private room hs2 has no member in", private},
			{"restricted room whose allow room hs2 is not in", restricted},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if status, body := hierarchyGet(t, n, hs2, "hs1.test", path(tc.room)); status != 404 || body.Get("errcode").Str != "M_NOT_FOUND" {
					t.Errorf("got %d %s, want 404 M_NOT_FOUND", status, body.Get("errcode"))
				}
			})
		}
		status, body := hierarchyGet(t, n, hs2, "hs1.test", path(space))
		if status != 200 {
			t.Fatalf("space: %d %s", status, body.Raw)
		}
		if got := body.Get("room.room_id").Str; got != space.String() {
			t.Errorf("room %s, want the space", got)
		}
		if got := body.Get("room.children_state.#").Int(); got != 5 {
			t.Errorf("%d children_state, want 5", got)
		}
		if got, want := roomIDs(body.Get("children")), []string{public.String(), readable.String(), sub.String()}; !slices.Equal(got, want) {
			t.Errorf("children %v, want %v", got, want)
		}
		if got, want := roomIDs(body.Get("inaccessible_children")), []string{private.String(), restricted.String()}; !slices.Equal(got, want) {
			t.Errorf("inaccessible_children %v, want %v", got, want)
		}
		if status, body := hierarchyGet(t, n, hs2, "hs1.test", path(space)+"?suggested_only=true"); status != 200 || body.Get("room.children_state.#").Int() != 0 || body.Get("children.#").Int() != 0 {
			t.Errorf("suggested_only: %d %s, want no children", status, body.Raw)
		}
		if status, body := hierarchyGet(t, n, hs2, "hs1.test", path(space)+"?suggested_only=maybe"); status != 400 || body.Get("errcode").Str != "M_INVALID_PARAM" {
			t.Errorf("bad suggested_only: %d %s", status, body.Get("errcode"))
		}
	})

	t.Run("bob's server asks hs1 for a space it is not in", func(t *testing.T) {
		if got, want := walk(nil), []id.RoomID{space, public, readable, sub, subChild}; !slices.Equal(got, want) {
			t.Errorf("rooms %v, want %v", got, want)
		}
		one := 1
		if got, want := walk(&mautrix.ReqHierarchy{MaxDepth: &one}), []id.RoomID{space, public, readable, sub}; !slices.Equal(got, want) {
			t.Errorf("max_depth 1: rooms %v, want %v", got, want)
		}
		resp, err := bob.Hierarchy(ctx, space, &mautrix.ReqHierarchy{Limit: 2})
		if err != nil || len(resp.Rooms) != 2 || resp.NextBatch == "" {
			t.Fatalf("limit 2: %v %+v", err, resp)
		}
		resp, err = bob.Hierarchy(ctx, space, &mautrix.ReqHierarchy{Limit: 2, From: resp.NextBatch})
		if err != nil || len(resp.Rooms) != 2 || resp.Rooms[0].RoomID != readable {
			t.Fatalf("second page: %v %+v", err, resp)
		}
		if _, err := bob.Hierarchy(ctx, private, nil); hstest.ErrCode(err) != "M_FORBIDDEN" {
			t.Errorf("private room as root: %v, want M_FORBIDDEN", err)
		}
	})

	t.Run("an invite opens the private room to bob", func(t *testing.T) {
		if _, err := alice.InviteUser(ctx, private, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		if got, want := walk(nil), []id.RoomID{space, public, private, readable, sub, subChild}; !slices.Equal(got, want) {
			t.Errorf("rooms %v, want %v", got, want)
		}
	})

	t.Run("a member of the space sees the restricted room", func(t *testing.T) {
		if _, err := bob.JoinRoom(ctx, space.String(), &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}}); err != nil {
			t.Fatal(err)
		}
		// hs2 is in the space now and reads it itself; the children it is
		// not in are still asked of hs1
		if got, want := walk(nil), []id.RoomID{space, public, private, readable, restricted, sub, subChild}; !slices.Equal(got, want) {
			t.Errorf("rooms %v, want %v", got, want)
		}
		// hs1 now counts hs2 in the allow room: the restricted room is
		// described, with the rooms that open it
		status, body := hierarchyGet(t, n, hs2, "hs1.test", "/_matrix/federation/v1/hierarchy/"+url.PathEscape(space.String()))
		if status != 200 || len(roomIDs(body.Get("inaccessible_children"))) != 0 {
			t.Fatalf("space: %d, inaccessible %v, want none", status, body.Get("inaccessible_children"))
		}
		for _, c := range body.Get("children").Array() {
			if c.Get("room_id").Str == restricted.String() && c.Get("allowed_room_ids").String() != `["`+space.String()+`"]` {
				t.Errorf("allowed_room_ids %s, want the space", c.Get("allowed_room_ids").Raw)
			}
		}
	})

	t.Run("an unreachable partner's rooms are left out", func(t *testing.T) {
		n.SetDown("hs1.test", true)
		defer n.SetDown("hs1.test", false)
		// the invite bob holds still describes the private room
		if got, want := walk(nil), []id.RoomID{space, private}; !slices.Equal(got, want) {
			t.Errorf("rooms %v, want %v", got, want)
		}
	})
}
