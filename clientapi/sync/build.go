package sync

import (
	"context"
	"encoding/json"
	"slices"
	"sort"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"praxis/internal/ephemeral"
	"praxis/internal/users"
	"praxis/roomserver"
)

// roomWork is one joined or left room on its way into a response.
type roomWork struct {
	m    roomserver.SyncMembership
	join bool
	// full: send the whole state at the start of the timeline, not only
	// what changed since the token (initial sync, full_state, or the user
	// joined in the window).
	full bool
	// stateless: a left room the user was never joined to in the window
	// (rejected invite): its timeline only, never its state
	stateless bool
	rng       roomserver.SyncRange
	tl        *roomserver.SyncTimeline
	// timeline events the user may see and the filter lets through
	events []*roomserver.StoredEvent
	// the user's membership right after each of events, by NID
	// (unsigned.membership, spec v1.11)
	memberships map[int64]string
	state       []*roomserver.StoredEvent
	// where the state at the start of the timeline comes from
	source stateSource
	group  int64
	// atLeave is the user's leave event when the state section is the
	// state at it (sourceAtLeave).
	atLeave *roomserver.StoredEvent
	// keys: the state keys to send; nil = all
	keys map[roomserver.SyncStateKey]bool
	// lazyMembers: with lazy loading, the members whose events to send
	lazyMembers map[string]bool

	accountData []json.RawMessage
	ephemeral   []json.RawMessage
}

type stateSource int

const (
	sourceNone    stateSource = iota
	sourceCurrent             // current_state: the timeline has no state events
	sourceGroup               // the state group before the first timeline event
	sourceAtLeave             // a left room with an empty timeline: the state at the leave, the leave included
)

// build assembles the response for (since, head].
func (s *Service) build(ctx context.Context, req *Request, head int64) (*Response, error) {
	return s.buildWindow(ctx, req, head, false)
}

