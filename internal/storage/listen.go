package storage

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// StreamChannel is the Postgres NOTIFY channel carrying stream positions.
const StreamChannel = "praxis_stream"

// FollowStream calls fn with stream positions committed by any process on
// this database until ctx ends. On Postgres it LISTENs on a dedicated
// connection (reconnecting with backoff); on every engine a slow poll of
// the stream head covers a lost notification. Callers use it only to wake
// waiters: fn receives positions, never data.
func (db *DB) FollowStream(ctx context.Context, poll time.Duration, fn func(pos int64)) {
	if db.shared.engine == Postgres {
		go db.listenPostgres(ctx, fn)
	}
	if poll <= 0 {
		return
	}
	go func() {
		t := time.NewTicker(poll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if pos, err := db.StreamHead(ctx); err == nil {
					fn(pos)
				}
			}
		}
	}()
}

func (db *DB) listenPostgres(ctx context.Context, fn func(pos int64)) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := db.listenOnce(ctx, fn)
		if ctx.Err() != nil {
			return
		}
		slog.WarnContext(ctx, "stream listener lost its connection; reconnecting", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (db *DB) listenOnce(ctx context.Context, fn func(pos int64)) error {
	conn, err := pgx.Connect(ctx, db.shared.dsn)
	if err != nil {
		return fmt.Errorf("connect listener: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+StreamChannel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if pos, err := strconv.ParseInt(n.Payload, 10, 64); err == nil {
			fn(pos)
		}
	}
}
