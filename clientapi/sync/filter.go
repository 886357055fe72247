package sync

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// Filter is the spec's Filter object (POST /user/{userId}/filter and the
// inline form of /sync's filter parameter).
type Filter struct {
	EventFields []string    `json:"event_fields,omitempty"`
	EventFormat string      `json:"event_format,omitempty"`
	AccountData EventFilter `json:"account_data"`
	Presence    EventFilter `json:"presence"`
	Room        RoomFilter  `json:"room"`
}

// EventFilter selects events by type and sender. A nil list places no
// restriction; an empty list of types or senders matches nothing.
type EventFilter struct {
	Limit      *int      `json:"limit,omitempty"`
	Types      *[]string `json:"types,omitempty"`
	NotTypes   []string  `json:"not_types,omitempty"`
	Senders    *[]string `json:"senders,omitempty"`
	NotSenders []string  `json:"not_senders,omitempty"`
}

// RoomEventFilter is an EventFilter for room events.
type RoomEventFilter struct {
	EventFilter
	Rooms                     *[]string `json:"rooms,omitempty"`
	NotRooms                  []string  `json:"not_rooms,omitempty"`
	ContainsURL               *bool     `json:"contains_url,omitempty"`
	LazyLoadMembers           bool      `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers   bool      `json:"include_redundant_members,omitempty"`
	UnreadThreadNotifications bool      `json:"unread_thread_notifications,omitempty"`
}

// RoomFilter is the room part of a Filter.
type RoomFilter struct {
	Rooms        *[]string       `json:"rooms,omitempty"`
	NotRooms     []string        `json:"not_rooms,omitempty"`
	IncludeLeave bool            `json:"include_leave,omitempty"`
	Ephemeral    RoomEventFilter `json:"ephemeral"`
	State        RoomEventFilter `json:"state"`
	Timeline     RoomEventFilter `json:"timeline"`
	AccountData  RoomEventFilter `json:"account_data"`
}

// Timeline limits: the spec leaves the default to the server.
const (
	DefaultTimelineLimit = 10
	MaxTimelineLimit     = 1000
)

// ParseFilter decodes and validates a filter. The error says what is wrong
// in words a client developer can act on.
func ParseFilter(raw []byte) (*Filter, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, fmt.Errorf("filter must be a JSON object")
	}
	if !json.Valid(raw) {
		return nil, fmt.Errorf("filter is not valid JSON")
	}
	var f Filter
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("filter has the wrong shape: %v", err)
	}
	if err := f.validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

func (f *Filter) validate() error {
	switch f.EventFormat {
	case "", "client", "federation":
	default:
		return fmt.Errorf("event_format must be client or federation")
	}
	for name, l := range map[string]*int{
		"account_data": f.AccountData.Limit, "presence": f.Presence.Limit,
		"room.ephemeral": f.Room.Ephemeral.Limit, "room.state": f.Room.State.Limit,
		"room.timeline": f.Room.Timeline.Limit, "room.account_data": f.Room.AccountData.Limit,
	} {
		if l != nil && *l < 0 {
			return fmt.Errorf("%s.limit must not be negative", name)
		}
	}
	return nil
}

// TimelineLimit is the number of timeline events per room.
func (f *Filter) TimelineLimit() int {
	if f.Room.Timeline.Limit == nil {
		return DefaultTimelineLimit
	}
	return min(*f.Room.Timeline.Limit, MaxTimelineLimit)
}

// globMatch matches s against a pattern in which '*' stands for any run of
// characters, as the spec allows in filter type lists.
func globMatch(pattern, s string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == s
	}
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, last)
}

func anyGlob(patterns []string, s string) bool {
	for _, p := range patterns {
		if globMatch(p, s) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Allows reports whether an event of evType from sender passes f. Exclusion
// lists win over inclusion lists.
func (f *EventFilter) Allows(evType, sender string) bool {
	if anyGlob(f.NotTypes, evType) || contains(f.NotSenders, sender) {
		return false
	}
	if f.Types != nil && !anyGlob(*f.Types, evType) {
		return false
	}
	if f.Senders != nil && !contains(*f.Senders, sender) {
		return false
	}
	return true
}

// AllowsRoom reports whether events of roomID pass f.
func (f *RoomEventFilter) AllowsRoom(roomID string) bool {
	if contains(f.NotRooms, roomID) {
		return false
	}
	return f.Rooms == nil || contains(*f.Rooms, roomID)
}

// AllowsEvent applies the type, sender and contains_url rules to a room
// event; hasURL tells whether its content has a "url" key.
func (f *RoomEventFilter) AllowsEvent(evType, sender string, hasURL bool) bool {
	if !f.EventFilter.Allows(evType, sender) {
		return false
	}
	if f.ContainsURL != nil && *f.ContainsURL != hasURL {
		return false
	}
	return true
}

// AllowsRoom reports whether roomID passes the room filter's room lists.
func (f *RoomFilter) AllowsRoom(roomID string) bool {
	if contains(f.NotRooms, roomID) {
		return false
	}
	return f.Rooms == nil || contains(*f.Rooms, roomID)
}
