package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
)

// groupCommitter turns concurrent SQLite transactions into one commit.
// With synchronous=FULL every commit costs an fsync; one writer at a time
// would cap throughput at one fsync per event. Instead a single goroutine
// owns the write connection, drains whatever transactions are waiting, runs
// each inside its own SAVEPOINT (so one caller's error rolls back only its
// own writes), and commits the batch with one fsync. A caller returns only
// after the batch is durable, so an acknowledged write survives a crash.
type groupCommitter struct {
	shared *shared
	reqs   chan *groupReq
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once

	// The savepoint statements, prepared once: every caller runs two of
	// them, and a statement without arguments would otherwise be compiled
	// anew each time (sqlite3_exec).
	prepOnce                       sync.Once
	savepoint, release, rollbackTo *sql.Stmt
}

type groupReq struct {
	ctx   context.Context
	fn    func(tx *DB) error
	hooks []func()
	done  chan error
	// panicked carries a panic from fn back to the caller's goroutine.
	panicked any
}

// maxGroup bounds a batch so that one commit never holds callers for long.
const maxGroup = 128

var errClosed = errors.New("storage: database closed")

func newGroupCommitter(sh *shared) *groupCommitter {
	g := &groupCommitter{shared: sh, reqs: make(chan *groupReq, maxGroup), stop: make(chan struct{})}
	g.wg.Add(1)
	go g.loop()
	return g
}

func (g *groupCommitter) run(ctx context.Context, fn func(tx *DB) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	req := &groupReq{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case g.reqs <- req:
	case <-g.stop:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued, wait for the outcome even if ctx ends: the write may
	// already be part of a batch being committed.
	err := <-req.done
	if req.panicked != nil {
		panic(req.panicked)
	}
	if err == nil {
		for _, h := range req.hooks {
			h()
		}
	}
	return err
}

func (g *groupCommitter) close() {
	g.once.Do(func() {
		close(g.stop)
		g.wg.Wait()
		for _, st := range []*sql.Stmt{g.savepoint, g.release, g.rollbackTo} {
			if st != nil {
				st.Close()
			}
		}
	})
}

func (g *groupCommitter) loop() {
	defer g.wg.Done()
	for {
		var first *groupReq
		select {
		case first = <-g.reqs:
		case <-g.stop:
			// Fail whatever is still queued rather than leave callers hanging.
			for {
				select {
				case r := <-g.reqs:
					r.done <- errClosed
				default:
					return
				}
			}
		}
		batch := []*groupReq{first}
	drain:
		for len(batch) < maxGroup {
			select {
			case r := <-g.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		g.commit(batch)
	}
}

func (g *groupCommitter) commit(batch []*groupReq) {
	// before the transaction: it holds the only write connection
	g.prepare()
	sqlTx, err := g.shared.write.BeginTx(context.Background(), nil)
	if err != nil {
		for _, r := range batch {
			r.done <- fmt.Errorf("begin transaction: %w", err)
		}
		return
	}
	var ok []*groupReq
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.done <- err
			continue
		}
		if err := g.runOne(sqlTx, r); err != nil {
			r.done <- err
			continue
		}
		ok = append(ok, r)
	}
	if len(ok) == 0 {
		_ = sqlTx.Rollback()
		return
	}
	err = sqlTx.Commit()
	if err != nil {
		err = fmt.Errorf("commit: %w", err)
	}
	for _, r := range ok {
		r.done <- err
	}
}

// prepare prepares the savepoint statements on the write pool (outside any
// transaction: SQLite's pool has one write connection); on failure they
// stay nil and runOne sends the SQL text instead.
func (g *groupCommitter) prepare() {
	g.prepOnce.Do(func() {
		bg := context.Background()
		var err error
		prep := func(q string) *sql.Stmt {
			if err != nil {
				return nil
			}
			var st *sql.Stmt
			st, err = g.shared.write.PrepareContext(bg, q)
			return st
		}
		sp, rel, rb := prep(`SAVEPOINT praxis_caller`), prep(`RELEASE praxis_caller`), prep(`ROLLBACK TO praxis_caller`)
		if err == nil {
			g.savepoint, g.release, g.rollbackTo = sp, rel, rb
		}
	})
}

// execIn runs a prepared savepoint statement (or its text) in sqlTx.
func execIn(sqlTx *sql.Tx, st *sql.Stmt, text string) error {
	bg := context.Background()
	var err error
	if st != nil {
		_, err = sqlTx.StmtContext(bg, st).ExecContext(bg)
	} else {
		_, err = sqlTx.ExecContext(bg, text)
	}
	return err
}

// runOne runs one caller's fn inside a savepoint of the batch transaction.
func (g *groupCommitter) runOne(sqlTx *sql.Tx, r *groupReq) (err error) {
	if err := execIn(sqlTx, g.savepoint, `SAVEPOINT praxis_caller`); err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	tx := &DB{shared: g.shared, tx: sqlTx, hooks: &r.hooks}
	defer func() {
		if p := recover(); p != nil {
			r.panicked = p
			err = fmt.Errorf("transaction panicked: %v", p)
		}
		if err != nil {
			r.hooks = nil
			_ = execIn(sqlTx, g.rollbackTo, `ROLLBACK TO praxis_caller`)
		}
		_ = execIn(sqlTx, g.release, `RELEASE praxis_caller`)
	}()
	return r.fn(tx)
}

// txContext drops cancellation for statements inside a SQLite transaction:
// an interrupted statement makes SQLite roll back the whole transaction,
// which in a group commit would take other callers' writes with it.
func (db *DB) txContext(ctx context.Context) context.Context {
	if db.shared.engine == SQLite {
		return context.WithoutCancel(ctx)
	}
	return ctx
}
