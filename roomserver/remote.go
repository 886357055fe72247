package roomserver

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"praxis/internal/httputil"
	"praxis/internal/storage"
)

// Rooms on other servers: joining, inviting and leaving over federation,
// and the resident side of other servers' joins, leaves and invites
// (make_join/send_join, make_leave/send_leave, invite). Federation plugs
// its signed client in with SetFederation; without it every remote path
// answers that federation is off.

// remoteFed is what the room authority needs of federation.
type remoteFed struct {
	client   fclient.FederationClient
	verifier gomatrixserverlib.JSONVerifier
	allowed  func(server string) bool
	// backfilled remembers the earliest events /messages already
	// backfilled before (remote_backfill.go).
	backfilled sync.Map
}

// SetFederation plugs in the outbound client, the key ring that verifies
// other servers' signatures, and the partner allowlist.
func (s *Service) SetFederation(client fclient.FederationClient, verifier gomatrixserverlib.JSONVerifier, allowed func(server string) bool) {
	s.fed = &remoteFed{client: client, verifier: verifier, allowed: allowed}
}

func (s *Service) federationOff() error {
	return httputil.Forbidden("federation is not enabled on this server")
}

// serverOfID returns the server part of a user, room or alias ID.
func serverOfID(id string) string {
	_, srv, _ := strings.Cut(id, ":")
	return srv
}

