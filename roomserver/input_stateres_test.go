package roomserver_test

import (
	"crypto/ed25519"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Our own state resolution v2 vectors: gomatrixserverlib's entry point is
// marked untested upstream, and the input pipeline relies on it for forks.

type dag struct {
	t      *testing.T
	ver    gomatrixserverlib.IRoomVersion
	key    ed25519.PrivateKey
	roomID string
	all    []gomatrixserverlib.PDU
}

func newDAG(t *testing.T, version string) *dag {
	_, key, _ := ed25519.GenerateKey(nil)
	ver, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version))
	if err != nil {
		t.Fatal(err)
	}
	return &dag{t: t, ver: ver, key: key, roomID: "!room:hs.test"}
}

// ev builds an event with explicit prev and auth events at time ts.
func (d *dag) ev(sender, evType string, stateKey *string, content any, ts int64, prev []gomatrixserverlib.PDU, auth ...gomatrixserverlib.PDU) gomatrixserverlib.PDU {
	d.t.Helper()
	c, _ := json.Marshal(content)
	depth := int64(1)
	prevIDs := []string{}
	for _, p := range prev {
		prevIDs = append(prevIDs, p.EventID())
		depth = max(depth, p.Depth()+1)
	}
	authIDs := []string{}
	for _, a := range auth {
		authIDs = append(authIDs, a.EventID())
	}
	eb := d.ver.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
		SenderID: sender, RoomID: d.roomID, Type: evType, StateKey: stateKey, Content: c,
		PrevEvents: prevIDs, AuthEvents: authIDs, Depth: depth, Version: d.ver,
	})
	pdu, err := eb.Build(time.UnixMilli(ts), "hs.test", "ed25519:k", d.key)
	if err != nil {
		d.t.Fatalf("build %s: %v", evType, err)
	}
	d.all = append(d.all, pdu)
	return pdu
}

func sk(s string) *string { return &s }

func userIDForSender(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(s), true)
}

