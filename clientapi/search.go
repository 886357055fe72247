package clientapi

import (
	"encoding/json"
	"net/http"

	"praxis/internal/httputil"
	"praxis/internal/users"
	"praxis/roomserver"
)

// Server-side search, POST /_matrix/client/v3/search. Only the room_events
// category exists in the spec; the search itself is roomserver's.

// maxSearchLimit caps filter.limit: every hit may carry its context.
const maxSearchLimit = 100

type searchRequest struct {
	SearchCategories *struct {
		RoomEvents *roomEventsCriteria `json:"room_events"`
	} `json:"search_categories"`
}

type roomEventsCriteria struct {
	SearchTerm *string  `json:"search_term"`
	Keys       []string `json:"keys"`
	Filter     *struct {
		roomserver.EventFilter
		Rooms    []string `json:"rooms"`
		NotRooms []string `json:"not_rooms"`
	} `json:"filter"`
	OrderBy      string `json:"order_by"`
	EventContext *struct {
		BeforeLimit *int `json:"before_limit"`
		AfterLimit  *int `json:"after_limit"`
	} `json:"event_context"`
}

type searchResponse struct {
	SearchCategories searchCategories `json:"search_categories"`
}

type searchCategories struct {
	RoomEvents *roomEventsResult `json:"room_events,omitempty"`
}

type roomEventsResult struct {
	Count      int            `json:"count"`
	Highlights []string       `json:"highlights"`
	Results    []searchResult `json:"results"`
	NextBatch  string         `json:"next_batch,omitempty"`
}

type searchResult struct {
	Rank    float64           `json:"rank"`
	Result  json.RawMessage   `json:"result"`
	Context *searchHitContext `json:"context,omitempty"`
}

type searchHitContext struct {
	EventsBefore []json.RawMessage `json:"events_before"`
	EventsAfter  []json.RawMessage `json:"events_after"`
	Start        string            `json:"start,omitempty"`
	End          string            `json:"end,omitempty"`
}

// search serves POST /_matrix/client/v3/search?next_batch=.
func (a *API) search(r *http.Request, dev *users.Device) (*searchResponse, error) {
	var req searchRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.SearchCategories == nil {
		return nil, httputil.MissingParam("search_categories is required")
	}
	resp := &searchResponse{}
	c := req.SearchCategories.RoomEvents
	if c == nil {
		return resp, nil // no category asked for, nothing to search
	}
	if c.SearchTerm == nil {
		return nil, httputil.MissingParam("room_events.search_term is required")
	}
	for _, k := range c.Keys {
		if !contains(roomserver.SearchKeys, k) {
			return nil, httputil.InvalidParam("keys may hold content.body, content.name and content.topic, not " + k)
		}
	}
	q := roomserver.SearchQuery{Term: *c.SearchTerm, Keys: c.Keys, Limit: 10, NextBatch: r.URL.Query().Get("next_batch")}
	switch c.OrderBy {
	case "", "rank":
	case "recent":
		q.Recent = true
	default:
		return nil, httputil.InvalidParam("order_by must be rank or recent")
	}
	if f := c.Filter; f != nil {
		ef := f.EventFilter
		q.Filter, q.Rooms, q.NotRooms = &ef, f.Rooms, f.NotRooms
		if ef.Limit != nil {
			if *ef.Limit < 0 {
				return nil, httputil.InvalidParam("filter.limit must not be negative")
			}
			q.Limit = min(*ef.Limit, maxSearchLimit)
		}
	}
	before, after := 0, 0
	if ec := c.EventContext; ec != nil {
		before, after = 5, 5 // the spec's defaults
		if ec.BeforeLimit != nil {
			before = *ec.BeforeLimit
		}
		if ec.AfterLimit != nil {
			after = *ec.AfterLimit
		}
		if before < 0 || after < 0 {
			return nil, httputil.InvalidParam("event_context limits must not be negative")
		}
		before, after = min(before, maxPageLimit), min(after, maxPageLimit)
	}
	res, err := a.Rooms.Search(r.Context(), dev.UserID, q)
	if err != nil {
		return nil, err
	}
	hits := make([]*roomserver.StoredEvent, len(res.Hits))
	for i, h := range res.Hits {
		hits[i] = h.Event
	}
	b, err := a.bundler(r, dev, hits)
	if err != nil {
		return nil, err
	}
	out := &roomEventsResult{Count: res.Count, Highlights: res.Highlights, Results: []searchResult{}, NextBatch: res.NextBatch}
	for _, h := range res.Hits {
		sr := searchResult{Rank: h.Rank, Result: b.event(h.Event)}
		if c.EventContext != nil {
			cx, err := a.Rooms.SearchHitContext(r.Context(), dev.UserID, h.Event, before, after)
			if err != nil {
				return nil, err
			}
			sr.Context = &searchHitContext{
				EventsBefore: renderEvents(dev, cx.Before),
				EventsAfter:  renderEvents(dev, cx.After),
				Start:        cx.Start,
				End:          cx.End,
			}
		}
		out.Results = append(out.Results, sr)
	}
	resp.SearchCategories.RoomEvents = out
	return resp, nil
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