// buildWindow is build; roomsOnly says that (since, head] is known to hold
// nothing of the streams besides room events and memberships (to-device,
// account data, typing, receipts), so those reads are skipped.
func (s *Service) buildWindow(ctx context.Context, req *Request, head int64, roomsOnly bool) (*Response, error) {
	f := req.Filter
	initial := !req.HasSince
	since := int64(0)
	if !initial {
		since = req.Since.Pos
	}
	nowMS := s.now().UnixMilli()

	ms, err := s.rooms.SyncMemberships(ctx, req.UserID)
	if err != nil {
		return nil, err
	}
	if req.ignored, err = s.accounts.IgnoredUsers(ctx, req.UserID); err != nil {
		return nil, err
	}
	// A membership committed after the head was read: everything up to it
	// is committed too (positions commit in order), so read up to there
	// and keep membership and timelines consistent.
	for _, m := range ms {
		if m.StreamPos > head {
			head = m.StreamPos
			roomsOnly = false // nobody has looked at the positions added
		}
	}

	var works []*roomWork
	var invites, knocks []roomserver.SyncMembership
	for _, m := range ms {
		if !f.Room.AllowsRoom(m.RoomID) {
			continue
		}
		switch m.Membership {
		case "join":
			// a membership event in the window may be a join (full state,
			// see markNewlyJoined) or a profile change of a member;
			// full_state applies after that, as it does not widen the
			// timeline of a room the client knows
			works = append(works, &roomWork{m: m, join: true, full: initial, rng: roomserver.SyncRange{RoomNID: m.RoomNID, From: since, To: head}})
		case "invite":
			if initial || m.StreamPos > since {
				invites = append(invites, m)
			}
		case "knock":
			if initial || m.StreamPos > since {
				knocks = append(knocks, m)
			}
		case "leave", "ban":
			newlyLeft := !initial && m.StreamPos > since
			// A room forgotten soon after the leave still reports the
			// leave once, or the user's other devices never learn of it.
			if m.Forgotten && !newlyLeft {
				continue
			}
			// Rooms left earlier appear only when asked for, and then only
			// where there is something to send: a full sync.
			if !newlyLeft && !(f.Room.IncludeLeave && (initial || req.FullState)) {
				continue
			}
			from := since
			if !newlyLeft {
				from = 0
			}
			// newly left: markNewlyJoined decides between a delta, the
			// full state and none (full_state applies after that)
			works = append(works, &roomWork{m: m, full: !newlyLeft,
				rng: roomserver.SyncRange{RoomNID: m.RoomNID, From: from, To: m.StreamPos}})
		}
	}

	if err := s.markNewlyJoined(ctx, works, since); err != nil {
		return nil, err
	}
	// A room joined since the token holds history the client never saw:
	// its timeline is the room's newest events, not only those after the
	// token, so that limited tells whether older ones exist.
	for _, w := range works {
		if w.join && w.full && !initial {
			w.rng.From = 0
		}
	}
	if req.FullState {
		for _, w := range works {
			w.full = w.full || !w.stateless
		}
	}
	if err := s.readTimelines(ctx, req, works); err != nil {
		return nil, err
	}
	if err := s.readState(ctx, req, works, since); err != nil {
		return nil, err
	}

	resp := &Response{Rooms: &RoomSections{}}
	next := Token{Pos: head}

	// account data: global to the top level, per room into the room
	var accountData []users.AccountDataEntry
	if !roomsOnly {
		if accountData, err = s.accounts.AccountDataSince(ctx, req.UserID, since); err != nil {
			return nil, err
		}
	}
	byRoom := map[string]*roomWork{}
	for _, w := range works {
		byRoom[w.m.RoomID] = w
	}
	global := newList()
	for _, e := range accountData {
		if e.StreamPos > head {
			continue // the next sync picks it up with its own position
		}
		if !initial && e.StreamPos == 0 {
			// defaults (push rules) that an initial sync already carried;
			// a token s0 is still incremental
			continue
		}
		ev := accountDataEvent(e.Type, e.Content)
		if e.RoomID == "" {
			if f.AccountData.Allows(e.Type, "") {
				global.Events = append(global.Events, ev)
			}
			continue
		}
		if w := byRoom[e.RoomID]; w != nil && f.Room.AccountData.AllowsRoom(e.RoomID) && f.Room.AccountData.Allows(e.Type, "") {
			w.accountData = append(w.accountData, ev)
		}
	}
	resp.AccountData = &global
	resp.Presence = &EventList{Events: []json.RawMessage{}}
	if s.presence != nil && !roomsOnly {
		if resp.Presence.Events, err = s.presenceEvents(ctx, req, since, head); err != nil {
			return nil, err
		}
	}
	// A room sent in full in an incremental sync (joined since the token)
	// gets all its account data: what was set before the token never
	// reached the client with the room.
	var fullRooms []*roomWork
	for _, w := range works {
		if w.full && !initial {
			fullRooms = append(fullRooms, w)
		}
	}
	if len(fullRooms) > 0 {
		all, err := s.accounts.AccountDataSince(ctx, req.UserID, 0)
		if err != nil {
			return nil, err
		}
		for _, w := range fullRooms {
			w.accountData = nil
		}
		for _, e := range all {
			w := byRoom[e.RoomID]
			if e.RoomID == "" || w == nil || !w.full || e.StreamPos > head {
				continue
			}
			if f.Room.AccountData.AllowsRoom(e.RoomID) && f.Room.AccountData.Allows(e.Type, "") {
				w.accountData = append(w.accountData, accountDataEvent(e.Type, e.Content))
			}
		}
	}

	if err := s.readEphemeral(ctx, req, works, since, head, roomsOnly); err != nil {
		return nil, err
	}

	// Which rooms go into the response, and their sections.
	var joined []*roomWork
	for _, w := range works {
		if !(w.full || w.tl != nil || len(w.state) > 0 || len(w.accountData) > 0 || len(w.ephemeral) > 0) {
			continue
		}
		tl := s.renderTimeline(req, w, head, nowMS)
		state := renderEvents(req, w.state, nowMS)
		ad := EventList{Events: w.accountData}
		if ad.Events == nil {
			ad = newList()
		}
		if w.join {
			if resp.Rooms.Join == nil {
				resp.Rooms.Join = map[string]*JoinedRoom{}
			}
			eph := EventList{Events: w.ephemeral}
			if eph.Events == nil {
				eph = newList()
			}
			resp.Rooms.Join[w.m.RoomID] = &JoinedRoom{State: state, Timeline: tl, Ephemeral: eph, AccountData: ad}
			joined = append(joined, w)
		} else {
			if resp.Rooms.Leave == nil {
				resp.Rooms.Leave = map[string]*LeftRoom{}
			}
			resp.Rooms.Leave[w.m.RoomID] = &LeftRoom{State: state, Timeline: tl, AccountData: ad}
		}
	}
	if err := s.readCounts(ctx, req, joined, resp.Rooms.Join); err != nil {
		return nil, err
	}
	if err := s.readInvites(ctx, req, invites, knocks, resp.Rooms); err != nil {
		return nil, err
	}

	if s.e2ee != nil {
		if err := s.readE2EE(ctx, req, since, head, roomsOnly, resp, &next); err != nil {
			return nil, err
		}
	}
	resp.NextBatch = next.String()
	return resp, nil
}

