package roomserver

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
)

// Server-side search (spec: client-server API, "Server Side Search") over
// the room_events category. Only what the server can read is searchable:
// in encrypted rooms (the default here) the bodies are ciphertext and
// nothing matches, which is what the spec expects of such rooms.
//
// Matching is done in Go on the event's JSON: every word of the search term
// must begin a word (case-insensitively) of one of the searched keys. SQL narrows
// the candidates first with LIKE on the stored JSON for plain ASCII words,
// so a search reads only events that can match.

// searchKeys maps the spec's keys to the event type that carries them.
var searchKeys = map[string]string{
	"content.body":  "m.room.message",
	"content.name":  spec.MRoomName,
	"content.topic": spec.MRoomTopic,
}

// SearchKeys are the keys a search may name; none named means all.
var SearchKeys = []string{"content.body", "content.name", "content.topic"}

// SearchQuery is one room_events search.
type SearchQuery struct {
	Term string
	// Keys to look in: a subset of SearchKeys, empty for all.
	Keys []string
	// Rooms limits the search; nil searches every room the user is in.
	Rooms    []string
	NotRooms []string
	Filter   *EventFilter
	// Recent orders newest first; otherwise by rank (more matched words
	// first), then newest first.
	Recent bool
	Limit  int
	// NextBatch continues a previous search ("" starts at the top).
	NextBatch string
}

// SearchHit is one result: the event and its rank.
type SearchHit struct {
	Event *StoredEvent
	Rank  float64
}

// SearchResult is a page of hits with the total number of matches.
type SearchResult struct {
	Count     int
	Hits      []SearchHit
	NextBatch string
	// Highlights are the words that matched, for clients to highlight.
	Highlights []string
}

// tokens splits text into lower-case words.
func tokens(text string) []string {
	return strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsNumber(r)
	})
}

