package admin

import (
	"fmt"
	"slices"
	"testing"

	"praxis/roomserver"
)

func TestPageRooms(t *testing.T) {
	rooms := []roomserver.RoomSummary{
		{RoomID: "!c:hs", Name: "cardiology", JoinedMembers: 5, CanonicalAlias: "#cardio:hs"},
		{RoomID: "!a:hs", Name: "Anamnesis", JoinedMembers: 2},
		{RoomID: "!b:hs", Name: "", JoinedMembers: 9},
		{RoomID: "!d:hs", Name: "Dermatology", JoinedMembers: 2},
	}
	ids := func(l *roomList) []string {
		out := []string{}
		for _, r := range l.Rooms {
			out = append(out, r.RoomID)
		}
		return out
	}
	ptr := func(p *int) string {
		if p == nil {
			return "nil"
		}
		return fmt.Sprint(*p)
	}
	for _, tc := range []struct {
		name        string
		term, order string
		backwards   bool
		from, limit int
		want        []string
		total       int
		next, prev  string
	}{
		{"by name, case-insensitive", "", "name", false, 0, 10, []string{"!b:hs", "!a:hs", "!c:hs", "!d:hs"}, 4, "nil", "nil"},
		{"by members backwards, ties by ID", "", "joined_members", true, 0, 10, []string{"!b:hs", "!c:hs", "!d:hs", "!a:hs"}, 4, "nil", "nil"},
		{"first page", "", "name", false, 0, 2, []string{"!b:hs", "!a:hs"}, 4, "2", "nil"},
		{"second page", "", "name", false, 2, 2, []string{"!c:hs", "!d:hs"}, 4, "nil", "0"},
		{"search name", "OLOGY", "name", false, 0, 10, []string{"!c:hs", "!d:hs"}, 2, "nil", "nil"},
		{"search alias", "#cardio", "name", false, 0, 10, []string{"!c:hs"}, 1, "nil", "nil"},
		{"search room ID", "!a:hs", "name", false, 0, 10, []string{"!a:hs"}, 1, "nil", "nil"},
		{"from past the end", "", "name", false, 10, 2, []string{}, 4, "nil", "8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := pageRooms(rooms, tc.term, tc.order, tc.backwards, tc.from, tc.limit)
			if g := ids(got); !slices.Equal(g, tc.want) || got.TotalRooms != tc.total || ptr(got.NextBatch) != tc.next || ptr(got.PrevBatch) != tc.prev {
				t.Errorf("got %v total %d next %s prev %s; want %v total %d next %s prev %s",
					g, got.TotalRooms, ptr(got.NextBatch), ptr(got.PrevBatch), tc.want, tc.total, tc.next, tc.prev)
			}
		})
	}
}
