package care_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/care"
	"praxis/internal/hstest"
)

// A stock client that resolves the code's alias first and then joins the
// room ID it got (mautrix ResolveAlias + JoinRoomByID, Element X, most
// bots) couples just like one that joins the alias.
func TestStockClientResolvesThenJoins(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		n := newPractice(t, srv, "mueller", map[string]string{"drmueller": care.RoleDoctor})
		for _, tc := range []struct {
			name, kind string
			join       func(c *mautrix.Client, lobby id.RoomID) (*mautrix.RespJoinRoom, error)
		}{
			{"one-time code, POST /rooms/{lobby}/join", care.CodePatient, func(c *mautrix.Client, lobby id.RoomID) (*mautrix.RespJoinRoom, error) {
				return c.JoinRoomByID(ctx, lobby)
			}},
			{"one-time code, POST /join/{lobby}", care.CodePatient, func(c *mautrix.Client, lobby id.RoomID) (*mautrix.RespJoinRoom, error) {
				return c.JoinRoom(ctx, lobby.String(), nil)
			}},
			{"practice code, POST /rooms/{lobby}/join", care.CodePractice, func(c *mautrix.Client, lobby id.RoomID) (*mautrix.RespJoinRoom, error) {
				return c.JoinRoomByID(ctx, lobby)
			}},
			// a client that resolved for the preview but joins by alias
			{"one-time code, POST /join/{alias} after the lookup", care.CodePatient, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code := n.code(t, tc.kind)
				alias := id.RoomAlias("#couple-" + code + ":hs1.test")
				patient := srv.Register(t, "p"+strings.ToLower(code[:8]))
				before, _ := srv.Care.Couplings(ctx, "mueller", "")

				res, err := patient.ResolveAlias(ctx, alias)
				if err != nil {
					t.Fatalf("resolve %s: %v", alias, err)
				}
				if !strings.HasPrefix(res.RoomID.String(), "!"+care.LobbyPrefix) || len(res.Servers) == 0 || res.Servers[0] != "hs1.test" {
					t.Fatalf("resolve = %s via %v, want the code's lobby via hs1.test", res.RoomID, res.Servers)
				}
				// resolving creates nothing and does not use the code
				if after, _ := srv.Care.Couplings(ctx, "mueller", ""); len(after) != len(before) {
					t.Fatalf("couplings after a lookup: %d, want %d", len(after), len(before))
				}
				// clients that preview before joining see the practice and may join
				for _, addr := range []string{alias.String(), res.RoomID.String()} {
					sum, err := patient.GetRoomSummary(ctx, addr)
					if err != nil || sum.RoomID != res.RoomID || sum.Name != "Praxis mueller" || sum.JoinRule != event.JoinRulePublic {
						t.Errorf("summary of %s = %+v (%v), want the lobby, named after the practice, joinable", addr, sum, err)
					}
				}
				again, err := patient.ResolveAlias(ctx, alias)
				if err != nil || again.RoomID != res.RoomID {
					t.Fatalf("second lookup = %v (%v), want the same lobby %s", again, err, res.RoomID)
				}

				join := tc.join
				if join == nil {
					join = func(c *mautrix.Client, _ id.RoomID) (*mautrix.RespJoinRoom, error) {
						return c.JoinRoom(ctx, alias.String(), nil)
					}
				}
				joined, err := join(patient, res.RoomID)
				if err != nil {
					t.Fatalf("join the lobby: %v", err)
				}
				if joined.RoomID == res.RoomID {
					t.Fatalf("join answered with the lobby %s, want the new coupling room", joined.RoomID)
				}
				c, err := srv.Care.CouplingOf(ctx, joined.RoomID.String())
				if err != nil || c == nil || c.Patient != patient.UserID.String() || c.Verified != (tc.kind == care.CodePatient) {
					t.Fatalf("coupling of %s = %+v (%v), want %s's, verified=%v", joined.RoomID, c, err, patient.UserID, tc.kind == care.CodePatient)
				}
				if m, _ := srv.Rooms.Membership(ctx, joined.RoomID.String(), patient.UserID.String()); m != "join" {
					t.Errorf("patient's membership = %q, want join", m)
				}
				if m, _ := srv.Rooms.Membership(ctx, joined.RoomID.String(), "@drmueller:hs1.test"); m != "invite" {
					t.Errorf("doctor's membership = %q, want invite", m)
				}
				// a client that repeats the join gets its room, not a second one
				if tc.kind == care.CodePractice {
					rejoined, err := patient.JoinRoomByID(ctx, res.RoomID)
					if err != nil || rejoined.RoomID != joined.RoomID {
						t.Errorf("repeated join = %v (%v), want %s", rejoined, err, joined.RoomID)
					}
				}
			})
		}
	}, enforce)
}

// One practice code resolves to one lobby for everyone, yet every patient
// who joins it gets a room of their own.
func TestLobbyOfPracticeCodeIsNeverShared(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		n := newPractice(t, srv, "mueller", map[string]string{"drmueller": care.RoleDoctor})
		code := n.code(t, care.CodePractice)
		anna, bernd := srv.Register(t, "anna"), srv.Register(t, "bernd")
		alias := id.RoomAlias("#couple-" + code + ":hs1.test")
		ra, err1 := anna.ResolveAlias(ctx, alias)
		rb, err2 := bernd.ResolveAlias(ctx, alias)
		if err1 != nil || err2 != nil || ra.RoomID != rb.RoomID {
			t.Fatalf("lookups = %v (%v), %v (%v), want one lobby", ra, err1, rb, err2)
		}
		ja, err1 := anna.JoinRoomByID(ctx, ra.RoomID)
		jb, err2 := bernd.JoinRoomByID(ctx, rb.RoomID)
		if err1 != nil || err2 != nil {
			t.Fatalf("joins: %v, %v", err1, err2)
		}
		if ja.RoomID == jb.RoomID {
			t.Fatalf("both patients are in %s, want two rooms", ja.RoomID)
		}
		if m, _ := srv.Rooms.Membership(ctx, ja.RoomID.String(), bernd.UserID.String()); m != "" {
			t.Errorf("bernd's membership in anna's room = %q, want none", m)
		}
	})
}

