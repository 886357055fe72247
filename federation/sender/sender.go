// Package sender delivers our events and EDUs to the other servers of our
// rooms. It tails the one global stream: for every destination the
// database holds how far along the stream it has been served (sent_pos),
// so a restart or a partner that was offline loses nothing — the next
// attempt sends whatever lies past sent_pos, in stream order. One
// transaction is in flight per destination; failures back off
// exponentially up to a cap; a lease on the destination row keeps several
// praxis processes on one Postgres from sending the same transaction.
package sender

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"praxis/internal/storage"
	"praxis/internal/streams"
)

// Batch limits of one transaction (the spec's).
const (
	maxPDUs = 50
	maxEDUs = 100
)

// Backoff bounds. The cap is what a partner that was down for long waits
// at most once it is back and has not yet sent us anything (a signed
// request from it resets the backoff at once, see PartnerUp): five minutes
// costs a dead partner twelve connection attempts an hour.
const (
	minBackoff = time.Second
	maxBackoff = 5 * time.Minute
)

// leaseFor is how long a process owns a destination between renewals.
const leaseFor = 30 * time.Second

// tailerRow is the federation_destinations row that holds the EDU
// tailer's position and lease (not a server name: it has no dot or colon
// rules to collide with, "!" cannot start one).
const tailerRow = "!edu-tailer"

// Allowlist is the partner allowlist.
type Allowlist interface {
	Allowed(server string) bool
}

// Sender is the outbound federation queue of one process.
type Sender struct {
	db         *storage.DB
	client     fclient.FederationClient
	allow      Allowlist
	notifier   *streams.Notifier
	serverName string
	owner      string // lease owner ID of this process
	now        func() time.Time

	// acl reports whether a room's server ACL lets a server take part
	// (nil: no ACLs).
	acl func(ctx context.Context, roomID, server string) (bool, error)

	lastDiscover time.Time

	// presence: our users' presence changes go to the servers sharing a
	// room with them (presence.enabled only).
	presence bool

	mu     sync.Mutex
	busy   map[string]bool
	wakeCh chan struct{}
	// txns remembers per destination the batch last attempted and its
	// transaction ID, so that a retry of the same batch carries the same
	// ID (the receiver deduplicates it) while a different batch never
	// does; txnSeq numbers this process's transactions.
	txns   map[string]txnMemo
	txnSeq uint64
	// joinPresence holds presence owed to servers whose user just joined
	// one of our rooms, sent once joinPresenceDelay has passed.
	joinPresence []owedPresence
}

type owedPresence struct {
	at     time.Time
	server string
	user   string
}

// joinPresenceDelay is how long presence for a server whose user joined
// through us waits: that server persists the room only once our send_join
// answer is back, and it refuses presence about users it shares no room
// with, so presence sent at once could arrive too early.
const joinPresenceDelay = 3 * time.Second

type txnMemo struct{ batch, id string }

// New returns a sender; Run starts it.
func New(db *storage.DB, client fclient.FederationClient, allow Allowlist, notifier *streams.Notifier, serverName string) *Sender {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return &Sender{
		db: db, client: client, allow: allow, notifier: notifier, serverName: serverName,
		owner: hex.EncodeToString(b), now: time.Now,
		busy: map[string]bool{}, wakeCh: make(chan struct{}, 1), txns: map[string]txnMemo{},
	}
}

// SetPresence turns on sending our users' presence changes as m.presence
// EDUs (presence.enabled).
func (s *Sender) SetPresence(on bool) { s.presence = on }

// SetACL installs the rooms' server ACL check: events of a room whose ACL
// denies a destination are not sent to it.
func (s *Sender) SetACL(fn func(ctx context.Context, roomID, server string) (bool, error)) {
	s.acl = fn
}

