package clientapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"praxis/internal/httputil"
	"praxis/internal/users"
)

// ownUser checks that the path's {userId} is the caller.
func ownUser(r *http.Request, dev *users.Device, what string) error {
	userID := r.PathValue("userId")
	if err := validUserID(userID); err != nil {
		return err
	}
	if userID != dev.UserID {
		return httputil.Forbidden("you cannot access " + what + " of other users")
	}
	return nil
}

// pathRoomID returns a syntactically valid {roomId}.
func pathRoomID(r *http.Request) (string, error) {
	id := r.PathValue("roomId")
	if !validRoomID(id) {
		return "", httputil.InvalidParam("invalid room ID")
	}
	return id, nil
}

// serverControlled lists account data types only the server writes: the
// spec answers 405 M_BAD_JSON when a client tries.
func serverControlled(dataType string) bool {
	return dataType == "m.fully_read" || dataType == users.PushRulesType
}

func validDataType(t string) error {
	if t == "" || len(t) > 255 {
		return httputil.InvalidParam("invalid account data type")
	}
	return nil
}

// getAccountData serves GET /_matrix/client/v3/user/{userId}/account_data/{type}
// and, with {roomId}, /user/{userId}/rooms/{roomId}/account_data/{type}.
func (a *API) getAccountData(r *http.Request, dev *users.Device) (json.RawMessage, error) {
	if err := ownUser(r, dev, "account data"); err != nil {
		return nil, err
	}
	roomID := ""
	if r.PathValue("roomId") != "" {
		var err error
		if roomID, err = pathRoomID(r); err != nil {
			return nil, err
		}
	}
	content, err := a.Users.AccountData(r.Context(), dev.UserID, roomID, r.PathValue("type"))
	if errors.Is(err, users.ErrNotFound) {
		return nil, httputil.NotFound("account data not found")
	}
	return content, err
}

// putAccountData serves PUT /_matrix/client/v3/user/{userId}/account_data/{type}
// and the per-room form.
func (a *API) putAccountData(r *http.Request, dev *users.Device) (*empty, error) {
	if err := ownUser(r, dev, "account data"); err != nil {
		return nil, err
	}
	roomID := ""
	if r.PathValue("roomId") != "" {
		var err error
		if roomID, err = pathRoomID(r); err != nil {
			return nil, err
		}
	}
	dataType := r.PathValue("type")
	if err := validDataType(dataType); err != nil {
		return nil, err
	}
	if serverControlled(dataType) {
		return nil, httputil.Errorf(http.StatusMethodNotAllowed, "M_BAD_JSON", "%s is controlled by the server; use the dedicated endpoint", dataType)
	}
	body, err := httputil.ReadBody(r)
	if err != nil {
		return nil, err
	}
	// The body is the content itself: unlike other endpoints an empty
	// body is not the empty object.
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, httputil.NotJSON("account data content must be a JSON object")
	}
	var obj map[string]json.RawMessage
	if err := httputil.Unmarshal(body, &obj); err != nil {
		return nil, err
	}
	if err := a.Users.SetAccountData(r.Context(), dev.UserID, roomID, dataType, compactJSON(body)); err != nil {
		return nil, err
	}
	return &empty{}, nil
}

// compactJSON drops insignificant whitespace from JSON already validated.
func compactJSON(b []byte) json.RawMessage {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return b
	}
	return buf.Bytes()
}

const tagType = "m.tag"

type tagsResponse struct {
	Tags map[string]json.RawMessage `json:"tags"`
}

func decodeTags(content json.RawMessage) map[string]json.RawMessage {
	var c struct {
		Tags map[string]json.RawMessage `json:"tags"`
	}
	if content != nil {
		_ = json.Unmarshal(content, &c)
	}
	if c.Tags == nil {
		c.Tags = map[string]json.RawMessage{}
	}
	return c.Tags
}

// roomTags serves GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags.
func (a *API) roomTags(r *http.Request, dev *users.Device) (*tagsResponse, error) {
	if err := ownUser(r, dev, "tags"); err != nil {
		return nil, err
	}
	roomID, err := pathRoomID(r)
	if err != nil {
		return nil, err
	}
	content, err := a.Users.AccountData(r.Context(), dev.UserID, roomID, tagType)
	if err != nil && !errors.Is(err, users.ErrNotFound) {
		return nil, err
	}
	return &tagsResponse{Tags: decodeTags(content)}, nil
}

// putRoomTag serves PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}.
func (a *API) putRoomTag(r *http.Request, dev *users.Device) (*empty, error) {
	if err := ownUser(r, dev, "tags"); err != nil {
		return nil, err
	}
	roomID, err := pathRoomID(r)
	if err != nil {
		return nil, err
	}
	tag := r.PathValue("tag")
	if tag == "" || len(tag) > 255 {
		return nil, httputil.InvalidParam("invalid tag")
	}
	body, err := httputil.ReadBody(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		Order *float64 `json:"order"`
	}
	if err := httputil.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	content := compactJSON(body)
	if len(content) == 0 {
		content = json.RawMessage(`{}`)
	}
	err = a.Users.UpdateAccountData(r.Context(), dev.UserID, roomID, tagType, func(old json.RawMessage) (json.RawMessage, error) {
		tags := decodeTags(old)
		tags[tag] = content
		return json.Marshal(map[string]any{"tags": tags})
	})
	if err != nil {
		return nil, err
	}
	return &empty{}, nil
}

