// Package sync serves GET /_matrix/client/v3/sync: it reads every stream
// a client follows (room events and state, memberships, typing, receipts,
// account data, to-device messages, device-list changes, key counts)
// between the client's token and the head of the one global stream, and
// long-polls on the Notifier when there is nothing new.
package sync

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"praxis/internal/ephemeral"
	"praxis/internal/httputil"
	"praxis/internal/streams"
	"praxis/internal/users"
	"praxis/roomserver"
)

// Rooms is what sync reads from the room authority (*roomserver.Service).
type Rooms interface {
	SyncMemberships(ctx context.Context, userID string) ([]roomserver.SyncMembership, error)
	SyncTimelines(ctx context.Context, ranges []roomserver.SyncRange, limit int) (map[int64]*roomserver.SyncTimeline, error)
	SyncCurrentState(ctx context.Context, roomNIDs []int64) (map[int64][]*roomserver.StoredEvent, error)
	SyncStateAt(ctx context.Context, groups []int64) (map[int64]map[roomserver.SyncStateKey]int64, error)
	SyncEventsByNID(ctx context.Context, nids []int64) (map[int64]*roomserver.StoredEvent, error)
	SyncGroupsBefore(ctx context.Context, nids []int64) (map[int64]int64, error)
	SyncInviteState(ctx context.Context, roomNIDs []int64) (map[int64][]*roomserver.StoredEvent, error)
	SyncStateChanges(ctx context.Context, ranges []roomserver.SyncRange) (map[int64][]roomserver.SyncStateKey, error)
	SyncSummaries(ctx context.Context, userID string, roomNIDs []int64) (map[int64]*roomserver.SyncSummary, error)
	SyncUnreadCounts(ctx context.Context, userID string, bounds map[int64]roomserver.SyncUnreadBounds) (map[int64]*roomserver.SyncUnread, error)
	FilterVisible(ctx context.Context, userID string, events []*roomserver.StoredEvent) ([]*roomserver.StoredEvent, error)
	MembershipsAt(ctx context.Context, userID string, events []*roomserver.StoredEvent) (map[int64]string, error)
	EventsByID(ctx context.Context, ids []string) ([]*roomserver.StoredEvent, error)
	SharingARoom(ctx context.Context, userID string, others []string) (map[string]bool, error)
	NewRoomMates(ctx context.Context, userID string, since, upto int64) ([]string, error)
	SyncChanged(ctx context.Context, userID string, since, upto int64) (bool, []string, error)
}

// Ephemeral is the typing and receipt store (*ephemeral.Service).
type Ephemeral interface {
	Typing(ctx context.Context, roomIDs []string, since, upto int64) (map[string][]string, error)
	Receipts(ctx context.Context, viewer string, roomIDs []string, since, upto int64) (map[string][]ephemeral.Receipt, error)
	ReadPositionsOf(ctx context.Context, userID string, roomIDs []string) (map[string]*ephemeral.ReadPositions, error)
	Changed(ctx context.Context, viewer string, roomIDs []string, since, upto int64) (bool, error)
}

// Accounts is account data and stored filters (*users.Service).
type Accounts interface {
	AccountDataSince(ctx context.Context, userID string, since int64) ([]users.AccountDataEntry, error)
	Filter(ctx context.Context, userID, filterID string) (json.RawMessage, error)
	IgnoredUsers(ctx context.Context, userID string) (map[string]bool, error)
}

// E2EE is the end-to-end encryption side of sync, provided by the key
// server and the to-device inbox.
type E2EE interface {
	// ToDevice returns to-device messages for the device with stream
	// positions in (since, upto], at most limit; next is the position of
	// the last message returned (== upto if all were returned).
	ToDevice(ctx context.Context, userID, deviceID string, since, upto int64, limit int) (msgs []json.RawMessage, next int64, err error)
	// AckToDevice deletes the device's to-device messages up to and
	// including upto.
	AckToDevice(ctx context.Context, userID, deviceID string, upto int64) error
	DeviceListChanges(ctx context.Context, userID string, since, upto int64) (changed, left []string, err error)
	OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, error)
	UnusedFallbackKeyTypes(ctx context.Context, userID, deviceID string) ([]string, error)
}