// Wake makes the sender look for work now (e.g. after QueueEDU).
func (s *Sender) Wake() {
	select {
	case s.wakeCh <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends.
func (s *Sender) Run(ctx context.Context) {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		changed := s.notifier.Changed()
		if err := s.round(ctx, &wg); err != nil && ctx.Err() == nil {
			slog.WarnContext(ctx, "federation sender", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-s.wakeCh:
		case <-tick.C:
		}
	}
}

// round discovers destinations, queues EDUs from the stream and starts a
// worker for every destination that has work and is not backing off.
func (s *Sender) round(ctx context.Context, wg *sync.WaitGroup) error {
	// The membership scan catches destinations whose events predate the
	// stream tail (first start, upgrades); once a minute is plenty. The
	// event tail catches every new one, exactly from the event on.
	if s.now().Sub(s.lastDiscover) >= time.Minute {
		if err := s.discover(ctx); err != nil {
			return err
		}
		s.lastDiscover = s.now()
	}
	if err := s.discoverFromEvents(ctx); err != nil {
		return err
	}
	if err := s.tailEDUs(ctx); err != nil {
		return err
	}
	rows, err := s.db.Query(ctx, `SELECT server_name FROM federation_destinations WHERE retry_at_ts <= $1 AND server_name NOT LIKE '!%'`,
		s.now().UnixMilli())
	if err != nil {
		return fmt.Errorf("list destinations: %w", err)
	}
	var dests []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			rows.Close()
			return err
		}
		dests = append(dests, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, d := range dests {
		if !s.allow.Allowed(d) {
			continue
		}
		s.mu.Lock()
		if s.busy[d] {
			s.mu.Unlock()
			continue
		}
		s.busy[d] = true
		s.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.busy, d)
				s.mu.Unlock()
			}()
			if err := s.deliver(ctx, d); err != nil && ctx.Err() == nil {
				slog.InfoContext(ctx, "federation delivery failed", "destination", d, "err", err)
			}
		}()
	}
	return nil
}

