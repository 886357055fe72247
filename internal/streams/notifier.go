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

	// changes describes recent positions (see PublishChanges), so that a
	// woken /sync can tell without a query that a position is not for it.
	changes map[int64]Change
	ring    []int64 // positions in changes, oldest first from ringAt
	ringAt  int
}

// Change says what one stream position holds: an event of RoomID, which
// changes the membership of Member ("" if it is not a membership event).
type Change struct {
	Pos    int64
	RoomID string
	Member string
}

// maxChanges bounds the remembered changes. A reader asleep for longer
// sees a gap and reads the database, as it would without them.
const maxChanges = 4096

// NewNotifier starts at pos (the stream head read at start-up).
func NewNotifier(pos int64) *Notifier {
	return &Notifier{pos: pos, wake: make(chan struct{}), changes: map[int64]Change{}}
}

// Publish records that the stream reached pos and wakes every waiter.
// Positions may arrive out of order from several writers; the notifier
// keeps the highest.
func (n *Notifier) Publish(pos int64) {
	n.mu.Lock()
	n.advance(pos)
	n.mu.Unlock()
}

// PublishChanges is Publish for committed room events whose positions and
// rooms are known: every waiter still wakes, but one whose user is not in
// any of the rooms (and whose membership none of them changes) can go back
// to sleep without reading the database (see Concerns).
func (n *Notifier) PublishChanges(changes []Change) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.changes == nil {
		n.changes = map[int64]Change{}
	}
	top := int64(0)
	for _, c := range changes {
		if len(n.ring) < maxChanges {
			n.ring = append(n.ring, c.Pos)
		} else {
			delete(n.changes, n.ring[n.ringAt])
			n.ring[n.ringAt] = c.Pos
			n.ringAt = (n.ringAt + 1) % maxChanges
		}
		n.changes[c.Pos] = c
		top = max(top, c.Pos)
	}
	n.advance(top)
}

func (n *Notifier) advance(pos int64) {
	if pos <= n.pos {
		return
	}
	n.pos = pos
	close(n.wake)
	n.wake = make(chan struct{})
}

// Concerns reports whether the positions in (since, upto] may hold
// something for userID, who is joined to the rooms in joined. It answers
// false only when every one of those positions was published through
// PublishChanges as an event of another room that changes no membership
// of userID; any other position (to-device, account data, receipts, a
// write by another process, or one forgotten since) counts as a yes.
func (n *Notifier) Concerns(since, upto int64, userID string, joined map[string]bool) bool {
	if upto <= since {
		return false
	}
	if upto-since > maxChanges {
		return true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for p := since + 1; p <= upto; p++ {
		c, ok := n.changes[p]
		if !ok || c.Member == userID || joined[c.RoomID] {
			return true
		}
	}
	return false
}

// OnlyRoomEvents reports whether every position in (since, upto] was
// published through PublishChanges and none of them changes userID's
// membership: then the window holds events of rooms the user's membership
// did not change in, and nothing of the other streams (to-device, account
// data, receipts, typing), so a reader may skip reading those.
func (n *Notifier) OnlyRoomEvents(since, upto int64, userID string) bool {
	if upto <= since || upto-since > maxChanges {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for p := since + 1; p <= upto; p++ {
		c, ok := n.changes[p]
		if !ok || c.Member == userID {
			return false
		}
	}
	return true
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