// Codes that lead nowhere answer the lookup with 404 and a message saying
// why; joining their lobby is refused like joining their alias, and
// nothing is created.
func TestLobbyOfUnusableCode(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		n := newPractice(t, srv, "mueller", map[string]string{"drmueller": care.RoleDoctor})
		now := time.Now()
		srv.Care.SetClock(func() time.Time { return now })

		used := n.code(t, care.CodePatient)
		first := srv.Register(t, "first")
		res, err := first.ResolveAlias(ctx, id.RoomAlias("#couple-"+used+":hs1.test"))
		if err != nil {
			t.Fatalf("resolve a fresh code: %v", err)
		}
		usedLobby := res.RoomID
		firstRoom := couple(t, first, used)

		revoked, err := srv.Care.CreateCode(ctx, root, "mueller", care.CodePractice, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Care.RevokeCode(ctx, root, "mueller", revoked.CodeID); err != nil {
			t.Fatal(err)
		}
		expiring, err := srv.Care.CreateCode(ctx, root, "mueller", care.CodePatient, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		now = now.Add(2 * time.Hour)

		patient := srv.Register(t, "anna")
		before, _ := srv.Care.Couplings(ctx, "mueller", "")
		for _, tc := range []struct {
			name, code, wantMsg string
			wantJoin            string
		}{
			{"used one-time code", used, "already used", "M_FORBIDDEN"},
			{"withdrawn code", revoked.Code, "withdrawn", "M_FORBIDDEN"},
			{"expired code", expiring.Code, "expired", "M_FORBIDDEN"},
			{"unknown code", "nosuchcode", "unknown coupling code", "M_NOT_FOUND"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := patient.ResolveAlias(ctx, id.RoomAlias("#couple-"+tc.code+":hs1.test"))
				if hstest.ErrCode(err) != "M_NOT_FOUND" || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Errorf("resolve: %v, want M_NOT_FOUND saying %q", err, tc.wantMsg)
				}
				lobby := srv.Care.LobbyRoomID(tc.code)
				if _, err := patient.GetRoomSummary(ctx, "#couple-"+tc.code+":hs1.test"); hstest.ErrCode(err) != "M_NOT_FOUND" {
					t.Errorf("summary of the alias: %v, want M_NOT_FOUND", err)
				}
				if _, err := patient.GetRoomSummary(ctx, lobby); hstest.ErrCode(err) != "M_NOT_FOUND" {
					t.Errorf("summary of the lobby: %v, want M_NOT_FOUND", err)
				}
				if tc.code == used {
					if id.RoomID(lobby) != usedLobby {
						t.Fatalf("lobby = %s, resolved earlier to %s", lobby, usedLobby)
					}
				}
				if _, err := patient.JoinRoomByID(ctx, id.RoomID(lobby)); hstest.ErrCode(err) != tc.wantJoin {
					t.Errorf("join the lobby: %v, want %s", err, tc.wantJoin)
				}
			})
		}
		if after, _ := srv.Care.Couplings(ctx, "mueller", ""); len(after) != len(before) {
			t.Errorf("couplings: %d, want %d (nothing created)", len(after), len(before))
		}
		// the patient who used the code opens the link again: every way
		// leads to their room, and nothing new is made
		if got, err := first.ResolveAlias(ctx, id.RoomAlias("#couple-"+used+":hs1.test")); err != nil || got.RoomID != firstRoom {
			t.Errorf("the redeemer resolves the used code: %v (%v), want their room %s", got, err, firstRoom)
		}
		for name, join := range map[string]func() (*mautrix.RespJoinRoom, error){
			"alias": func() (*mautrix.RespJoinRoom, error) { return first.JoinRoom(ctx, "#couple-"+used+":hs1.test", nil) },
			"lobby": func() (*mautrix.RespJoinRoom, error) { return first.JoinRoomByID(ctx, usedLobby) },
		} {
			if got, err := join(); err != nil || got.RoomID != firstRoom {
				t.Errorf("the redeemer joins the used code's %s: %v (%v), want their room %s", name, got, err, firstRoom)
			}
		}
		if cs, _ := srv.Care.Couplings(ctx, "", first.UserID.String()); len(cs) != 1 {
			t.Errorf("the redeemer's couplings: %d, want 1", len(cs))
		}
		// once they left, the code is simply used
		if _, err := first.LeaveRoom(ctx, firstRoom); err != nil {
			t.Fatal(err)
		}
		if _, err := first.ResolveAlias(ctx, id.RoomAlias("#couple-"+used+":hs1.test")); hstest.ErrCode(err) != "M_NOT_FOUND" {
			t.Errorf("resolve after leaving: %v, want M_NOT_FOUND", err)
		}
		if _, err := first.JoinRoomByID(ctx, usedLobby); hstest.ErrCode(err) != "M_FORBIDDEN" {
			t.Errorf("join the lobby after leaving: %v, want M_FORBIDDEN", err)
		}

		// the lookup endpoint needs no token
		anon := srv.Client(t, "", "", "")
		fresh := n.code(t, care.CodePractice)
		if _, err := anon.ResolveAlias(ctx, id.RoomAlias("#couple-"+fresh+":hs1.test")); err != nil {
			t.Errorf("anonymous lookup: %v", err)
		}
	})
}