// deleteRoomTag serves DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}.
// Removing a tag that is not set succeeds.
func (a *API) deleteRoomTag(r *http.Request, dev *users.Device) (*empty, error) {
	if err := ownUser(r, dev, "tags"); err != nil {
		return nil, err
	}
	roomID, err := pathRoomID(r)
	if err != nil {
		return nil, err
	}
	tag := r.PathValue("tag")
	err = a.Users.UpdateAccountData(r.Context(), dev.UserID, roomID, tagType, func(old json.RawMessage) (json.RawMessage, error) {
		tags := decodeTags(old)
		delete(tags, tag)
		return json.Marshal(map[string]any{"tags": tags})
	})
	if err != nil {
		return nil, err
	}
	return &empty{}, nil
}

// The filter types exist to check a filter's shape on upload; the stored
// filter is the client's JSON, so fields added by later spec versions
// survive.
type eventFilter struct {
	Limit      *int     `json:"limit"`
	NotSenders []string `json:"not_senders"`
	NotTypes   []string `json:"not_types"`
	Senders    []string `json:"senders"`
	Types      []string `json:"types"`
}

type roomEventFilter struct {
	eventFilter
	ContainsURL               *bool    `json:"contains_url"`
	IncludeRedundantMembers   *bool    `json:"include_redundant_members"`
	LazyLoadMembers           *bool    `json:"lazy_load_members"`
	NotRooms                  []string `json:"not_rooms"`
	Rooms                     []string `json:"rooms"`
	UnreadThreadNotifications *bool    `json:"unread_thread_notifications"`
}

type roomFilter struct {
	AccountData  *roomEventFilter `json:"account_data"`
	Ephemeral    *roomEventFilter `json:"ephemeral"`
	IncludeLeave *bool            `json:"include_leave"`
	NotRooms     []string         `json:"not_rooms"`
	Rooms        []string         `json:"rooms"`
	State        *roomEventFilter `json:"state"`
	Timeline     *roomEventFilter `json:"timeline"`
}

type filterShape struct {
	AccountData *eventFilter `json:"account_data"`
	EventFields []string     `json:"event_fields"`
	EventFormat *string      `json:"event_format"`
	Presence    *eventFilter `json:"presence"`
	Room        *roomFilter  `json:"room"`
}

// ValidateFilter checks a filter's JSON: M_NOT_JSON / M_BAD_JSON for the
// wrong shape, M_INVALID_PARAM for values out of range.
func ValidateFilter(body []byte) error {
	var f filterShape
	if err := httputil.Unmarshal(body, &f); err != nil {
		return err
	}
	if f.EventFormat != nil && *f.EventFormat != "client" && *f.EventFormat != "federation" {
		return httputil.InvalidParam("event_format must be client or federation")
	}
	limits := []*eventFilter{f.AccountData, f.Presence}
	var roomLists [][]string
	if f.Room != nil {
		roomLists = append(roomLists, f.Room.Rooms, f.Room.NotRooms)
		for _, ref := range []*roomEventFilter{f.Room.AccountData, f.Room.Ephemeral, f.Room.State, f.Room.Timeline} {
			if ref != nil {
				limits = append(limits, &ref.eventFilter)
				roomLists = append(roomLists, ref.Rooms, ref.NotRooms)
			}
		}
	}
	for _, ef := range limits {
		if ef == nil {
			continue
		}
		if ef.Limit != nil && *ef.Limit < 0 {
			return httputil.InvalidParam("limit must not be negative")
		}
		// A sender that is no user ID can never match: a client sending one
		// has a bug it should hear about, not a filter that silently
		// matches nothing.
		for _, list := range [][]string{ef.Senders, ef.NotSenders} {
			for _, u := range list {
				if validUserID(u) != nil {
					return httputil.InvalidParam("senders and not_senders must hold user IDs, got " + strconv.Quote(u))
				}
			}
		}
	}
	for _, list := range roomLists {
		for _, id := range list {
			if !validRoomID(id) {
				return httputil.InvalidParam("rooms and not_rooms must hold room IDs, got " + strconv.Quote(id))
			}
		}
	}
	return nil
}

type createFilterResponse struct {
	FilterID string `json:"filter_id"`
}

// createFilter serves POST /_matrix/client/v3/user/{userId}/filter.
func (a *API) createFilter(r *http.Request, dev *users.Device) (*createFilterResponse, error) {
	if err := ownUser(r, dev, "filters"); err != nil {
		return nil, err
	}
	body, err := httputil.ReadBody(r)
	if err != nil {
		return nil, err
	}
	if err := ValidateFilter(body); err != nil {
		return nil, err
	}
	id, err := a.Users.CreateFilter(r.Context(), dev.UserID, compactJSON(body))
	if err != nil {
		return nil, err
	}
	return &createFilterResponse{FilterID: id}, nil
}

// getFilter serves GET /_matrix/client/v3/user/{userId}/filter/{filterId}.
func (a *API) getFilter(r *http.Request, dev *users.Device) (json.RawMessage, error) {
	if err := ownUser(r, dev, "filters"); err != nil {
		return nil, err
	}
	f, err := a.Users.Filter(r.Context(), dev.UserID, r.PathValue("filterId"))
	if errors.Is(err, users.ErrNotFound) {
		return nil, httputil.NotFound("filter not found")
	}
	return f, err
}
