// Package roomserver is the room authority: it builds, signs, auth-checks
// and persists every event, and answers questions about rooms, events and
// state. It never imports clientapi or federation.
//
// The write path (write.go) appends events to a room through a writer:
// inside one transaction it locks the room, reads the room's head (depth,
// forward extremities, state group) and the state keys the auth rules need,
// builds and signs the event with gomatrixserverlib for the room's version,
// checks it with gomatrixserverlib.Allowed, and persists the event row, its
// prev-event edges, a new state group for a state event (a one-entry delta
// on the previous group, or a full snapshot every snapshotEvery deltas),
// current_state, room_members and the room's head. Stream positions are
// gap-free: on Postgres taken last, after the room's writes; on SQLite,
// whose write transaction is exclusive from its first statement, taken at
// insert. Notifier wake-ups and cache fills run after commit.
//
// Send builds and signs outside the transaction against the committed head
// and keeps the event if the head has not moved by the time it holds the
// lock (rebuilding it otherwise): signing is most of an event's CPU, and
// on SQLite the transactions of concurrent writers share one commit.
//
// Stored JSON is the signed PDU. Its unsigned part carries prev_content,
// replaces_state and prev_sender for state events, and invite_room_state or
// knock_room_state (stripped state) for invites and knocks; a redaction
// replaces the target's JSON with its redacted form and sets redacted_by.
package roomserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"praxis/federation/keyring"
	"praxis/internal/config"
	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/internal/streams"
)

// ErrUnknownUser is what a ProfileLookup returns for a local user ID
// without an account.
var ErrUnknownUser = errors.New("unknown user")

// ProfileLookup returns a local user's display name and avatar URL for the
// content of their member events. roomserver does not own accounts; the
// composition root passes the accounts service's lookup in.
type ProfileLookup func(ctx context.Context, userID string) (displayName, avatarURL string, err error)

// Service is the room authority of one node.
type Service struct {
	db         *storage.DB
	notifier   *streams.Notifier
	key        *keyring.SigningKey
	serverName string
	cfg        *config.Config
	now        func() time.Time
	profile    ProfileLookup
	// policy is the node's care policy (nil: plain Matrix), policy.go.
	policy Policy
	// fed reaches rooms on other servers (remote.go); nil: federation off.
	fed *remoteFed

	// rooms caches what never changes about a room: its NID and version.
	rooms sync.Map // room ID → *roomInfo
	// events caches parsed auth events (create, power levels, join rules,
	// members) by NID; the send path reads the same few over and over.
	events pduCache
}

// New returns the room authority.
func New(db *storage.DB, notifier *streams.Notifier, key *keyring.SigningKey, cfg *config.Config) *Service {
	return &Service{
		db: db, notifier: notifier, key: key, serverName: cfg.ServerName, cfg: cfg, now: time.Now,
		profile: func(context.Context, string) (string, string, error) { return "", "", nil },
		events:  pduCache{max: 20000},
	}
}

// SetProfileLookup installs the accounts service's profile lookup.
func (s *Service) SetProfileLookup(fn ProfileLookup) { s.profile = fn }

// ServerName is this node's name.
func (s *Service) ServerName() string { return s.serverName }

// roomInfo is the immutable part of a room.
type roomInfo struct {
	nid     int64
	id      string
	version gomatrixserverlib.IRoomVersion
}

// room returns the room's immutable facts, or 404 M_NOT_FOUND if this
// server does not know the room.
func (s *Service) roomInfo(ctx context.Context, db *storage.DB, roomID string) (*roomInfo, error) {
	if r, ok := s.rooms.Load(roomID); ok {
		return r.(*roomInfo), nil
	}
	var nid int64
	var ver string
	err := db.QueryRow(ctx, `SELECT room_nid, room_version FROM rooms WHERE room_id = $1`, roomID).Scan(&nid, &ver)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, httputil.NotFound("room " + roomID + " is not known to this server")
	}
	if err != nil {
		return nil, fmt.Errorf("look up room %s: %w", roomID, err)
	}
	impl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(ver))
	if err != nil {
		return nil, fmt.Errorf("room %s has unknown version %q", roomID, ver)
	}
	r := &roomInfo{nid: nid, id: roomID, version: impl}
	// Only cache what is committed: a room created by a transaction that
	// still might roll back must not linger here.
	if !db.InTx() {
		s.rooms.Store(roomID, r)
	}
	return r, nil
}

// RoomVersion returns the version of a room this server knows.
func (s *Service) RoomVersion(ctx context.Context, roomID string) (string, error) {
	r, err := s.roomInfo(ctx, s.db, roomID)
	if err != nil {
		return "", err
	}
	return string(r.version.Version()), nil
}

// pduCache is a bounded map of parsed events. When full it starts over:
// simpler than an LRU and the working set (auth events of active rooms)
// refills in one round of sends.
type pduCache struct {
	mu  sync.Mutex
	m   map[int64]gomatrixserverlib.PDU
	max int
}

func (c *pduCache) get(nid int64) (gomatrixserverlib.PDU, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.m[nid]
	return p, ok
}

func (c *pduCache) put(nid int64, p gomatrixserverlib.PDU) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= c.max {
		c.m = make(map[int64]gomatrixserverlib.PDU, 256)
	}
	c.m[nid] = p
}

func (c *pduCache) drop(nid int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, nid)
}