// maxToDevice bounds the to-device messages of one response; the rest
// follow in the next.
const maxToDevice = 100

// maxTimeout caps a long-poll so that proxies and clients see a response.
const maxTimeout = 5 * time.Minute

// Service answers /sync.
type Service struct {
	rooms     Rooms
	ephemeral Ephemeral
	accounts  Accounts
	e2ee      E2EE
	presence  Presence
	notifier  *streams.Notifier
	head      func(ctx context.Context) (int64, error)
	now       func() time.Time
	drain     <-chan struct{}
}

// New returns the sync service. head reads the committed stream head from
// the database (storage.DB.StreamHead).
func New(rooms Rooms, eph Ephemeral, accounts Accounts, notifier *streams.Notifier, head func(context.Context) (int64, error)) *Service {
	return &Service{rooms: rooms, ephemeral: eph, accounts: accounts, notifier: notifier, head: head, now: time.Now}
}

// SetE2EE plugs in the encryption streams; without it the E2EE fields of
// the response are left out.
func (s *Service) SetE2EE(e E2EE) { s.e2ee = e }

// SetDrain gives the channel the server closes when it shuts down: waiting
// long-polls then answer as at their timeout, so a restart does not wait
// for them (and their clients get a normal response, not a dropped
// connection).
func (s *Service) SetDrain(c <-chan struct{}) { s.drain = c }

// expired is a deadline that has passed.
var expired = func() <-chan time.Time { c := make(chan time.Time); close(c); return c }()

// Request is a parsed /sync request.
type Request struct {
	UserID, DeviceID string
	Since            Token
	HasSince         bool
	Filter           *Filter
	Timeout          time.Duration
	FullState        bool
	// SetPresence is the presence the request marks the user with
	// (set_presence; "online" when absent, "" for offline: no change).
	SetPresence string

	// ignored are the users the caller ignores, read per response: their
	// invites and non-state timeline events are not shown.
	ignored map[string]bool
}

// ParseRequest reads the query parameters of GET /sync and resolves a
// stored filter.
func (s *Service) ParseRequest(r *http.Request, dev *users.Device) (*Request, error) {
	q := r.URL.Query()
	req := &Request{UserID: dev.UserID, DeviceID: dev.DeviceID, Filter: &Filter{}}
	if v := q.Get("since"); v != "" {
		t, err := ParseToken(v)
		if err != nil {
			return nil, httputil.InvalidParam("since: not a sync token issued by this server")
		}
		req.Since, req.HasSince = t, true
	}
	if v := q.Get("timeout"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			return nil, httputil.InvalidParam("timeout must be a non-negative integer (milliseconds)")
		}
		req.Timeout = min(time.Duration(min(ms, int64(maxTimeout/time.Millisecond)))*time.Millisecond, maxTimeout)
	}
	switch v := q.Get("full_state"); v {
	case "", "false":
	case "true":
		req.FullState = true
	default:
		return nil, httputil.InvalidParam("full_state must be true or false")
	}
	switch v := q.Get("set_presence"); v {
	case "", "online":
		req.SetPresence = "online"
	case "unavailable":
		req.SetPresence = v
	case "offline":
		// the spec's "not marked as online by this request"
	default:
		return nil, httputil.InvalidParam("set_presence must be online, offline or unavailable")
	}
	if v := q.Get("filter"); v != "" {
		f, err := s.resolveFilter(r.Context(), dev.UserID, v)
		if err != nil {
			return nil, err
		}
		req.Filter = f
	}
	return req, nil
}

func (s *Service) resolveFilter(ctx context.Context, userID, v string) (*Filter, error) {
	raw := []byte(v)
	if v[0] != '{' {
		stored, err := s.accounts.Filter(ctx, userID, v)
		if errors.Is(err, users.ErrNotFound) {
			return nil, httputil.InvalidParam("filter: no filter with ID " + strconv.Quote(v))
		}
		if err != nil {
			return nil, err
		}
		raw = stored
	}
	f, err := ParseFilter(raw)
	if err != nil {
		return nil, httputil.BadJSON(err.Error())
	}
	return f, nil
}