// markNewlyJoined sends the full state of rooms the client cannot know:
// joined rooms the user was not joined to at since, and rooms the user
// both joined and left after since. The latest membership event tells,
// through the membership it replaced (unsigned.prev_content), whether it
// is a join or a profile change; older memberships are followed back
// through replaces_state to the one in force at since.
func (s *Service) markNewlyJoined(ctx context.Context, works []*roomWork, since int64) error {
	type walk struct {
		w              *roomWork
		joinedInWindow bool
	}
	// decide settles a room once the membership at since is known ("" for
	// none).
	decide := func(k *walk, atSince string) {
		if k.w.join {
			k.w.full = atSince != "join"
		} else {
			k.w.full = atSince != "join" && k.joinedInWindow
			// never a member in the client's view (a rejected invite, a
			// withdrawn knock): no room state at all
			k.w.stateless = atSince != "join" && !k.joinedInWindow
		}
	}
	pending := map[int64]*walk{} // membership event NID → room
	var nids []int64
	for _, w := range works {
		if !w.full && w.m.StreamPos > since {
			pending[w.m.EventNID] = &walk{w: w}
			nids = append(nids, w.m.EventNID)
		}
	}
	if len(nids) == 0 {
		return nil
	}
	byNID, err := s.rooms.SyncEventsByNID(ctx, nids)
	if err != nil {
		return err
	}
	var evs []*roomserver.StoredEvent
	byEvent := map[string]*walk{}
	for nid, k := range pending {
		if e := byNID[nid]; e != nil {
			evs = append(evs, e)
			byEvent[e.EventID] = k
		} else {
			decide(k, "") // history we do not hold: assume the client has none
		}
	}
	for range 10 {
		next := map[string]*walk{}
		var ids []string
		for _, e := range evs {
			k := byEvent[e.EventID]
			if k == nil {
				continue
			}
			js := gjson.ParseBytes(e.JSON)
			membership := js.Get("content.membership").String()
			if e.StreamPos > 0 && e.StreamPos <= since {
				decide(k, membership)
				continue
			}
			k.joinedInWindow = k.joinedInWindow || membership == "join"
			prev := js.Get("unsigned.prev_content.membership").String()
			switch {
			case k.w.join && prev != "join":
				// the latest event is a join (not a rename): the user was
				// not joined just before it
				k.w.full = true
			case prev == "":
				decide(k, "")
			default:
				id := js.Get("unsigned.replaces_state").String()
				if id == "" {
					decide(k, "")
					continue
				}
				next[id] = k
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			return nil
		}
		if evs, err = s.rooms.EventsByID(ctx, ids); err != nil {
			return err
		}
		found := map[string]bool{}
		for _, e := range evs {
			found[e.EventID] = true
		}
		for id, k := range next {
			if !found[id] {
				decide(k, "")
				delete(next, id)
			}
		}
		byEvent = next
	}
	for _, k := range byEvent {
		decide(k, "") // an implausibly long run of membership changes
	}
	return nil
}

// readTimelines fetches every room's newest events in one query, then
// applies history visibility in one batch and the timeline filter.
func (s *Service) readTimelines(ctx context.Context, req *Request, works []*roomWork) error {
	if len(works) == 0 {
		return nil
	}
	ranges := make([]roomserver.SyncRange, len(works))
	for i, w := range works {
		ranges[i] = w.rng
	}
	tls, err := s.rooms.SyncTimelines(ctx, ranges, req.Filter.TimelineLimit())
	if err != nil {
		return err
	}
	// Events from the user's join on are visible to them by definition;
	// only older ones (and those of rooms they left) need the full
	// history-visibility check.
	var check []*roomserver.StoredEvent
	for _, w := range works {
		w.tl = tls[w.m.RoomNID]
		if w.tl == nil {
			continue
		}
		for _, e := range w.tl.Events {
			if !w.join || e.StreamPos < w.m.StreamPos {
				check = append(check, e)
			}
		}
	}
	visible := map[int64]bool{}
	if len(check) > 0 {
		ok, err := s.rooms.FilterVisible(ctx, req.UserID, check)
		if err != nil {
			return err
		}
		for _, e := range ok {
			visible[e.NID] = true
		}
	}
	tf := &req.Filter.Room.Timeline
	for _, w := range works {
		if w.tl == nil || !tf.AllowsRoom(w.m.RoomID) {
			continue
		}
		for _, e := range w.tl.Events {
			// the user's own leave (or ban) always shows, so that a
			// rejected invite disappears from the client
			if (!w.join || e.StreamPos < w.m.StreamPos) && !visible[e.NID] && e.NID != w.m.EventNID {
				// A hidden event cuts the timeline: what is returned must be
				// a gapless run, because the state section is the state
				// before its first event. Visible events before a hidden
				// state change (say m.room.encryption before the user's
				// invite under "invited" visibility) would otherwise leave
				// that change out of both sections.
				w.events = nil
				w.tl.Limited = true
				continue
			}
			if !tf.AllowsEvent(e.Type, e.Sender, gjson.GetBytes(e.JSON, "content.url").Exists()) {
				continue
			}
			if req.ignored[e.Sender] && e.StateKey == nil {
				continue // the spec keeps ignored users' state events only
			}
			w.events = append(w.events, e)
		}
	}
	if err := s.addOutOfBandLeaves(ctx, works); err != nil {
		return err
	}
	// unsigned.membership for every timeline event of the response in one
	// batch; the federation format sends the PDU as stored, without it
	if req.Filter.EventFormat == "federation" {
		return nil
	}
	var all []*roomserver.StoredEvent
	for _, w := range works {
		all = append(all, w.events...)
	}
	if len(all) == 0 {
		return nil
	}
	ms, err := s.rooms.MembershipsAt(ctx, req.UserID, all)
	if err != nil {
		return err
	}
	for _, w := range works {
		w.memberships = ms
	}
	return nil
}

// addOutOfBandLeaves ends the timeline of a left room with the user's
// leave when that event is not part of the room's stored history: the
// rejection of an invite to a room this server is not in (signed by the
// room's server, or by us when no server of the room could be reached).
// Without it the client would see the room move to leave with no event
// saying why.
func (s *Service) addOutOfBandLeaves(ctx context.Context, works []*roomWork) error {
	var nids []int64
	missing := map[int64]*roomWork{}
	for _, w := range works {
		if w.join || w.m.EventNID == 0 {
			continue
		}
		if w.tl != nil && slices.ContainsFunc(w.tl.Events, func(e *roomserver.StoredEvent) bool { return e.NID == w.m.EventNID }) {
			continue
		}
		nids = append(nids, w.m.EventNID)
		missing[w.m.EventNID] = w
	}
	if len(nids) == 0 {
		return nil
	}
	evs, err := s.rooms.SyncEventsByNID(ctx, nids)
	if err != nil {
		return err
	}
	for _, nid := range nids {
		e := evs[nid]
		if e == nil {
			continue
		}
		// An event with a stream position belongs to the room's history
		// and was left out of the timeline on purpose (filters, limits).
		if w := missing[nid]; e.StreamPos == 0 {
			if w.tl == nil {
				w.tl = &roomserver.SyncTimeline{}
			}
			w.events = append(w.events, e)
		}
	}
	return nil
}

// readState decides, per room, which state to send and reads it in bulk:
// the current state of rooms whose timeline holds no state event, the
// resolved state group before the timeline for the others.
func (s *Service) readState(ctx context.Context, req *Request, works []*roomWork, since int64) error {
	sf := &req.Filter.Room.State
	lazy := sf.LazyLoadMembers
	var deltaRanges []roomserver.SyncRange
	for _, w := range works {
		if w.stateless {
			continue
		}
		hasEvents := w.tl != nil && len(w.tl.Events) > 0
		pick := func() {
			switch {
			case !hasEvents && w.join:
				w.source = sourceCurrent
			case len(w.events) == 0 && w.join:
				// everything in range was filtered out: the state after
				// it is the current state
				w.source = sourceCurrent
			case len(w.events) == 0 && w.m.EventNID != 0:
				// a left room whose timeline came out empty (limit 0,
				// filters): what the client needs is the state it left
				w.source = sourceAtLeave
			case len(w.events) == 0:
				w.source = sourceNone
			case w.join && !stateFrom(w.tl.Events, w.events[0]):
				// no state event from the start of the returned timeline
				// on: the state there is the current state
				w.source = sourceCurrent
			default:
				w.source, w.group = sourceGroup, w.tl.GroupBefore[w.events[0].NID]
			}
		}
		if lazy {
			w.lazyMembers = map[string]bool{req.UserID: true}
			for _, e := range w.events {
				w.lazyMembers[e.Sender] = true
			}
		}
		switch {
		case w.full:
			pick()
		case hasEvents && w.tl.Gap:
			// the timeline starts after a gap in the room's history:
			// what changed inside it is known only as the state before
			// the first event, so all of that state goes out
			pick()
		case hasEvents && w.tl.Limited:
			// state that changed between the token and the timeline
			pick()
			w.keys = map[roomserver.SyncStateKey]bool{}
			to := w.tl.Events[0].StreamPos - 1
			if len(w.events) > 0 {
				to = w.events[0].StreamPos - 1
			}
			deltaRanges = append(deltaRanges, roomserver.SyncRange{RoomNID: w.m.RoomNID, From: since, To: to})
		case lazy && len(w.events) > 0:
			// the timeline's senders, which the client may not have
			pick()
			w.keys = map[roomserver.SyncStateKey]bool{}
		}
		if lazy && w.keys != nil {
			for u := range w.lazyMembers {
				w.keys[roomserver.SyncStateKey{Type: "m.room.member", StateKey: u}] = true
			}
		}
	}
	if len(deltaRanges) > 0 {
		changes, err := s.rooms.SyncStateChanges(ctx, deltaRanges)
		if err != nil {
			return err
		}
		for _, w := range works {
			for _, k := range changes[w.m.RoomNID] {
				if w.keys != nil {
					w.keys[k] = true
				}
			}
		}
	}

	// wanted reports whether a state event goes into the state section.
	wanted := func(w *roomWork, typ, key, sender string) bool {
		k := roomserver.SyncStateKey{Type: typ, StateKey: key}
		if w.keys != nil && !w.keys[k] {
			return false
		}
		if lazy && typ == "m.room.member" && !w.lazyMembers[key] {
			return false
		}
		return sf.AllowsRoom(w.m.RoomID) && sf.AllowsEvent(typ, sender, false)
	}

	var leaves []int64
	for _, w := range works {
		if w.source == sourceAtLeave {
			leaves = append(leaves, w.m.EventNID)
		}
	}
	var leaveEvents map[int64]*roomserver.StoredEvent
	if len(leaves) > 0 {
		before, err := s.rooms.SyncGroupsBefore(ctx, leaves)
		if err != nil {
			return err
		}
		if leaveEvents, err = s.rooms.SyncEventsByNID(ctx, leaves); err != nil {
			return err
		}
		for _, w := range works {
			if w.source == sourceAtLeave {
				// the state before the leave, then the leave on top
				w.source, w.group = sourceGroup, before[w.m.EventNID]
				w.atLeave = leaveEvents[w.m.EventNID]
			}
		}
	}

	var current []int64
	var groups []int64
	for _, w := range works {
		if w.source == sourceCurrent {
			current = append(current, w.m.RoomNID)
		} else if w.source == sourceGroup && w.group != 0 {
			groups = append(groups, w.group)
		}
	}
	if len(current) > 0 {
		cs, err := s.rooms.SyncCurrentState(ctx, current)
		if err != nil {
			return err
		}
		for _, w := range works {
			if w.source != sourceCurrent {
				continue
			}
			for _, e := range cs[w.m.RoomNID] {
				if wanted(w, e.Type, *e.StateKey, e.Sender) {
					w.state = append(w.state, e)
				}
			}
		}
	}
	if len(groups) > 0 {
		resolved, err := s.rooms.SyncStateAt(ctx, groups)
		if err != nil {
			return err
		}
		// Only the keys wanted need loading; the sender filter is applied
		// once the events are loaded.
		var nids []int64
		for _, w := range works {
			if w.source != sourceGroup {
				continue
			}
			for k, nid := range resolved[w.group] {
				if wanted(w, k.Type, k.StateKey, "") || (len(sf.NotSenders) > 0 || sf.Senders != nil) {
					nids = append(nids, nid)
				}
			}
		}
		evs, err := s.rooms.SyncEventsByNID(ctx, nids)
		if err != nil {
			return err
		}
		for _, w := range works {
			if w.source != sourceGroup {
				continue
			}
			for k, nid := range resolved[w.group] {
				e := evs[nid]
				if w.atLeave != nil && k.Type == w.atLeave.Type && w.atLeave.StateKey != nil && k.StateKey == *w.atLeave.StateKey {
					continue // replaced by the leave
				}
				if e != nil && wanted(w, k.Type, k.StateKey, e.Sender) {
					w.state = append(w.state, e)
				}
			}
			if l := w.atLeave; l != nil && l.StateKey != nil && wanted(w, l.Type, *l.StateKey, l.Sender) {
				w.state = append(w.state, l)
			}
			sort.Slice(w.state, func(i, j int) bool { return w.state[i].StreamPos < w.state[j].StreamPos })
		}
	}
	for _, w := range works {
		// an out-of-band leave: no room state we hold, only the leave
		if l := w.atLeave; l != nil && w.group == 0 && l.StateKey != nil && wanted(w, l.Type, *l.StateKey, l.Sender) {
			w.state = append(w.state, l)
		}
	}
	return nil
}

// readEphemeral reads typing and receipts of the joined rooms.
func (s *Service) readEphemeral(ctx context.Context, req *Request, works []*roomWork, since, head int64, roomsOnly bool) error {
	ef := &req.Filter.Room.Ephemeral
	wantTyping, wantReceipts := ef.Allows("m.typing", ""), ef.Allows("m.receipt", "")
	if !wantTyping && !wantReceipts {
		return nil
	}
	// Rooms sent in full (initial sync, full_state, joined in the window)
	// get everyone typing and every receipt; the others what changed.
	var deltaIDs, fullIDs []string
	byID := map[string]*roomWork{}
	for _, w := range works {
		if w.join && ef.AllowsRoom(w.m.RoomID) {
			byID[w.m.RoomID] = w
			if w.full {
				fullIDs = append(fullIDs, w.m.RoomID)
			} else if !roomsOnly {
				deltaIDs = append(deltaIDs, w.m.RoomID)
			}
		}
	}
	for _, batch := range []struct {
		ids   []string
		since int64
	}{{deltaIDs, since}, {fullIDs, 0}} {
		if len(batch.ids) == 0 {
			continue
		}
		if wantTyping {
			typing, err := s.ephemeral.Typing(ctx, batch.ids, batch.since, head)
			if err != nil {
				return err
			}
			for room, userIDs := range typing {
				b, _ := json.Marshal(map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": userIDs}})
				byID[room].ephemeral = append(byID[room].ephemeral, b)
			}
		}
		if wantReceipts {
			receipts, err := s.ephemeral.Receipts(ctx, req.UserID, batch.ids, batch.since, head)
			if err != nil {
				return err
			}
			for room, rs := range receipts {
				byID[room].ephemeral = append(byID[room].ephemeral, receiptEvents(rs)...)
			}
		}
	}
	return nil
}

// receiptEvent renders one room's receipts as an m.receipt event:
// event ID → receipt type → user ID → {ts, thread_id}.
func receiptEvents(rs []ephemeral.Receipt) []json.RawMessage {
	// One user may hold an unthreaded and threaded receipts of one type on
	// the same event; the content map has room for one of them, so the
	// others go into further m.receipt events (MSC4102), the unthreaded
	// one first.
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].ThreadID == "" && rs[j].ThreadID != "" })
	type contentMap = map[string]map[string]map[string]map[string]any
	var layers []contentMap
	for _, r := range rs {
		info := map[string]any{"ts": r.TS}
		if r.ThreadID != "" {
			info["thread_id"] = r.ThreadID
		}
		placed := false
		for _, content := range layers {
			if _, taken := content[r.EventID][r.Type][r.UserID]; !taken {
				putReceipt(content, r, info)
				placed = true
				break
			}
		}
		if !placed {
			content := contentMap{}
			putReceipt(content, r, info)
			layers = append(layers, content)
		}
	}
	out := make([]json.RawMessage, 0, len(layers))
	for _, content := range layers {
		b, _ := json.Marshal(map[string]any{"type": "m.receipt", "content": content})
		out = append(out, b)
	}
	return out
}

