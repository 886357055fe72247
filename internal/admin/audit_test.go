package admin

import (
	"context"
	"fmt"
	"testing"
	"time"

	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
)

func appendN(t *testing.T, l *AuditLog, n int) {
	t.Helper()
	for i := range n {
		if _, err := l.Append(t.Context(), nil, Record{Actor: "@admin:hs", Action: "user.create", Target: "@u" + string(rune('a'+i)) + ":hs", Params: map[string]any{"admin": i%2 == 0}}); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
}

func TestAuditChainDetectsTampering(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		for _, tc := range []struct {
			name    string
			tamper  string // SQL run after 5 appends
			wantBad int64
		}{
			{"untouched chain verifies", "", -1},
			{"edited target", `UPDATE audit_log SET target = '@mallory:hs' WHERE seq = 3`, 3},
			{"edited params", `UPDATE audit_log SET params = '{"admin":false}' WHERE seq = 1`, 1},
			{"overwritten hash", `UPDATE audit_log SET hash = 'ffff' WHERE seq = 2`, 2},
			{"deleted middle row", `DELETE FROM audit_log WHERE seq = 4`, 4},
			{"deleted last row", `DELETE FROM audit_log WHERE seq = 5`, 0},
			{"deleted first row", `DELETE FROM audit_log WHERE seq = 1`, 1},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ctx := context.Background()
				for _, q := range []string{`DELETE FROM audit_log`, `UPDATE audit_head SET seq = 0, hash = ''`} {
					if _, err := db.Exec(ctx, q); err != nil {
						t.Fatal(err)
					}
				}
				l := NewAuditLog(db)
				appendN(t, l, 5)
				if tc.tamper != "" {
					if _, err := db.Exec(ctx, tc.tamper); err != nil {
						t.Fatalf("tamper: %v", err)
					}
				}
				v, err := l.Verify(ctx)
				if err != nil {
					t.Fatalf("verify: %v", err)
				}
				if tc.wantBad < 0 {
					if !v.OK || v.Rows != 5 || v.HeadSeq != 5 {
						t.Fatalf("verify = %+v, want ok with 5 rows", v)
					}
					return
				}
				if v.OK {
					t.Fatalf("verify after %q = ok, want a failure", tc.tamper)
				}
				if v.BadSeq != tc.wantBad {
					t.Errorf("bad seq = %d (%s), want %d", v.BadSeq, v.Problem, tc.wantBad)
				}
			})
		}
	})
}

func TestAuditAppendJoinsTransaction(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		l := NewAuditLog(db)
		err := db.Transact(ctx, func(tx *storage.DB) error {
			if _, err := l.Append(ctx, tx, Record{Actor: "@a:hs", Action: "x", Target: "t"}); err != nil {
				return err
			}
			return context.Canceled // the action failed: its audit row must go too
		})
		if err == nil {
			t.Fatal("transaction did not fail")
		}
		entries, _, err := l.List(ctx, AuditQuery{})
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 0 {
			t.Fatalf("rolled-back action left %d audit rows", len(entries))
		}
		appendN(t, l, 1)
		if v, err := l.Verify(ctx); err != nil || !v.OK || v.Rows != 1 {
			t.Fatalf("verify after rollback = %+v, %v; want ok with 1 row", v, err)
		}
	})
}

func TestAuditList(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		l := NewAuditLog(db)
		clock := time.UnixMilli(1_000_000)
		l.now = func() time.Time { return clock }
		for i, action := range []string{"user.create", "user.deactivate", "user.create", "token.create", "user.create"} {
			clock = time.UnixMilli(1_000_000 + int64(i)*1000)
			if _, err := l.Append(ctx, nil, Record{Actor: "@admin:hs", Action: action, Target: "t"}); err != nil {
				t.Fatal(err)
			}
		}
		seqs := func(es []Entry) []int64 {
			out := []int64{}
			for _, e := range es {
				out = append(out, e.Seq)
			}
			return out
		}
		for _, tc := range []struct {
			name     string
			q        AuditQuery
			want     []int64
			wantNext int64
		}{
			{"all", AuditQuery{}, []int64{1, 2, 3, 4, 5}, 0},
			{"first page", AuditQuery{Limit: 2}, []int64{1, 2}, 3},
			{"second page", AuditQuery{Limit: 2, From: 3}, []int64{3, 4}, 5},
			{"backwards", AuditQuery{Limit: 2, Backwards: true}, []int64{5, 4}, 3},
			{"backwards from", AuditQuery{Limit: 2, Backwards: true, From: 3}, []int64{3, 2}, 1},
			{"by action", AuditQuery{Action: "user.create"}, []int64{1, 3, 5}, 0},
			{"since", AuditQuery{SinceTS: 1_003_000}, []int64{4, 5}, 0},
			{"until", AuditQuery{UntilTS: 1_001_000}, []int64{1, 2}, 0},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, next, err := l.List(ctx, tc.q)
				if err != nil {
					t.Fatal(err)
				}
				if g := seqs(got); len(g) != len(tc.want) || next != tc.wantNext || func() bool {
					for i := range g {
						if g[i] != tc.want[i] {
							return true
						}
					}
					return false
				}() {
					t.Errorf("List(%+v) = %v next %d, want %v next %d", tc.q, g, next, tc.want, tc.wantNext)
				}
			})
		}
	})
}

// TestAuditConcurrentAppends: appenders on many connections (as several
// processes on one Postgres would be) must queue on the head, not fork
// the chain.
func TestAuditConcurrentAppends(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		l := NewAuditLog(db)
		const workers, each = 8, 10
		errs := make(chan error, workers)
		for w := range workers {
			go func() {
				for i := range each {
					if _, err := l.Append(ctx, nil, Record{Actor: "@a:hs", Action: "x", Target: fmt.Sprintf("%d/%d", w, i)}); err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for range workers {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		v, err := l.Verify(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !v.OK || v.Rows != workers*each || v.HeadSeq != workers*each {
			t.Fatalf("after concurrent appends verify = %+v, want ok with %d rows", v, workers*each)
		}
	})
}
