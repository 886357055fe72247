package roomserver

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"praxis/internal/httputil"
	"praxis/internal/storage"
)

// SendRequest is one event a local user sends.
type SendRequest struct {
	RoomID string
	Sender string
	Type   string
	// StateKey is nil for a message event; "" is a valid state key.
	StateKey *string
	// Content must be a JSON object.
	Content json.RawMessage
	// Redacts is the target of an m.room.redaction.
	Redacts string
	// TxnDevice and TxnID make the send idempotent: a repeat from the same
	// device returns the first event's ID. Both empty for no transaction.
	TxnDevice string
	TxnID     string
}

// Send builds, signs, auth-checks and persists one event from a local user
// and returns its ID. A client error comes back as an *httputil.Error:
// 404 for an unknown room, 403 M_FORBIDDEN with the auth rule that failed,
// 400 for bad content, 413 for an oversized event.
func (s *Service) Send(ctx context.Context, req SendRequest) (string, error) {
	if err := validateSend(req); err != nil {
		return "", err
	}
	if req.Type == spec.MRoomRedaction {
		// A redaction sent as a plain event gets the same checks and
		// effect as one sent through /redact.
		target := req.Redacts
		if target == "" {
			target = gjson.GetBytes(req.Content, "redacts").String()
		}
		return s.Redact(ctx, RedactRequest{RoomID: req.RoomID, Sender: req.Sender, EventID: target,
			Reason: gjson.GetBytes(req.Content, "reason").String(), TxnDevice: req.TxnDevice, TxnID: req.TxnID})
	}
	if req.Type == spec.MRoomMember {
		// Only the server names a restricted join's authoriser
		// (restricted.go); one a client wrote in would make other servers
		// demand a signature nobody gave, and refuse the event.
		req.Content = stripAuthoriser(req.Content)
	}
	room, err := s.roomInfo(ctx, s.db, req.RoomID)
	if err != nil {
		return "", err
	}
	// A retried transaction is found inside the transaction below, or
	// here when building fails (the sender may have left since): looking
	// it up first would cost every send a query for the rare retry.
	p := proto{sender: req.Sender, evType: req.Type, stateKey: req.StateKey, content: req.Content, redacts: req.Redacts}
	// Build, sign and auth-check against the committed head outside the
	// transaction: that is most of an event's CPU, and writes to the
	// database are serialised. Inside, the event is kept if the head has
	// not moved meanwhile, and rebuilt otherwise.
	pre, err := s.readHead(ctx, s.db, room)
	if err != nil {
		return "", err
	}
	if req.StateKey != nil && req.Type != spec.MRoomMember {
		// Setting state to what the same sender already set is a no-op
		// that answers with the existing event, as clients expect from
		// repeated PUTs.
		old, err := pre.current(ctx, req.Type, *req.StateKey)
		if err != nil {
			return "", err
		}
		if old != nil && string(old.SenderID()) == req.Sender && bytes.Equal(canonical(old.Content()), canonical(req.Content)) {
			if req.TxnID != "" {
				// a retry answers with its own first event
				if id, err := s.txnEvent(ctx, s.db, room.nid, req); err != nil || id != "" {
					return id, err
				}
			}
			return old.EventID(), nil
		}
	}
	prebuilt, err := pre.build(ctx, p)
	if err != nil {
		if req.TxnID != "" {
			if id, terr := s.txnEvent(ctx, s.db, room.nid, req); terr != nil || id != "" {
				return id, terr
			}
		}
		return "", err
	}
	// The reference hash behind the event ID is computed on first use and
	// cached: do it here, not in the serial commit goroutine.
	prebuilt.EventID()
	var eventID string
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		w, err := s.openWriter(ctx, tx, room)
		if err != nil {
			return err
		}
		if req.TxnID != "" {
			// A retry may have committed while we waited for the room, or
			// sit earlier in the same group commit.
			if eventID, err = s.txnEvent(ctx, tx, room.nid, req); err != nil || eventID != "" {
				return err
			}
		}
		pdu := prebuilt
		if w.sameHead(pre) {
			_, err = w.persist(ctx, pdu, req.TxnDevice, req.TxnID)
		} else {
			pdu, err = w.add(ctx, p, req.TxnDevice, req.TxnID)
		}
		if err != nil {
			return err
		}
		eventID = pdu.EventID()
		_, err = w.finish(ctx)
		return err
	})
	if err != nil {
		return "", err
	}
	slog.DebugContext(ctx, "event sent", "room_id", req.RoomID, "event_id", eventID, "type", req.Type)
	return eventID, nil
}

// txnEvent returns the event a client transaction already produced, or "".
func (s *Service) txnEvent(ctx context.Context, db *storage.DB, roomNID int64, req SendRequest) (string, error) {
	var id string
	err := db.QueryRow(ctx, `SELECT event_id FROM events WHERE room_nid = $1 AND sender = $2 AND txn_device = $3 AND txn_id = $4`,
		roomNID, req.Sender, req.TxnDevice, req.TxnID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up transaction %s: %w", req.TxnID, err)
	}
	return id, nil
}

func validateSend(req SendRequest) error {
	if _, err := spec.NewRoomID(req.RoomID); err != nil {
		return httputil.InvalidParam("invalid room ID " + req.RoomID)
	}
	if req.Type == "" {
		return httputil.InvalidParam("missing event type")
	}
	if len(req.Type) > 255 {
		return httputil.InvalidParam("event type is longer than 255 bytes")
	}
	if req.StateKey != nil && len(*req.StateKey) > 255 {
		return httputil.InvalidParam("state key is longer than 255 bytes")
	}
	c := strings.TrimSpace(string(req.Content))
	if c == "" || c[0] != '{' || !json.Valid(req.Content) {
		return httputil.BadJSON("event content must be a JSON object")
	}
	if !httputil.FiniteNumbers(req.Content) {
		return httputil.BadJSON("event content has a number out of range")
	}
	if !pairedSurrogates(req.Content) {
		return httputil.BadJSON("event content has an unpaired UTF-16 surrogate escape")
	}
	if req.Type == spec.MRoomCreate {
		return httputil.Forbidden("m.room.create is sent only by createRoom")
	}
	return nil
}

// pairedSurrogates reports whether every \uD800–\uDFFF escape in valid
// JSON is half of a surrogate pair. A lone one is not a character; JSON
// decoders silently replace or drop it, so storing it would change what
// the client sent.
func pairedSurrogates(b []byte) bool {
	hex4 := func(i int) (int, bool) {
		if i+4 > len(b) {
			return 0, false
		}
		v, err := strconv.ParseUint(string(b[i:i+4]), 16, 32)
		return int(v), err == nil
	}
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' || i+1 >= len(b) {
			continue
		}
		if b[i+1] != 'u' {
			i++ // skip the escaped character, which may be a backslash
			continue
		}
		v, ok := hex4(i + 2)
		if !ok {
			return false
		}
		switch {
		case v >= 0xDC00 && v <= 0xDFFF:
			return false
		case v >= 0xD800 && v <= 0xDBFF:
			if i+12 > len(b) || b[i+6] != '\\' || b[i+7] != 'u' {
				return false
			}
			lo, ok := hex4(i + 8)
			if !ok || lo < 0xDC00 || lo > 0xDFFF {
				return false
			}
			i += 11
		default:
			i += 5
		}
	}
	return true
}
