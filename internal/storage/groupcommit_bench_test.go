package storage_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"

	"praxis/internal/storage"
)

// BenchmarkGroupCommitSmallTransactions is the shape of a send: many
// callers, each a short transaction of a few statements, on SQLite with
// synchronous=FULL.
func BenchmarkGroupCommitSmallTransactions(b *testing.B) {
	ctx := context.Background()
	db, err := storage.Open(ctx, "sqlite://"+filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(ctx, `CREATE TABLE bench (id BIGINT PRIMARY KEY, v TEXT NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := next.Add(1)
			err := db.Transact(ctx, func(tx *storage.DB) error {
				if _, err := tx.Exec(ctx, `INSERT INTO bench (id, v) VALUES ($1, $2)`, id, "x"); err != nil {
					return err
				}
				var v string
				return tx.QueryRow(ctx, `SELECT v FROM bench WHERE id = $1`, id).Scan(&v)
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}
