package roomserver

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
)

func TestSyncStateAtResolvesDeltaChains(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db)
		group := func(prev any, chain int, entries map[string]int64) int64 {
			t.Helper()
			var g int64
			if err := db.QueryRowWrite(ctx, `INSERT INTO state_groups (room_nid, prev_group, chain_len) VALUES (1, $1, $2) RETURNING state_group`, prev, chain).Scan(&g); err != nil {
				t.Fatal(err)
			}
			for k, nid := range entries {
				if _, err := db.Exec(ctx, `INSERT INTO state_group_entries (state_group, type, state_key, event_nid) VALUES ($1, 't', $2, $3)`, g, k, nid); err != nil {
					t.Fatal(err)
				}
			}
			return g
		}
		g1 := group(nil, 0, map[string]int64{"a": 1, "b": 2})
		g2 := group(g1, 1, map[string]int64{"b": 3})
		g3 := group(g2, 2, map[string]int64{"a": 0, "c": 4}) // 0 removes a
		got, err := s.SyncStateAt(ctx, []int64{g1, g2, g3})
		if err != nil {
			t.Fatal(err)
		}
		k := func(sk string) SyncStateKey { return SyncStateKey{Type: "t", StateKey: sk} }
		want := map[int64]map[SyncStateKey]int64{
			g1: {k("a"): 1, k("b"): 2},
			g2: {k("a"): 1, k("b"): 3},
			g3: {k("b"): 3, k("c"): 4},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("SyncStateAt = %v, want %v", got, want)
		}
	})
}

func TestSyncTimelinesCutPerRoom(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db)
		var rooms []string
		for range 2 {
			res, err := s.CreateRoom(ctx, CreateRoomRequest{Creator: alice, RoomVersion: "10", Preset: PresetPublicChat})
			if err != nil {
				t.Fatal(err)
			}
			rooms = append(rooms, res.RoomID)
		}
		for i := range 5 {
			for _, r := range rooms {
				if _, err := s.Send(ctx, SendRequest{RoomID: r, Sender: alice, Type: "m.room.message",
					Content: []byte(fmt.Sprintf(`{"msgtype":"m.text","body":"%d"}`, i))}); err != nil {
					t.Fatal(err)
				}
			}
		}
		ms, err := s.SyncMemberships(ctx, alice)
		if err != nil || len(ms) != 2 {
			t.Fatalf("memberships = %v, %v", ms, err)
		}
		head, _ := db.StreamHead(ctx)
		ranges := []SyncRange{{RoomNID: ms[0].RoomNID, From: 0, To: head}, {RoomNID: ms[1].RoomNID, From: head - 2, To: head}}
		tls, err := s.SyncTimelines(ctx, ranges, 3)
		if err != nil {
			t.Fatal(err)
		}
		first, second := tls[ms[0].RoomNID], tls[ms[1].RoomNID]
		if first == nil || len(first.Events) != 3 || !first.Limited {
			t.Fatalf("whole-history range: %+v, want the newest 3 of many, limited", first)
		}
		for i := 1; i < len(first.Events); i++ {
			if first.Events[i].StreamPos <= first.Events[i-1].StreamPos {
				t.Errorf("timeline not in stream order")
			}
		}
		if first.Events[2].StreamPos > head || first.Events[2].RoomID != ms[0].RoomID {
			t.Errorf("last event %+v is outside the range or the room", first.Events[2])
		}
		// the second room's range holds exactly its last message
		if second == nil || len(second.Events) != 1 || second.Limited {
			t.Fatalf("short range: %+v, want one event, not limited", second)
		}
		if second.GroupBefore[second.Events[0].NID] == 0 {
			t.Error("no state group before a message")
		}
	})
}
