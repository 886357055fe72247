// Package storage is the database layer shared by every domain package: one
// SQL text for SQLite and PostgreSQL behind a small dialect shim, embedded
// migrations, transactions that hand out a transaction-bound *DB, and the
// global stream position.
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "github.com/mattn/go-sqlite3"    // registers the "sqlite3" driver
)

// Engine names the SQL engine behind a DB.
type Engine int

const (
	SQLite Engine = iota + 1
	Postgres
)

func (e Engine) String() string {
	switch e {
	case SQLite:
		return "sqlite"
	case Postgres:
		return "postgres"
	}
	return "unknown"
}

// DB is either the whole database or, inside Transact, one transaction.
// Domain code takes a *DB and does not care which: a store method called
// with a transaction joins it.
type DB struct {
	shared *shared
	tx     *sql.Tx
	hooks  *[]func() // post-commit hooks of the enclosing transaction
}

type shared struct {
	engine Engine
	// write is the only pool that may write. On SQLite it holds exactly one
	// connection, which makes SQLite's single-writer rule explicit instead
	// of a source of SQLITE_BUSY errors under load.
	write *sql.DB
	// read serves queries outside transactions. On SQLite (WAL) readers run
	// in parallel with the writer; on Postgres it is the same pool as write.
	read *sql.DB
	dsn  string

	rebound sync.Map // query text → engine-specific text

	// group batches concurrent SQLite transactions into one commit.
	group *groupCommitter
}

// Open connects to dsn: "sqlite:PATH" (or a bare path ending in .db) or a
// "postgres://" / "postgresql://" URL.
func Open(ctx context.Context, dsn string) (*DB, error) {
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return openPostgres(ctx, dsn)
	case strings.HasPrefix(dsn, "sqlite:"):
		return openSQLite(ctx, strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "//"))
	case strings.HasSuffix(dsn, ".db"):
		return openSQLite(ctx, dsn)
	}
	return nil, fmt.Errorf("database %q: want sqlite:PATH or postgres://…", redactDSN(dsn))
}

func openSQLite(ctx context.Context, path string) (*DB, error) {
	if path == "" {
		return nil, errors.New("database: empty sqlite path")
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create database directory: %w", err)
		}
	}
	// synchronous=FULL: medical data, and power loss happens. Durability is
	// bought back in throughput by group commit, not by weaker syncing.
	// The statement cache spares re-preparing the same few hundred queries
	// (preparing was a third of the SQL CPU of /sync).
	params := "_journal_mode=WAL&_synchronous=FULL&_foreign_keys=on&_busy_timeout=10000&_txlock=immediate&cache=private&_stmt_cache_size=256"
	write, err := sql.Open("sqlite3", "file:"+path+"?"+params)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	if err := write.PingContext(ctx); err != nil {
		write.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	read, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_foreign_keys=on&_busy_timeout=10000&_query_only=1&cache=private&_stmt_cache_size=256")
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("open sqlite reader %s: %w", path, err)
	}
	read.SetMaxOpenConns(8)
	read.SetMaxIdleConns(8)
	sh := &shared{engine: SQLite, write: write, read: read, dsn: "sqlite:" + path}
	sh.group = newGroupCommitter(sh)
	return &DB{shared: sh}, nil
}

func openPostgres(ctx context.Context, dsn string) (*DB, error) {
	pool, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres %s: %w", redactDSN(dsn), err)
	}
	pool.SetMaxOpenConns(32)
	pool.SetMaxIdleConns(16)
	if err := pool.PingContext(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect postgres %s: %w", redactDSN(dsn), err)
	}
	return &DB{shared: &shared{engine: Postgres, write: pool, read: pool, dsn: dsn}}, nil
}

// redactDSN hides a password in a DSN so that it can be logged.
func redactDSN(dsn string) string {
	at := strings.LastIndex(dsn, "@")
	scheme := strings.Index(dsn, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return dsn
	}
	creds := dsn[scheme+3 : at]
	if i := strings.Index(creds, ":"); i >= 0 {
		return dsn[:scheme+3] + creds[:i] + ":***" + dsn[at:]
	}
	return dsn
}

// Engine reports the SQL engine.
func (db *DB) Engine() Engine { return db.shared.engine }

// DSN returns the connection string the database was opened with.
func (db *DB) DSN() string { return db.shared.dsn }

// InTx reports whether db is bound to a transaction.
func (db *DB) InTx() bool { return db.tx != nil }

// Close closes the pools. Only the root DB may be closed.
func (db *DB) Close() error {
	if db.tx != nil {
		return errors.New("storage: Close on a transaction")
	}
	if db.shared.group != nil {
		db.shared.group.close()
	}
	err := db.shared.write.Close()
	if db.shared.read != db.shared.write {
		err = errors.Join(err, db.shared.read.Close())
	}
	return err
}

// rebind turns "$1…$n" placeholders into the engine's form. SQLite binds
// "$N" by order of appearance rather than by number, so "$2 … $1" would
// silently swap arguments; "?N" is bound by number.
func (db *DB) rebind(query string) string {
	if db.shared.engine != SQLite {
		return query
	}
	if q, ok := db.shared.rebound.Load(query); ok {
		return q.(string)
	}
	q := rebindSQLite(query)
	db.shared.rebound.Store(query, q)
	return q
}

