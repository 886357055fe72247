package sync

import "encoding/json"

// Response is the body of a /sync answer (spec: GET /_matrix/client/v3/sync).
type Response struct {
	NextBatch   string        `json:"next_batch"`
	Rooms       *RoomSections `json:"rooms,omitempty"`
	AccountData *EventList    `json:"account_data,omitempty"`
	Presence    *EventList    `json:"presence,omitempty"`
	ToDevice    *EventList    `json:"to_device,omitempty"`

	DeviceLists                  *DeviceLists   `json:"device_lists,omitempty"`
	DeviceOneTimeKeysCount       map[string]int `json:"device_one_time_keys_count,omitempty"`
	DeviceUnusedFallbackKeyTypes *[]string      `json:"device_unused_fallback_key_types,omitempty"`
}

// RoomSections holds the four room sections; empty sections are left out.
type RoomSections struct {
	Join   map[string]*JoinedRoom  `json:"join,omitempty"`
	Invite map[string]*InvitedRoom `json:"invite,omitempty"`
	Leave  map[string]*LeftRoom    `json:"leave,omitempty"`
	Knock  map[string]*KnockedRoom `json:"knock,omitempty"`
}

// EventList is {"events": [...]}, never null.
type EventList struct {
	Events []json.RawMessage `json:"events"`
}

func newList() EventList { return EventList{Events: []json.RawMessage{}} }

// Timeline is a room's timeline section.
type Timeline struct {
	Events    []json.RawMessage `json:"events"`
	Limited   bool              `json:"limited"`
	PrevBatch string            `json:"prev_batch,omitempty"`
}

// JoinedRoom is one entry of rooms.join.
type JoinedRoom struct {
	Summary             *Summary             `json:"summary,omitempty"`
	State               EventList            `json:"state"`
	Timeline            Timeline             `json:"timeline"`
	Ephemeral           EventList            `json:"ephemeral"`
	AccountData         EventList            `json:"account_data"`
	UnreadNotifications *UnreadNotifications `json:"unread_notifications,omitempty"`
	// UnreadThreadNotifications maps thread roots to their counts, when
	// the filter asks for threads to be counted apart.
	UnreadThreadNotifications map[string]*UnreadNotifications `json:"unread_thread_notifications,omitempty"`
}

// Summary is the room summary clients use to name unnamed rooms.
type Summary struct {
	Heroes  []string `json:"m.heroes,omitempty"`
	Joined  *int     `json:"m.joined_member_count,omitempty"`
	Invited *int     `json:"m.invited_member_count,omitempty"`
}

// UnreadNotifications counts unread messages since the user's receipt.
type UnreadNotifications struct {
	NotificationCount int `json:"notification_count"`
	HighlightCount    int `json:"highlight_count"`
}

// InvitedRoom is one entry of rooms.invite.
type InvitedRoom struct {
	InviteState EventList `json:"invite_state"`
}

// KnockedRoom is one entry of rooms.knock.
type KnockedRoom struct {
	KnockState EventList `json:"knock_state"`
}

// LeftRoom is one entry of rooms.leave.
type LeftRoom struct {
	State       EventList `json:"state"`
	Timeline    Timeline  `json:"timeline"`
	AccountData EventList `json:"account_data"`
}

// DeviceLists carries the users whose devices changed.
type DeviceLists struct {
	Changed []string `json:"changed,omitempty"`
	Left    []string `json:"left,omitempty"`
}

// empty reports whether the response carries nothing a long-poll should
// return early for. Key counts are always present and do not count.
func (r *Response) empty() bool {
	if r.Rooms != nil && (len(r.Rooms.Join)+len(r.Rooms.Invite)+len(r.Rooms.Leave)+len(r.Rooms.Knock)) > 0 {
		return false
	}
	if r.AccountData != nil && len(r.AccountData.Events) > 0 {
		return false
	}
	if r.Presence != nil && len(r.Presence.Events) > 0 {
		return false
	}
	if r.ToDevice != nil && len(r.ToDevice.Events) > 0 {
		return false
	}
	if r.DeviceLists != nil && (len(r.DeviceLists.Changed)+len(r.DeviceLists.Left)) > 0 {
		return false
	}
	return true
}
