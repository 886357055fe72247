// Package storagetest runs a test against every SQL engine: SQLite always,
// PostgreSQL when PRAXIS_TEST_POSTGRES holds a DSN of a server on which the
// test may create databases (.ci/run starts such a cluster).
package storagetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"praxis/internal/storage"
)

// EnvPostgres names the environment variable with the test cluster's DSN.
const EnvPostgres = "PRAXIS_TEST_POSTGRES"

// Engines lists the engines a test runs on, each with a function that
// returns a DSN for a fresh, empty database.
func Engines(t testing.TB) map[string]func(testing.TB) string {
	out := map[string]func(testing.TB) string{
		"sqlite": func(t testing.TB) string {
			return "sqlite:" + filepath.Join(t.TempDir(), "praxis.db")
		},
	}
	if os.Getenv(EnvPostgres) != "" {
		out["postgres"] = FreshPostgres
	}
	return out
}

// Run calls fn once per engine with a migrated, empty database.
func Run(t *testing.T, fn func(t *testing.T, db *storage.DB)) {
	t.Helper()
	for name, dsn := range Engines(t) {
		t.Run(name, func(t *testing.T) {
			db := Open(t, dsn(t))
			fn(t, db)
		})
	}
	if os.Getenv(EnvPostgres) == "" {
		t.Logf("postgres variant skipped: set %s to a DSN (.ci/run does) to run it", EnvPostgres)
	}
}

// Open opens and migrates dsn, closing it when the test ends.
func Open(t testing.TB, dsn string) *storage.DB {
	t.Helper()
	ctx := context.Background()
	db, err := storage.Open(ctx, dsn)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return db
}

// FreshPostgres creates a new database on the test cluster and drops it
// when the test ends.
func FreshPostgres(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvPostgres)
	if base == "" {
		t.Skipf("postgres: %s not set", EnvPostgres)
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	defer admin.Close()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "praxis_test_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(`CREATE DATABASE ` + name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		a, err := sql.Open("pgx", base)
		if err != nil {
			return
		}
		defer a.Close()
		_, _ = a.Exec(`DROP DATABASE IF EXISTS ` + name + ` WITH (FORCE)`)
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("postgres dsn: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}
