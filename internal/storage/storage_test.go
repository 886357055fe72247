package storage_test

import (
	"context"
	"errors"
	"fmt"
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

// TestConcurrentTransactionsFailIndependently checks that a failing
// transaction rolls back only its own writes even when the engine batches
// several callers into one commit.
func TestConcurrentTransactionsFailIndependently(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const n = 40
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = db.Transact(ctx, func(tx *storage.DB) error {
					if _, err := tx.Exec(ctx, `INSERT INTO server_meta (key, value) VALUES ($1, 'v')`, fmt.Sprintf("k%d", i)); err != nil {
						return err
					}
					if _, err := tx.NextStreamPos(ctx, 1); err != nil {
						return err
					}
					if i%2 == 1 {
						return errors.New("odd callers fail")
					}
					return nil
				})
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if (i%2 == 1) != (err != nil) {
				t.Fatalf("caller %d: err = %v", i, err)
			}
		}
		var rows int
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM server_meta`).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		head, _ := db.StreamHead(ctx)
		if rows != n/2 || head != n/2 {
			t.Fatalf("rows = %d, head = %d, want %d each: a failed caller leaked writes or took others down", rows, head, n/2)
		}
	})
}

func TestPanicInTransactionReachesCallerAndRollsBack(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		func() {
			defer func() {
				if recover() == nil {
					t.Fatal("panic inside Transact was swallowed")
				}
			}()
			_ = db.Transact(ctx, func(tx *storage.DB) error {
				tx.Exec(ctx, `INSERT INTO server_meta (key, value) VALUES ('p', 'v')`)
				panic("boom")
			})
		}()
		var rows int
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM server_meta`).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if rows != 0 {
			t.Fatal("writes of a panicking transaction were committed")
		}
		// the database still works afterwards
		if err := db.Transact(ctx, func(tx *storage.DB) error { _, err := tx.NextStreamPos(ctx, 1); return err }); err != nil {
			t.Fatalf("transaction after panic: %v", err)
		}
	})
}

func TestQueryStrings(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, err := db.Exec(ctx, `CREATE TABLE qs (n BIGINT NOT NULL, v TEXT NOT NULL)`); err != nil {
			t.Fatal(err)
		}
		for i, v := range []string{"b", "a", "c"} {
			if _, err := db.Exec(ctx, `INSERT INTO qs (n, v) VALUES ($1, $2)`, i, v); err != nil {
				t.Fatal(err)
			}
		}
		got, err := db.QueryStrings(ctx, `SELECT v FROM qs WHERE n >= $1 ORDER BY n`, 1)
		if err != nil || fmt.Sprint(got) != "[a c]" {
			t.Fatalf("QueryStrings = %v, %v; want [a c] in row order", got, err)
		}
		if none, err := db.QueryStrings(ctx, `SELECT v FROM qs WHERE n > 9`); err != nil || len(none) != 0 {
			t.Fatalf("no rows: %v, %v", none, err)
		}
		if _, err := db.QueryStrings(ctx, `SELECT v FROM nowhere`); err == nil {
			t.Fatal("a failing query reported no error")
		}
	})
}
