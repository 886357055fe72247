package ephemeral

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
	"praxis/internal/streams"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newService(t *testing.T, db *storage.DB) (*Service, *fakeClock, *streams.Notifier) {
	n := streams.NewNotifier(0)
	s := New(db, n)
	clk := &fakeClock{t: time.UnixMilli(1_700_000_000_000)}
	s.SetClock(clk.now)
	t.Cleanup(s.Close)
	return s, clk, n
}

func TestTyping(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, clk, n := newService(t, db)
		rooms := []string{"!a:hs", "!b:hs"}

		if err := s.SetTyping(ctx, "!a:hs", "@alice:hs", true, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		p1 := n.Position()
		if p1 == 0 {
			t.Fatal("starting to type did not take a stream position")
		}
		// renewing does not move the stream
		if err := s.SetTyping(ctx, "!a:hs", "@alice:hs", true, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if got := n.Position(); got != p1 {
			t.Errorf("renewal moved the stream to %d, want %d", got, p1)
		}
		if err := s.SetTyping(ctx, "!a:hs", "@bob:hs", true, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		p2 := n.Position()

		got, err := s.Typing(ctx, rooms, 0, p2)
		if err != nil {
			t.Fatal(err)
		}
		if diff := diff(map[string][]string{"!a:hs": {"@alice:hs", "@bob:hs"}}, got); diff != "" {
			t.Errorf("initial typing (-want +got):\n%s", diff)
		}
		got, _ = s.Typing(ctx, rooms, p2, p2)
		if len(got) != 0 {
			t.Errorf("nothing changed after %d, got %v", p2, got)
		}

		// bob's notification lapses; the sweep records that at a new position
		clk.add(6 * time.Second)
		if err := s.expireTyping(ctx); err != nil {
			t.Fatal(err)
		}
		p3 := n.Position()
		if p3 <= p2 {
			t.Fatalf("expiry did not take a stream position")
		}
		got, _ = s.Typing(ctx, rooms, p2, p3)
		if diff := diff(map[string][]string{"!a:hs": {"@alice:hs"}}, got); diff != "" {
			t.Errorf("after expiry (-want +got):\n%s", diff)
		}

		// stopping twice takes one position
		if err := s.SetTyping(ctx, "!a:hs", "@alice:hs", false, 0); err != nil {
			t.Fatal(err)
		}
		p4 := n.Position()
		if err := s.SetTyping(ctx, "!a:hs", "@alice:hs", false, 0); err != nil {
			t.Fatal(err)
		}
		if n.Position() != p4 {
			t.Errorf("stopping again moved the stream")
		}
		got, _ = s.Typing(ctx, rooms, p3, p4)
		if diff := diff(map[string][]string{"!a:hs": {}}, got); diff != "" {
			t.Errorf("after stop (-want +got):\n%s", diff)
		}
		got, _ = s.Typing(ctx, rooms, 0, p4)
		if len(got) != 0 {
			t.Errorf("initial sync with nobody typing: got %v", got)
		}
	})
}

func TestReceipts(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _, n := newService(t, db)
		put := func(r Receipt) bool {
			t.Helper()
			ok, err := s.PutReceipt(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		put(Receipt{RoomID: "!a:hs", UserID: "@alice:hs", Type: ReceiptRead, EventID: "$e5", EventStreamPos: 5, TS: 1})
		put(Receipt{RoomID: "!a:hs", UserID: "@alice:hs", Type: ReceiptReadPrivate, EventID: "$e7", EventStreamPos: 7, TS: 2})
		put(Receipt{RoomID: "!a:hs", UserID: "@bob:hs", Type: ReceiptRead, ThreadID: "$thread", EventID: "$e6", EventStreamPos: 6, TS: 3})
		p := n.Position()
		if moved := put(Receipt{RoomID: "!a:hs", UserID: "@alice:hs", Type: ReceiptRead, EventID: "$e3", EventStreamPos: 3, TS: 4}); moved {
			t.Error("a receipt moved backwards")
		}
		if n.Position() != p {
			t.Error("an ignored receipt took a stream position")
		}

		for _, tc := range []struct {
			viewer string
			since  int64
			want   []string // user/type/event
		}{
			{"@alice:hs", 0, []string{"@alice:hs m.read $e5", "@alice:hs m.read.private $e7", "@bob:hs m.read $e6"}},
			{"@bob:hs", 0, []string{"@alice:hs m.read $e5", "@bob:hs m.read $e6"}},
			{"@bob:hs", p - 1, []string{"@bob:hs m.read $e6"}},
			{"@bob:hs", p, nil},
		} {
			got, err := s.Receipts(ctx, tc.viewer, []string{"!a:hs", "!other:hs"}, tc.since, p)
			if err != nil {
				t.Fatal(err)
			}
			var flat []string
			for _, r := range got["!a:hs"] {
				flat = append(flat, r.UserID+" "+r.Type+" "+r.EventID)
			}
			if diff := diff(tc.want, flat); diff != "" {
				t.Errorf("receipts for %s since %d (-want +got):\n%s", tc.viewer, tc.since, diff)
			}
		}

		read, err := s.ReadPositionsOf(ctx, "@alice:hs", []string{"!a:hs"})
		if err != nil {
			t.Fatal(err)
		}
		if rp := read["!a:hs"]; rp == nil || rp.Unthreaded != 7 {
			t.Errorf("alice read up to %+v, want 7 unthreaded (the private receipt counts)", rp)
		}
		read, _ = s.ReadPositionsOf(ctx, "@bob:hs", []string{"!a:hs"})
		if rp := read["!a:hs"]; rp == nil || rp.Unthreaded != 0 || rp.Main != 0 || rp.Threads["$thread"] != 6 {
			t.Errorf("bob's read positions = %+v, want only thread $thread at 6", rp)
		}
	})
}

// diff is a small stand-in for cmp.Diff: "" when equal.
func diff(want, got any) string {
	if reflect.DeepEqual(want, got) {
		return ""
	}
	return fmt.Sprintf("-%v\n+%v", want, got)
}

func TestChanged(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _, n := newService(t, db)
		check := func(viewer string, rooms []string, since int64, want bool) {
			t.Helper()
			got, err := s.Changed(ctx, viewer, rooms, since, n.Position())
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("Changed(%s, %v, since %d) = %v, want %v", viewer, rooms, since, got, want)
			}
		}
		check("@bob:hs", []string{"!a:hs"}, 0, false)
		if err := s.SetTyping(ctx, "!a:hs", "@alice:hs", true, time.Minute); err != nil {
			t.Fatal(err)
		}
		p := n.Position()
		check("@bob:hs", []string{"!a:hs"}, p-1, true)
		check("@bob:hs", []string{"!b:hs"}, p-1, false)
		check("@bob:hs", nil, p-1, false)
		if _, err := s.PutReceipt(ctx, Receipt{RoomID: "!a:hs", UserID: "@alice:hs", Type: ReceiptReadPrivate, EventID: "$e", EventStreamPos: 1}); err != nil {
			t.Fatal(err)
		}
		check("@bob:hs", []string{"!a:hs"}, p, false) // someone else's private receipt
		check("@alice:hs", []string{"!a:hs"}, p, true)
		if _, err := s.PutReceipt(ctx, Receipt{RoomID: "!a:hs", UserID: "@alice:hs", Type: ReceiptRead, EventID: "$e", EventStreamPos: 1}); err != nil {
			t.Fatal(err)
		}
		check("@bob:hs", []string{"!a:hs"}, p+1, true)
	})
}
