package roomserver

import (
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// gapEvent builds a signed v10 event with the given auth events and depth.
func gapEvent(t *testing.T, key ed25519.PrivateKey, typ string, depth int64, auth ...gomatrixserverlib.PDU) gomatrixserverlib.PDU {
	t.Helper()
	ver, _ := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersionV10)
	ids := []string{}
	for _, a := range auth {
		ids = append(ids, a.EventID())
	}
	sk := ""
	eb := ver.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
		SenderID: "@a:hs1.test", RoomID: "!r:hs1.test", Type: typ, StateKey: &sk,
		AuthEvents: ids, PrevEvents: []string{}, Depth: depth, Content: []byte(fmt.Sprintf(`{"n":%d}`, depth)),
	})
	p, err := eb.Build(time.Now(), spec.ServerName("hs1.test"), "ed25519:k", key)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAuthOrder(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	create := gapEvent(t, key, "m.room.create", 1)
	member := gapEvent(t, key, "m.room.member", 2, create)
	power := gapEvent(t, key, "m.room.power_levels", 3, create, member)
	// a depth that lies: lower than that of its own auth events
	name := gapEvent(t, key, "m.room.name", 1, create, member, power)
	other := gapEvent(t, key, "m.room.topic", 9, create)
	for _, tc := range []struct {
		name string
		in   []gomatrixserverlib.PDU
	}{
		{"in order", []gomatrixserverlib.PDU{create, member, power, name}},
		{"reversed", []gomatrixserverlib.PDU{name, power, member, create}},
		{"depth lies", []gomatrixserverlib.PDU{name, other, create, power, member}},
		{"auth events outside the set", []gomatrixserverlib.PDU{name, power}},
		{"empty", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := authOrder(append([]gomatrixserverlib.PDU{}, tc.in...))
			if len(out) != len(tc.in) {
				t.Fatalf("%d events out of %d", len(out), len(tc.in))
			}
			at := map[string]int{}
			for i, p := range out {
				if _, dup := at[p.EventID()]; dup {
					t.Fatalf("%s twice", p.Type())
				}
				at[p.EventID()] = i
			}
			for i, p := range out {
				for _, a := range p.AuthEventIDs() {
					if j, ok := at[a]; ok && j > i {
						t.Fatalf("%s comes before its auth event at %d", p.Type(), j)
					}
				}
			}
		})
	}
}

func TestMemberChanges(t *testing.T) {
	m := func(u string) [2]string { return [2]string{"m.room.member", u} }
	for _, tc := range []struct {
		name     string
		old, cur map[[2]string]int64
		want     map[string]int64
	}{
		{"none", map[[2]string]int64{m("@a:x"): 1}, map[[2]string]int64{m("@a:x"): 1}, map[string]int64{}},
		{"new member", map[[2]string]int64{m("@a:x"): 1}, map[[2]string]int64{m("@a:x"): 1, m("@b:x"): 2}, map[string]int64{"@b:x": 2}},
		{"changed member", map[[2]string]int64{m("@a:x"): 1}, map[[2]string]int64{m("@a:x"): 3}, map[string]int64{"@a:x": 3}},
		{"other state ignored", map[[2]string]int64{{"m.room.name", ""}: 1}, map[[2]string]int64{{"m.room.name", ""}: 2}, map[string]int64{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := memberChanges(tc.old, tc.cur)
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for u, nid := range tc.want {
				if got[u] != nid {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}
