package roomserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/httputil"
	"praxis/internal/storage"
)

// RedactRequest asks to redact one event.
type RedactRequest struct {
	RoomID, Sender, EventID string
	Reason                  string
	TxnDevice, TxnID        string
}

// Redact sends an m.room.redaction for an event of the room and replaces
// the stored event with its redacted form. Users may redact their own
// events; other users' events need the room's "redact" power level.
func (s *Service) Redact(ctx context.Context, req RedactRequest) (string, error) {
	if _, err := spec.NewRoomID(req.RoomID); err != nil {
		return "", httputil.InvalidParam("invalid room ID " + req.RoomID)
	}
	if len(req.EventID) < 2 || req.EventID[0] != '$' {
		return "", httputil.InvalidParam("invalid event ID " + req.EventID)
	}
	room, err := s.roomInfo(ctx, s.db, req.RoomID)
	if err != nil {
		return "", err
	}
	sreq := SendRequest{RoomID: req.RoomID, Sender: req.Sender, Type: spec.MRoomRedaction, TxnDevice: req.TxnDevice, TxnID: req.TxnID}
	if req.TxnID != "" {
		if id, err := s.txnEvent(ctx, s.db, room.nid, sreq); err != nil || id != "" {
			return id, err
		}
	}
	content := map[string]any{}
	if req.Reason != "" {
		content["reason"] = req.Reason
	}
	if isV11Plus(room.version) {
		// v11 moved redacts into content; the top-level key stays too so
		// that readers written for older versions find it.
		content["redacts"] = req.EventID
	}
	var eventID string
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		w, err := s.openWriter(ctx, tx, room)
		if err != nil {
			return err
		}
		if req.TxnID != "" {
			if eventID, err = s.txnEvent(ctx, tx, room.nid, sreq); err != nil || eventID != "" {
				return err
			}
		}
		var targetSender string
		err = tx.QueryRow(ctx, `SELECT sender FROM events WHERE event_id = $1 AND room_nid = $2`, req.EventID, room.nid).Scan(&targetSender)
		if errors.Is(err, sql.ErrNoRows) {
			return httputil.NotFound("event " + req.EventID + " is not in room " + req.RoomID)
		}
		if err != nil {
			return fmt.Errorf("read redaction target: %w", err)
		}
		if targetSender != req.Sender {
			if err := w.load(ctx, []gomatrixserverlib.StateKeyTuple{{EventType: spec.MRoomCreate}, {EventType: spec.MRoomPowerLevels}}); err != nil {
				return err
			}
			pl, err := w.powerLevels()
			if err != nil {
				return err
			}
			if w.userLevel(pl, req.Sender) < pl.Redact {
				return httputil.Forbidden(fmt.Sprintf("redacting other users' events needs power level %d", pl.Redact))
			}
		}
		pdu, err := w.add(ctx, proto{sender: req.Sender, evType: spec.MRoomRedaction, content: mustJSON(content), redacts: req.EventID}, req.TxnDevice, req.TxnID)
		if err != nil {
			return err
		}
		eventID = pdu.EventID()
		if err := s.applyRedaction(ctx, tx, room, req.EventID, eventID); err != nil {
			return err
		}
		_, err = w.finish(ctx)
		return err
	})
	if err != nil {
		return "", err
	}
	return eventID, nil
}

// applyRedaction replaces the stored JSON of target with its redacted form.
// A second redaction of the same event changes nothing.
func (s *Service) applyRedaction(ctx context.Context, tx *storage.DB, room *roomInfo, target, redactionID string) error {
	if target == "" {
		return nil
	}
	var nid int64
	var js string
	var redactedBy sql.NullString
	err := tx.QueryRow(ctx, `SELECT event_nid, json, redacted_by FROM events WHERE event_id = $1 AND room_nid = $2`, target, room.nid).
		Scan(&nid, &js, &redactedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return nil // an unknown event: the redaction applies if it ever arrives (not yet)
	}
	if err != nil {
		return fmt.Errorf("read event to redact: %w", err)
	}
	if redactedBy.Valid {
		return nil
	}
	redacted, err := room.version.RedactEventJSON([]byte(js))
	if err != nil {
		return fmt.Errorf("redact %s: %w", target, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE events SET json = $1, redacted_by = $2, relates_to = NULL, rel_type = NULL WHERE event_nid = $3`,
		string(redacted), redactionID, nid); err != nil {
		return fmt.Errorf("store redacted %s: %w", target, err)
	}
	tx.AfterCommit(func() { s.events.drop(nid) })
	return nil
}

// powerLevels returns the room's power levels (the defaults without an
// m.room.power_levels event). create and power levels must be loaded.
func (w *writer) powerLevels() (*gomatrixserverlib.PowerLevelContent, error) {
	create, _ := w.Create()
	creator := ""
	if create != nil {
		creator = string(create.SenderID())
	}
	pl, err := gomatrixserverlib.NewPowerLevelContentFromAuthEvents(w, creator)
	if err != nil {
		return nil, fmt.Errorf("read power levels: %w", err)
	}
	return &pl, nil
}

// userLevel is userID's power level, counting v12 creators as above all.
func (w *writer) userLevel(pl *gomatrixserverlib.PowerLevelContent, userID string) int64 {
	create, _ := w.Create()
	if create != nil && w.room.version.PrivilegedCreators() {
		for _, c := range gomatrixserverlib.CreatorsFromCreateEvent(create) {
			if c == userID {
				return gomatrixserverlib.CreatorPowerLevel
			}
		}
	}
	return pl.UserLevel(spec.SenderID(userID))
}

// isV11Plus reports whether the version follows room v11's event format
// changes (redacts in content, no creator in create content).
func isV11Plus(v gomatrixserverlib.IRoomVersion) bool {
	n, err := strconv.Atoi(string(v.Version()))
	return err == nil && n >= 11
}
