package federation

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"praxis/internal/storage"
)

// Allowlist is the partner allowlist: the servers this node federates
// with. It gates every path — inbound requests by their X-Matrix origin,
// outbound connections, invites and joins, server names inside events and
// remote media. The config's federation.allowed_servers is the base;
// runtime changes (praxisctl federation allow|deny) are stored in the
// database and override it, so they survive restarts and reach every
// process on a shared Postgres within one refresh.
type Allowlist struct {
	db   *storage.DB
	base []string
	own  string
	now  func() time.Time

	// refreshing lets one caller re-read a stale list while the others
	// use the previous one
	refreshing atomic.Bool

	mu        sync.RWMutex
	open      bool // "*": open federation
	servers   map[string]bool
	refreshed time.Time
}

// refreshEvery bounds how stale another process's allowlist change can
// be on this one.
const refreshEvery = 5 * time.Second

// NewAllowlist returns the allowlist of ownServer: base from the config,
// overridden by what the database holds.
func NewAllowlist(ctx context.Context, db *storage.DB, ownServer string, base []string) (*Allowlist, error) {
	a := &Allowlist{db: db, base: base, own: ownServer, now: time.Now}
	if err := a.Refresh(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// Refresh re-reads the runtime changes.
func (a *Allowlist) Refresh(ctx context.Context) error {
	servers := map[string]bool{}
	open := false
	for _, s := range a.base {
		if s == "*" {
			open = true
			continue
		}
		servers[strings.ToLower(s)] = true
	}
	if a.db != nil {
		rows, err := a.db.Query(ctx, `SELECT server_name, allowed FROM federation_allowlist`)
		if err != nil {
			return fmt.Errorf("read federation allowlist: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			var allowed bool
			if err := rows.Scan(&name, &allowed); err != nil {
				return err
			}
			if name == "*" {
				open = allowed
				continue
			}
			servers[name] = allowed
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read federation allowlist: %w", err)
		}
	}
	a.mu.Lock()
	a.open, a.servers, a.refreshed = open, servers, a.now()
	a.mu.Unlock()
	return nil
}

// Allowed reports whether this node federates with server. Our own name
// is never "allowed": nothing goes out to ourselves over federation.
func (a *Allowlist) Allowed(server string) bool {
	if a == nil {
		return false
	}
	server = strings.ToLower(server)
	if server == "" || server == a.own {
		return false
	}
	a.mu.RLock()
	stale := a.db != nil && a.now().Sub(a.refreshed) > refreshEvery
	allowed, listed := a.servers[server]
	open := a.open
	a.mu.RUnlock()
	if stale && a.refreshing.CompareAndSwap(false, true) {
		defer a.refreshing.Store(false)
		// A failed refresh keeps the last known list: closing federation
		// because the database hiccuped would be worse than a few seconds
		// of staleness. It is logged.
		if err := a.Refresh(context.Background()); err != nil {
			slog.Warn("refresh federation allowlist", "err", err)
		} else {
			a.mu.RLock()
			allowed, listed = a.servers[server]
			open = a.open
			a.mu.RUnlock()
		}
	}
	if listed {
		return allowed
	}
	return open
}

// Enabled reports whether federation is on at all (some server may be
// allowed).
func (a *Allowlist) Enabled() bool {
	if a == nil {
		return false
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.open {
		return true
	}
	for _, ok := range a.servers {
		if ok {
			return true
		}
	}
	return false
}

// AllowedServerOfID reports whether the server part of a Matrix ID
// (@user:server, !room:server, $event:server) is ours or allowed.
func (a *Allowlist) AllowedServerOfID(id string) bool {
	_, server, ok := strings.Cut(id, ":")
	if !ok {
		return false
	}
	return server == a.own || a.Allowed(server)
}

// Entry is one line of the effective allowlist.
type Entry struct {
	ServerName string `json:"server_name"`
	Allowed    bool   `json:"allowed"`
	// Source is "config" or "runtime".
	Source    string `json:"source"`
	ChangedBy string `json:"changed_by,omitempty"`
	ChangedTS int64  `json:"changed_ts,omitempty"`
}

// List returns the effective allowlist, sorted by server name.
func (a *Allowlist) List(ctx context.Context) ([]Entry, error) {
	byName := map[string]Entry{}
	for _, s := range a.base {
		byName[strings.ToLower(s)] = Entry{ServerName: strings.ToLower(s), Allowed: true, Source: "config"}
	}
	rows, err := a.db.Query(ctx, `SELECT server_name, allowed, changed_by, changed_ts FROM federation_allowlist`)
	if err != nil {
		return nil, fmt.Errorf("read federation allowlist: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		e := Entry{Source: "runtime"}
		if err := rows.Scan(&e.ServerName, &e.Allowed, &e.ChangedBy, &e.ChangedTS); err != nil {
			return nil, err
		}
		byName[e.ServerName] = e
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(byName))
	for _, e := range byName {
		out = append(out, e)
	}
	slices.SortFunc(out, func(x, y Entry) int { return strings.Compare(x.ServerName, y.ServerName) })
	return out, nil
}

// Set allows or denies server at runtime, on behalf of actor (an admin's
// user ID), inside tx so the caller can audit in the same transaction.
// The change takes effect in this process at commit and is logged.
func (a *Allowlist) Set(ctx context.Context, tx *storage.DB, server string, allowed bool, actor string) error {
	server = strings.ToLower(strings.TrimSpace(server))
	if server == "" {
		return fmt.Errorf("empty server name")
	}
	if _, err := tx.Exec(ctx, `INSERT INTO federation_allowlist (server_name, allowed, changed_by, changed_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (server_name) DO UPDATE SET allowed = excluded.allowed, changed_by = excluded.changed_by, changed_ts = excluded.changed_ts`,
		server, allowed, actor, a.now().UnixMilli()); err != nil {
		return fmt.Errorf("change federation allowlist: %w", err)
	}
	tx.AfterCommit(func() {
		slog.Info("federation allowlist changed", "server_name", server, "allowed", allowed, "by", actor)
		if err := a.Refresh(context.Background()); err != nil {
			slog.Warn("refresh federation allowlist", "err", err)
		}
	})
	return nil
}
