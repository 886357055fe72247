package sender

import (
	"context"
	"testing"
	"time"

	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
	"praxis/internal/streams"
)

type allowAll struct{}

func (allowAll) Allowed(string) bool { return true }

// Two processes on one database: only one holds a destination at a time;
// a lapsed lease can be taken over.
func TestLeases(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		now := time.UnixMilli(1_000_000)
		clock := func() time.Time { return now }
		a := New(db, nil, allowAll{}, streams.NewNotifier(0), "hs1.test")
		b := New(db, nil, allowAll{}, streams.NewNotifier(0), "hs1.test")
		a.now, b.now = clock, clock
		if _, err := db.Exec(ctx, `INSERT INTO federation_destinations (server_name, sent_pos) VALUES ('hs2.test', 0)`); err != nil {
			t.Fatal(err)
		}
		for _, step := range []struct {
			name    string
			who     *Sender
			advance time.Duration
			want    bool
		}{
			{"a takes it", a, 0, true},
			{"b cannot while a holds it", b, 0, false},
			{"a renews", a, 10 * time.Second, true},
			{"b still cannot", b, 10 * time.Second, false},
			{"b takes over a lapsed lease", b, leaseFor + time.Second, true},
			{"a has lost it", a, 0, false},
		} {
			now = now.Add(step.advance)
			got, err := step.who.lease(ctx, "hs2.test")
			if err != nil {
				t.Fatal(err)
			}
			if got != step.want {
				t.Fatalf("%s: lease = %v, want %v", step.name, got, step.want)
			}
		}
		b.release(ctx, "hs2.test")
		if ok, _ := a.lease(ctx, "hs2.test"); !ok {
			t.Fatal("a cannot take a released lease")
		}
	})
}
