package streams

import (
	"context"
	"testing"
	"time"
)

func TestWaitReturnsAtOnceWhenAhead(t *testing.T) {
	n := NewNotifier(5)
	if got := n.Wait(context.Background(), 4); got != 5 {
		t.Fatalf("Wait = %d, want 5", got)
	}
}

func TestPublishWakesWaiter(t *testing.T) {
	n := NewNotifier(1)
	got := make(chan int64)
	go func() { got <- n.Wait(context.Background(), 1) }()
	time.Sleep(10 * time.Millisecond)
	n.Publish(3)
	select {
	case p := <-got:
		if p != 3 {
			t.Fatalf("woke with %d, want 3", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter not woken")
	}
}

func TestPublishKeepsHighest(t *testing.T) {
	n := NewNotifier(0)
	n.Publish(7)
	n.Publish(4)
	if p := n.Position(); p != 7 {
		t.Fatalf("Position = %d, want 7", p)
	}
}

func TestWaitHonoursContext(t *testing.T) {
	n := NewNotifier(2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if got := n.Wait(ctx, 2); got != 2 {
		t.Fatalf("Wait after timeout = %d, want 2", got)
	}
}

func TestConcerns(t *testing.T) {
	n := NewNotifier(10)
	// 11: a message in !a; 12: bob invited to !b; 13: to-device (no
	// description); 14: a message in !b
	n.PublishChanges([]Change{{Pos: 11, RoomID: "!a"}, {Pos: 12, RoomID: "!b", Member: "@bob:x"}})
	n.Publish(13)
	n.PublishChanges([]Change{{Pos: 14, RoomID: "!b"}})
	for _, tc := range []struct {
		name        string
		since, upto int64
		user        string
		joined      map[string]bool
		want        bool
	}{
		{"empty window", 11, 11, "@carol:x", nil, false},
		{"another room's message", 10, 11, "@carol:x", map[string]bool{"!c": true}, false},
		{"a joined room's message", 10, 11, "@carol:x", map[string]bool{"!a": true}, true},
		{"the user's own membership elsewhere", 11, 12, "@bob:x", map[string]bool{"!a": true}, true},
		{"someone else's membership elsewhere", 11, 12, "@carol:x", map[string]bool{"!a": true}, false},
		{"an undescribed position", 12, 13, "@carol:x", map[string]bool{}, true},
		{"undescribed in the middle", 10, 14, "@carol:x", map[string]bool{}, true},
		{"before what the notifier remembers", 5, 11, "@carol:x", map[string]bool{}, true},
		{"past the newest position", 14, 15, "@carol:x", map[string]bool{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := n.Concerns(tc.since, tc.upto, tc.user, tc.joined); got != tc.want {
				t.Errorf("Concerns(%d, %d, %s, %v) = %v, want %v", tc.since, tc.upto, tc.user, tc.joined, got, tc.want)
			}
		})
	}
}

func TestPublishChangesWakesAndKeepsHighest(t *testing.T) {
	n := NewNotifier(1)
	ch := n.Changed()
	// out of order: a later writer's commit published first
	n.PublishChanges([]Change{{Pos: 3, RoomID: "!a"}})
	select {
	case <-ch:
	default:
		t.Fatal("PublishChanges did not wake waiters")
	}
	n.PublishChanges([]Change{{Pos: 2, RoomID: "!b"}})
	if p := n.Position(); p != 3 {
		t.Fatalf("Position = %d, want 3", p)
	}
	// the late description still counts
	if n.Concerns(1, 3, "@u:x", map[string]bool{"!c": true}) {
		t.Error("positions 2 and 3 are both described as other rooms, want not concerned")
	}
	if !n.Concerns(1, 3, "@u:x", map[string]bool{"!b": true}) {
		t.Error("position 2 is in a joined room, want concerned")
	}
}

func TestChangesAreForgottenOldestFirst(t *testing.T) {
	n := NewNotifier(0)
	for p := int64(1); p <= maxChanges+10; p++ {
		n.PublishChanges([]Change{{Pos: p, RoomID: "!other"}})
	}
	if len(n.changes) != maxChanges {
		t.Fatalf("remembers %d changes, want at most %d", len(n.changes), maxChanges)
	}
	none := map[string]bool{}
	if !n.Concerns(0, 11, "@u:x", none) {
		t.Error("forgotten positions must count as concerning")
	}
	if n.Concerns(maxChanges, maxChanges+10, "@u:x", none) {
		t.Error("remembered positions of another room must not concern the user")
	}
}

func TestOnlyRoomEvents(t *testing.T) {
	n := NewNotifier(10)
	// 11, 12: messages; 13: bob joins; 14: to-device (no description)
	n.PublishChanges([]Change{{Pos: 11, RoomID: "!a"}, {Pos: 12, RoomID: "!b"}, {Pos: 13, RoomID: "!a", Member: "@bob:x"}})
	n.Publish(14)
	for _, tc := range []struct {
		name        string
		since, upto int64
		user        string
		want        bool
	}{
		{"messages only", 10, 12, "@bob:x", true},
		{"someone else's join", 10, 13, "@carol:x", true},
		{"the user's own join", 10, 13, "@bob:x", false},
		{"an undescribed position", 12, 14, "@carol:x", false},
		{"empty window", 12, 12, "@carol:x", false},
		{"before what the notifier remembers", 5, 12, "@carol:x", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := n.OnlyRoomEvents(tc.since, tc.upto, tc.user); got != tc.want {
				t.Errorf("OnlyRoomEvents(%d, %d, %s) = %v, want %v", tc.since, tc.upto, tc.user, got, tc.want)
			}
		})
	}
}