// searchWords splits a term into its distinct lower-case words.
func searchWords(term string) []string {
	seen := map[string]bool{}
	var out []string
	for _, w := range tokens(term) {
		if !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	return out
}

// plainASCII reports whether w can be looked for in the stored JSON with
// LIKE on both engines: lower-case ASCII letters and digits only (SQLite's
// LOWER folds ASCII only, and JSON escaping leaves these alone).
func plainASCII(w string) bool {
	for _, r := range w {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// Search runs a room_events search for userID: only events in rooms they
// are (or were, up to their departure) a member of, that history
// visibility lets them see, and that are not redacted.
func (s *Service) Search(ctx context.Context, userID string, q SearchQuery) (*SearchResult, error) {
	words := searchWords(q.Term)
	res := &SearchResult{Hits: []SearchHit{}, Highlights: words}
	if len(words) == 0 {
		return res, nil
	}
	keys := q.Keys
	if len(keys) == 0 {
		keys = SearchKeys
	}
	var types []string
	for _, k := range keys {
		t, ok := searchKeys[k]
		if !ok {
			return nil, spec.InvalidParam("unknown search key " + strconv.Quote(k))
		}
		types = append(types, t)
	}
	offset := 0
	if q.NextBatch != "" {
		n, err := strconv.Atoi(q.NextBatch)
		if err != nil || n < 0 {
			return nil, spec.InvalidParam("invalid next_batch")
		}
		offset = n
	}
	roomNIDs, err := s.searchableRooms(ctx, userID, q.Rooms, q.NotRooms)
	if err != nil || len(roomNIDs) == 0 {
		return res, err
	}

	var p qargs
	query := `SELECT ` + eventColumns + eventFrom + ` WHERE e.room_nid IN (` + qlist(&p, roomNIDs) + `)` + inTimeline +
		` AND e.redacted_by IS NULL AND e.type IN (` + qlist(&p, uniqueOf(types)) + `)` + q.Filter.sql(&p)
	for _, w := range words {
		if plainASCII(w) {
			query += ` AND LOWER(e.json) LIKE ` + p.add("%"+w+"%")
		}
	}
	query += ` ORDER BY e.stream_pos DESC`
	rows, err := s.queryEvents(ctx, query, p...)
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	var matched []*eventRow
	rank := map[int64]float64{}
	for _, r := range rows {
		if !q.Filter.Matches(r.StoredEvent) {
			continue
		}
		var text []string
		for _, k := range keys {
			if searchKeys[k] == r.Type {
				text = append(text, tokens(gjson.GetBytes(r.JSON, k).String())...)
			}
		}
		// a word matches the words it begins ("termin" finds "Termine",
		// "4" does not find "14")
		hits, all := 0, true
		for _, w := range words {
			n := 0
			for _, tw := range text {
				if strings.HasPrefix(tw, w) {
					n++
				}
			}
			if n == 0 {
				all = false
				break
			}
			hits += n
		}
		if all {
			matched = append(matched, r)
			rank[r.NID] = float64(hits)
		}
	}
	visible, err := s.filterVisibleRows(ctx, userID, matched)
	if err != nil {
		return nil, err
	}
	if !q.Recent {
		// stable: equal ranks stay newest first
		sort.SliceStable(visible, func(i, j int) bool { return rank[visible[i].NID] > rank[visible[j].NID] })
	}
	res.Count = len(visible)
	if offset > len(visible) {
		offset = len(visible)
	}
	page := visible[offset:]
	if len(page) > q.Limit {
		page = page[:q.Limit]
	}
	for _, r := range page {
		res.Hits = append(res.Hits, SearchHit{Event: r.StoredEvent, Rank: rank[r.NID]})
	}
	// A full page promises more: the client asks once more and gets none.
	if q.Limit > 0 && len(page) == q.Limit {
		res.NextBatch = strconv.Itoa(offset + len(page))
	}
	return res, nil
}

// searchableRooms returns the rooms userID has a readable history in: joined,
// or left or banned and not forgotten; restricted to rooms when it is not
// nil, minus notRooms.
func (s *Service) searchableRooms(ctx context.Context, userID string, rooms, notRooms []string) ([]int64, error) {
	var p qargs
	query := `SELECT m.room_nid, r.room_id FROM room_members m JOIN rooms r ON r.room_nid = m.room_nid
		WHERE m.user_id = ` + p.add(userID) + ` AND (m.membership = 'join' OR (m.membership IN ('leave', 'ban') AND NOT m.forgotten))`
	if rooms != nil {
		query += ` AND r.room_id IN (` + qlist(&p, rooms) + `)`
	}
	if len(notRooms) > 0 {
		query += ` AND r.room_id NOT IN (` + qlist(&p, notRooms) + `)`
	}
	rs, err := s.db.Query(ctx, query, p...)
	if err != nil {
		return nil, fmt.Errorf("search rooms: %w", err)
	}
	defer rs.Close()
	var out []int64
	for rs.Next() {
		var nid int64
		var id string
		if err := rs.Scan(&nid, &id); err != nil {
			return nil, fmt.Errorf("search rooms: %w", err)
		}
		out = append(out, nid)
	}
	return out, rs.Err()
}

// SearchContext is the context of one search hit.
type SearchContext struct {
	Before []*StoredEvent // newest first
	After  []*StoredEvent // oldest first
	Start  string
	End    string
}

// SearchHitContext returns up to before events before and after events after
// a hit, as far as userID may see them.
func (s *Service) SearchHitContext(ctx context.Context, userID string, hit *StoredEvent, before, after int) (*SearchContext, error) {
	a, ev, err := s.visibleEvent(ctx, userID, hit.RoomID, hit.EventID)
	if err != nil {
		return nil, err
	}
	k := keyOf(ev.StoredEvent)
	b, err := s.paginate(ctx, userID, a.room.nid, k.before(), true, topoKey{0, -1}, before, nil)
	if err != nil {
		return nil, err
	}
	f, err := s.paginate(ctx, userID, a.room.nid, k, false, a.until(), after, nil)
	if err != nil {
		return nil, err
	}
	return &SearchContext{Before: storedEvents(b.events), After: storedEvents(f.events), Start: b.next.token(), End: f.next.token()}, nil
}