func errIncompatibleVersion(v string) error {
	return httputil.Errorf(http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION", "room version %s is not supported by the joining server", v)
}

// resident reports whether this server takes part in the room: it holds
// its state and one of our users is joined. A room known only through an
// invite is not.
func (s *Service) resident(ctx context.Context, room *roomInfo) (bool, error) {
	var n int
	err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM room_members m JOIN rooms r ON r.room_nid = m.room_nid
		WHERE m.room_nid = $1 AND m.membership = 'join' AND m.user_id LIKE $2 AND r.current_state_group IS NOT NULL`,
		room.nid, "%:"+s.serverName).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("residency in %s: %w", room.id, err)
	}
	return n > 0, nil
}

// ---- The resident side ----

// MakeMembership serves make_join, make_leave and make_knock: an unsigned
// m.room.member template for userID (of origin) built on the room's
// current head, after checking the auth rules would allow it.
func (s *Service) MakeMembership(ctx context.Context, origin, roomID, userID, membership string, versions []string) (version string, event json.RawMessage, err error) {
	if _, err := spec.NewUserID(userID, true); err != nil {
		return "", nil, httputil.InvalidParam("invalid user ID " + userID)
	}
	if serverOfID(userID) != origin {
		return "", nil, httputil.Forbidden("user " + userID + " does not belong to " + origin)
	}
	room, err := s.roomInfo(ctx, s.db, roomID)
	if err != nil {
		return "", nil, err
	}
	ok, err := s.resident(ctx, room)
	if err != nil {
		return "", nil, err
	}
	if !ok {
		return "", nil, httputil.NotFound("this server is not in room " + roomID)
	}
	v := string(room.version.Version())
	if membership != spec.Leave {
		if len(versions) == 0 {
			versions = []string{"1"} // the spec's default when ver is absent
		}
		if !slices.Contains(versions, v) {
			return "", nil, errIncompatibleVersion(v)
		}
	}
	w, err := s.readHead(ctx, s.db, room)
	if err != nil {
		return "", nil, err
	}
	pe := &gomatrixserverlib.ProtoEvent{
		SenderID: userID, Type: spec.MRoomMember, StateKey: &userID,
		Content: mustJSON(map[string]any{"membership": membership}), Depth: w.depth + 1,
		PrevEvents: append([]string{}, w.prev...), Version: room.version, RoomID: room.id,
	}
	if membership == spec.Join {
		// a restricted room: vouch for the user if one of their rooms
		// grants access, or say why we cannot (restricted.go)
		old, err := w.membership(ctx, userID)
		if err != nil {
			return "", nil, err
		}
		content := map[string]any{"membership": membership}
		if err := s.authoriseRestrictedJoin(ctx, w, userID, old, content); err != nil {
			return "", nil, err
		}
		pe.Content = mustJSON(content)
	}
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(pe)
	if err != nil {
		return "", nil, httputil.BadJSON(err.Error())
	}
	keys := append(needed.Tuples(), gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomCreate},
		gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomMember, StateKey: userID})
	if err := w.load(ctx, keys); err != nil {
		return "", nil, err
	}
	eb := room.version.NewEventBuilderFromProtoEvent(pe)
	if err := eb.AddAuthEvents(w); err != nil {
		return "", nil, fmt.Errorf("select auth events: %w", err)
	}
	// Build a throw-away signed copy only to ask the auth rules now
	// rather than have the joining server find out at send_join.
	probe, err := eb.Build(s.now(), spec.ServerName(s.serverName), gomatrixserverlib.KeyID(s.key.KeyID), s.key.PrivateKey)
	if err != nil {
		return "", nil, fmt.Errorf("build %s template: %w", membership, err)
	}
	if err := gomatrixserverlib.Allowed(probe, w, userIDForSender); err != nil {
		return "", nil, httputil.Forbidden(strings.TrimPrefix(err.Error(), "eventauth: "))
	}
	pe.AuthEvents = eb.AuthEvents
	out, err := json.Marshal(pe)
	if err != nil {
		return "", nil, err
	}
	return v, out, nil
}

// SendMembership serves send_join, send_leave and send_knock: the signed
// event made from our template is checked (it is origin's user's own
// membership of the expected kind, signed by origin) and input like any
// federated event. A join returns the state before it and its auth chain.
func (s *Service) SendMembership(ctx context.Context, origin, roomID, eventID, membership string, raw []byte) (*SendMembershipResult, error) {
	room, err := s.roomInfo(ctx, s.db, roomID)
	if err != nil {
		return nil, err
	}
	pdu, err := room.version.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, httputil.BadJSON("invalid event: " + err.Error())
	}
	switch {
	case pdu.EventID() != eventID:
		return nil, httputil.BadJSON("event ID " + pdu.EventID() + " does not match the path")
	case pdu.RoomID().String() != roomID:
		return nil, httputil.BadJSON("event is for another room")
	case pdu.Type() != spec.MRoomMember || pdu.StateKey() == nil || *pdu.StateKey() != string(pdu.SenderID()):
		return nil, httputil.BadJSON("not a membership event of its sender")
	case serverOfID(string(pdu.SenderID())) != origin:
		return nil, httputil.Forbidden("the event's sender does not belong to " + origin)
	}
	if m, _ := pdu.Membership(); m != membership {
		return nil, httputil.BadJSON("membership must be " + membership)
	}
	if s.fed == nil {
		return nil, s.federationOff()
	}
	if membership == spec.Join {
		// A restricted join naming one of our users carries our signature
		// too (the auth rules then check only that user's power) — after
		// the same judgement as make_join, on our state now: the template
		// binds nothing, and the user may have left the allowed room since.
		if via := gjson.GetBytes(pdu.Content(), "join_authorised_via_users_server"); via.Exists() && s.isLocal(via.String()) {
			if err := s.checkVouchedJoin(ctx, room, string(pdu.SenderID())); err != nil {
				return nil, err
			}
			pdu = pdu.Sign(s.serverName, gomatrixserverlib.KeyID(s.key.KeyID), s.key.PrivateKey)
		}
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, pdu, s.fed.verifier, userIDForSender); err != nil {
		return nil, httputil.Forbidden("bad event signature: " + err.Error())
	}
	outcome, err := s.InputPDU(ctx, pdu, nil)
	if err != nil {
		if errors.Is(err, ErrMissingPrevEvents) {
			return nil, httputil.BadJSON("the event's prev events are unknown here")
		}
		return nil, err
	}
	if outcome == InputRejected || outcome == InputSoftFailed {
		return nil, httputil.Forbidden("the " + membership + " is not allowed by the room's auth rules")
	}
	slog.InfoContext(ctx, "remote membership accepted", "room_id", roomID, "user_id", string(pdu.SenderID()), "membership", membership, "origin", origin)
	res := &SendMembershipResult{Event: pdu.JSON(), State: []json.RawMessage{}, AuthChain: []json.RawMessage{}}
	if membership != spec.Join {
		return res, nil
	}
	state, chain, err := s.StateBeforeEvent(ctx, roomID, eventID)
	if err != nil {
		return nil, err
	}
	res.State, res.AuthChain = state, chain
	res.Servers, err = s.serversInRoom(ctx, room)
	return res, err
}

// SendMembershipResult is the answer of send_join (state and auth chain
// only for joins).
type SendMembershipResult struct {
	Event     json.RawMessage
	State     []json.RawMessage
	AuthChain []json.RawMessage
	Servers   []string
}

// StateBeforeEvent returns the room state before an event and the auth
// chain of that state and the event, as JSON: what /state, send_join and
// a joining server need.
func (s *Service) StateBeforeEvent(ctx context.Context, roomID, eventID string) (state, authChain []json.RawMessage, err error) {
	st, chain, err := s.stateBefore(ctx, roomID, eventID)
	if err != nil {
		return nil, nil, err
	}
	for _, p := range st {
		state = append(state, p.JSON())
	}
	for _, p := range chain {
		authChain = append(authChain, p.JSON())
	}
	if state == nil {
		state = []json.RawMessage{}
	}
	if authChain == nil {
		authChain = []json.RawMessage{}
	}
	return state, authChain, nil
}

func (s *Service) stateBefore(ctx context.Context, roomID, eventID string) (state, authChain []gomatrixserverlib.PDU, err error) {
	room, err := s.roomInfo(ctx, s.db, roomID)
	if err != nil {
		return nil, nil, err
	}
	known, err := s.knownEvents(ctx, s.db, []string{eventID})
	if err != nil {
		return nil, nil, err
	}
	k, ok := known[eventID]
	if !ok || k.outlier || k.rejected {
		return nil, nil, httputil.NotFound("event " + eventID + " is not in the room's timeline here")
	}
	st, err := s.StateAt(ctx, k.groupBefore)
	if err != nil {
		return nil, nil, err
	}
	nids := make([]int64, 0, len(st)+1)
	for _, nid := range st {
		nids = append(nids, nid)
	}
	pdus, err := s.loadPDUs(ctx, s.db, room, append(nids, k.nid))
	if err != nil {
		return nil, nil, err
	}
	ev := pdus[k.nid]
	for _, nid := range nids {
		if p := pdus[nid]; p != nil {
			state = append(state, p)
		}
	}
	sortByDepth(state)
	chainOf := append(append([]gomatrixserverlib.PDU{}, state...), ev)
	authChain, err = s.authChain(ctx, room, chainOf)
	if err != nil {
		return nil, nil, err
	}
	sortByDepth(authChain)
	return state, authChain, nil
}

// EventAuthChain returns the auth chain of one event of the room.
func (s *Service) EventAuthChain(ctx context.Context, roomID, eventID string) ([]json.RawMessage, error) {
	room, err := s.roomInfo(ctx, s.db, roomID)
	if err != nil {
		return nil, err
	}
	pdus, _, err := s.pdusByID(ctx, s.db, room, []string{eventID})
	if err != nil {
		return nil, err
	}
	ev, ok := pdus[eventID]
	if !ok {
		return nil, httputil.NotFound("event " + eventID + " is not known here")
	}
	chain, err := s.authChain(ctx, room, []gomatrixserverlib.PDU{ev})
	if err != nil {
		return nil, err
	}
	sortByDepth(chain)
	out := make([]json.RawMessage, 0, len(chain))
	for _, p := range chain {
		out = append(out, p.JSON())
	}
	return out, nil
}

func sortByDepth(pdus []gomatrixserverlib.PDU) {
	sort.SliceStable(pdus, func(i, j int) bool {
		if pdus[i].Depth() != pdus[j].Depth() {
			return pdus[i].Depth() < pdus[j].Depth()
		}
		return pdus[i].EventID() < pdus[j].EventID()
	})
}

// serversInRoom lists the servers with joined members, ours included.
func (s *Service) serversInRoom(ctx context.Context, room *roomInfo) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT user_id FROM room_members WHERE room_nid = $1 AND membership = 'join'`, room.nid)
	if err != nil {
		return nil, fmt.Errorf("servers in %s: %w", room.id, err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	out := []string{}
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		if srv := serverOfID(u); !seen[srv] {
			seen[srv] = true
			out = append(out, srv)
		}
	}
	sort.Strings(out)
	return out, rows.Err()
}

// ReceiveInvite serves the invited side of PUT /_matrix/federation/v2/invite:
// the invite is for one of our users, sent by a user of origin; we sign it
// and keep it (with the stripped state the inviter sent) so that the
// invitee's /sync shows it. Nothing else of the room is stored until the
// invitee joins.
func (s *Service) ReceiveInvite(ctx context.Context, origin, roomID, eventID, roomVersion string, raw []byte, strippedState []json.RawMessage) (json.RawMessage, error) {
	impl, ok := versionImpl(roomVersion)
	if !ok {
		return nil, errIncompatibleVersion(roomVersion)
	}
	pdu, err := impl.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, httputil.BadJSON("invalid event: " + err.Error())
	}
	switch {
	case pdu.EventID() != eventID:
		return nil, httputil.BadJSON("event ID " + pdu.EventID() + " does not match the path")
	case pdu.RoomID().String() != roomID:
		return nil, httputil.BadJSON("event is for another room")
	case pdu.Type() != spec.MRoomMember || pdu.StateKey() == nil:
		return nil, httputil.BadJSON("not a membership event")
	case serverOfID(string(pdu.SenderID())) != origin:
		return nil, httputil.Forbidden("the inviter does not belong to " + origin)
	}
	if m, _ := pdu.Membership(); m != spec.Invite {
		return nil, httputil.BadJSON("membership must be invite")
	}
	invitee := *pdu.StateKey()
	if !s.isLocal(invitee) {
		return nil, httputil.BadJSON("the invitee " + invitee + " is not a user of this server")
	}
	if _, _, err := s.profile(ctx, invitee); errors.Is(err, ErrUnknownUser) {
		return nil, httputil.NotFound("unknown user " + invitee)
	} else if err != nil {
		return nil, fmt.Errorf("profile of %s: %w", invitee, err)
	}
	if s.fed == nil {
		return nil, s.federationOff()
	}
	if err := s.checkRemoteMembership(ctx, roomID, string(pdu.SenderID()), invitee, pdu.Content()); err != nil {
		return nil, err
	}
	// Sign first: the auth rules want an invite signed by the invitee's
	// server too, so the check of the inviter's signature runs on the
	// doubly signed event.
	signed := pdu.Sign(s.serverName, gomatrixserverlib.KeyID(s.key.KeyID), s.key.PrivateKey)
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, signed, s.fed.verifier, userIDForSender); err != nil {
		return nil, httputil.Forbidden("bad event signature: " + err.Error())
	}
	if room, err := s.roomInfo(ctx, s.db, roomID); err == nil {
		if ok, err := s.resident(ctx, room); err != nil {
			return nil, err
		} else if ok {
			if m, _ := s.Membership(ctx, roomID, invitee); m == spec.Join {
				return nil, httputil.Forbidden(invitee + " is already in the room")
			}
			// We are in the room: the invite reaches us as a PDU of the
			// room like any other event and becomes state then; keeping
			// it out of band as well would only compete with that.
			slog.InfoContext(ctx, "remote invite signed for a room we are in", "room_id", roomID, "origin", origin)
			return signed.JSON(), nil
		}
	}
	answer := signed.JSON()

	// What the invitee's client sees: the stripped state, which the spec
	// has the invitee's server keep in the invite's unsigned section.
	stripped := make([]json.RawMessage, 0, len(strippedState))
	for _, st := range strippedState {
		if json.Valid(st) && len(st) > 0 && st[0] == '{' {
			stripped = append(stripped, st)
		}
	}
	if err := signed.SetUnsignedField("invite_room_state", stripped); err != nil {
		return nil, fmt.Errorf("keep invite state: %w", err)
	}
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		room, err := s.ensureRoomRow(ctx, tx, roomID, roomVersion, string(pdu.SenderID()))
		if err != nil {
			return err
		}
		if err := tx.LockRoom(ctx, roomID); err != nil {
			return err
		}
		var current sql.NullString
		err = tx.QueryRow(ctx, `SELECT membership FROM room_members WHERE room_nid = $1 AND user_id = $2`, room.nid, invitee).Scan(&current)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read membership: %w", err)
		}
		if current.String == spec.Join || current.String == spec.Ban {
			return httputil.Forbidden(invitee + " cannot be invited: membership is " + current.String)
		}
		return s.storeOutOfBand(ctx, tx, room, signed, invitee, spec.Invite)
	})
	if err != nil {
		return nil, err
	}
	slog.InfoContext(ctx, "remote invite received", "room_id", roomID, "user_id", invitee, "origin", origin)
	return answer, nil
}