// Sync answers one /sync request: at once if anything is new (or the
// request is an initial or full-state sync), otherwise when the Notifier
// reports a new stream position that concerns the user, or empty at the
// timeout.
func (s *Service) Sync(ctx context.Context, req *Request) (*Response, error) {
	if s.presence != nil && req.SetPresence != "" {
		if err := s.presence.TouchPresence(ctx, req.UserID, req.SetPresence); err != nil {
			return nil, err
		}
	}
	if req.HasSince && s.e2ee != nil && req.Since.toDeviceSince() > 0 {
		// The client holds this token, so it has every to-device message
		// up to its to-device position. Deleting is a write (on SQLite it
		// queues behind every send), so look first: usually there is
		// nothing to delete.
		upto := req.Since.toDeviceSince()
		left, _, err := s.e2ee.ToDevice(ctx, req.UserID, req.DeviceID, 0, upto, 1)
		if err != nil {
			return nil, err
		}
		if len(left) > 0 {
			if err := s.e2ee.AckToDevice(ctx, req.UserID, req.DeviceID, upto); err != nil {
				return nil, err
			}
		}
	}
	var deadline <-chan time.Time
	if req.HasSince && !req.FullState && req.Timeout > 0 {
		t := time.NewTimer(req.Timeout)
		defer t.Stop()
		deadline = t.C
	}
	// Take the wake-up channel before reading the head: a position
	// published after this point closes it, so none is missed.
	changed := s.notifier.Changed()
	head, err := s.readHead(ctx, req)
	if err != nil {
		return nil, err
	}
	if deadline == nil || req.Since.ToDevice > 0 {
		// no waiting (initial, full_state, timeout 0), or to-device
		// messages left over from the last response: answer now
		if req.HasSince && !req.FullState && req.Since.ToDevice == 0 {
			// timeout 0 polls mostly find nothing: ask the cheap
			// question before reading every joined room
			news, _, err := s.anythingNew(ctx, req, req.Since.Pos, head)
			if err != nil {
				return nil, err
			}
			if !news {
				return s.nothingNew(ctx, req, head)
			}
		}
		return s.build(ctx, req, head)
	}
	// A client long-polls again right after each response, usually with
	// nothing new yet: the cheap question first, the full answer only if
	// it says yes.
	news, joined, err := s.anythingNew(ctx, req, req.Since.Pos, head)
	if err != nil {
		return nil, err
	}
	if news {
		resp, err := s.build(ctx, req, head)
		if err != nil || !resp.empty() {
			return resp, err
		}
	}
	// Nothing for this user up to head: sleep until the stream moves, then
	// ask the cheap question "anything for me in (head, new head]?" and
	// build a response only when the answer is yes.
	seen := head // the newest notifier position already looked at
	drain := s.drain
	for {
		if s.notifier.Position() <= seen {
			select {
			case <-drain:
				// shutting down: answer as at the timeout
				drain, deadline = nil, expired
				continue
			case <-changed:
			case <-deadline:
				// the final answer: empty, or whatever arrived just now,
				// with fresh key counts and the latest position
				newHead, err := s.readHead(ctx, req)
				if err != nil {
					return nil, err
				}
				if newHead > head {
					news, _, err := s.anythingNew(ctx, req, head, newHead)
					if err != nil {
						return nil, err
					}
					if news {
						return s.build(ctx, req, newHead)
					}
				}
				return s.nothingNew(ctx, req, max(head, newHead))
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		changed = s.notifier.Changed()
		// (a notifier ahead of what the database shows must not spin us)
		p := s.notifier.Position()
		seen = max(seen, p)
		if joined != nil && p > head && !s.notifier.Concerns(head, p, req.UserID, joined) {
			// Only events of other rooms since head, as their writers
			// described them: nothing to read. (p is committed: writers
			// publish after commit.)
			head = p
			continue
		}
		newHead, err := s.readHead(ctx, req)
		if err != nil {
			return nil, err
		}
		if newHead <= head {
			continue
		}
		news, j, err := s.anythingNew(ctx, req, head, newHead)
		if err != nil {
			return nil, err
		}
		// (since, head] holds nothing for the user in any stream; if the
		// rest up to newHead is room events only, so does the rest of
		// every other stream
		roomsOnly := s.notifier.OnlyRoomEvents(head, newHead, req.UserID)
		head, joined = newHead, j
		if !news {
			continue
		}
		if resp, err := s.buildWindow(ctx, req, head, roomsOnly); err != nil || !resp.empty() {
			return resp, err
		}
	}
}

// nothingNew is the response when every stream is known to hold nothing
// for the caller in (since, head] (what build returns then, without
// reading every joined room): empty sections, the new position and the
// device's key counts.
func (s *Service) nothingNew(ctx context.Context, req *Request, head int64) (*Response, error) {
	resp := &Response{Rooms: &RoomSections{}, NextBatch: Token{Pos: head}.String()}
	global, presence := newList(), newList()
	resp.AccountData, resp.Presence = &global, &presence
	if s.e2ee != nil {
		toDevice := newList()
		resp.ToDevice, resp.DeviceLists = &toDevice, &DeviceLists{}
		if err := s.readKeyCounts(ctx, req, resp); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// readHead reads the committed stream head. A token from the future
// (another process ahead of our read, or a restored database) counts as
// the head: there is nothing to send until the stream passes it.
func (s *Service) readHead(ctx context.Context, req *Request) (int64, error) {
	head, err := s.head(ctx)
	if err != nil {
		return 0, err
	}
	if req.HasSince && req.Since.Pos > head {
		head = req.Since.Pos
	}
	return head, nil
}

// anythingNew reports whether any stream holds something for the caller in
// (since, upto]. A yes may still build an empty response (history
// visibility, filters); a no is certain. It also returns the rooms the
// user is joined to, for Notifier.Concerns (nil when it cannot tell).
func (s *Service) anythingNew(ctx context.Context, req *Request, since, upto int64) (bool, map[string]bool, error) {
	if upto <= since {
		// nothing can lie in an empty window, and the rooms are not
		// needed: the first wake-up past it reads them
		return false, nil, nil
	}
	changed, joinedIDs, err := s.rooms.SyncChanged(ctx, req.UserID, since, upto)
	if err != nil {
		return false, nil, err
	}
	joined := make(map[string]bool, len(joinedIDs))
	for _, id := range joinedIDs {
		joined[id] = true
	}
	if changed {
		return true, joined, nil
	}
	news, err := s.otherStreamsNew(ctx, req, joinedIDs, since, upto)
	return news, joined, err
}

// otherStreamsNew is anythingNew for everything but room events and
// memberships.
func (s *Service) otherStreamsNew(ctx context.Context, req *Request, joined []string, since, upto int64) (bool, error) {
	if changed, err := s.ephemeral.Changed(ctx, req.UserID, joined, since, upto); err != nil || changed {
		return changed, err
	}
	ad, err := s.accounts.AccountDataSince(ctx, req.UserID, since)
	if err != nil {
		return false, err
	}
	for _, e := range ad {
		if e.StreamPos > since && e.StreamPos <= upto {
			return true, nil
		}
	}
	if s.presence != nil {
		if evs, err := s.presenceEvents(ctx, req, since, upto); err != nil || len(evs) > 0 {
			return len(evs) > 0, err
		}
	}
	if s.e2ee == nil {
		return false, nil
	}
	msgs, _, err := s.e2ee.ToDevice(ctx, req.UserID, req.DeviceID, since, upto, 1)
	if err != nil || len(msgs) > 0 {
		return len(msgs) > 0, err
	}
	c, l, err := s.e2ee.DeviceListChanges(ctx, req.UserID, since, upto)
	return len(c)+len(l) > 0, err
}