func putReceipt(content map[string]map[string]map[string]map[string]any, r ephemeral.Receipt, info map[string]any) {
	byType := content[r.EventID]
	if byType == nil {
		byType = map[string]map[string]map[string]any{}
		content[r.EventID] = byType
	}
	byUser := byType[r.Type]
	if byUser == nil {
		byUser = map[string]map[string]any{}
		byType[r.Type] = byUser
	}
	byUser[r.UserID] = info
}

// readCounts fills unread counts and summaries of the joined rooms in the
// response.
func (s *Service) readCounts(ctx context.Context, req *Request, joined []*roomWork, out map[string]*JoinedRoom) error {
	if len(joined) == 0 {
		return nil
	}
	ids := make([]string, len(joined))
	for i, w := range joined {
		ids[i] = w.m.RoomID
	}
	read, err := s.ephemeral.ReadPositionsOf(ctx, req.UserID, ids)
	if err != nil {
		return err
	}
	// The main timeline counts from the later of the unthreaded and the
	// "main" receipt, each thread from the later of the unthreaded receipt
	// and its own. With unread_thread_notifications the counts come apart;
	// without, they add up to one. Only a room with threaded receipts
	// needs the threads counted apart; in the others every bound is the
	// same. Nothing read since joining counts from the join.
	apart := req.Filter.Room.Timeline.UnreadThreadNotifications
	bounds := map[int64]roomserver.SyncUnreadBounds{}
	var summarise []int64
	for _, w := range joined {
		rp := read[w.m.RoomID]
		if rp == nil {
			rp = &ephemeral.ReadPositions{}
		}
		joinPos := w.m.StreamPos
		b := roomserver.SyncUnreadBounds{Main: max(rp.Unthreaded, rp.Main, joinPos)}
		if apart || rp.Main > max(rp.Unthreaded, joinPos) || len(rp.Threads) > 0 {
			b.ThreadsApart = true
			b.Default = max(rp.Unthreaded, joinPos)
			b.Threads = map[string]int64{}
			for root, pos := range rp.Threads {
				b.Threads[root] = max(pos, b.Default)
			}
		}
		bounds[w.m.RoomNID] = b
		if w.full || hasMemberEvent(w.events) || hasMemberEvent(w.state) {
			summarise = append(summarise, w.m.RoomNID)
		}
	}
	counts, err := s.rooms.SyncUnreadCounts(ctx, req.UserID, bounds)
	if err != nil {
		return err
	}
	summaries, err := s.rooms.SyncSummaries(ctx, req.UserID, summarise)
	if err != nil {
		return err
	}
	for _, w := range joined {
		r := out[w.m.RoomID]
		if c := counts[w.m.RoomNID]; c != nil {
			r.UnreadNotifications = &UnreadNotifications{NotificationCount: c.Notifications, HighlightCount: c.Highlights}
			if apart {
				r.UnreadThreadNotifications = map[string]*UnreadNotifications{}
				for root, tc := range c.Threads {
					r.UnreadThreadNotifications[root] = &UnreadNotifications{NotificationCount: tc[0], HighlightCount: tc[1]}
				}
			} else {
				for _, tc := range c.Threads {
					r.UnreadNotifications.NotificationCount += tc[0]
					r.UnreadNotifications.HighlightCount += tc[1]
				}
			}
		}
		if sum := summaries[w.m.RoomNID]; sum != nil {
			joinedN, invitedN := sum.Joined, sum.Invited
			r.Summary = &Summary{Heroes: sum.Heroes, Joined: &joinedN, Invited: &invitedN}
		}
	}
	return nil
}

