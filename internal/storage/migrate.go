package storage

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"strconv"
	"strings"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// SchemaCompat is the oldest schema version this binary can run against.
// A database migrated by a newer binary records its own compat floor; if
// that floor is above what this binary knows, the binary refuses to start
// rather than misread data.
const SchemaCompat = 1

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	seen := map[int]string{}
	for _, e := range entries {
		name := e.Name()
		num, _, ok := strings.Cut(name, "_")
		if !ok {
			return nil, fmt.Errorf("migration %s: name must be NNNN_what.sql", name)
		}
		v, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("migration %s: %w", name, err)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s share version %d", prev, name, v)
		}
		seen[v] = name
		body, err := migrationFiles.ReadFile("migrations/" + name)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: name, sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// LatestSchemaVersion is the version the embedded migrations lead to.
func LatestSchemaVersion() int {
	ms, err := loadMigrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

// Migrate brings the schema up to date. Several processes may call it at
// once against one Postgres: an advisory lock lets one migrate while the
// others wait and then find nothing to do.
func (db *DB) Migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return fmt.Errorf("load migrations: %w", err)
	}
	if db.shared.engine == Postgres {
		conn, err := db.shared.write.Conn(ctx)
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		defer conn.Close()
		// 0x70726178 = "prax"
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(1886544248)`); err != nil {
			return fmt.Errorf("migrate: take advisory lock: %w", err)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(1886544248)`)
	}
	if _, err := db.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version BIGINT PRIMARY KEY, name TEXT NOT NULL, compat BIGINT NOT NULL, applied_ts BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	applied := map[int]bool{}
	maxCompat := 0
	rows, err := db.Query(ctx, `SELECT version, compat FROM schema_migrations`)
	if err != nil {
		return fmt.Errorf("read schema_migrations: %w", err)
	}
	for rows.Next() {
		var v, c int
		if err := rows.Scan(&v, &c); err != nil {
			rows.Close()
			return err
		}
		applied[v] = true
		maxCompat = max(maxCompat, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	latest := 0
	if len(ms) > 0 {
		latest = ms[len(ms)-1].version
	}
	if maxCompat > latest {
		return fmt.Errorf("database schema needs at least version %d of this software's schema, which only knows up to %d: run a newer praxis", maxCompat, latest)
	}
	for _, m := range ms {
		if applied[m.version] {
			continue
		}
		stmts := m.statements(db.shared.engine)
		err := db.Transact(ctx, func(tx *DB) error {
			for _, s := range stmts {
				if _, err := tx.Exec(ctx, s); err != nil {
					return fmt.Errorf("%w\nstatement: %s", err, s)
				}
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, compat, applied_ts) VALUES ($1, $2, $3, $4)`,
				m.version, m.name, SchemaCompat, nowMillis())
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
		slog.InfoContext(ctx, "schema migrated", "migration", m.name, "engine", db.shared.engine.String())
	}
	return nil
}

// statements splits a migration into statements for one engine. A line
// "-- only: sqlite" (or postgres) makes the next statement engine-specific;
// the macros @ID (an auto-numbered primary key) and @BYTES (a binary
// column) cover the type names that differ.
func (m migration) statements(engine Engine) []string {
	var out []string
	var cur strings.Builder
	only := ""
	flush := func() {
		s := strings.TrimSpace(cur.String())
		cur.Reset()
		if s != "" && (only == "" || only == engine.String()) {
			out = append(out, expandMacros(s, engine))
		}
		only = ""
	}
	for _, line := range strings.Split(m.sql, "\n") {
		trimmed := strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(trimmed, "-- only:"); ok {
			only = strings.TrimSpace(rest)
			continue
		}
		if strings.HasPrefix(trimmed, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(trimmed, ";") {
			flush()
		}
	}
	flush()
	return out
}

func expandMacros(s string, engine Engine) string {
	if engine == SQLite {
		s = strings.ReplaceAll(s, "@ID", "INTEGER PRIMARY KEY")
		s = strings.ReplaceAll(s, "@BYTES", "BLOB")
	} else {
		s = strings.ReplaceAll(s, "@ID", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
		s = strings.ReplaceAll(s, "@BYTES", "BYTEA")
	}
	return s
}