// ensureRoomRow returns the room, creating its row (without state) when
// the server does not know it yet.
func (s *Service) ensureRoomRow(ctx context.Context, tx *storage.DB, roomID, version, creator string) (*roomInfo, error) {
	if _, err := tx.Exec(ctx, `INSERT INTO rooms (room_id, room_version, creator, published, created_ts) VALUES ($1, $2, $3, FALSE, $4)
		ON CONFLICT (room_id) DO NOTHING`, roomID, version, creator, s.now().UnixMilli()); err != nil {
		return nil, fmt.Errorf("insert room %s: %w", roomID, err)
	}
	room, err := s.roomInfo(ctx, tx, roomID)
	if err != nil {
		return nil, err
	}
	if string(room.version.Version()) != version {
		return nil, httputil.BadJSON(fmt.Sprintf("room %s is version %s here, not %s", roomID, room.version.Version(), version))
	}
	return room, nil
}

// storeOutOfBand stores a membership event of a room we are not in (an
// invite, the rejection of one) as an outlier and makes it the user's
// membership, with its own stream position so /sync reports it.
func (s *Service) storeOutOfBand(ctx context.Context, tx *storage.DB, room *roomInfo, pdu gomatrixserverlib.PDU, userID, membership string) error {
	if err := s.insertOutlier(ctx, tx, room, pdu, false); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `UPDATE events SET json = $1 WHERE event_id = $2`, string(pdu.JSON()), pdu.EventID()); err != nil {
		return fmt.Errorf("store %s: %w", pdu.EventID(), err)
	}
	var nid int64
	if err := tx.QueryRow(ctx, `SELECT event_nid FROM events WHERE event_id = $1`, pdu.EventID()).Scan(&nid); err != nil {
		return fmt.Errorf("store %s: %w", pdu.EventID(), err)
	}
	pos, err := tx.NextStreamPos(ctx, 1)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO room_members (room_nid, user_id, membership, event_nid, stream_pos, forgotten)
		VALUES ($1, $2, $3, $4, $5, FALSE)
		ON CONFLICT (room_nid, user_id) DO UPDATE SET membership = excluded.membership, event_nid = excluded.event_nid,
			stream_pos = excluded.stream_pos, forgotten = FALSE`, room.nid, userID, membership, nid, pos); err != nil {
		return fmt.Errorf("store membership of %s: %w", userID, err)
	}
	tx.AfterCommit(func() { s.notifier.Publish(pos) })
	return nil
}

// ---- The joining side ----

// JoinVia joins a room by ID or alias: locally when this server is in the
// room, else over federation through the given servers (via /
// server_name), the alias's own server and, for an invite, the inviter's
// server — or, when none of these is known, the room ID's server; only
// partners on the allowlist.
func (s *Service) JoinVia(ctx context.Context, userID, roomIDOrAlias, reason string, via []string) (string, error) {
	return s.JoinViaContent(ctx, userID, roomIDOrAlias, JoinContent{Reason: reason}, via)
}

// JoinViaContent is JoinVia with what the client's join body carried.
func (s *Service) JoinViaContent(ctx context.Context, userID, roomIDOrAlias string, jc JoinContent, via []string) (string, error) {
	jc.Extra = joinExtra(jc.Extra)
	roomID := roomIDOrAlias
	if strings.HasPrefix(roomIDOrAlias, "#") {
		aliasServer := serverOfID(roomIDOrAlias)
		if aliasServer == s.serverName || s.fed == nil {
			return s.joinWith(ctx, userID, roomIDOrAlias, jc)
		}
		if !s.fed.allowed(aliasServer) {
			return "", httputil.Forbidden(aliasServer + " is not a federation partner of this server")
		}
		dir, err := s.fed.client.LookupRoomAlias(ctx, spec.ServerName(s.serverName), spec.ServerName(aliasServer), roomIDOrAlias)
		if err != nil {
			return "", remoteError("resolve "+roomIDOrAlias+" on "+aliasServer, err)
		}
		roomID = dir.RoomID
		for _, srv := range dir.Servers {
			via = append(via, string(srv))
		}
		via = append(via, aliasServer)
	}
	if _, err := spec.NewRoomID(roomID); err != nil {
		return "", httputil.InvalidParam("invalid room ID " + roomID)
	}
	room, err := s.roomInfo(ctx, s.db, roomID)
	if err != nil && s.policy != nil {
		// a room ID that names no room here may be the node policy's
		// (a coupling code's lobby)
		if vroom, verr := s.policy.JoinVirtual(ctx, userID, roomID); verr != nil || vroom != "" {
			return vroom, verr
		}
	}
	if err == nil {
		ok, err := s.resident(ctx, room)
		if err != nil {
			return "", err
		}
		if ok || s.fed == nil {
			joined, err := s.joinWith(ctx, userID, roomID, jc)
			if err == nil || s.fed == nil || !joinViaOtherServer(err) {
				return joined, err
			}
			// A restricted room we cannot vouch for our own user in: a
			// resident server that can may (make_join fails over too).
			servers, serr := s.serversInRoom(ctx, room)
			if serr != nil {
				return "", serr
			}
			slog.InfoContext(ctx, "restricted join goes through another server", "room_id", roomID, "user_id", userID, "reason", err.Error())
			via = append(via, servers...)
			joined, rerr := s.joinVia(ctx, userID, roomID, jc, via)
			var he *httputil.Error
			if rerr == nil {
				return joined, nil
			}
			// Asking elsewhere took a round trip, in which the events that
			// let us vouch (a power level change, the user's join of an
			// allowed room) may have reached us: judge once more.
			if joined, err2 := s.joinWith(ctx, userID, roomID, jc); err2 == nil || !joinViaOtherServer(err2) {
				return joined, err2
			}
			if errors.As(rerr, &he) && he.Status == http.StatusForbidden {
				return "", rerr
			}
			// no server could: to our client that is a refusal
			errors.As(err, &he)
			return "", httputil.Forbidden(he.Message)
		}
		// an invite tells us where the room lives
		if inviter, err := s.outOfBandSender(ctx, room, userID); err == nil && inviter != "" {
			via = append(via, serverOfID(inviter))
		}
	} else if s.fed == nil {
		return "", err
	}
	if srv := serverOfID(roomID); srv != "" && len(via) == 0 {
		// Room IDs are opaque: the server that created the room is only a
		// last guess when nobody said where the room lives. Given servers
		// are not second-guessed (a restricted room's vouching server is
		// the joiner's choice).
		via = append(via, srv)
	}
	return s.joinVia(ctx, userID, roomID, jc, via)
}

// joinVia tries a remote join through each server of via in turn, until
// one succeeds or refuses with 403.
func (s *Service) joinVia(ctx context.Context, userID, roomID string, jc JoinContent, via []string) (string, error) {
	var tried []string
	var lastErr error
	for _, srv := range via {
		if srv == "" || srv == s.serverName || slices.Contains(tried, srv) {
			continue
		}
		tried = append(tried, srv)
		if !s.fed.allowed(srv) {
			lastErr = httputil.Forbidden(srv + " is not a federation partner of this server")
			continue
		}
		if err := s.joinRemote(ctx, srv, roomID, userID, jc); err != nil {
			slog.WarnContext(ctx, "remote join failed", "room_id", roomID, "server", srv, "err", err)
			lastErr = err
			var he *httputil.Error
			if errors.As(err, &he) && he.Status == http.StatusForbidden {
				return "", err
			}
			continue
		}
		return roomID, nil
	}
	if lastErr == nil {
		return "", httputil.NotFound("room " + roomID + " is not known here and no server to join it through was given")
	}
	var he *httputil.Error
	if errors.As(lastErr, &he) {
		return "", lastErr
	}
	return "", httputil.Errorf(http.StatusBadGateway, "M_UNKNOWN", "could not join %s through %s", roomID, strings.Join(tried, ", "))
}

// outOfBandSender returns the sender of userID's current membership event
// (the inviter for an invite).
func (s *Service) outOfBandSender(ctx context.Context, room *roomInfo, userID string) (string, error) {
	var sender string
	err := s.db.QueryRow(ctx, `SELECT e.sender FROM room_members m JOIN events e ON e.event_nid = m.event_nid
		WHERE m.room_nid = $1 AND m.user_id = $2`, room.nid, userID).Scan(&sender)
	return sender, err
}

// remoteError turns a federation client error into what our client is
// told: the remote server's Matrix error when it sent one.
func remoteError(what string, err error) error {
	var he gomatrix.HTTPError
	if errors.As(err, &he) {
		var me struct {
			Code string `json:"errcode"`
			Msg  string `json:"error"`
		}
		if json.Unmarshal(he.Contents, &me) == nil && me.Code != "" {
			status := he.Code
			if status < 400 || status >= 500 {
				status = http.StatusBadGateway
			}
			return httputil.Errorf(status, me.Code, "%s: %s", what, me.Msg)
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// joinRemote runs make_join and send_join against server and stores the
// room's state, auth chain and our join.
func (s *Service) joinRemote(ctx context.Context, server, roomID, userID string, jc JoinContent) error {
	if err := s.checkRemoteMembership(ctx, roomID, userID, userID, []byte(`{"membership":"join"}`)); err != nil {
		return err
	}
	us := spec.ServerName(s.serverName)
	made, err := s.fed.client.MakeJoin(ctx, us, spec.ServerName(server), roomID, userID)
	if err != nil {
		return remoteError("make_join on "+server, err)
	}
	impl, ok := versionImpl(string(made.RoomVersion))
	if !ok {
		return errUnsupportedVersion(string(made.RoomVersion))
	}
	pe := made.JoinEvent
	if pe.Type != spec.MRoomMember || pe.SenderID != userID || pe.StateKey == nil || *pe.StateKey != userID || pe.RoomID != roomID {
		return fmt.Errorf("make_join on %s returned a template for something else", server)
	}
	content := map[string]any{}
	_ = json.Unmarshal(pe.Content, &content)
	for k, v := range jc.Extra {
		content[k] = v
	}
	content["membership"] = spec.Join
	if jc.Reason != "" {
		content["reason"] = jc.Reason
	}
	dn, av, err := s.profile(ctx, userID)
	if err != nil && !errors.Is(err, ErrUnknownUser) {
		return fmt.Errorf("profile of %s: %w", userID, err)
	}
	setProfile(content, dn, av)
	pe.Content = mustJSON(content)
	pe.Version = impl
	join, err := impl.NewEventBuilderFromProtoEvent(&pe).Build(s.now(), us, gomatrixserverlib.KeyID(s.key.KeyID), s.key.PrivateKey)
	if err != nil {
		return fmt.Errorf("build join for %s: %w", roomID, err)
	}
	sent, err := s.fed.client.SendJoin(ctx, us, spec.ServerName(server), join)
	if err != nil {
		return remoteError("send_join on "+server, err)
	}
	if len(sent.Event) > 0 {
		// a restricted join comes back signed by the resident server too
		if ev, err := impl.NewEventFromUntrustedJSON(sent.Event); err == nil && ev.EventID() == join.EventID() {
			join = ev
		}
	}
	if room, err := s.roomInfo(ctx, s.db, roomID); err == nil {
		if ok, err := s.resident(ctx, room); err != nil {
			return err
		} else if ok {
			return s.inputResidentJoin(ctx, server, join)
		}
	}
	state, chain, err := s.checkJoinState(ctx, impl, roomID, rawList(sent.StateEvents), rawList(sent.AuthEvents))
	if err != nil {
		return fmt.Errorf("state from %s: %w", server, err)
	}
	provider, err := gomatrixserverlib.NewAuthEvents(state)
	if err != nil {
		return err
	}
	if err := gomatrixserverlib.Allowed(join, provider, userIDForSender); err != nil {
		return httputil.Forbidden("the room's state does not allow the join: " + err.Error())
	}
	if err := s.storeJoinedRoom(ctx, impl, roomID, chain, state, join); err != nil {
		return err
	}
	slog.InfoContext(ctx, "joined remote room", "room_id", roomID, "user_id", userID, "via", server, "state_events", len(state))
	s.backfillJoined(ctx, server, roomID, join)
	return nil
}

// checkJoinState verifies the state and auth chain a resident server
// returned: every event parses for the room version, is of this room,
// carries valid signatures, is allowed by its own auth events, and names
// only partner servers. Events failing a check are dropped; a state
// without a create event is refused.
func (s *Service) checkJoinState(ctx context.Context, impl gomatrixserverlib.IRoomVersion, roomID string, stateJSON, chainJSON []json.RawMessage) (state, chain []gomatrixserverlib.PDU, err error) {
	byID := map[string]gomatrixserverlib.PDU{}
	parse := func(list []json.RawMessage) ([]gomatrixserverlib.PDU, error) {
		var out []gomatrixserverlib.PDU
		for _, raw := range list {
			p, err := impl.NewEventFromUntrustedJSON(raw)
			if err != nil {
				slog.InfoContext(ctx, "join state event refused", "room_id", roomID, "reason", err.Error())
				continue
			}
			if p.RoomID().String() != roomID {
				continue
			}
			if !s.fed.allowed(serverOfID(string(p.SenderID()))) && serverOfID(string(p.SenderID())) != s.serverName {
				return nil, httputil.Forbidden("the room has events from " + serverOfID(string(p.SenderID())) + ", which is not a federation partner of this server")
			}
			if p.Type() == spec.MRoomMember && p.StateKey() != nil {
				if srv := serverOfID(*p.StateKey()); srv != s.serverName && !s.fed.allowed(srv) {
					return nil, httputil.Forbidden("the room has members on " + srv + ", which is not a federation partner of this server")
				}
			}
			if prev, dup := byID[p.EventID()]; dup {
				p = prev // in both lists: one parsed copy
			}
			byID[p.EventID()] = p
			out = append(out, p)
		}
		return out, nil
	}
	if chain, err = parse(chainJSON); err != nil {
		return nil, nil, err
	}
	if state, err = parse(stateJSON); err != nil {
		return nil, nil, err
	}
	all := make([]gomatrixserverlib.PDU, 0, len(byID))
	for _, p := range byID {
		all = append(all, p)
	}
	errs := gomatrixserverlib.VerifyAllEventSignatures(ctx, all, s.fed.verifier, userIDForSender)
	bad := map[string]bool{}
	for i, e := range errs {
		if e != nil {
			bad[all[i].EventID()] = true
			slog.InfoContext(ctx, "join state event with a bad signature dropped", "room_id", roomID, "event_id", all[i].EventID())
		}
	}
	// Auth check in depth order, each event against its own auth events
	// among those already accepted.
	sortByDepth(all)
	var create gomatrixserverlib.PDU
	for _, p := range all {
		if p.Type() == spec.MRoomCreate && p.StateKey() != nil && *p.StateKey() == "" && !bad[p.EventID()] {
			create = p
		}
	}
	if create == nil {
		return nil, nil, errors.New("no create event in the state")
	}
	for _, p := range all {
		if bad[p.EventID()] {
			continue
		}
		var auth []gomatrixserverlib.PDU
		for _, id := range p.AuthEventIDs() {
			a, ok := byID[id]
			if !ok || bad[id] {
				bad[p.EventID()] = true
				break
			}
			auth = append(auth, a)
		}
		if bad[p.EventID()] {
			continue
		}
		if impl.DomainlessRoomIDs() && p.Type() != spec.MRoomCreate {
			auth = append(auth, create)
		}
		provider, err := gomatrixserverlib.NewAuthEvents(auth)
		if err != nil {
			bad[p.EventID()] = true
			continue
		}
		if err := gomatrixserverlib.Allowed(p, provider, userIDForSender); err != nil {
			slog.InfoContext(ctx, "join state event fails its auth events", "room_id", roomID, "event_id", p.EventID())
			bad[p.EventID()] = true
		}
	}
	keep := func(list []gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
		out := list[:0]
		for _, p := range list {
			if !bad[p.EventID()] {
				out = append(out, p)
			}
		}
		return out
	}
	state, chain = keep(state), keep(chain)
	hasCreate := false
	for _, p := range state {
		if p.Type() == spec.MRoomCreate {
			hasCreate = true
		}
	}
	if !hasCreate {
		return nil, nil, errors.New("the state has no valid create event")
	}
	return state, chain, nil
}

// storeJoinedRoom stores a room joined over federation in one
// transaction: the auth chain and state as outliers, a state snapshot,
// the current state, then our join on top of it like a local event, and
// the memberships of everyone in the state.
func (s *Service) storeJoinedRoom(ctx context.Context, impl gomatrixserverlib.IRoomVersion, roomID string, chain, state []gomatrixserverlib.PDU, join gomatrixserverlib.PDU) error {
	var creator string
	for _, p := range state {
		if p.Type() == spec.MRoomCreate {
			creator = string(p.SenderID())
		}
	}
	var room *roomInfo
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		var err error
		room, err = s.ensureRoomRow(ctx, tx, roomID, string(impl.Version()), creator)
		if err != nil {
			return err
		}
		if err := tx.LockRoom(ctx, roomID); err != nil {
			return err
		}
		var locals int
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM room_members WHERE room_nid = $1 AND membership = 'join' AND user_id LIKE $2`,
			room.nid, "%:"+s.serverName).Scan(&locals); err != nil {
			return fmt.Errorf("read room %s: %w", roomID, err)
		}
		if locals > 0 {
			// Another join of ours got there first: the room is ours now,
			// send the join the ordinary way.
			return errAlreadyResident
		}
		// A room we left (or never were in) gets the state the resident
		// server sent: whatever we held of it is stale.
		for _, p := range append(append([]gomatrixserverlib.PDU{}, chain...), state...) {
			if err := s.insertOutlier(ctx, tx, room, p, false); err != nil {
				return err
			}
		}
		ids := make([]string, 0, len(state))
		for _, p := range state {
			ids = append(ids, p.EventID())
		}
		known, err := s.knownEvents(ctx, tx, ids)
		if err != nil {
			return err
		}
		snapshot := map[[2]string]int64{}
		var depth int64
		members := map[string]string{} // user → membership
		memberNID := map[string]int64{}
		for _, p := range state {
			if p.StateKey() == nil {
				continue
			}
			nid := known[p.EventID()].nid
			snapshot[[2]string{p.Type(), *p.StateKey()}] = nid
			depth = max(depth, p.Depth())
			if p.Type() == spec.MRoomMember {
				m, _ := p.Membership()
				members[*p.StateKey()], memberNID[*p.StateKey()] = m, nid
			}
		}
		g, err := s.replaceCurrentState(ctx, tx, room, snapshot)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM forward_extremities WHERE room_nid = $1`, room.nid); err != nil {
			return fmt.Errorf("reset extremities: %w", err)
		}
		w := &writer{s: s, tx: tx, room: room, group: g, depth: depth, state: map[gomatrixserverlib.StateKeyTuple]stateEntry{}}
		if _, err := w.persist(ctx, join, "", ""); err != nil {
			return err
		}
		pos, err := w.finish(ctx)
		if err != nil {
			return err
		}
		joiner := *join.StateKey()
		// The others were members before our join: their rows sit just
		// before it on the stream (the sender relies on a member's
		// position preceding the events it must receive; sync finds the
		// new room-mates through our join's position).
		for u, m := range members {
			if u == joiner {
				continue
			}
			if _, err := tx.Exec(ctx, `INSERT INTO room_members (room_nid, user_id, membership, event_nid, stream_pos, forgotten)
				VALUES ($1, $2, $3, $4, $5, FALSE)
				ON CONFLICT (room_nid, user_id) DO UPDATE SET membership = excluded.membership, event_nid = excluded.event_nid,
					stream_pos = excluded.stream_pos`, room.nid, u, m, memberNID[u], pos-1); err != nil {
				return fmt.Errorf("store membership of %s: %w", u, err)
			}
		}
		return nil
	})
	if errors.Is(err, errAlreadyResident) {
		_, err = s.Join(ctx, *join.StateKey(), roomID, "")
		return err
	}
	if err != nil {
		return err
	}
	s.rooms.Store(roomID, room)
	return nil
}

var errAlreadyResident = errors.New("room became resident meanwhile")

// ---- Inviting and leaving across servers ----

// InviteAny invites a local user, or a remote one over federation.
func (s *Service) InviteAny(ctx context.Context, req MembershipRequest) (string, error) {
	if _, err := spec.NewUserID(req.Target, true); err != nil {
		return "", httputil.InvalidParam("invalid user ID " + req.Target)
	}
	if s.isLocal(req.Target) {
		return s.Invite(ctx, req)
	}
	return s.inviteRemote(ctx, req)
}

// inviteRemote builds the invite on the room's head, has the invitee's
// server sign it (PUT /invite v2), then inputs the doubly signed event.
func (s *Service) inviteRemote(ctx context.Context, req MembershipRequest) (string, error) {
	if s.fed == nil {
		return "", s.federationOff()
	}
	target := serverOfID(req.Target)
	if !s.fed.allowed(target) {
		return "", httputil.Forbidden(target + " is not a federation partner of this server")
	}
	room, err := s.roomInfo(ctx, s.db, req.RoomID)
	if err != nil {
		return "", err
	}
	w, err := s.readHead(ctx, s.db, room)
	if err != nil {
		return "", err
	}
	old, err := w.membership(ctx, req.Target)
	if err != nil {
		return "", err
	}
	switch old {
	case spec.Join:
		return "", httputil.Forbidden(req.Target + " is already in the room")
	case spec.Ban:
		return "", httputil.Forbidden(req.Target + " is banned from the room")
	}
	content := map[string]any{"membership": spec.Invite}
	if req.Reason != "" {
		content["reason"] = req.Reason
	}
	if req.IsDirect {
		content["is_direct"] = true
	}
	pdu, err := w.build(ctx, proto{sender: req.Sender, evType: spec.MRoomMember, stateKey: &req.Target, content: mustJSON(content)})
	if err != nil {
		return "", err
	}
	keys := append([]gomatrixserverlib.StateKeyTuple{}, strippedStateKeys...)
	keys = append(keys, gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomMember, StateKey: req.Sender})
	if err := w.load(ctx, keys); err != nil {
		return "", err
	}
	var stripped []gomatrixserverlib.InviteStrippedState
	for _, k := range keys {
		if e := w.state[k].pdu; e != nil {
			stripped = append(stripped, gomatrixserverlib.NewInviteStrippedState(e))
		}
	}
	invReq, err := fclient.NewInviteV2Request(pdu, stripped)
	if err != nil {
		return "", err
	}
	resp, err := s.sendInvite(ctx, target, invReq)
	if err != nil {
		return "", inviteFailed(ctx, target, err)
	}
	signed, err := room.version.NewEventFromUntrustedJSON(resp.Event)
	if err != nil || signed.EventID() != pdu.EventID() {
		return "", httputil.Errorf(http.StatusBadGateway, "M_UNKNOWN", "%s returned a different invite event", target)
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, signed, s.fed.verifier, userIDForSender); err != nil {
		return "", httputil.Errorf(http.StatusBadGateway, "M_UNKNOWN", "%s returned a badly signed invite", target)
	}
	outcome, err := s.InputPDU(ctx, signed, nil)
	if err != nil {
		return "", err
	}
	if outcome == InputRejected || outcome == InputSoftFailed {
		return "", httputil.Forbidden("the invite is no longer allowed by the room's state")
	}
	slog.InfoContext(ctx, "remote user invited", "room_id", room.id, "server", target)
	return signed.EventID(), nil
}

// LeaveAny leaves a room: locally when this server is in it, else (an
// invite from another server) through make_leave/send_leave on the
// inviter's or the room's server.
func (s *Service) LeaveAny(ctx context.Context, userID, roomID, reason string) error {
	if _, err := spec.NewRoomID(roomID); err != nil {
		return httputil.InvalidParam("invalid room ID " + roomID)
	}
	room, err := s.roomInfo(ctx, s.db, roomID)
	if err != nil {
		return err
	}
	ok, err := s.resident(ctx, room)
	if err != nil {
		return err
	}
	if ok || s.fed == nil {
		return s.Leave(ctx, userID, roomID, reason)
	}
	var membership string
	err = s.db.QueryRow(ctx, `SELECT membership FROM room_members WHERE room_nid = $1 AND user_id = $2`, room.nid, userID).Scan(&membership)
	if errors.Is(err, sql.ErrNoRows) || membership == spec.Leave {
		if err == nil {
			return nil
		}
		return httputil.Forbidden("you are not in room " + roomID)
	}
	if err != nil {
		return fmt.Errorf("read membership: %w", err)
	}
	var via []string
	if inviter, err := s.outOfBandSender(ctx, room, userID); err == nil {
		via = append(via, serverOfID(inviter))
	}
	via = append(via, serverOfID(roomID))
	var lastErr error
	for _, srv := range via {
		if srv == "" || srv == s.serverName || !s.fed.allowed(srv) {
			continue
		}
		if lastErr = s.leaveRemote(ctx, srv, room, userID, reason); lastErr == nil {
			return nil
		}
		slog.WarnContext(ctx, "remote leave failed", "room_id", roomID, "server", srv, "err", lastErr)
	}
	// The inviting server is gone or refuses: still honour the user's
	// wish locally, as the spec allows for rejecting an invite.
	slog.InfoContext(ctx, "invite rejected locally only", "room_id", roomID)
	return s.rejectLocally(ctx, room, userID, reason)
}

// rejectLocally records the rejection of an invite that no server of the
// room took. When the invite is part of the room history we hold (a room
// of ours that every local member has left), the leave goes into that
// history like any other and reaches whichever servers are still in the
// room. Otherwise it is a leave event signed by us that follows the invite
// (its only prev and auth event), stored out of band. Either way the
// user's /sync shows the room under leave with the rejection in its
// timeline.
func (s *Service) rejectLocally(ctx context.Context, room *roomInfo, userID, reason string) error {
	var inviteID string
	var depth int64
	var outlier, haveState bool
	err := s.db.QueryRow(ctx, `SELECT e.event_id, e.depth, e.outlier, r.current_state_group IS NOT NULL
		FROM room_members m JOIN events e ON e.event_nid = m.event_nid JOIN rooms r ON r.room_nid = m.room_nid
		WHERE m.room_nid = $1 AND m.user_id = $2`, room.nid, userID).Scan(&inviteID, &depth, &outlier, &haveState)
	if err != nil {
		return fmt.Errorf("read the invite of %s: %w", userID, err)
	}
	if !outlier && haveState {
		return s.Leave(ctx, userID, room.id, reason)
	}
	content := map[string]any{"membership": spec.Leave}
	if reason != "" {
		content["reason"] = reason
	}
	stateKey := userID
	pe := gomatrixserverlib.ProtoEvent{
		SenderID: userID, RoomID: room.id, Type: spec.MRoomMember, StateKey: &stateKey,
		PrevEvents: []string{inviteID}, AuthEvents: []string{inviteID}, Depth: depth + 1,
		Content: mustJSON(content), Version: room.version,
	}
	leave, err := room.version.NewEventBuilderFromProtoEvent(&pe).Build(s.now(), spec.ServerName(s.serverName), gomatrixserverlib.KeyID(s.key.KeyID), s.key.PrivateKey)
	if err != nil {
		return fmt.Errorf("build out-of-band leave: %w", err)
	}
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		if err := tx.LockRoom(ctx, room.id); err != nil {
			return err
		}
		return s.storeOutOfBand(ctx, tx, room, leave, userID, spec.Leave)
	})
}

func (s *Service) leaveRemote(ctx context.Context, server string, room *roomInfo, userID, reason string) error {
	us := spec.ServerName(s.serverName)
	made, err := s.fed.client.MakeLeave(ctx, us, spec.ServerName(server), room.id, userID)
	if err != nil {
		return remoteError("make_leave on "+server, err)
	}
	pe := made.LeaveEvent
	if pe.Type != spec.MRoomMember || pe.SenderID != userID || pe.StateKey == nil || *pe.StateKey != userID || pe.RoomID != room.id {
		return fmt.Errorf("make_leave on %s returned a template for something else", server)
	}
	content := map[string]any{"membership": spec.Leave}
	if reason != "" {
		content["reason"] = reason
	}
	pe.Content = mustJSON(content)
	pe.Version = room.version
	leave, err := room.version.NewEventBuilderFromProtoEvent(&pe).Build(s.now(), us, gomatrixserverlib.KeyID(s.key.KeyID), s.key.PrivateKey)
	if err != nil {
		return fmt.Errorf("build leave: %w", err)
	}
	if err := s.fed.client.SendLeave(ctx, us, spec.ServerName(server), leave); err != nil {
		return remoteError("send_leave on "+server, err)
	}
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		if err := tx.LockRoom(ctx, room.id); err != nil {
			return err
		}
		return s.storeOutOfBand(ctx, tx, room, leave, userID, spec.Leave)
	})
}

func rawList(list gomatrixserverlib.EventJSONs) []json.RawMessage {
	out := make([]json.RawMessage, len(list))
	for i, e := range list {
		out[i] = json.RawMessage(e)
	}
	return out
}

// KnockVia knocks on a room: locally when this server is in it, else
// over federation (make_knock/send_knock) through the given servers and
// the room's own. The knock is kept with the room summary the resident
// server returned, for the knocker's /sync.
func (s *Service) KnockVia(ctx context.Context, userID, roomIDOrAlias, reason string, via []string) (string, error) {
	roomID := roomIDOrAlias
	if strings.HasPrefix(roomIDOrAlias, "#") {
		if serverOfID(roomIDOrAlias) == s.serverName || s.fed == nil {
			return s.Knock(ctx, userID, roomIDOrAlias, reason)
		}
		id, servers, err := s.ResolveAliasAny(ctx, roomIDOrAlias)
		if err != nil {
			return "", err
		}
		roomID, via = id, append(via, append(servers, serverOfID(roomIDOrAlias))...)
	}
	if _, err := spec.NewRoomID(roomID); err != nil {
		return "", httputil.InvalidParam("invalid room ID " + roomID)
	}
	if room, err := s.roomInfo(ctx, s.db, roomID); err == nil {
		if ok, err := s.resident(ctx, room); err != nil {
			return "", err
		} else if ok || s.fed == nil {
			return s.Knock(ctx, userID, roomID, reason)
		}
	} else if s.fed == nil {
		return "", err
	}
	via = append(via, serverOfID(roomID))
	var tried []string
	var lastErr error
	for _, srv := range via {
		if srv == "" || srv == s.serverName || slices.Contains(tried, srv) {
			continue
		}
		tried = append(tried, srv)
		if !s.fed.allowed(srv) {
			lastErr = httputil.Forbidden(srv + " is not a federation partner of this server")
			continue
		}
		if lastErr = s.knockRemote(ctx, srv, roomID, userID, reason); lastErr == nil {
			return roomID, nil
		}
		slog.WarnContext(ctx, "remote knock failed", "room_id", roomID, "server", srv, "err", lastErr)
		var he *httputil.Error
		if errors.As(lastErr, &he) && he.Status == http.StatusForbidden {
			return "", lastErr
		}
	}
	if lastErr == nil {
		return "", httputil.NotFound("room " + roomID + " is not known here and no server to knock through was given")
	}
	var he *httputil.Error
	if errors.As(lastErr, &he) {
		return "", lastErr
	}
	return "", httputil.Errorf(http.StatusBadGateway, "M_UNKNOWN", "could not knock on %s through %s", roomID, strings.Join(tried, ", "))
}

func (s *Service) knockRemote(ctx context.Context, server, roomID, userID, reason string) error {
	if err := s.checkRemoteMembership(ctx, roomID, userID, userID, []byte(`{"membership":"knock"}`)); err != nil {
		return err
	}
	us := spec.ServerName(s.serverName)
	versions := make([]gomatrixserverlib.RoomVersion, 0, len(supportedVersions))
	for _, v := range supportedVersions {
		versions = append(versions, gomatrixserverlib.RoomVersion(v))
	}
	made, err := s.fed.client.MakeKnock(ctx, us, spec.ServerName(server), roomID, userID, versions)
	if err != nil {
		return remoteError("make_knock on "+server, err)
	}
	impl, ok := versionImpl(string(made.RoomVersion))
	if !ok {
		return errUnsupportedVersion(string(made.RoomVersion))
	}
	pe := made.KnockEvent
	if pe.Type != spec.MRoomMember || pe.SenderID != userID || pe.StateKey == nil || *pe.StateKey != userID || pe.RoomID != roomID {
		return fmt.Errorf("make_knock on %s returned a template for something else", server)
	}
	content := map[string]any{"membership": spec.Knock}
	if reason != "" {
		content["reason"] = reason
	}
	dn, av, err := s.profile(ctx, userID)
	if err != nil && !errors.Is(err, ErrUnknownUser) {
		return fmt.Errorf("profile of %s: %w", userID, err)
	}
	setProfile(content, dn, av)
	pe.Content = mustJSON(content)
	pe.Version = impl
	knock, err := impl.NewEventBuilderFromProtoEvent(&pe).Build(s.now(), us, gomatrixserverlib.KeyID(s.key.KeyID), s.key.PrivateKey)
	if err != nil {
		return fmt.Errorf("build knock: %w", err)
	}
	// send_knock by hand: the stripped state is kept as the bytes sent
	req := fclient.NewFederationRequest("PUT", us, spec.ServerName(server),
		"/_matrix/federation/v1/send_knock/"+url.PathEscape(roomID)+"/"+url.PathEscape(knock.EventID()))
	if err := req.SetContent(json.RawMessage(knock.JSON())); err != nil {
		return err
	}
	if err := req.Sign(us, gomatrixserverlib.KeyID(s.key.KeyID), s.key.PrivateKey); err != nil {
		return err
	}
	hreq, err := req.HTTPRequest()
	if err != nil {
		return err
	}
	var res struct {
		KnockRoomState []json.RawMessage `json:"knock_room_state"`
	}
	if err := s.fed.client.DoRequestAndParseResponse(ctx, hreq, &res); err != nil {
		return remoteError("send_knock on "+server, err)
	}
	stripped := []json.RawMessage{}
	for _, st := range res.KnockRoomState {
		if json.Valid(st) && len(st) > 0 && st[0] == '{' {
			stripped = append(stripped, st)
		}
	}
	if err := knock.SetUnsignedField("knock_room_state", stripped); err != nil {
		return fmt.Errorf("keep knock state: %w", err)
	}
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		room, err := s.ensureRoomRow(ctx, tx, roomID, string(impl.Version()), "")
		if err != nil {
			return err
		}
		if err := tx.LockRoom(ctx, roomID); err != nil {
			return err
		}
		return s.storeOutOfBand(ctx, tx, room, knock, userID, spec.Knock)
	})
}

// CreateRoomAny is CreateRoom, whose invite list may name partners'
// users: they are checked before anything is created and invited over
// federation once the room exists. CreateRoom must see them: the
// trusted_private_chat preset gives every invitee, local or remote, power
// level 100.
func (s *Service) CreateRoomAny(ctx context.Context, req CreateRoomRequest) (*CreateRoomResult, error) {
	return s.CreateRoom(ctx, req)
}