// stateFrom reports whether evs holds a state event at or after first
// (which is one of evs): filtered-out state events change the state too.
func stateFrom(evs []*roomserver.StoredEvent, first *roomserver.StoredEvent) bool {
	for _, e := range evs {
		if e.StreamPos >= first.StreamPos && e.StateKey != nil {
			return true
		}
	}
	return false
}

func hasMemberEvent(evs []*roomserver.StoredEvent) bool {
	for _, e := range evs {
		if e.Type == "m.room.member" {
			return true
		}
	}
	return false
}

// readInvites fills rooms.invite and rooms.knock with the stripped state
// the inviting (or knocked-on) server sent and the membership event itself.
func (s *Service) readInvites(ctx context.Context, req *Request, invites, knocks []roomserver.SyncMembership, rooms *RoomSections) error {
	if len(invites)+len(knocks) == 0 {
		return nil
	}
	var nids []int64
	for _, m := range append(append([]roomserver.SyncMembership{}, invites...), knocks...) {
		nids = append(nids, m.EventNID)
	}
	evs, err := s.rooms.SyncEventsByNID(ctx, nids)
	if err != nil {
		return err
	}
	// An invite that reached us as an event of a room we are in carries no
	// stripped state: the room's current state stands in for it.
	var bare []int64
	for _, m := range invites {
		if e := evs[m.EventNID]; e != nil && !gjson.GetBytes(e.JSON, "unsigned.invite_room_state").Exists() {
			bare = append(bare, m.RoomNID)
		}
	}
	current, err := s.rooms.SyncInviteState(ctx, bare)
	if err != nil {
		return err
	}
	for _, m := range invites {
		if e := evs[m.EventNID]; e != nil && !req.ignored[e.Sender] {
			if rooms.Invite == nil {
				rooms.Invite = map[string]*InvitedRoom{}
			}
			st := strippedState(e, "invite_room_state")
			if cs := current[m.RoomNID]; len(cs) > 0 {
				// the current state, then the invite itself (last, in full)
				self := st.Events[len(st.Events)-1]
				st.Events = st.Events[:0]
				for _, c := range cs {
					st.Events = append(st.Events, strip(gjson.ParseBytes(c.JSON)))
				}
				st.Events = append(st.Events, self)
			}
			rooms.Invite[m.RoomID] = &InvitedRoom{InviteState: st}
		}
	}
	for _, m := range knocks {
		if e := evs[m.EventNID]; e != nil {
			if rooms.Knock == nil {
				rooms.Knock = map[string]*KnockedRoom{}
			}
			rooms.Knock[m.RoomID] = &KnockedRoom{KnockState: strippedState(e, "knock_room_state")}
		}
	}
	return nil
}

