package roomserver

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/httputil"
)

// keyVerifier checks signatures against fixed server keys, like a key
// ring that already fetched them.
type keyVerifier map[spec.ServerName]ed25519.PublicKey

func (v keyVerifier) VerifyJSONs(_ context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	out := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
	for i, r := range reqs {
		pub, ok := v[r.ServerName]
		if !ok {
			out[i].Error = errors.New("unknown server")
			continue
		}
		out[i].Error = gomatrixserverlib.VerifyJSON(string(r.ServerName), "ed25519:k", pub, r.Message)
	}
	return out, nil
}

// stateBuilder builds a signed room DAG for join-state tests.
type stateBuilder struct {
	t      *testing.T
	v      gomatrixserverlib.IRoomVersion
	keys   map[string]ed25519.PrivateKey
	roomID string
	depth  int64
	prev   []string
	evs    []gomatrixserverlib.PDU
}

func (b *stateBuilder) add(server, sender, typ string, stateKey *string, content any, auth ...gomatrixserverlib.PDU) gomatrixserverlib.PDU {
	b.t.Helper()
	ids := []string{}
	for _, a := range auth {
		ids = append(ids, a.EventID())
	}
	b.depth++
	c, _ := json.Marshal(content)
	pe := &gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: b.roomID, Type: typ, StateKey: stateKey, Content: c,
		Depth: b.depth, PrevEvents: append([]string{}, b.prev...), AuthEvents: ids, Version: b.v}
	ev, err := b.v.NewEventBuilderFromProtoEvent(pe).Build(time.Now(), spec.ServerName(server), "ed25519:k", b.keys[server])
	if err != nil {
		b.t.Fatal(err)
	}
	b.prev = []string{ev.EventID()}
	b.evs = append(b.evs, ev)
	return ev
}

func TestCheckJoinState(t *testing.T) {
	keys := map[string]ed25519.PrivateKey{}
	verifier := keyVerifier{}
	for _, srv := range []string{"hs1.test", "hs2.test", "evil.test"} {
		pub, priv, _ := ed25519.GenerateKey(nil)
		keys[srv], verifier[spec.ServerName(srv)] = priv, pub
	}
	_, stranger, _ := ed25519.GenerateKey(nil)
	keys["forger"] = stranger
	v := gomatrixserverlib.MustGetRoomVersion("10")
	roomID := "!r:hs1.test"
	alice, carol, eve := "@alice:hs1.test", "@carol:hs1.test", "@eve:evil.test"

	// base: create, alice's join, power levels, public join rule
	base := func() (*stateBuilder, []gomatrixserverlib.PDU) {
		b := &stateBuilder{t: t, v: v, keys: keys, roomID: roomID}
		create := b.add("hs1.test", alice, spec.MRoomCreate, ptr(""), map[string]any{"room_version": "10", "creator": alice})
		join := b.add("hs1.test", alice, spec.MRoomMember, &alice, map[string]any{"membership": "join"}, create)
		pl := b.add("hs1.test", alice, spec.MRoomPowerLevels, ptr(""), map[string]any{"users": map[string]int{alice: 100}, "state_default": 50}, create, join)
		jr := b.add("hs1.test", alice, spec.MRoomJoinRules, ptr(""), map[string]any{"join_rule": "public"}, create, join, pl)
		return b, []gomatrixserverlib.PDU{create, join, pl, jr}
	}
	raws := func(evs []gomatrixserverlib.PDU) []json.RawMessage {
		out := []json.RawMessage{}
		for _, e := range evs {
			out = append(out, e.JSON())
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		build     func() (state, chain []gomatrixserverlib.PDU)
		wantState int
		wantErr   string // "" none, "forbidden" an M_FORBIDDEN, "error" any other
	}{
		{"valid state is kept whole", func() ([]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			_, evs := base()
			return evs, evs
		}, 4, ""},
		{"a member on a server off the allowlist refuses the room", func() ([]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			b, evs := base()
			ej := b.add("evil.test", eve, spec.MRoomMember, &eve, map[string]any{"membership": "join"}, evs[0], evs[2], evs[3])
			return append(evs, ej), evs
		}, 0, "forbidden"},
		{"an event with a forged signature is dropped", func() ([]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			b, evs := base()
			b.keys = map[string]ed25519.PrivateKey{"hs1.test": keys["forger"]}
			cj := b.add("hs1.test", carol, spec.MRoomMember, &carol, map[string]any{"membership": "join"}, evs[0], evs[2], evs[3])
			return append(evs, cj), evs
		}, 4, ""},
		{"an event its auth events do not allow is dropped", func() ([]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			b, evs := base()
			cj := b.add("hs1.test", carol, spec.MRoomMember, &carol, map[string]any{"membership": "join"}, evs[0], evs[2], evs[3])
			// carol (power 0) may not set the name (state_default 50)
			name := b.add("hs1.test", carol, spec.MRoomName, ptr(""), map[string]any{"name": "x"}, evs[0], evs[2], cj)
			return append(evs, cj, name), append(evs, cj)
		}, 5, ""},
		{"a state without its create event is refused", func() ([]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			_, evs := base()
			return evs[1:], evs[1:]
		}, 0, "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Service{serverName: "hs2.test", fed: &remoteFed{verifier: verifier, allowed: func(srv string) bool { return srv == "hs1.test" }}}
			state, chain := tc.build()
			got, _, err := s.checkJoinState(context.Background(), v, roomID, raws(state), raws(chain))
			var he *httputil.Error
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.wantErr == "forbidden" && !(errors.As(err, &he) && he.ErrCode == "M_FORBIDDEN"):
				t.Fatalf("err = %v, want M_FORBIDDEN", err)
			case tc.wantErr == "error" && err == nil:
				t.Fatal("no error, want one")
			}
			if err == nil && len(got) != tc.wantState {
				t.Fatalf("kept %d state events, want %d", len(got), tc.wantState)
			}
		})
	}
}