func rebindSQLite(query string) string {
	var b strings.Builder
	b.Grow(len(query))
	inString := false
	for i := 0; i < len(query); i++ {
		c := query[i]
		if c == '\'' {
			inString = !inString
		}
		if c == '$' && !inString && i+1 < len(query) && query[i+1] >= '0' && query[i+1] <= '9' {
			b.WriteByte('?')
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// Exec runs a statement. Outside a transaction it goes to the write pool.
func (db *DB) Exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	q := db.rebind(query)
	if db.tx != nil {
		return db.tx.ExecContext(db.txContext(ctx), q, args...)
	}
	return db.shared.write.ExecContext(ctx, q, args...)
}

// Query runs a query; inside a transaction it sees the transaction's writes.
func (db *DB) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	q := db.rebind(query)
	if db.tx != nil {
		return db.tx.QueryContext(db.txContext(ctx), q, args...)
	}
	return db.shared.read.QueryContext(ctx, q, args...)
}

// QueryRow runs a query expected to return at most one row.
func (db *DB) QueryRow(ctx context.Context, query string, args ...any) *sql.Row {
	q := db.rebind(query)
	if db.tx != nil {
		return db.tx.QueryRowContext(db.txContext(ctx), q, args...)
	}
	return db.shared.read.QueryRowContext(ctx, q, args...)
}

// QueryStrings runs a query whose rows are one text column (IDs, mostly)
// and returns the values in row order.
func (db *DB) QueryStrings(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := db.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// QueryRowWrite is QueryRow on the write pool, for "INSERT … RETURNING" and
// for reads that must see the latest commit outside a transaction.
func (db *DB) QueryRowWrite(ctx context.Context, query string, args ...any) *sql.Row {
	q := db.rebind(query)
	if db.tx != nil {
		return db.tx.QueryRowContext(db.txContext(ctx), q, args...)
	}
	return db.shared.write.QueryRowContext(ctx, q, args...)
}

// Transact runs fn in a transaction and commits if fn returns nil. Called
// on a transaction it simply runs fn inside it. Hooks registered with
// AfterCommit run after a successful commit, in order.
//
// Inside fn, write only through tx: on SQLite the outer DB's single write
// connection is held by the transaction, so using it would deadlock.
func (db *DB) Transact(ctx context.Context, fn func(tx *DB) error) (err error) {
	if db.tx != nil {
		return fn(db)
	}
	if db.shared.group != nil {
		return db.shared.group.run(ctx, fn)
	}
	sqlTx, err := db.shared.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	var hooks []func()
	tx := &DB{shared: db.shared, tx: sqlTx, hooks: &hooks}
	defer func() {
		if p := recover(); p != nil {
			_ = sqlTx.Rollback()
			panic(p)
		}
	}()
	if err := fn(tx); err != nil {
		_ = sqlTx.Rollback()
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	for _, h := range hooks {
		h()
	}
	return nil
}

// AfterCommit registers fn to run once the enclosing transaction commits.
// Outside a transaction fn runs immediately.
func (db *DB) AfterCommit(fn func()) {
	if db.hooks == nil {
		fn()
		return
	}
	*db.hooks = append(*db.hooks, fn)
}

// NextStreamPos reserves k positions on the global stream and returns the
// highest. Call it as the last statement before commit: the row lock it
// takes serialises committers from here on, so positions become visible in
// order on both engines and a reader never sees position n+1 before n.
func (db *DB) NextStreamPos(ctx context.Context, k int64) (int64, error) {
	if db.tx == nil {
		return 0, errors.New("storage: NextStreamPos outside a transaction")
	}
	var pos int64
	q := `UPDATE stream_head SET pos = pos + $1 RETURNING pos`
	if db.shared.engine == Postgres {
		// pg_notify inside the transaction is delivered on commit, so other
		// praxis processes on this database wake exactly when the position
		// becomes visible (ARCHITECTURE §1.4).
		q = `WITH u AS (UPDATE stream_head SET pos = pos + $1 RETURNING pos)
			SELECT pos FROM u, LATERAL (SELECT pg_notify('` + StreamChannel + `', u.pos::text)) n`
	}
	if err := db.QueryRow(ctx, q, k).Scan(&pos); err != nil {
		return 0, fmt.Errorf("advance stream: %w", err)
	}
	return pos, nil
}

// StreamHead returns the latest committed stream position.
func (db *DB) StreamHead(ctx context.Context) (int64, error) {
	var pos int64
	if err := db.QueryRow(ctx, `SELECT pos FROM stream_head`).Scan(&pos); err != nil {
		return 0, fmt.Errorf("read stream head: %w", err)
	}
	return pos, nil
}

// LockRoom serialises writers of one room. SQLite transactions are already
// exclusive (BEGIN IMMEDIATE); Postgres locks the room's row.
func (db *DB) LockRoom(ctx context.Context, roomID string) error {
	if db.tx == nil {
		return errors.New("storage: LockRoom outside a transaction")
	}
	if db.shared.engine == SQLite {
		return nil
	}
	var one int
	err := db.QueryRow(ctx, `SELECT 1 FROM rooms WHERE room_id = $1 FOR UPDATE`, roomID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil // a room being created has no row yet; its ID is fresh
	}
	if err != nil {
		return fmt.Errorf("lock room %s: %w", roomID, err)
	}
	return nil
}

// IsUniqueViolation reports whether err is a unique-constraint failure on
// either engine.
func IsUniqueViolation(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "UNIQUE constraint failed") || strings.Contains(s, "SQLSTATE 23505")
}

// In expands a "$IN" marker in query into "$k,$k+1,…" for the given values,
// numbering after the first `after` parameters, so that batch reads are one
// round trip: In(`… WHERE id IN ($IN)`, 0, ids).
func In[T any](query string, after int, values []T) (string, []any) {
	var b strings.Builder
	args := make([]any, len(values))
	for i, v := range values {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "$%d", after+i+1)
		args[i] = v
	}
	if len(values) == 0 {
		b.WriteString("NULL")
	}
	return strings.Replace(query, "$IN", b.String(), 1), args
}
