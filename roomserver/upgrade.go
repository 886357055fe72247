package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/httputil"
	"praxis/internal/storage"
)

// transferableState is the state an upgrade copies into the replacement
// room (the spec's list, plus the canonical alias, whose aliases move too).
var transferableState = []string{
	"m.room.server_acl", "m.room.encryption", spec.MRoomName, "m.room.avatar", spec.MRoomTopic,
	"m.room.guest_access", spec.MRoomHistoryVisibility, spec.MRoomJoinRules, spec.MRoomCanonicalAlias,
}

// UpgradeRoom replaces a room with a new room of another version, as the
// spec's POST /rooms/{roomId}/upgrade describes: the new room starts with
// a predecessor link and the old room's transferable state and power
// levels, local aliases and the directory listing move over, the old room
// gets an m.room.tombstone and its power levels are tightened so that
// ordinary members can no longer talk or invite there.
func (s *Service) UpgradeRoom(ctx context.Context, userID, roomID, newVersion string) (string, error) {
	impl, ok := versionImpl(newVersion)
	if !ok {
		return "", errUnsupportedVersion(newVersion)
	}
	if _, err := spec.NewRoomID(roomID); err != nil {
		return "", httputil.InvalidParam("invalid room ID " + roomID)
	}
	old, err := s.roomInfo(ctx, s.db, roomID)
	if err != nil {
		return "", err
	}
	// Read the old room's state and check the caller may end it.
	r, err := s.readHead(ctx, s.db, old)
	if err != nil {
		return "", err
	}
	keys := []gomatrixserverlib.StateKeyTuple{{EventType: spec.MRoomCreate}, {EventType: spec.MRoomPowerLevels},
		{EventType: spec.MRoomMember, StateKey: userID}}
	for _, t := range transferableState {
		keys = append(keys, gomatrixserverlib.StateKeyTuple{EventType: t})
	}
	if err := r.load(ctx, keys); err != nil {
		return "", err
	}
	if m, _ := r.membership(ctx, userID); m != spec.Join {
		return "", httputil.Forbidden("you are not in room " + roomID)
	}
	pl, err := r.powerLevels()
	if err != nil {
		return "", err
	}
	if r.userLevel(pl, userID) < pl.EventLevel("m.room.tombstone", true) {
		return "", httputil.Forbidden("you may not upgrade this room: it needs the power level for m.room.tombstone")
	}
	oldCreate, _ := r.Create()

	// The replacement room's create event links back to the old room.
	createContent := map[string]any{}
	var oc map[string]any
	if oldCreate != nil && json.Unmarshal(oldCreate.Content(), &oc) == nil {
		for _, k := range []string{"m.federate", "type"} {
			if v, ok := oc[k]; ok {
				createContent[k] = v
			}
		}
	}
	createContent["room_version"] = newVersion
	predecessor := map[string]any{"room_id": roomID}
	if id := r.extremitiesOrEmpty(); id != "" {
		predecessor["event_id"] = id
	}
	createContent["predecessor"] = predecessor
	if impl.CreatorInCreateEvent() {
		createContent["creator"] = userID
	}

	// Power levels: the old room's. In v12+ rooms the upgrader is the
	// creator, who must not be listed. Otherwise, if the upgrader could not
	// send the initial state with their level, they get the level needed
	// for the initial events and the old power levels are restored after.
	var plContent map[string]any
	if ev, _ := r.PowerLevels(); ev != nil {
		_ = json.Unmarshal(ev.Content(), &plContent)
	}
	if plContent == nil {
		plContent = map[string]any{}
	}
	users, _ := plContent["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
	}
	plContent["users"] = users
	initialPL := plContent
	var restorePL map[string]any
	if impl.PrivilegedCreators() {
		delete(users, userID)
	} else {
		needed := pl.EventLevel(spec.MRoomPowerLevels, true)
		for _, t := range transferableState {
			needed = max(needed, pl.EventLevel(t, true))
		}
		lvl := r.userLevel(pl, userID)
		if lvl > 1<<53-1 {
			lvl = 100 // a v12 creator's unbounded level does not fit an older room
		}
		if lvl < needed {
			raised := map[string]any{}
			for k, v := range users {
				raised[k] = v
			}
			raised[userID] = needed
			initialPL = map[string]any{}
			for k, v := range plContent {
				initialPL[k] = v
			}
			initialPL["users"] = raised
			restorePL = plContent
		} else {
			users[userID] = lvl
		}
	}

	newRoom := &roomInfo{version: impl}
	if !impl.DomainlessRoomIDs() {
		newRoom.id = "!" + randomID(18) + ":" + s.serverName
	}
	dn, av, err := s.profile(ctx, userID)
	if err != nil && err != ErrUnknownUser {
		return "", fmt.Errorf("profile of %s: %w", userID, err)
	}
	var published bool
	if err := s.db.QueryRow(ctx, `SELECT published FROM rooms WHERE room_nid = $1`, old.nid).Scan(&published); err != nil {
		return "", fmt.Errorf("read room: %w", err)
	}
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		// Lock the old room first: its writers lock it before the stream
		// head, and so must we.
		if err := tx.LockRoom(ctx, roomID); err != nil {
			return err
		}
		w := s.newRoomWriter(tx, newRoom)
		create, err := w.build(ctx, proto{sender: userID, evType: spec.MRoomCreate, stateKey: ptr(""), content: mustJSON(createContent)})
		if err != nil {
			return err
		}
		if impl.DomainlessRoomIDs() {
			newRoom.id = "!" + strings.TrimPrefix(create.EventID(), "$")
		}
		if err := tx.QueryRow(ctx, `INSERT INTO rooms (room_id, room_version, creator, published, created_ts) VALUES ($1, $2, $3, $4, $5) RETURNING room_nid`,
			newRoom.id, newVersion, userID, published, s.now().UnixMilli()).Scan(&newRoom.nid); err != nil {
			return fmt.Errorf("insert room: %w", err)
		}
		if _, err := w.persist(ctx, create, "", ""); err != nil {
			return err
		}
		join := map[string]any{"membership": spec.Join}
		setProfile(join, dn, av)
		if _, err := w.add(ctx, proto{sender: userID, evType: spec.MRoomMember, stateKey: ptr(userID), content: mustJSON(join)}, "", ""); err != nil {
			return err
		}
		if _, err := w.add(ctx, proto{sender: userID, evType: spec.MRoomPowerLevels, stateKey: ptr(""), content: mustJSON(initialPL)}, "", ""); err != nil {
			return fmt.Errorf("copy power levels: %w", err)
		}
		for _, t := range transferableState {
			ev, _ := r.get(t, "")
			if ev == nil {
				continue
			}
			if _, err := w.add(ctx, proto{sender: userID, evType: t, stateKey: ptr(""), content: ev.Content()}, "", ""); err != nil {
				return fmt.Errorf("copy %s: %w", t, err)
			}
		}
		if restorePL != nil {
			if _, err := w.add(ctx, proto{sender: userID, evType: spec.MRoomPowerLevels, stateKey: ptr(""), content: mustJSON(restorePL)}, "", ""); err != nil {
				return fmt.Errorf("restore power levels: %w", err)
			}
		}
		if _, err := w.finish(ctx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE room_aliases SET room_id = $1 WHERE room_id = $2`, newRoom.id, roomID); err != nil {
			return fmt.Errorf("move aliases: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE rooms SET published = FALSE WHERE room_nid = $1`, old.nid); err != nil {
			return fmt.Errorf("unpublish old room: %w", err)
		}

		// End the old room in the same transaction: the tombstone, then
		// power levels that silence ordinary members.
		ow, err := s.openWriter(ctx, tx, old)
		if err != nil {
			return err
		}
		if _, err := ow.add(ctx, proto{sender: userID, evType: "m.room.tombstone", stateKey: ptr(""),
			content: mustJSON(map[string]any{"body": "This room has been replaced", "replacement_room": newRoom.id})}, "", ""); err != nil {
			return err
		}
		if oldPL, _ := r.PowerLevels(); oldPL != nil {
			var c map[string]any
			if json.Unmarshal(oldPL.Content(), &c) == nil {
				restrict := max(int64(50), pl.UsersDefault+1)
				changed := false
				for _, k := range []string{"events_default", "invite"} {
					if cur, ok := c[k].(float64); !ok || int64(cur) < restrict {
						c[k] = restrict
						changed = true
					}
				}
				if changed {
					// Best effort: an upgrader who may send a tombstone
					// but not power levels leaves them as they are.
					if err := ow.addOptional(ctx, proto{sender: userID, evType: spec.MRoomPowerLevels, stateKey: ptr(""), content: mustJSON(c)}); err != nil {
						return err
					}
				}
			}
		}
		_, err = ow.finish(ctx)
		return err
	})
	if err != nil {
		return "", err
	}
	s.rooms.Store(newRoom.id, newRoom)
	slog.InfoContext(ctx, "room upgraded", "room_id", roomID, "replacement_room", newRoom.id, "version", newVersion)
	return newRoom.id, nil
}

// extremitiesOrEmpty names an event of the old room for the predecessor
// link (the spec made it optional; clients use it to jump back).
func (w *writer) extremitiesOrEmpty() string {
	if len(w.extremities) > 0 {
		return w.extremities[0]
	}
	return ""
}

// addOptional adds an event unless the auth rules refuse it; a refusal is
// not an error.
func (w *writer) addOptional(ctx context.Context, p proto) error {
	pdu, err := w.build(ctx, p)
	if err != nil {
		if he := (*httputil.Error)(nil); errors.As(err, &he) && he.Status == http.StatusForbidden {
			return nil
		}
		return err
	}
	_, err = w.persist(ctx, pdu, "", "")
	return err
}
