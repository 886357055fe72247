package roomserver

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"praxis/internal/httputil"
	"praxis/internal/storage"
)

// checkLocalAlias validates an alias that this server is to hold.
func (s *Service) checkLocalAlias(alias string) error {
	local, server, ok := strings.Cut(strings.TrimPrefix(alias, "#"), ":")
	if !strings.HasPrefix(alias, "#") || !ok || local == "" || len(alias) > 255 || strings.ContainsAny(local, " \t\n#") {
		return httputil.InvalidParam("invalid room alias " + alias)
	}
	if server != s.serverName {
		return httputil.InvalidParam("room alias " + alias + " is not on this server")
	}
	return nil
}

// CreateAlias points a new local alias at a room. The caller must be
// joined to the room; an alias that exists is 409.
func (s *Service) CreateAlias(ctx context.Context, userID, alias, roomID string) error {
	if err := s.checkLocalAlias(alias); err != nil {
		return err
	}
	if _, err := spec.NewRoomID(roomID); err != nil {
		return httputil.InvalidParam("invalid room ID " + roomID)
	}
	room, err := s.roomInfo(ctx, s.db, roomID)
	if err != nil {
		return err
	}
	if m, err := s.membershipNow(ctx, room.nid, userID); err != nil {
		return err
	} else if m != spec.Join {
		return httputil.Forbidden("you must be in the room to give it an alias")
	}
	_, err = s.db.Exec(ctx, `INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)`, alias, roomID, userID)
	if storage.IsUniqueViolation(err) {
		return httputil.Errorf(http.StatusConflict, "M_UNKNOWN", "room alias %s already exists", alias)
	}
	if err != nil {
		return fmt.Errorf("create alias: %w", err)
	}
	return nil
}

// DeleteAlias removes a local alias. Its creator, a server admin, or a
// room member allowed to change m.room.canonical_alias may do so.
func (s *Service) DeleteAlias(ctx context.Context, userID string, isAdmin bool, alias string) error {
	if err := s.checkLocalAlias(alias); err != nil {
		return err
	}
	var roomID, creator string
	err := s.db.QueryRow(ctx, `SELECT room_id, creator FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID, &creator)
	if errors.Is(err, sql.ErrNoRows) {
		return httputil.NotFound("room alias " + alias + " does not exist")
	}
	if err != nil {
		return fmt.Errorf("read alias: %w", err)
	}
	if creator != userID && !isAdmin {
		ok, err := s.canSendState(ctx, roomID, userID, spec.MRoomCanonicalAlias)
		if err != nil {
			return err
		}
		if !ok {
			return httputil.Forbidden("you may not delete room alias " + alias)
		}
	}
	if _, err := s.db.Exec(ctx, `DELETE FROM room_aliases WHERE alias = $1`, alias); err != nil {
		return fmt.Errorf("delete alias: %w", err)
	}
	s.dropFromCanonicalAlias(ctx, userID, roomID, alias)
	return nil
}

// dropFromCanonicalAlias takes a deleted alias out of the room's
// m.room.canonical_alias (alias and alt_aliases), sent as the user who
// deleted it when they may change that state: otherwise clients keep
// showing, and trying, a name that no longer resolves. Best effort: the
// alias is gone either way.
func (s *Service) dropFromCanonicalAlias(ctx context.Context, userID, roomID, alias string) {
	ev, err := s.RoomStateEvent(ctx, userID, roomID, spec.MRoomCanonicalAlias, "")
	if err != nil {
		return // none, or the deleting user cannot see the room's state
	}
	var content map[string]any
	if json.Unmarshal([]byte(gjson.GetBytes(ev.JSON, "content").Raw), &content) != nil {
		return
	}
	changed := false
	if content["alias"] == alias {
		delete(content, "alias")
		changed = true
	}
	if alts, ok := content["alt_aliases"].([]any); ok {
		kept := slices.DeleteFunc(slices.Clone(alts), func(a any) bool { return a == alias })
		if len(kept) != len(alts) {
			changed = true
			if len(kept) == 0 {
				delete(content, "alt_aliases")
			} else {
				content["alt_aliases"] = kept
			}
		}
	}
	if !changed {
		return
	}
	if ok, err := s.canSendState(ctx, roomID, userID, spec.MRoomCanonicalAlias); err != nil || !ok {
		return
	}
	empty := ""
	if _, err := s.Send(ctx, SendRequest{RoomID: roomID, Sender: userID, Type: spec.MRoomCanonicalAlias, StateKey: &empty, Content: mustJSON(content)}); err != nil {
		slog.WarnContext(ctx, "drop deleted alias from the canonical alias", "room_id", roomID, "err", err)
	}
}

// SetPublished lists a room in (or removes it from) the local room
// directory. Server admins and room members allowed to change
// m.room.canonical_alias may do so.
func (s *Service) SetPublished(ctx context.Context, userID string, isAdmin bool, roomID string, published bool) error {
	if _, err := spec.NewRoomID(roomID); err != nil {
		return httputil.InvalidParam("invalid room ID " + roomID)
	}
	room, err := s.roomInfo(ctx, s.db, roomID)
	if err != nil {
		return err
	}
	if !isAdmin {
		ok, err := s.canSendState(ctx, roomID, userID, spec.MRoomCanonicalAlias)
		if err != nil {
			return err
		}
		if !ok {
			return httputil.Forbidden("you may not change the directory visibility of this room")
		}
	}
	if _, err := s.db.Exec(ctx, `UPDATE rooms SET published = $1 WHERE room_nid = $2`, published, room.nid); err != nil {
		return fmt.Errorf("publish room: %w", err)
	}
	return nil
}

func (s *Service) membershipNow(ctx context.Context, roomNID int64, userID string) (string, error) {
	var m string
	err := s.db.QueryRow(ctx, `SELECT membership FROM room_members WHERE room_nid = $1 AND user_id = $2`, roomNID, userID).Scan(&m)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read membership: %w", err)
	}
	return m, nil
}

// canSendState reports whether userID is joined and has the power level
// to send a state event of evType.
func (s *Service) canSendState(ctx context.Context, roomID, userID, evType string) (bool, error) {
	room, err := s.roomInfo(ctx, s.db, roomID)
	if err != nil {
		return false, err
	}
	// A read-only writer: the state loading and power arithmetic are the
	// same, nothing is written.
	w := &writer{s: s, tx: s.db, room: room, state: map[gomatrixserverlib.StateKeyTuple]stateEntry{}}
	if err := w.load(ctx, []gomatrixserverlib.StateKeyTuple{{EventType: spec.MRoomCreate}, {EventType: spec.MRoomPowerLevels},
		{EventType: spec.MRoomMember, StateKey: userID}}); err != nil {
		return false, err
	}
	if m, _ := w.membership(ctx, userID); m != spec.Join {
		return false, nil
	}
	pl, err := w.powerLevels()
	if err != nil {
		return false, err
	}
	return w.userLevel(pl, userID) >= pl.EventLevel(evType, true), nil
}
