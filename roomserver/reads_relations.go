package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/sjson"
)

// relThread is the rel_type of thread replies.
const relThread = "m.thread"

// RelationsQuery is a GET /relations request.
type RelationsQuery struct {
	RelType, EventType string
	From, To           string
	Backward           bool
	Limit              int
	// Recurse also returns relations of relations (one level deeper).
	Recurse bool
}

// RelationsPage is a GET /relations answer.
type RelationsPage struct {
	Chunk                []*StoredEvent
	NextBatch, PrevBatch string
	// RecursionDepth is how deep the server followed relations (set only
	// when the client asked to recurse).
	RecursionDepth int
}

// Relations lists the events relating to eventID that userID may see.
// An unknown or invisible parent is 404 M_NOT_FOUND.
func (s *Service) Relations(ctx context.Context, userID, roomID, eventID string, q RelationsQuery) (*RelationsPage, error) {
	a, parent, err := s.visibleEvent(ctx, userID, roomID, eventID)
	if err != nil {
		return nil, err
	}
	from := topoInfinity
	if !q.Backward {
		from = topoKey{0, -1}
	}
	if q.From != "" {
		tok, err := ParseToken(q.From)
		if err != nil {
			return nil, err
		}
		if from, err = s.resolveToken(ctx, a.room.nid, tok); err != nil {
			return nil, err
		}
	}
	bound := topoKey{0, -1}
	if !q.Backward {
		bound = topoInfinity
	}
	if q.To != "" {
		tok, err := ParseToken(q.To)
		if err != nil {
			return nil, err
		}
		if bound, err = s.resolveToken(ctx, a.room.nid, tok); err != nil {
			return nil, err
		}
	}
	if u := a.until(); q.Backward && u.less(from) {
		from = u
	} else if !q.Backward && u.less(bound) {
		bound = u
	}
	parents := []string{parent.EventID}
	depth := 0
	if q.Recurse {
		// one level deeper: relations of the direct relations (edits of
		// thread replies, reactions to them). The spec lets a server pick
		// its depth and report it.
		children, err := s.relationIDs(ctx, a.room.nid, parent.EventID)
		if err != nil {
			return nil, err
		}
		parents = append(parents, children...)
		depth = 1
	}
	pg, err := s.paginate(ctx, userID, a.room.nid, from, q.Backward, bound, q.Limit, nil, func(p *qargs) string {
		w := ` AND e.relates_to IN (` + qlist(p, parents) + `)`
		if q.RelType != "" {
			w += ` AND e.rel_type = ` + p.add(q.RelType)
		}
		if q.EventType != "" {
			w += ` AND e.type = ` + p.add(q.EventType)
		}
		return w
	})
	if err != nil {
		return nil, err
	}
	out := &RelationsPage{Chunk: storedEvents(pg.events), PrevBatch: q.From, RecursionDepth: depth}
	if pg.more {
		out.NextBatch = pg.next.token()
	}
	return out, nil
}

