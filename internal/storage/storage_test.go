package storage_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
)

func TestRebindKeepsArgumentOrder(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		var a, b string
		// $2 before $1: SQLite would bind by appearance without the shim.
		if err := db.QueryRow(ctx, `SELECT $2, $1`, "one", "two").Scan(&a, &b); err != nil {
			t.Fatal(err)
		}
		if a != "two" || b != "one" {
			t.Fatalf("got (%q, %q), want (two, one)", a, b)
		}
	})
}

func TestTransactRollsBackOnError(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		hookRan := false
		want := errors.New("boom")
		err := db.Transact(ctx, func(tx *storage.DB) error {
			if _, err := tx.Exec(ctx, `INSERT INTO server_meta (key, value) VALUES ($1, $2)`, "k", "v"); err != nil {
				return err
			}
			tx.AfterCommit(func() { hookRan = true })
			return want
		})
		if !errors.Is(err, want) {
			t.Fatalf("Transact error = %v, want %v", err, want)
		}
		if hookRan {
			t.Error("after-commit hook ran for a rolled-back transaction")
		}
		var n int
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM server_meta`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("rolled-back insert is visible: %d rows", n)
		}
	})
}

func TestStreamPositionsAreGapFreeUnderConcurrency(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const writers, each = 8, 25
		var mu sync.Mutex
		seen := map[int64]bool{}
		var wg sync.WaitGroup
		for range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					err := db.Transact(ctx, func(tx *storage.DB) error {
						pos, err := tx.NextStreamPos(ctx, 1)
						if err != nil {
							return err
						}
						tx.AfterCommit(func() { mu.Lock(); seen[pos] = true; mu.Unlock() })
						return nil
					})
					if err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		head, err := db.StreamHead(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if head != writers*each {
			t.Fatalf("head = %d, want %d", head, writers*each)
		}
		for p := int64(1); p <= head; p++ {
			if !seen[p] {
				t.Fatalf("position %d was never handed out", p)
			}
		}
	})
}

func TestMigrateIsIdempotent(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		if err := db.Migrate(context.Background()); err != nil {
			t.Fatalf("second Migrate: %v", err)
		}
	})
}

func TestIn(t *testing.T) {
	for _, tc := range []struct {
		name   string
		after  int
		values []string
		want   string
	}{
		{"empty", 0, nil, "SELECT x WHERE id IN (NULL)"},
		{"two", 0, []string{"a", "b"}, "SELECT x WHERE id IN ($1,$2)"},
		{"after one", 1, []string{"a"}, "SELECT x WHERE id IN ($2)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, args := storage.In("SELECT x WHERE id IN ($IN)", tc.after, tc.values)
			if got != tc.want || len(args) != len(tc.values) {
				t.Fatalf("In = %q (%d args), want %q", got, len(args), tc.want)
			}
		})
	}
}

func TestFollowStreamSeesCommitsFromAnotherConnection(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// A second handle on the same database stands in for another
		// praxis process.
		other, err := storage.Open(ctx, db.DSN())
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		got := make(chan int64, 16)
		db.FollowStream(ctx, 50*time.Millisecond, func(pos int64) { got <- pos })
		time.Sleep(200 * time.Millisecond) // let LISTEN take effect
		var want int64
		if err := other.Transact(ctx, func(tx *storage.DB) error {
			want, err = tx.NextStreamPos(ctx, 1)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		deadline := time.After(5 * time.Second)
		for {
			select {
			case p := <-got:
				if p >= want {
					return
				}
			case <-deadline:
				t.Fatalf("position %d from the other connection never arrived", want)
			}
		}
	})
}