// discover creates a destination row for every remote server with a
// joined member in a room we have a local member in. A new destination
// starts just before the earliest join of its users still current, so
// everything since it joined is delivered.
func (s *Sender) discover(ctx context.Context) error {
	rows, err := s.db.Query(ctx, `SELECT m.user_id, m.stream_pos FROM room_members m
		WHERE m.membership = 'join' AND m.user_id NOT LIKE $1
		AND EXISTS (SELECT 1 FROM room_members l WHERE l.room_nid = m.room_nid AND l.membership = 'join' AND l.user_id LIKE $1)`,
		"%:"+s.serverName)
	if err != nil {
		return fmt.Errorf("discover destinations: %w", err)
	}
	first := map[string]int64{}
	for rows.Next() {
		var user string
		var pos int64
		if err := rows.Scan(&user, &pos); err != nil {
			rows.Close()
			return err
		}
		_, server, _ := strings.Cut(user, ":")
		if server == "" || server == s.serverName {
			continue
		}
		if p, ok := first[server]; !ok || pos < p {
			first[server] = pos
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for server, pos := range first {
		if _, err := s.db.Exec(ctx, `INSERT INTO federation_destinations (server_name, sent_pos) VALUES ($1, $2)
			ON CONFLICT (server_name) DO NOTHING`, server, max(pos-1, 0)); err != nil {
			return fmt.Errorf("add destination %s: %w", server, err)
		}
	}
	return nil
}

// discoverRow holds the position up to which our events have been
// scanned for new destinations.
const discoverRow = "!discover"

// discoverFromEvents looks at our events since the last scan and creates
// a destination row, starting just before the event, for every remote
// server the event must reach: servers with a joined member in its room
// and the server of a membership event's subject. A user who leaves right
// after joining still has the leave delivered.
func (s *Sender) discoverFromEvents(ctx context.Context) error {
	head := s.notifier.Position()
	if _, err := s.db.Exec(ctx, `INSERT INTO federation_destinations (server_name, sent_pos) VALUES ($1, $2) ON CONFLICT (server_name) DO NOTHING`,
		discoverRow, head); err != nil {
		return fmt.Errorf("create discovery row: %w", err)
	}
	var from int64
	if err := s.db.QueryRowWrite(ctx, `SELECT sent_pos FROM federation_destinations WHERE server_name = $1`, discoverRow).Scan(&from); err != nil {
		return fmt.Errorf("read discovery position: %w", err)
	}
	if from >= head {
		return nil
	}
	rows, err := s.db.Query(ctx, `SELECT MIN(e.stream_pos), r.room_id FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		WHERE e.stream_pos > $1 AND e.stream_pos <= $2 AND NOT e.outlier AND NOT e.rejected
		AND (e.sender LIKE $3 OR (e.type = 'm.room.member' AND e.state_key = e.sender))
		GROUP BY r.room_id`, from, head, "%:"+s.serverName)
	if err != nil {
		return fmt.Errorf("scan events for destinations: %w", err)
	}
	first := map[string]int64{} // room → first new event of ours
	for rows.Next() {
		var pos int64
		var room string
		if err := rows.Scan(&pos, &room); err != nil {
			rows.Close()
			return err
		}
		first[room] = pos
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	servers := map[string]int64{}
	for room, pos := range first {
		// joined servers now, plus servers whose members were in the room
		// as of our event (a leave or kick must still reach them)
		rs, err := s.db.Query(ctx, `SELECT m.user_id FROM room_members m JOIN rooms r ON r.room_nid = m.room_nid
			WHERE r.room_id = $1 AND m.user_id NOT LIKE $2 AND (m.membership = 'join' OR m.stream_pos >= $3)`, room, "%:"+s.serverName, pos)
		if err != nil {
			return fmt.Errorf("servers of %s: %w", room, err)
		}
		for rs.Next() {
			var u string
			if err := rs.Scan(&u); err != nil {
				rs.Close()
				return err
			}
			if _, server, _ := strings.Cut(u, ":"); server != "" {
				if p, ok := servers[server]; !ok || pos < p {
					servers[server] = pos
				}
			}
		}
		rs.Close()
	}
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		for server, pos := range servers {
			if _, err := tx.Exec(ctx, `INSERT INTO federation_destinations (server_name, sent_pos) VALUES ($1, $2)
				ON CONFLICT (server_name) DO NOTHING`, server, pos-1); err != nil {
				return fmt.Errorf("add destination %s: %w", server, err)
			}
		}
		_, err := tx.Exec(ctx, `UPDATE federation_destinations SET sent_pos = $1 WHERE server_name = $2 AND sent_pos < $1`, head, discoverRow)
		return err
	})
}

// lease takes or renews the lease on a destination row.
func (s *Sender) lease(ctx context.Context, dest string) (bool, error) {
	now := s.now().UnixMilli()
	res, err := s.db.Exec(ctx, `UPDATE federation_destinations SET lease_owner = $1, lease_until_ts = $2
		WHERE server_name = $3 AND (lease_owner = $1 OR lease_until_ts < $4)`,
		s.owner, now+leaseFor.Milliseconds(), dest, now)
	if err != nil {
		return false, fmt.Errorf("lease %s: %w", dest, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (s *Sender) release(ctx context.Context, dest string) {
	if _, err := s.db.Exec(ctx, `UPDATE federation_destinations SET lease_until_ts = 0 WHERE server_name = $1 AND lease_owner = $2`,
		dest, s.owner); err != nil {
		slog.WarnContext(ctx, "release destination lease", "destination", dest, "err", err)
	}
}

// deliver sends transactions to dest until nothing is pending or a send
// fails.
func (s *Sender) deliver(ctx context.Context, dest string) error {
	ok, err := s.lease(ctx, dest)
	if err != nil || !ok {
		return err // another process serves it
	}
	defer s.release(context.WithoutCancel(ctx), dest)
	for ctx.Err() == nil {
		if ok, err := s.lease(ctx, dest); err != nil || !ok {
			return err
		}
		var sentPos int64
		if err := s.db.QueryRow(ctx, `SELECT sent_pos FROM federation_destinations WHERE server_name = $1`, dest).Scan(&sentPos); err != nil {
			return fmt.Errorf("read position of %s: %w", dest, err)
		}
		head := s.notifier.Position()
		pdus, lastPos, err := s.pendingPDUs(ctx, dest, sentPos, head)
		if err != nil {
			return err
		}
		edus, eduNIDs, err := s.pendingEDUs(ctx, dest)
		if err != nil {
			return err
		}
		if len(pdus) == 0 && len(edus) == 0 {
			if lastPos > sentPos {
				_, err := s.db.Exec(ctx, `UPDATE federation_destinations SET sent_pos = $1 WHERE server_name = $2`, lastPos, dest)
				return err
			}
			return nil
		}
		txnID := s.txnID(dest, pdus, eduNIDs)
		txn := gomatrixserverlib.Transaction{
			TransactionID:  gomatrixserverlib.TransactionID(txnID),
			Origin:         spec.ServerName(s.serverName),
			Destination:    spec.ServerName(dest),
			OriginServerTS: spec.AsTimestamp(s.now()),
			PDUs:           pdus,
			EDUs:           edus,
		}
		if txn.PDUs == nil {
			txn.PDUs = []json.RawMessage{}
		}
		if txn.EDUs == nil {
			txn.EDUs = []gomatrixserverlib.EDU{}
		}
		// shorter than the lease, so no other process takes over mid-send
		sendCtx, cancel := context.WithTimeout(ctx, leaseFor-5*time.Second)
		_, err = s.client.SendTransaction(sendCtx, txn)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err() // shutting down: not the partner's fault
			}
			s.backoff(ctx, dest)
			return fmt.Errorf("send transaction %s: %w", txn.TransactionID, err)
		}
		if err := s.db.Transact(ctx, func(tx *storage.DB) error {
			if _, err := tx.Exec(ctx, `UPDATE federation_destinations SET sent_pos = $1, failures = 0, retry_at_ts = 0 WHERE server_name = $2`,
				lastPos, dest); err != nil {
				return err
			}
			if len(eduNIDs) > 0 {
				q, args := storage.In(`DELETE FROM federation_outbound_edus WHERE edu_nid IN ($IN)`, 0, eduNIDs)
				if _, err := tx.Exec(ctx, q, args...); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("record delivery to %s: %w", dest, err)
		}
		s.mu.Lock()
		delete(s.txns, dest)
		s.mu.Unlock()
		slog.DebugContext(ctx, "transaction delivered", "destination", dest, "pdus", len(pdus), "edus", len(edus), "pos", lastPos)
	}
	return ctx.Err()
}

// txnID names the transaction carrying pdus and the EDUs eduNIDs to dest.
// The receiver drops a transaction whose (origin, ID) it has seen, so an
// ID must never name two different batches: IDs derived from positions
// and EDU numbers did (SQLite hands out a deleted EDU's number again once
// the queue is empty, and to-device EDUs take no stream position), and a
// partner silently dropped the next to-device message. The ID is this
// process's random owner ID and a sequence number, kept while the same
// batch is retried.
func (s *Sender) txnID(dest string, pdus []json.RawMessage, eduNIDs []int64) string {
	h := sha256.New()
	for _, p := range pdus {
		h.Write(p)
		h.Write([]byte{0})
	}
	for _, n := range eduNIDs {
		fmt.Fprintf(h, "%d,", n)
	}
	batch := string(h.Sum(nil))
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.txns[dest]; ok && m.batch == batch {
		return m.id
	}
	s.txnSeq++
	id := fmt.Sprintf("%s.%d", s.owner, s.txnSeq)
	s.txns[dest] = txnMemo{batch: batch, id: id}
	return id
}

// PartnerUp is told that a signed request from server has just succeeded:
// the partner is evidently up, so a backoff towards it is over. The
// persisted backoff is cleared (every process on the database sees it:
// the one holding server's lease retries on its next round, within its
// two-second tick) and this process's sender wakes at once. It costs one
// primary-key read when server is not backing off.
func (s *Sender) PartnerUp(ctx context.Context, server string) {
	if server == s.serverName || strings.HasPrefix(server, "!") {
		return
	}
	var failures, retryAt int64
	err := s.db.QueryRow(ctx, `SELECT failures, retry_at_ts FROM federation_destinations WHERE server_name = $1`, server).
		Scan(&failures, &retryAt)
	if err != nil || (failures == 0 && retryAt == 0) {
		return // no row (nothing ever queued for it) or not backing off
	}
	if _, err := s.db.Exec(ctx, `UPDATE federation_destinations SET failures = 0, retry_at_ts = 0 WHERE server_name = $1`, server); err != nil {
		slog.WarnContext(ctx, "reset destination backoff", "destination", server, "err", err)
		return
	}
	slog.InfoContext(ctx, "federation partner is reachable again: retrying now", "destination", server, "failures", failures)
	s.Wake()
}

// backoff records a failure: the next attempt waits 1s, 2s, 4s, … up to
// maxBackoff.
func (s *Sender) backoff(ctx context.Context, dest string) {
	var failures int64
	if err := s.db.QueryRow(ctx, `SELECT failures FROM federation_destinations WHERE server_name = $1`, dest).Scan(&failures); err != nil {
		slog.WarnContext(ctx, "read destination failures", "destination", dest, "err", err)
	}
	wait := Backoff(failures + 1)
	if _, err := s.db.Exec(ctx, `UPDATE federation_destinations SET failures = failures + 1, retry_at_ts = $1 WHERE server_name = $2`,
		s.now().Add(wait).UnixMilli(), dest); err != nil {
		slog.WarnContext(ctx, "record destination failure", "destination", dest, "err", err)
	}
}

// Backoff is the wait after the n-th consecutive failure.
func Backoff(n int64) time.Duration {
	d := minBackoff
	for i := int64(1); i < n && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}

// pendingPDUs returns the events past sentPos (up to head) that dest
// must receive — our own, and the membership events of other servers'
// users (a join that came to us through send_join must reach every server
// of the room; duplicates are dropped by the receiver): events of rooms where one of its users is joined (and was
// when the event was sent: history from before a server joined is for
// backfill under history visibility, not for pushing), and membership
// events about its users. lastPos is the position the batch
// covers: past the last event returned, or head when the batch is not
// full (events in between are not for dest).
func (s *Sender) pendingPDUs(ctx context.Context, dest string, sentPos, head int64) ([]json.RawMessage, int64, error) {
	rows, err := s.db.Query(ctx, `SELECT e.stream_pos, e.json, r.room_id FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		WHERE e.stream_pos > $1 AND e.stream_pos <= $2
		AND (e.sender LIKE $3 OR (e.type = 'm.room.member' AND e.state_key = e.sender AND e.sender NOT LIKE $4))
		AND NOT e.outlier AND NOT e.rejected AND NOT e.soft_failed
		AND (EXISTS (SELECT 1 FROM room_members m WHERE m.room_nid = e.room_nid AND m.membership = 'join' AND m.user_id LIKE $4
				AND m.stream_pos < e.stream_pos)
			OR (e.type = 'm.room.member' AND e.state_key LIKE $4))
		ORDER BY e.stream_pos LIMIT $5`,
		sentPos, head, "%:"+s.serverName, "%:"+dest, maxPDUs)
	if err != nil {
		return nil, 0, fmt.Errorf("pending events for %s: %w", dest, err)
	}
	defer rows.Close()
	var out []json.RawMessage
	var rooms []string
	last := sentPos
	n := 0
	for rows.Next() {
		var pos int64
		var js, room string
		if err := rows.Scan(&pos, &js, &room); err != nil {
			return nil, 0, err
		}
		out = append(out, json.RawMessage(js))
		rooms = append(rooms, room)
		last = pos
		n++
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	rows.Close()
	if s.acl != nil && len(out) > 0 {
		allowed := map[string]bool{}
		kept := out[:0]
		for i, js := range out {
			ok, seen := allowed[rooms[i]]
			if !seen {
				var err error
				if ok, err = s.acl(ctx, rooms[i], dest); err != nil {
					return nil, 0, err
				}
				allowed[rooms[i]] = ok
			}
			// The ACL event itself still reaches the servers it denies:
			// they learn why their events go unheard (and of a later
			// ACL that admits them again).
			if ok || isServerACL(js) {
				kept = append(kept, js)
			}
		}
		out = kept
	}
	if n < maxPDUs {
		last = max(last, head)
	}
	return out, last, nil
}

// isServerACL reports whether an event is a room's m.room.server_acl.
func isServerACL(js json.RawMessage) bool {
	return gjson.GetBytes(js, "type").String() == "m.room.server_acl" && gjson.GetBytes(js, "state_key").String() == ""
}

func (s *Sender) pendingEDUs(ctx context.Context, dest string) ([]gomatrixserverlib.EDU, []int64, error) {
	rows, err := s.db.Query(ctx, `SELECT edu_nid, edu_type, content FROM federation_outbound_edus WHERE destination = $1 ORDER BY edu_nid LIMIT $2`,
		dest, maxEDUs)
	if err != nil {
		return nil, nil, fmt.Errorf("pending EDUs for %s: %w", dest, err)
	}
	defer rows.Close()
	var edus []gomatrixserverlib.EDU
	var nids []int64
	for rows.Next() {
		var nid int64
		var e gomatrixserverlib.EDU
		var content string
		if err := rows.Scan(&nid, &e.Type, &content); err != nil {
			return nil, nil, err
		}
		e.Content = spec.RawJSON(content)
		edus = append(edus, e)
		nids = append(nids, nid)
	}
	return edus, nids, rows.Err()
}

// QueueEDU queues an EDU for dest inside tx (so it is queued exactly when
// the caller's change commits) and wakes the sender at commit. Servers
// that are not allowlisted get nothing.
func (s *Sender) QueueEDU(ctx context.Context, tx *storage.DB, dest, eduType string, content []byte) error {
	if dest == s.serverName || !s.allow.Allowed(dest) {
		return nil
	}
	if _, err := tx.Exec(ctx, `INSERT INTO federation_destinations (server_name, sent_pos) VALUES ($1, $2) ON CONFLICT (server_name) DO NOTHING`,
		dest, s.notifier.Position()); err != nil {
		return fmt.Errorf("add destination %s: %w", dest, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO federation_outbound_edus (destination, edu_type, content, stream_pos) VALUES ($1, $2, $3, $4)`,
		dest, eduType, string(content), s.notifier.Position()); err != nil {
		return fmt.Errorf("queue %s for %s: %w", eduType, dest, err)
	}
	tx.AfterCommit(s.Wake)
	return nil
}

// tailEDUs turns our users' typing, receipt and (presence.enabled)
// presence changes on the stream into EDUs for the other servers of the
// room. One process does this at a time (the tailer row's lease); its
// position survives restarts.
func (s *Sender) tailEDUs(ctx context.Context) error {
	head := s.notifier.Position()
	if _, err := s.db.Exec(ctx, `INSERT INTO federation_destinations (server_name, sent_pos) VALUES ($1, $2) ON CONFLICT (server_name) DO NOTHING`,
		tailerRow, head); err != nil {
		return fmt.Errorf("create EDU tailer: %w", err)
	}
	ok, err := s.lease(ctx, tailerRow)
	if err != nil || !ok {
		return err
	}
	var from int64
	if err := s.db.QueryRow(ctx, `SELECT sent_pos FROM federation_destinations WHERE server_name = $1`, tailerRow).Scan(&from); err != nil {
		return fmt.Errorf("read EDU tailer: %w", err)
	}
	if from >= head && !s.presenceOwed() {
		return nil
	}
	local := "%:" + s.serverName
	type edu struct {
		room, typ string
		content   []byte
	}
	var out []edu
	rows, err := s.db.Query(ctx, `SELECT room_id, user_id, expires_ts FROM typing WHERE stream_pos > $1 AND stream_pos <= $2 AND user_id LIKE $3`,
		from, head, local)
	if err != nil {
		return fmt.Errorf("tail typing: %w", err)
	}
	for rows.Next() {
		var room, user string
		var expires int64
		if err := rows.Scan(&room, &user, &expires); err != nil {
			rows.Close()
			return err
		}
		c, _ := json.Marshal(map[string]any{"room_id": room, "user_id": user, "typing": expires > s.now().UnixMilli()})
		out = append(out, edu{room, "m.typing", c})
	}
	rows.Close()
	rows, err = s.db.Query(ctx, `SELECT room_id, user_id, receipt_type, thread_id, event_id, ts FROM receipts
		WHERE stream_pos > $1 AND stream_pos <= $2 AND user_id LIKE $3 AND receipt_type <> 'm.read.private'`, from, head, local)
	if err != nil {
		return fmt.Errorf("tail receipts: %w", err)
	}
	for rows.Next() {
		var room, user, rtype, thread, event string
		var ts int64
		if err := rows.Scan(&room, &user, &rtype, &thread, &event, &ts); err != nil {
			rows.Close()
			return err
		}
		data := map[string]any{"ts": ts}
		if thread != "" {
			data["thread_id"] = thread
		}
		c, _ := json.Marshal(map[string]any{room: map[string]any{rtype: map[string]any{user: map[string]any{"event_ids": []string{event}, "data": data}}}})
		out = append(out, edu{room, "m.receipt", c})
	}
	rows.Close()
	var presence map[string][]json.RawMessage // destination → push entries
	if s.presence {
		if presence, err = s.presenceEDUs(ctx, from, head); err != nil {
			return err
		}
	}
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		for dest, push := range presence {
			for len(push) > 0 {
				n := min(len(push), maxPresencePush)
				c, _ := json.Marshal(map[string]any{"push": push[:n]})
				if err := s.QueueEDU(ctx, tx, dest, "m.presence", c); err != nil {
					return err
				}
				push = push[n:]
			}
		}
		for _, e := range out {
			servers, err := s.roomServers(ctx, tx, e.room)
			if err != nil {
				return err
			}
			for _, d := range servers {
				if err := s.QueueEDU(ctx, tx, d, e.typ, e.content); err != nil {
					return err
				}
			}
		}
		_, err := tx.Exec(ctx, `UPDATE federation_destinations SET sent_pos = $1 WHERE server_name = $2`, head, tailerRow)
		return err
	})
}

// roomServers lists the remote servers with joined members in roomID.
func (s *Sender) roomServers(ctx context.Context, db *storage.DB, roomID string) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT m.user_id FROM room_members m JOIN rooms r ON r.room_nid = m.room_nid
		WHERE r.room_id = $1 AND m.membership = 'join' AND m.user_id NOT LIKE $2`, roomID, "%:"+s.serverName)
	if err != nil {
		return nil, fmt.Errorf("servers of %s: %w", roomID, err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	var out []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		_, server, _ := strings.Cut(u, ":")
		if server != "" && !seen[server] {
			seen[server] = true
			out = append(out, server)
		}
	}
	return out, rows.Err()
}

// maxPresencePush bounds the users of one m.presence EDU.
const maxPresencePush = 100

// presenceEDUs renders m.presence push entries, per destination, for the
// window (from, upto]: a user of ours whose presence changed goes to every
// remote server sharing a joined room with them; and when someone joins a
// room, the joiner's server learns the current presence of our members
// there (or, when the joiner is ours, the room's servers learn theirs) —
// otherwise a new room mate would see nothing until the next change. Only
// servers a room's ACL admits through that room count. A user appears
// once per destination, as their presence is now.
func (s *Sender) presenceEDUs(ctx context.Context, from, upto int64) (map[string][]json.RawMessage, error) {
	local := "%:" + s.serverName
	targets := map[string]map[string]bool{} // our user → destinations
	add := func(user, server string) {
		if targets[user] == nil {
			targets[user] = map[string]bool{}
		}
		targets[user][server] = true
	}
	var owed []owedPresence
	acl := map[[2]string]bool{} // (room, server) → admitted, for this round
	admitted := func(room, server string) (bool, error) {
		ok, seen := acl[[2]string{room, server}]
		if !seen {
			ok = true
			if s.acl != nil {
				var err error
				if ok, err = s.acl(ctx, room, server); err != nil {
					return false, err
				}
			}
			acl[[2]string{room, server}] = ok
		}
		return ok, nil
	}

	changed, err := s.db.QueryStrings(ctx, `SELECT user_id FROM presence WHERE stream_pos > $1 AND stream_pos <= $2 AND user_id LIKE $3`,
		from, upto, local)
	if err != nil {
		return nil, fmt.Errorf("tail presence: %w", err)
	}
	for _, user := range changed {
		pairs, err := s.pairs(ctx, `SELECT r.room_id, m.user_id FROM room_members u
			JOIN room_members m ON m.room_nid = u.room_nid AND m.membership = 'join'
			JOIN rooms r ON r.room_nid = u.room_nid
			WHERE u.user_id = $1 AND u.membership = 'join' AND m.user_id NOT LIKE $2`, user, local)
		if err != nil {
			return nil, fmt.Errorf("servers sharing a room with %s: %w", user, err)
		}
		for _, p := range pairs {
			server := serverOf(p[1])
			if server == "" || targets[user][server] {
				continue
			}
			if ok, err := admitted(p[0], server); err != nil {
				return nil, err
			} else if ok {
				add(user, server)
			}
		}
	}

	// joins in the window (a member's position also moves on a profile
	// change; re-sending a presence then is harmless)
	joins, err := s.pairs(ctx, `SELECT r.room_id, m.user_id FROM room_members m JOIN rooms r ON r.room_nid = m.room_nid
		WHERE m.stream_pos > $1 AND m.stream_pos <= $2 AND m.membership = 'join'`, from, upto)
	if err != nil {
		return nil, fmt.Errorf("tail joins for presence: %w", err)
	}
	for _, j := range joins {
		room, joiner := j[0], j[1]
		members, err := s.pairs(ctx, `SELECT r.room_id, m.user_id FROM room_members m JOIN rooms r ON r.room_nid = m.room_nid
			WHERE r.room_id = $1 AND m.membership = 'join' AND m.user_id <> $2`, room, joiner)
		if err != nil {
			return nil, fmt.Errorf("members of %s: %w", room, err)
		}
		joinerServer := serverOf(joiner)
		for _, m := range members {
			mServer := serverOf(m[1])
			switch {
			case joinerServer == s.serverName && mServer != s.serverName && mServer != "":
				// our user joined: the room's servers learn their presence
				if ok, err := admitted(room, mServer); err != nil {
					return nil, err
				} else if ok {
					add(joiner, mServer)
				}
			case joinerServer != s.serverName && joinerServer != "" && mServer == s.serverName:
				// another server's user joined: it learns our members'
				// (once it has had time to persist the room)
				if ok, err := admitted(room, joinerServer); err != nil {
					return nil, err
				} else if ok {
					owed = append(owed, owedPresence{at: s.now().Add(joinPresenceDelay), server: joinerServer, user: m[1]})
				}
			}
		}
	}
	s.mu.Lock()
	kept := s.joinPresence[:0]
	for _, o := range s.joinPresence {
		if s.now().Before(o.at) {
			kept = append(kept, o)
		} else {
			add(o.user, o.server)
		}
	}
	s.joinPresence = append(kept, owed...)
	s.mu.Unlock()
	if len(targets) == 0 {
		return nil, nil
	}

	users := make([]string, 0, len(targets))
	for u := range targets {
		users = append(users, u)
	}
	q, args := storage.In(`SELECT user_id, presence, status_msg, last_active_ts FROM presence WHERE user_id IN ($IN)`, 0, users)
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read presence: %w", err)
	}
	defer rows.Close()
	out := map[string][]json.RawMessage{}
	now := s.now().UnixMilli()
	for rows.Next() {
		var user, presence string
		var msg sql.NullString
		var lastActive int64
		if err := rows.Scan(&user, &presence, &msg, &lastActive); err != nil {
			return nil, err
		}
		e := map[string]any{
			"user_id":          user,
			"presence":         presence,
			"last_active_ago":  max(0, now-lastActive),
			"currently_active": presence == "online",
		}
		if msg.String != "" {
			e["status_msg"] = msg.String
		}
		js, _ := json.Marshal(e)
		for server := range targets[user] {
			out[server] = append(out[server], js)
		}
	}
	return out, rows.Err()
}

// presenceOwed reports whether join presence is due.
func (s *Sender) presenceOwed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.joinPresence {
		if !s.now().Before(o.at) {
			return true
		}
	}
	return false
}

// pairs runs a query returning (room ID, user ID) rows.
func (s *Sender) pairs(ctx context.Context, q string, args ...any) ([][2]string, error) {
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][2]string
	for rows.Next() {
		var p [2]string
		if err := rows.Scan(&p[0], &p[1]); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// serverOf returns the server name of a user ID ("" if it has none).
func serverOf(userID string) string {
	_, server, _ := strings.Cut(userID, ":")
	return server
}