// strippedState is the stripped state in the membership event's unsigned
// key plus the membership event itself, stripped.
func strippedState(e *roomserver.StoredEvent, key string) EventList {
	out := newList()
	ev := gjson.ParseBytes(e.JSON)
	self := strip(ev)
	selfKey := "m.room.member\x00" + ev.Get("state_key").String()
	ev.Get("unsigned." + key).ForEach(func(_, v gjson.Result) bool {
		if !v.IsObject() || v.Get("type").Type != gjson.String {
			return true
		}
		if v.Get("type").String()+"\x00"+v.Get("state_key").String() == selfKey {
			return true // the event itself comes last, in full
		}
		out.Events = append(out.Events, strip(v))
		return true
	})
	out.Events = append(out.Events, self)
	return out
}

// strip reduces an event to the spec's StrippedStateEvent.
func strip(v gjson.Result) json.RawMessage {
	m := map[string]json.RawMessage{}
	for _, k := range []string{"content", "sender", "state_key", "type"} {
		if f := v.Get(k); f.Exists() {
			m[k] = json.RawMessage(f.Raw)
		}
	}
	b, _ := json.Marshal(m)
	return b
}

func (s *Service) renderTimeline(req *Request, w *roomWork, head, nowMS int64) Timeline {
	tl := Timeline{Events: make([]json.RawMessage, 0, len(w.events))}
	for _, e := range w.events {
		ev := renderEvent(req, e, nowMS)
		if m, ok := w.memberships[e.NID]; ok {
			if out, err := sjson.SetBytes(ev, "unsigned.membership", m); err == nil {
				ev = out
			}
		}
		tl.Events = append(tl.Events, ev)
	}
	if w.tl != nil && len(w.tl.Events) > 0 {
		tl.Limited = w.tl.Limited
		first := w.tl.Events[0]
		// the point just before the window's first event (roomserver's
		// pagination tokens name points between events)
		tl.PrevBatch = roomserver.TopoToken(first.Depth, first.StreamPos-1)
	} else {
		tl.Limited = w.tl != nil && w.tl.Limited
		tl.PrevBatch = Token{Pos: min(head, w.rng.To)}.String()
	}
	return tl
}