// resolve resolves two state sets (given as the events in them).
func (d *dag) resolve(a, b []gomatrixserverlib.PDU) map[string]string {
	d.t.Helper()
	out, err := gomatrixserverlib.ResolveConflictsNew(d.ver.Version(), [][]gomatrixserverlib.PDU{a, b}, d.all, userIDForSender, func(string) bool { return false })
	if err != nil {
		d.t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range out {
		m[e.Type()+"|"+*e.StateKey()] = e.EventID()
	}
	return m
}

const (
	alice = "@alice:hs.test"
	bob   = "@bob:hs.test"
	carol = "@carol:hs.test"
)

// base is a public room: alice creates it (PL 100), bob joins and gets 50.
type base struct {
	create, aliceJoin, pl, joinRules, bobJoin, pl2 gomatrixserverlib.PDU
}

func (d *dag) base() base {
	var b base
	b.create = d.ev(alice, "m.room.create", sk(""), map[string]any{"creator": alice, "room_version": string(d.ver.Version())}, 1, nil)
	b.aliceJoin = d.ev(alice, "m.room.member", sk(alice), map[string]any{"membership": "join"}, 2, []gomatrixserverlib.PDU{b.create}, b.create)
	b.pl = d.ev(alice, "m.room.power_levels", sk(""), map[string]any{"users": map[string]int{alice: 100}, "state_default": 50, "ban": 50, "events_default": 0}, 3,
		[]gomatrixserverlib.PDU{b.aliceJoin}, b.create, b.aliceJoin)
	b.joinRules = d.ev(alice, "m.room.join_rules", sk(""), map[string]any{"join_rule": "public"}, 4, []gomatrixserverlib.PDU{b.pl}, b.create, b.aliceJoin, b.pl)
	b.bobJoin = d.ev(bob, "m.room.member", sk(bob), map[string]any{"membership": "join"}, 5, []gomatrixserverlib.PDU{b.joinRules}, b.create, b.pl, b.joinRules)
	b.pl2 = d.ev(alice, "m.room.power_levels", sk(""), map[string]any{"users": map[string]int{alice: 100, bob: 50}, "state_default": 50, "ban": 50, "events_default": 0}, 6,
		[]gomatrixserverlib.PDU{b.bobJoin}, b.create, b.aliceJoin, b.pl)
	return b
}

func (b base) state() []gomatrixserverlib.PDU {
	return []gomatrixserverlib.PDU{b.create, b.aliceJoin, b.joinRules, b.bobJoin, b.pl2}
}

func with(set []gomatrixserverlib.PDU, evs ...gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	out := []gomatrixserverlib.PDU{}
	for _, e := range set {
		replaced := false
		for _, n := range evs {
			if e.Type() == n.Type() && *e.StateKey() == *n.StateKey() {
				replaced = true
			}
		}
		if !replaced {
			out = append(out, e)
		}
	}
	return append(out, evs...)
}

func TestStateResolutionV2(t *testing.T) {
	for _, version := range []string{"10", "11"} {
		t.Run("v"+version, func(t *testing.T) {
			t.Run("demotion beats a concurrent state change by the demoted user", func(t *testing.T) {
				d := newDAG(t, version)
				b := d.base()
				demote := d.ev(alice, "m.room.power_levels", sk(""), map[string]any{"users": map[string]int{alice: 100, bob: 0}, "state_default": 50, "ban": 50}, 10,
					[]gomatrixserverlib.PDU{b.pl2}, b.create, b.aliceJoin, b.pl2)
				topic := d.ev(bob, "m.room.topic", sk(""), map[string]any{"topic": "bob's topic"}, 20,
					[]gomatrixserverlib.PDU{b.pl2}, b.create, b.bobJoin, b.pl2)
				got := d.resolve(with(b.state(), demote), with(b.state(), topic))
				if got["m.room.power_levels|"] != demote.EventID() {
					t.Errorf("power levels: got %s, want the demotion", got["m.room.power_levels|"])
				}
				if id, ok := got["m.room.topic|"]; ok {
					t.Errorf("topic %s survived though bob was demoted", id)
				}
			})
			t.Run("ban beats a concurrent join", func(t *testing.T) {
				d := newDAG(t, version)
				b := d.base()
				ban := d.ev(alice, "m.room.member", sk(carol), map[string]any{"membership": "ban"}, 10,
					[]gomatrixserverlib.PDU{b.pl2}, b.create, b.aliceJoin, b.pl2)
				join := d.ev(carol, "m.room.member", sk(carol), map[string]any{"membership": "join"}, 20,
					[]gomatrixserverlib.PDU{b.pl2}, b.create, b.pl2, b.joinRules)
				for name, sets := range map[string][2][]gomatrixserverlib.PDU{
					"ban first":  {with(b.state(), ban), with(b.state(), join)},
					"join first": {with(b.state(), join), with(b.state(), ban)},
				} {
					got := d.resolve(sets[0], sets[1])
					if got["m.room.member|"+carol] != ban.EventID() {
						t.Errorf("%s: carol's membership is %s, want the ban", name, got["m.room.member|"+carol])
					}
				}
			})
			t.Run("concurrent membership changes: the later one wins", func(t *testing.T) {
				for _, tc := range []struct {
					name            string
					leaveTS, nameTS int64
					wantDisplayName bool
				}{
					{"rename after leave", 100, 200, true},
					{"leave after rename", 200, 100, false},
				} {
					d := newDAG(t, version)
					b := d.base()
					leave := d.ev(bob, "m.room.member", sk(bob), map[string]any{"membership": "leave"}, tc.leaveTS,
						[]gomatrixserverlib.PDU{b.pl2}, b.create, b.bobJoin, b.pl2)
					rename := d.ev(bob, "m.room.member", sk(bob), map[string]any{"membership": "join", "displayname": "Bob"}, tc.nameTS,
						[]gomatrixserverlib.PDU{b.pl2}, b.create, b.bobJoin, b.pl2, b.joinRules)
					got := d.resolve(with(b.state(), leave), with(b.state(), rename))
					want := leave.EventID()
					if tc.wantDisplayName {
						want = rename.EventID()
					}
					if got["m.room.member|"+bob] != want {
						t.Errorf("%s: bob's membership event %s, want %s", tc.name, got["m.room.member|"+bob], want)
					}
				}
			})
			t.Run("unconflicted state is kept as is", func(t *testing.T) {
				d := newDAG(t, version)
				b := d.base()
				got := d.resolve(b.state(), b.state())
				if len(got) != len(b.state()) {
					t.Errorf("got %d state entries, want %d", len(got), len(b.state()))
				}
			})
		})
	}
}
