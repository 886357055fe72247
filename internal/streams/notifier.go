// Package streams wakes waiting readers (long-polling /sync, the federation
// sender) when the global stream moves. Wake-ups carry a position, never
// data: a woken reader re-reads the database, so a missed or duplicated
// wake-up costs a query, never correctness.
package streams

import (
	"context"
	"sync"
)

// Notifier tracks the newest stream position this process knows of and lets
// callers wait for it to pass a given position.
type Notifier struct {
	mu   sync.Mutex
	pos  int64
	wake chan struct{} // closed and replaced on every advance
}

// NewNotifier starts at pos (the stream head read at start-up).
func NewNotifier(pos int64) *Notifier {
	return &Notifier{pos: pos, wake: make(chan struct{})}
}

// Publish records that the stream reached pos and wakes every waiter.
// Positions may arrive out of order from several writers; the notifier
// keeps the highest.
func (n *Notifier) Publish(pos int64) {
	n.mu.Lock()
	if pos <= n.pos {
		n.mu.Unlock()
		return
	}
	n.pos = pos
	close(n.wake)
	n.wake = make(chan struct{})
	n.mu.Unlock()
}

// Position returns the newest known stream position.
func (n *Notifier) Position() int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pos
}

// Wait blocks until the stream passes since or ctx ends, and returns the
// newest position. It returns at once if the stream is already past since.
func (n *Notifier) Wait(ctx context.Context, since int64) int64 {
	for {
		n.mu.Lock()
		pos, ch := n.pos, n.wake
		n.mu.Unlock()
		if pos > since {
			return pos
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return n.Position()
		}
	}
}

// Changed returns a channel closed on the next advance, for callers that
// select over several sources.
func (n *Notifier) Changed() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.wake
}