// renderEvent renders one room event in the filter's event_format: the
// spec's client format, or the stored PDU as federation carries it.
// (event_fields is not applied: the spec lets a server send more fields.)
func renderEvent(req *Request, e *roomserver.StoredEvent, nowMS int64) json.RawMessage {
	if req.Filter.EventFormat == "federation" {
		return json.RawMessage(e.JSON)
	}
	return roomserver.AppendClientEvent(make([]byte, 0, len(e.JSON)+64), e, req.UserID, req.DeviceID, nowMS)
}

func renderEvents(req *Request, evs []*roomserver.StoredEvent, nowMS int64) EventList {
	out := newList()
	for _, e := range evs {
		out.Events = append(out.Events, renderEvent(req, e, nowMS))
	}
	return out
}

func accountDataEvent(typ string, content json.RawMessage) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"type": typ, "content": content})
	return b
}

// readE2EE fills the encryption fields. To-device messages are bounded per
// response; when some are left, the token says how far they went.
func (s *Service) readE2EE(ctx context.Context, req *Request, since, head int64, roomsOnly bool, resp *Response, next *Token) error {
	tdSince := int64(0)
	if req.HasSince {
		tdSince = req.Since.toDeviceSince()
	}
	var msgs []json.RawMessage
	var upto int64
	if !roomsOnly {
		var err error
		if msgs, upto, err = s.e2ee.ToDevice(ctx, req.UserID, req.DeviceID, tdSince, head, maxToDevice); err != nil {
			return err
		}
	}
	if msgs == nil {
		msgs = []json.RawMessage{}
	}
	resp.ToDevice = &EventList{Events: msgs}
	if len(msgs) > 0 && upto > 0 && upto < head {
		next.ToDevice = upto
	}
	if req.HasSince {
		changed, left, err := s.e2ee.DeviceListChanges(ctx, req.UserID, since, head)
		if err != nil {
			return err
		}
		resp.DeviceLists = &DeviceLists{Changed: changed, Left: left}
	}
	return s.readKeyCounts(ctx, req, resp)
}

// readKeyCounts fills the device's one-time key counts and unused fallback
// key types, which every response carries.
func (s *Service) readKeyCounts(ctx context.Context, req *Request, resp *Response) error {
	counts, err := s.e2ee.OneTimeKeyCounts(ctx, req.UserID, req.DeviceID)
	if err != nil {
		return err
	}
	if counts == nil {
		counts = map[string]int{}
	}
	if _, ok := counts["signed_curve25519"]; !ok {
		// clients read a missing count as "unknown" rather than zero and
		// then never upload keys
		counts["signed_curve25519"] = 0
	}
	resp.DeviceOneTimeKeysCount = counts
	fallback, err := s.e2ee.UnusedFallbackKeyTypes(ctx, req.UserID, req.DeviceID)
	if err != nil {
		return err
	}
	if fallback == nil {
		fallback = []string{}
	}
	resp.DeviceUnusedFallbackKeyTypes = &fallback
	return nil
}
