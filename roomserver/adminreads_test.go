package roomserver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"praxis/internal/config"
	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
)

// seedRoom writes a room's rows the way the room service materialises
// them: the rooms row, state events, current_state and room_members.
func seedRoom(t *testing.T, db *storage.DB, roomID string, state map[string]string, members map[string]string) {
	t.Helper()
	ctx := context.Background()
	var nid int64
	if err := db.QueryRowWrite(ctx, `INSERT INTO rooms (room_id, room_version, creator, published, created_ts) VALUES ($1, '10', '@a:hs1_x', $2, 1) RETURNING room_nid`,
		roomID, roomID == "!pub:hs1_x").Scan(&nid); err != nil {
		t.Fatal(err)
	}
	n := 0
	addState := func(typ, stateKey, content string) int64 {
		n++
		var enid int64
		js := fmt.Sprintf(`{"type":%q,"state_key":%q,"content":%s}`, typ, stateKey, content)
		if err := db.QueryRowWrite(ctx, `INSERT INTO events (event_id, room_nid, type, state_key, sender, depth, origin_ts, stream_pos, json)
			VALUES ($1, $2, $3, $4, '@a:hs1_x', $5, 1, $5, $6) RETURNING event_nid`, fmt.Sprintf("$%s-%d", roomID, n), nid, typ, stateKey, n, js).Scan(&enid); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(ctx, `INSERT INTO current_state (room_nid, type, state_key, event_nid) VALUES ($1, $2, $3, $4)`, nid, typ, stateKey, enid); err != nil {
			t.Fatal(err)
		}
		return enid
	}
	for typ, content := range state {
		addState(typ, "", content)
	}
	for user, membership := range members {
		enid := addState("m.room.member", user, fmt.Sprintf(`{"membership":%q}`, membership))
		if _, err := db.Exec(ctx, `INSERT INTO room_members (room_nid, user_id, membership, event_nid, stream_pos) VALUES ($1, $2, $3, $4, 1)`, nid, user, membership, enid); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAdminReads(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		// "_" in the server name must not act as a LIKE wildcard: @x:hs1Zx
		// is not local.
		s := New(db, nil, nil, &config.Config{ServerName: "hs1_x"})
		seedRoom(t, db, "!clinic:hs1_x", map[string]string{
			"m.room.create":             `{"creator":"@a:hs1_x","m.federate":false,"type":"m.space"}`,
			"m.room.name":               `{"name":"Clinic"}`,
			"m.room.topic":              `{"topic":"Opening hours"}`,
			"m.room.canonical_alias":    `{"alias":"#clinic:hs1_x"}`,
			"m.room.join_rules":         `{"join_rule":"invite"}`,
			"m.room.history_visibility": `{"history_visibility":"shared"}`,
			"m.room.encryption":         `{"algorithm":"m.megolm.v1.aes-sha2"}`,
		}, map[string]string{"@a:hs1_x": "join", "@b:hs1_x": "join", "@c:other": "join", "@x:hs1Zx": "join", "@d:hs1_x": "invite", "@e:hs1_x": "leave"})
		seedRoom(t, db, "!pub:hs1_x", map[string]string{"m.room.create": `{"creator":"@a:hs1_x"}`}, map[string]string{"@a:hs1_x": "join"})

		all, err := s.AdminRooms(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 2 {
			t.Fatalf("AdminRooms returned %d rooms, want 2", len(all))
		}
		r, err := s.AdminRoom(ctx, "!clinic:hs1_x")
		if err != nil {
			t.Fatal(err)
		}
		want := RoomSummary{
			RoomID: "!clinic:hs1_x", Name: "Clinic", Topic: "Opening hours", CanonicalAlias: "#clinic:hs1_x",
			JoinedMembers: 4, JoinedLocalMembers: 2, InvitedMembers: 1, Version: "10", Creator: "@a:hs1_x",
			Encryption: "m.megolm.v1.aes-sha2", Federatable: false, Public: false, JoinRules: "invite",
			HistoryVisibility: "shared", StateEvents: 13, RoomType: "m.space", CreatedTS: 1,
		}
		if *r != want {
			t.Errorf("AdminRoom =\n%+v\nwant\n%+v", *r, want)
		}
		pub, err := s.AdminRoom(ctx, "!pub:hs1_x")
		if err != nil {
			t.Fatal(err)
		}
		if !pub.Public || !pub.Federatable || pub.JoinedMembers != 1 || pub.StateEvents != 2 {
			t.Errorf("public room = %+v", *pub)
		}
		if _, err := s.AdminRoom(ctx, "!nope:hs1_x"); !errors.Is(err, ErrRoomNotFound) {
			t.Errorf("unknown room: %v, want ErrRoomNotFound", err)
		}
		members, err := s.AdminRoomMembers(ctx, "!clinic:hs1_x")
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"@a:hs1_x", "@b:hs1_x", "@c:other", "@x:hs1Zx"}; !slices.Equal(members, want) {
			t.Errorf("members = %v, want %v", members, want)
		}
		joined, err := s.AdminJoinedRooms(ctx, "@a:hs1_x")
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"!clinic:hs1_x", "!pub:hs1_x"}; !slices.Equal(joined, want) {
			t.Errorf("joined rooms of @a = %v, want %v", joined, want)
		}
		if joined, _ := s.AdminJoinedRooms(ctx, "@d:hs1_x"); len(joined) != 0 {
			t.Errorf("an invited user is joined to %v", joined)
		}
		if _, err := s.AdminRoomMembers(ctx, "!nope:hs1_x"); !errors.Is(err, ErrRoomNotFound) {
			t.Errorf("members of unknown room: %v, want ErrRoomNotFound", err)
		}
	})
}
