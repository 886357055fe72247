package txn_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/federation/txn"
	"praxis/internal/hstest"
	"praxis/roomserver"
)

// Gaps /get_missing_events cannot close are bridged with /state_ids: the
// new event enters hs2's timeline with the state the origin describes
// (changes inside the gap included), and bob's /sync reports the gap as
// a limited timeline whose state section carries those changes.
func TestGapBridgedWithStateIDs(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, testGapBridgedWithStateIDs)
}

func testGapBridgedWithStateIDs(t *testing.T, n *hstest.Network) {
	ctx := context.Background()
	hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
	alice, bob, carol, dave := hs1.Register(t, "alice"), hs2.Register(t, "bob"), hs1.Register(t, "carol"), hs1.Register(t, "dave")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if _, err := bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}}); err != nil {
		t.Fatalf("join: %v", err)
	}
	filter, err := bob.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 100}}})
	if err != nil {
		t.Fatal(err)
	}
	first, err := bob.SyncRequest(ctx, 0, "", filter.FilterID, false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}

	// More events than one /get_missing_events round brings (20) that hs2
	// never receives: hs1's sender skips them as if they were lost.
	lose := func(during func()) {
		t.Helper()
		n.SetDown("hs2.test", true)
		during()
		if _, err := hs1.DB.Exec(ctx, `UPDATE federation_destinations SET sent_pos = (SELECT MAX(stream_pos) FROM events),
			failures = 0, retry_at_ts = 0 WHERE server_name = 'hs2.test'`); err != nil {
			t.Fatal(err)
		}
		n.SetDown("hs2.test", false)
	}
	lose(func() {
		if _, err := alice.SendStateEvent(ctx, room, event.StateRoomName, "", &event.RoomNameEventContent{Name: "Konsil im Gap"}); err != nil {
			t.Fatal(err)
		}
		if _, err := carol.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 30; i++ {
			if _, err := alice.SendText(ctx, room, fmt.Sprint("lost ", i)); err != nil {
				t.Fatal(err)
			}
		}
	})
	after, err := alice.SendText(ctx, room, "after the gap")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "hs2 to accept the event after the gap", func() bool {
		found, rejected, soft, _ := stored(t, hs2, after.EventID.String())
		return found && !rejected && !soft && inTimeline(t, hs2, after.EventID.String())
	})
	if name := roomName(ctx, bob, room); name != "Konsil im Gap" {
		t.Fatalf("hs2's room name = %q, want the one set inside the gap", name)
	}
	members, err := bob.JoinedMembers(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := members.Joined[carol.UserID]; !ok {
		t.Fatalf("hs2's member list lacks carol, who joined inside the gap: %v", members.Joined)
	}

	resp, err := bob.SyncRequest(ctx, 0, first.NextBatch, filter.FilterID, false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	jr, ok := resp.Rooms.Join[room]
	if !ok {
		t.Fatalf("the room is not in bob's incremental sync")
	}
	if !jr.Timeline.Limited {
		t.Fatalf("timeline after a gap is not limited")
	}
	if !containsEvent(jr.Timeline.Events, after.EventID.String()) {
		t.Fatalf("bob's sync timeline lacks the event after the gap")
	}
	nameSeen := false
	for _, ev := range append(append([]*event.Event{}, jr.State.Events...), jr.Timeline.Events...) {
		if ev.Type == event.StateRoomName && ev.Content.Raw["name"] == "Konsil im Gap" {
			nameSeen = true
		}
	}
	if !nameSeen {
		t.Fatalf("bob's sync does not carry the name set inside the gap")
	}

	// A remote whose /get_missing_events brings nothing: the event itself
	// is bridged, and the topic set inside the gap becomes hs2's. Its
	// sender joined inside the gap: not soft-failed against hs2's stale
	// current state.
	lose(func() {
		if _, err := alice.SendStateEvent(ctx, room, event.StateTopic, "", &event.TopicEventContent{Topic: "Befund"}); err != nil {
			t.Fatal(err)
		}
		if _, err := dave.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		// more state than is fetched event by event: one /state
		for i := 0; i < 25; i++ {
			if _, err := alice.SendStateEvent(ctx, room, event.NewEventType("org.praxis.befund"), fmt.Sprint("k", i), map[string]any{"i": i}); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 3; i++ {
			if _, err := alice.SendText(ctx, room, fmt.Sprint("also lost ", i)); err != nil {
				t.Fatal(err)
			}
		}
	})
	n.SetDown("hs2.test", true) // hs1 does not push it; hs2 asks hs1 itself
	last, err := dave.SendText(ctx, room, "bridged alone")
	if err != nil {
		t.Fatal(err)
	}
	pdu := eventOn(t, hs1, room.String(), last.EventID.String())
	remote := &txn.Remote{Client: hs2.Fed.Client, Verifier: hs2.Fed.Ring, Origin: "hs2.test", Destination: "hs1.test"}
	nm := &nothingMissing{Remote: remote}
	outcome, err := hs2.Rooms.InputPDU(ctx, pdu, nm)
	if err != nil || outcome != roomserver.InputAccepted {
		t.Fatalf("input with an empty get_missing_events: %v, %v; want accepted", outcome, err)
	}
	if nm.stateCalls != 1 {
		t.Fatalf("%d /state requests for 27 missing state events, want 1", nm.stateCalls)
	}
	var befund map[string]any
	if err := bob.StateEvent(ctx, room, event.NewEventType("org.praxis.befund"), "k24", &befund); err != nil || befund["i"] != float64(24) {
		t.Fatalf("hs2's state k24 = %v (%v), want the one set inside the gap", befund, err)
	}
	var topic event.TopicEventContent
	if err := bob.StateEvent(ctx, room, event.StateTopic, "", &topic); err != nil || topic.Topic != "Befund" {
		t.Fatalf("hs2's topic = %q (%v), want the one set inside the gap", topic.Topic, err)
	}
	if !inTimeline(t, hs2, last.EventID.String()) {
		t.Fatalf("the bridged event is not in hs2's timeline")
	}
	n.SetDown("hs2.test", false)

	// Without /state_ids (a remote that only serves /event) the event
	// still fails as missing its prev events: nothing is stored.
	lose(func() {
		if _, err := alice.SendText(ctx, room, "lost again"); err != nil {
			t.Fatal(err)
		}
	})
	n.SetDown("hs2.test", true)
	orphan, err := alice.SendText(ctx, room, "no bridge")
	if err != nil {
		t.Fatal(err)
	}
	pdu = eventOn(t, hs1, room.String(), orphan.EventID.String())
	if _, err := hs2.Rooms.InputPDU(ctx, pdu, eventsOnly{remote}); err == nil {
		t.Fatalf("input without /state_ids succeeded, want missing prev events")
	}
	if found, _, _, _ := stored(t, hs2, orphan.EventID.String()); found {
		t.Fatalf("an event whose gap could not be bridged was stored")
	}
	n.SetDown("hs2.test", false)
}

// nothingMissing is a remote whose /get_missing_events returns nothing;
// it counts /state requests.
type nothingMissing struct {
	*txn.Remote
	stateCalls int
}

func (n *nothingMissing) State(ctx context.Context, v gomatrixserverlib.RoomVersion, roomID, eventID string) (state, chain []gomatrixserverlib.PDU, err error) {
	n.stateCalls++
	return n.Remote.State(ctx, v, roomID, eventID)
}

func (*nothingMissing) MissingEvents(context.Context, gomatrixserverlib.RoomVersion, string, []string, []string, int, int64) ([]gomatrixserverlib.PDU, error) {
	return nil, nil
}

// eventsOnly serves /event only: no missing events, no /state_ids.
type eventsOnly struct{ r *txn.Remote }

func (e eventsOnly) Event(ctx context.Context, v gomatrixserverlib.RoomVersion, id string) (gomatrixserverlib.PDU, error) {
	return e.r.Event(ctx, v, id)
}

func (eventsOnly) MissingEvents(context.Context, gomatrixserverlib.RoomVersion, string, []string, []string, int, int64) ([]gomatrixserverlib.PDU, error) {
	return nil, nil
}

// eventOn reads an event as srv stores it.
func eventOn(t *testing.T, srv *hstest.Server, roomID, eventID string) gomatrixserverlib.PDU {
	t.Helper()
	found, _, _, js := stored(t, srv, eventID)
	if !found {
		t.Fatalf("%s does not hold %s", srv.Config.ServerName, eventID)
	}
	ver, err := srv.Rooms.RoomVersion(context.Background(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	impl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(ver))
	if err != nil {
		t.Fatal(err)
	}
	pdu, err := impl.NewEventFromTrustedJSON([]byte(js), false)
	if err != nil {
		t.Fatal(err)
	}
	return pdu
}

func inTimeline(t *testing.T, srv *hstest.Server, eventID string) bool {
	t.Helper()
	var outlier bool
	var pos int64
	if err := srv.DB.QueryRow(context.Background(), `SELECT outlier, stream_pos FROM events WHERE event_id = $1`, eventID).Scan(&outlier, &pos); err != nil {
		return false
	}
	return !outlier && pos > 0
}

func roomName(ctx context.Context, c *mautrix.Client, room id.RoomID) string {
	var name event.RoomNameEventContent
	if err := c.StateEvent(ctx, room, event.StateRoomName, "", &name); err != nil {
		return ""
	}
	return name.Name
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// A remote's description of the state inside a gap is checked, not
// trusted: a state event it names that fails the auth rules (a name set
// by a member without the power to) is stored rejected and left out of
// the state, while the event after the gap is accepted.
func TestGapStateAuthChecked(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, testGapStateAuthChecked)
}

func testGapStateAuthChecked(t *testing.T, n *hstest.Network) {
	ctx := context.Background()
	_, hs1, hs2, alice, room := setup(t, n)
	key, keyID := hs1.SigningKey.PrivateKey, hs1.SigningKey.KeyID
	bob := "@bob:hs1.test"
	room.joinFrom(t, hs1, bob)
	head, _, state := room.head()
	empty := ""
	forgedName := room.buildOn(head, "hs1.test", keyID, key, bob, "m.room.name", &empty, map[string]any{"name": "not bob's to set"})
	lost := room.buildOn([]string{forgedName.EventID()}, "hs1.test", keyID, key, bob, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "lost"})
	after := room.buildOn([]string{lost.EventID()}, "hs1.test", keyID, key, bob, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "after"})

	before := []string{forgedName.EventID()}
	for k, id := range state {
		if k != "m.room.name|" {
			before = append(before, id)
		}
	}
	remote := &craftedRemote{
		events:   map[string]gomatrixserverlib.PDU{forgedName.EventID(): forgedName, lost.EventID(): lost},
		stateIDs: map[string][]string{lost.EventID(): before},
	}
	outcome, err := hs2.Rooms.InputPDU(ctx, after, remote)
	if err != nil || outcome != roomserver.InputAccepted {
		t.Fatalf("event after the gap: %v, %v; want accepted", outcome, err)
	}
	if found, rejected, _, _ := stored(t, hs2, forgedName.EventID()); !found || !rejected {
		t.Fatalf("forged name: stored=%v rejected=%v, want stored rejected", found, rejected)
	}
	if name := roomName(ctx, alice, mautrixRoom(room.roomID)); name == "not bob's to set" {
		t.Fatalf("a rejected state event from the gap became the room's name")
	}
	if !inTimeline(t, hs2, after.EventID()) || inTimeline(t, hs2, lost.EventID()) {
		t.Fatalf("want the event after the gap in the timeline and the missing one outside it")
	}
}

// craftedRemote serves crafted events and state_ids answers.
type craftedRemote struct {
	events   map[string]gomatrixserverlib.PDU
	stateIDs map[string][]string
}

func (c *craftedRemote) Event(_ context.Context, _ gomatrixserverlib.RoomVersion, id string) (gomatrixserverlib.PDU, error) {
	if p, ok := c.events[id]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("no event %s", id)
}

func (c *craftedRemote) MissingEvents(context.Context, gomatrixserverlib.RoomVersion, string, []string, []string, int, int64) ([]gomatrixserverlib.PDU, error) {
	return nil, nil
}

func (c *craftedRemote) StateIDs(_ context.Context, _, id string) ([]string, []string, error) {
	ids, ok := c.stateIDs[id]
	if !ok {
		return nil, nil, fmt.Errorf("no state at %s", id)
	}
	return ids, nil, nil
}

func (c *craftedRemote) State(context.Context, gomatrixserverlib.RoomVersion, string, string) ([]gomatrixserverlib.PDU, []gomatrixserverlib.PDU, error) {
	return nil, nil, fmt.Errorf("not served")
}
