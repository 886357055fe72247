package clientapi

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"praxis/internal/ephemeral"
	"praxis/internal/httputil"
	"praxis/internal/users"
)

// defaultTypingTimeout applies when a client starts typing without a
// timeout.
const defaultTypingTimeout = 30 * time.Second

type typingRequest struct {
	Typing  *bool `json:"typing"`
	Timeout int64 `json:"timeout"`
}

// requireJoined answers 403 unless userID is joined to roomID.
func (a *API) requireJoined(r *http.Request, roomID, userID string) error {
	if !strings.HasPrefix(roomID, "!") || !strings.Contains(roomID, ":") {
		return httputil.InvalidParam("not a room ID: " + roomID)
	}
	m, err := a.Rooms.SyncMembershipOf(r.Context(), roomID, userID)
	if err != nil {
		return err
	}
	if m != "join" {
		return httputil.Forbidden("you are not joined to " + roomID)
	}
	return nil
}

// setTyping serves PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}.
// Only the user themself may say they are typing, and only in a room they
// are joined to.
func (a *API) setTyping(r *http.Request, dev *users.Device) (empty, error) {
	roomID, userID := r.PathValue("roomId"), r.PathValue("userId")
	var req typingRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return empty{}, err
	}
	if req.Typing == nil {
		return empty{}, httputil.BadJSON("typing is required")
	}
	if req.Timeout < 0 {
		return empty{}, httputil.BadJSON("timeout must not be negative")
	}
	if userID != dev.UserID {
		return empty{}, httputil.Forbidden("you may only set your own typing state")
	}
	if err := a.requireJoined(r, roomID, dev.UserID); err != nil {
		return empty{}, err
	}
	timeout := defaultTypingTimeout
	if req.Timeout > 0 {
		timeout = time.Duration(min(req.Timeout, int64(ephemeral.MaxTypingTimeout/time.Millisecond))) * time.Millisecond
	}
	return empty{}, a.Ephemeral.SetTyping(r.Context(), roomID, dev.UserID, *req.Typing, timeout)
}

type receiptRequest struct {
	ThreadID *string `json:"thread_id"`
}

// postReceipt serves POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}.
func (a *API) postReceipt(r *http.Request, dev *users.Device) (empty, error) {
	roomID, typ, eventID := r.PathValue("roomId"), r.PathValue("receiptType"), r.PathValue("eventId")
	var req receiptRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return empty{}, err
	}
	switch typ {
	case ephemeral.ReceiptRead, ephemeral.ReceiptReadPrivate, fullyRead:
	default:
		return empty{}, httputil.InvalidParam("unknown receipt type " + typ)
	}
	threadID := ""
	if req.ThreadID != nil {
		threadID = *req.ThreadID
		if typ == fullyRead {
			return empty{}, httputil.InvalidParam("m.fully_read does not take a thread_id")
		}
		if threadID != "main" && !strings.HasPrefix(threadID, "$") {
			return empty{}, httputil.InvalidParam("thread_id must be \"main\" or an event ID")
		}
	}
	if err := a.requireJoined(r, roomID, dev.UserID); err != nil {
		return empty{}, err
	}
	return empty{}, a.markRead(r, dev, roomID, typ, eventID, threadID)
}

const fullyRead = "m.fully_read"

// markRead stores one marker: m.fully_read as room account data, the
// others as receipts.
func (a *API) markRead(r *http.Request, dev *users.Device, roomID, typ, eventID, threadID string) error {
	pos, err := a.Rooms.SyncEventPosition(r.Context(), roomID, eventID)
	if err != nil {
		return err
	}
	if typ == fullyRead {
		content, _ := json.Marshal(map[string]string{"event_id": eventID})
		return a.Users.SetAccountData(r.Context(), dev.UserID, roomID, fullyRead, content)
	}
	_, err = a.Ephemeral.PutReceipt(r.Context(), ephemeral.Receipt{
		RoomID: roomID, UserID: dev.UserID, Type: typ, ThreadID: threadID, EventID: eventID, EventStreamPos: pos,
	})
	return err
}

type readMarkersRequest struct {
	FullyRead   string `json:"m.fully_read"`
	Read        string `json:"m.read"`
	ReadPrivate string `json:"m.read.private"`
}

// setReadMarkers serves POST /_matrix/client/v3/rooms/{roomId}/read_markers.
func (a *API) setReadMarkers(r *http.Request, dev *users.Device) (empty, error) {
	roomID := r.PathValue("roomId")
	var req readMarkersRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return empty{}, err
	}
	if err := a.requireJoined(r, roomID, dev.UserID); err != nil {
		return empty{}, err
	}
	// Check every event first so that a bad one changes nothing.
	markers := []struct{ typ, id string }{{fullyRead, req.FullyRead}, {ephemeral.ReceiptRead, req.Read}, {ephemeral.ReceiptReadPrivate, req.ReadPrivate}}
	for _, m := range markers {
		if m.id == "" {
			continue
		}
		if _, err := a.Rooms.SyncEventPosition(r.Context(), roomID, m.id); err != nil {
			return empty{}, err
		}
	}
	for _, m := range markers {
		if m.id == "" {
			continue
		}
		if err := a.markRead(r, dev, roomID, m.typ, m.id, ""); err != nil {
			return empty{}, err
		}
	}
	return empty{}, nil
}