// relationIDs lists the IDs of events directly relating to eventID.
func (s *Service) relationIDs(ctx context.Context, roomNID int64, eventID string) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT e.event_id FROM events e WHERE e.relates_to = $1 AND e.room_nid = $2`+inTimeline,
		eventID, roomNID)
	if err != nil {
		return nil, fmt.Errorf("relations of %s: %w", eventID, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("relations of %s: %w", eventID, err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// ThreadsQuery is a GET /threads request. Include is "all" (default) or
// "participated"; From is a previous answer's next_batch.
type ThreadsQuery struct {
	Include string
	From    string
	Limit   int
}

// Thread is a thread root with its bundled thread summary.
type Thread struct {
	Root *StoredEvent
	// Latest is the newest reply userID may see (nil if none).
	Latest       *StoredEvent
	Count        int
	Participated bool
}

// ThreadsPage is a GET /threads answer.
type ThreadsPage struct {
	Chunk     []Thread
	NextBatch string
}

// Threads lists the room's threads, most recently active first.
func (s *Service) Threads(ctx context.Context, userID, roomID string, q ThreadsQuery) (*ThreadsPage, error) {
	a, err := s.access(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	switch q.Include {
	case "", "all", "participated":
	default:
		return nil, spec.InvalidParam("include must be all or participated")
	}
	before := int64(math.MaxInt64)
	if a.departed != nil {
		before = a.departed.StreamPos + 1
	}
	if q.From != "" {
		n, err := strconv.ParseInt(q.From, 10, 64)
		if err != nil || n < 0 {
			return nil, spec.InvalidParam("invalid from token")
		}
		before = min(before, n)
	}
	var p qargs
	query := `SELECT t.relates_to, t.latest, t.cnt FROM (
			SELECT e.relates_to, MAX(e.stream_pos) AS latest, COUNT(*) AS cnt FROM events e
			WHERE e.room_nid = ` + p.add(a.room.nid) + ` AND e.rel_type = '` + relThread + `'` + inTimeline + `
			GROUP BY e.relates_to) t
		WHERE t.latest < ` + p.add(before)
	if q.Include == "participated" {
		u := p.add(userID)
		query += ` AND (EXISTS (SELECT 1 FROM events r WHERE r.relates_to = t.relates_to AND r.rel_type = '` + relThread + `' AND r.sender = ` + u + `)
			OR EXISTS (SELECT 1 FROM events root WHERE root.event_id = t.relates_to AND root.sender = ` + u + `))`
	}
	query += ` ORDER BY t.latest DESC LIMIT ` + p.add(q.Limit)
	rows, err := s.db.Query(ctx, query, p...)
	if err != nil {
		return nil, fmt.Errorf("threads: %w", err)
	}
	type threadRow struct {
		root   string
		latest int64
		count  int
	}
	var trs []threadRow
	for rows.Next() {
		var tr threadRow
		if err := rows.Scan(&tr.root, &tr.latest, &tr.count); err != nil {
			rows.Close()
			return nil, fmt.Errorf("threads: %w", err)
		}
		trs = append(trs, tr)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("threads: %w", err)
	}
	out := &ThreadsPage{Chunk: []Thread{}}
	if len(trs) == 0 {
		return out, nil
	}
	if len(trs) == q.Limit {
		out.NextBatch = strconv.FormatInt(trs[len(trs)-1].latest, 10)
	}
	rootIDs := make([]string, len(trs))
	var latestPos []int64
	for i, tr := range trs {
		rootIDs[i] = tr.root
		latestPos = append(latestPos, tr.latest)
	}
	roots, err := s.eventRowsByID(ctx, rootIDs)
	if err != nil {
		return nil, err
	}
	var lp qargs
	latest, err := s.queryEvents(ctx, `SELECT `+eventColumns+eventFrom+` WHERE e.stream_pos IN (`+qlist(&lp, latestPos)+`)`, lp...)
	if err != nil {
		return nil, fmt.Errorf("threads: %w", err)
	}
	visible, err := s.visibleSet(ctx, userID, append(append([]*eventRow{}, roots...), latest...))
	if err != nil {
		return nil, err
	}
	participated, err := s.participatedIn(ctx, userID, rootIDs)
	if err != nil {
		return nil, err
	}
	rootByID := map[string]*eventRow{}
	for _, r := range roots {
		if r.roomNID == a.room.nid && visible[r.NID] {
			rootByID[r.EventID] = r
		}
	}
	latestByPos := map[int64]*eventRow{}
	for _, l := range latest {
		if visible[l.NID] {
			latestByPos[l.StreamPos] = l
		}
	}
	for _, tr := range trs {
		root := rootByID[tr.root]
		if root == nil {
			continue
		}
		t := Thread{Root: root.StoredEvent, Count: tr.count, Participated: participated[tr.root] || root.Sender == userID}
		if l := latestByPos[tr.latest]; l != nil {
			t.Latest = l.StoredEvent
		}
		out.Chunk = append(out.Chunk, t)
	}
	return out, nil
}

// participatedIn reports which of the thread roots userID replied in.
func (s *Service) participatedIn(ctx context.Context, userID string, roots []string) (map[string]bool, error) {
	var p qargs
	u := p.add(userID)
	rows, err := s.db.Query(ctx, `SELECT DISTINCT relates_to FROM events WHERE rel_type = '`+relThread+`' AND sender = `+u+`
		AND relates_to IN (`+qlist(&p, roots)+`)`, p...)
	if err != nil {
		return nil, fmt.Errorf("thread participation: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("thread participation: %w", err)
		}
		out[id] = true
	}
	return out, rows.Err()
}

// Bundled aggregations (spec: "Aggregations of child events"): events served
// to clients carry a summary of their threads, their latest edit and the
// events that reference them in unsigned.m.relations.

const (
	relReplace   = "m.replace"
	relReference = "m.reference"
)

// Aggregations is the bundle of one parent event.
type Aggregations struct {
	// Thread summarises a thread rooted at the event (nil if none).
	Thread *Thread
	// Replace is the most recent edit by the original sender (nil if none).
	Replace *StoredEvent
	// References are the IDs of events referencing the event.
	References []string
}

// BundledAggregations computes the bundles of events as userID may see
// them, keyed by event ID; events without relations are absent. A fixed
// handful of queries serves any number of events.
func (s *Service) BundledAggregations(ctx context.Context, userID string, events []*StoredEvent) (map[string]*Aggregations, error) {
	out := map[string]*Aggregations{}
	if len(events) == 0 {
		return out, nil
	}
	ids := make([]string, 0, len(events))
	byID := make(map[string]*StoredEvent, len(events))
	for _, e := range events {
		ids = append(ids, e.EventID)
		byID[e.EventID] = e
	}
	ids = uniqueOf(ids)
	get := func(id string) *Aggregations {
		if out[id] == nil {
			out[id] = &Aggregations{}
		}
		return out[id]
	}
	// one pass over the relations: counts and latest positions per parent
	// and relation type, and every reference
	var p qargs
	rows, err := s.db.Query(ctx, `SELECT e.relates_to, e.rel_type, e.sender, e.event_id, e.stream_pos FROM events e
		WHERE e.relates_to IN (`+qlist(&p, ids)+`) AND e.rel_type IN ('`+relThread+`', '`+relReplace+`', '`+relReference+`')`+inTimeline+`
		ORDER BY e.stream_pos`, p...)
	if err != nil {
		return nil, fmt.Errorf("bundled aggregations: %w", err)
	}
	threadLatest := map[string]int64{}
	replaceLatest := map[string]int64{}
	var latestPos []int64
	for rows.Next() {
		var parent, relType, sender, id string
		var pos int64
		if err := rows.Scan(&parent, &relType, &sender, &id, &pos); err != nil {
			rows.Close()
			return nil, fmt.Errorf("bundled aggregations: %w", err)
		}
		switch relType {
		case relThread:
			a := get(parent)
			if a.Thread == nil {
				a.Thread = &Thread{Root: byID[parent]}
			}
			a.Thread.Count++
			a.Thread.Participated = a.Thread.Participated || sender == userID
			threadLatest[parent] = pos
		case relReplace:
			// only the original sender may edit; a redacted event keeps no edits
			if orig := byID[parent]; orig != nil && orig.Sender == sender && orig.RedactedBy == "" {
				replaceLatest[parent] = pos
			}
		case relReference:
			get(parent).References = append(get(parent).References, id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("bundled aggregations: %w", err)
	}
	for parent, a := range out {
		if a.Thread != nil && byID[parent].Sender == userID {
			a.Thread.Participated = true
		}
	}
	for _, pos := range threadLatest {
		latestPos = append(latestPos, pos)
	}
	for _, pos := range replaceLatest {
		latestPos = append(latestPos, pos)
	}
	if len(latestPos) > 0 {
		var lp qargs
		latest, err := s.queryEvents(ctx, `SELECT `+eventColumns+eventFrom+` WHERE e.stream_pos IN (`+qlist(&lp, uniqueOf(latestPos))+`)`, lp...)
		if err != nil {
			return nil, fmt.Errorf("bundled aggregations: %w", err)
		}
		visible, err := s.filterVisibleRows(ctx, userID, latest)
		if err != nil {
			return nil, err
		}
		byPos := map[int64]*StoredEvent{}
		for _, l := range visible {
			byPos[l.StreamPos] = l.StoredEvent
		}
		for parent, pos := range threadLatest {
			out[parent].Thread.Latest = byPos[pos]
		}
		for parent, pos := range replaceLatest {
			if l := byPos[pos]; l != nil {
				get(parent).Replace = l
			}
		}
	}
	return out, nil
}

// WithAggregations adds a bundle to a rendered client event (see
// ClientEvent for the other parameters).
func WithAggregations(ev json.RawMessage, a *Aggregations, viewerUserID, viewerDeviceID string, nowMS int64) json.RawMessage {
	if a == nil {
		return ev
	}
	rel := map[string]any{}
	if a.Thread != nil {
		t := map[string]any{"count": a.Thread.Count, "current_user_participated": a.Thread.Participated}
		if a.Thread.Latest != nil {
			t["latest_event"] = ClientEvent(a.Thread.Latest, viewerUserID, viewerDeviceID, nowMS)
		}
		rel[relThread] = t
	}
	if a.Replace != nil {
		rel[relReplace] = ClientEvent(a.Replace, viewerUserID, viewerDeviceID, nowMS)
	}
	if len(a.References) > 0 {
		chunk := make([]map[string]string, len(a.References))
		for i, id := range a.References {
			chunk[i] = map[string]string{"event_id": id}
		}
		rel[relReference] = map[string]any{"chunk": chunk}
	}
	if len(rel) == 0 {
		return ev
	}
	out, err := sjson.SetBytes(ev, `unsigned.m\.relations`, rel)
	if err != nil {
		return ev
	}
	return out
}
