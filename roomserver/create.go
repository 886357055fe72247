package roomserver

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/httputil"
	"praxis/internal/storage"
)

// Room presets of createRoom.
const (
	PresetPrivateChat        = "private_chat"
	PresetTrustedPrivateChat = "trusted_private_chat"
	PresetPublicChat         = "public_chat"
)

// megolm is the only room encryption algorithm clients use today.
const megolm = "m.megolm.v1.aes-sha2"

// StateEvent is one entry of createRoom's initial_state.
type StateEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// CreateRoomRequest is the body of POST /createRoom plus the caller.
type CreateRoomRequest struct {
	Creator                   string
	Visibility                string
	RoomAliasName             string
	Name                      *string
	Topic                     *string
	Invite                    []string
	RoomVersion               string
	CreationContent           json.RawMessage
	InitialState              []StateEvent
	Preset                    string
	IsDirect                  bool
	PowerLevelContentOverride json.RawMessage
}

// CreateRoomResult names the new room.
type CreateRoomResult struct {
	RoomID string
	Alias  string
}

func errUnsupportedVersion(v string) error {
	return httputil.Errorf(http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION", "room version %q is not supported by this server", v)
}

func errInvalidRoomState(msg string) error {
	return httputil.Errorf(http.StatusBadRequest, "M_INVALID_ROOM_STATE", "%s", msg)
}

// CreateRoom creates a room as the spec's createRoom describes: the create
// event, the creator's join, power levels, alias, preset state, initial
// state, name, topic and invites, all in one transaction.
func (s *Service) CreateRoom(ctx context.Context, req CreateRoomRequest) (*CreateRoomResult, error) {
	version := req.RoomVersion
	if version == "" {
		version = s.cfg.Rooms.DefaultVersion
	}
	impl, ok := versionImpl(version)
	if !ok {
		return nil, errUnsupportedVersion(version)
	}
	preset := req.Preset
	switch preset {
	case "":
		preset = PresetPrivateChat
		if req.Visibility == "public" {
			preset = PresetPublicChat
		}
	case PresetPrivateChat, PresetTrustedPrivateChat, PresetPublicChat:
	default:
		return nil, httputil.InvalidParam("unknown preset " + preset)
	}
	switch req.Visibility {
	case "", "private", "public":
	default:
		return nil, httputil.InvalidParam("visibility must be public or private")
	}
	creationContent, err := objectOrEmpty(req.CreationContent, "creation_content")
	if err != nil {
		return nil, err
	}
	plOverride, err := objectOrEmpty(req.PowerLevelContentOverride, "power_level_content_override")
	if err != nil {
		return nil, err
	}
	alias := ""
	if req.RoomAliasName != "" {
		if strings.ContainsAny(req.RoomAliasName, ":# \t\n") {
			return nil, httputil.InvalidParam("room_alias_name must be a bare localpart")
		}
		alias = "#" + req.RoomAliasName + ":" + s.serverName
		if len(alias) > 255 {
			return nil, httputil.InvalidParam("room alias is longer than 255 bytes")
		}
	}
	initial := map[gomatrixserverlib.StateKeyTuple]json.RawMessage{}
	var initialOrder []gomatrixserverlib.StateKeyTuple
	for _, ev := range req.InitialState {
		if ev.Type == "" {
			return nil, httputil.BadJSON("initial_state entries need a type")
		}
		if ev.Type == spec.MRoomCreate || ev.Type == spec.MRoomMember {
			return nil, errInvalidRoomState(ev.Type + " cannot be part of initial_state")
		}
		c, err := objectOrEmpty(ev.Content, "initial_state content")
		if err != nil {
			return nil, err
		}
		k := gomatrixserverlib.StateKeyTuple{EventType: ev.Type, StateKey: ev.StateKey}
		if _, dup := initial[k]; !dup {
			initialOrder = append(initialOrder, k)
		}
		initial[k] = mustJSON(c)
	}
	invitees, inviteeProfiles, remoteInvitees, err := s.checkInvitees(ctx, req.Creator, req.Invite)
	if err != nil {
		return nil, err
	}
	allInvitees := append(append([]string{}, invitees...), remoteInvitees...)
	creatorName, creatorAvatar, err := s.profile(ctx, req.Creator)
	if err != nil {
		return nil, fmt.Errorf("profile of %s: %w", req.Creator, err)
	}
	v12 := impl.PrivilegedCreators()
	trusted := preset == PresetTrustedPrivateChat

	// m.room.create
	creationContent["room_version"] = version
	if impl.CreatorInCreateEvent() {
		creationContent["creator"] = req.Creator
	} else {
		delete(creationContent, "creator")
	}
	if v12 && trusted && len(allInvitees) > 0 {
		creationContent["additional_creators"] = allInvitees
	}

	// m.room.power_levels
	pl := map[string]any{
		"users_default":  0,
		"events_default": 0,
		"state_default":  50,
		"ban":            50,
		"kick":           50,
		"redact":         50,
		"invite":         50,
		"notifications":  map[string]any{"room": 50},
		"events": map[string]any{
			"m.room.name":               50,
			"m.room.power_levels":       100,
			"m.room.history_visibility": 100,
			"m.room.canonical_alias":    50,
			"m.room.avatar":             50,
			"m.room.tombstone":          100,
			"m.room.server_acl":         100,
			"m.room.encryption":         100,
		},
	}
	users := map[string]any{}
	if !v12 {
		// v12 creators outrank everyone by rule and must not be listed.
		users[req.Creator] = 100
		if trusted {
			for _, u := range allInvitees {
				users[u] = 100
			}
		}
	}
	pl["users"] = users
	if preset != PresetPublicChat {
		pl["invite"] = 0
	}
	plKey := gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomPowerLevels}
	if c, ok := initial[plKey]; ok {
		pl = map[string]any{}
		_ = json.Unmarshal(c, &pl)
		delete(initial, plKey)
	}
	maps.Copy(pl, plOverride)

	type stateProto struct {
		t, sk   string
		content any
	}
	var events []stateProto
	events = append(events, stateProto{spec.MRoomPowerLevels, "", pl})
	if alias != "" {
		events = append(events, stateProto{spec.MRoomCanonicalAlias, "", map[string]any{"alias": alias}})
	}
	presetState := []stateProto{}
	if preset == PresetPublicChat {
		presetState = append(presetState, stateProto{spec.MRoomJoinRules, "", map[string]any{"join_rule": "public"}})
	} else {
		presetState = append(presetState, stateProto{spec.MRoomJoinRules, "", map[string]any{"join_rule": "invite"}})
	}
	presetState = append(presetState, stateProto{spec.MRoomHistoryVisibility, "", map[string]any{"history_visibility": "shared"}})
	if preset != PresetPublicChat {
		presetState = append(presetState, stateProto{"m.room.guest_access", "", map[string]any{"guest_access": "can_join"}})
	}
	for _, p := range presetState {
		if _, overridden := initial[gomatrixserverlib.StateKeyTuple{EventType: p.t, StateKey: p.sk}]; !overridden {
			events = append(events, p)
		}
	}
	for _, k := range initialOrder {
		if c, ok := initial[k]; ok {
			events = append(events, stateProto{k.EventType, k.StateKey, c})
		}
	}
	encKey := gomatrixserverlib.StateKeyTuple{EventType: "m.room.encryption"}
	if _, ok := initial[encKey]; !ok && s.cfg.Rooms.EncryptByDefault && preset != PresetPublicChat {
		events = append(events, stateProto{"m.room.encryption", "", map[string]any{"algorithm": megolm}})
	}
	if req.Name != nil && *req.Name != "" {
		events = append(events, stateProto{spec.MRoomName, "", map[string]any{"name": *req.Name}})
	}
	if req.Topic != nil && *req.Topic != "" {
		events = append(events, stateProto{spec.MRoomTopic, "", map[string]any{
			"topic":   *req.Topic,
			"m.topic": map[string]any{"m.text": []map[string]string{{"body": *req.Topic}}},
		}})
	}

	room := &roomInfo{version: impl}
	if !impl.DomainlessRoomIDs() {
		room.id = "!" + randomID(18) + ":" + s.serverName
	}
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		w := s.newRoomWriter(tx, room)
		create, err := w.build(ctx, proto{sender: req.Creator, evType: spec.MRoomCreate, stateKey: ptr(""), content: mustJSON(creationContent)})
		if err != nil {
			return err
		}
		if impl.DomainlessRoomIDs() {
			room.id = "!" + strings.TrimPrefix(create.EventID(), "$")
		}
		if err := tx.QueryRow(ctx, `INSERT INTO rooms (room_id, room_version, creator, published, created_ts) VALUES ($1, $2, $3, $4, $5) RETURNING room_nid`,
			room.id, version, req.Creator, req.Visibility == "public", s.now().UnixMilli()).Scan(&room.nid); err != nil {
			return fmt.Errorf("insert room: %w", err)
		}
		if alias != "" {
			_, err := tx.Exec(ctx, `INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)`, alias, room.id, req.Creator)
			if storage.IsUniqueViolation(err) {
				return httputil.Errorf(http.StatusBadRequest, "M_ROOM_IN_USE", "room alias %s is already taken", alias)
			}
			if err != nil {
				return fmt.Errorf("insert alias: %w", err)
			}
		}
		if _, err := w.persist(ctx, create, "", ""); err != nil {
			return err
		}
		join := map[string]any{"membership": spec.Join}
		setProfile(join, creatorName, creatorAvatar)
		if _, err := w.add(ctx, proto{sender: req.Creator, evType: spec.MRoomMember, stateKey: ptr(req.Creator), content: mustJSON(join)}, "", ""); err != nil {
			return err
		}
		for _, e := range events {
			if _, err := w.add(ctx, proto{sender: req.Creator, evType: e.t, stateKey: ptr(e.sk), content: mustJSON(e.content)}, "", ""); err != nil {
				if he := (*httputil.Error)(nil); errors.As(err, &he) && he.Status == http.StatusForbidden {
					// a rejected initial event is bad input, not a permission problem
					return errInvalidRoomState(fmt.Sprintf("%s event is not allowed: %s", e.t, he.Message))
				}
				return err
			}
		}
		for i, u := range invitees {
			content := map[string]any{"membership": spec.Invite}
			if req.IsDirect {
				content["is_direct"] = true
			}
			setProfile(content, inviteeProfiles[i][0], inviteeProfiles[i][1])
			unsigned, err := w.strippedStateUnsigned(ctx, "invite_room_state", req.Creator)
			if err != nil {
				return err
			}
			if _, err := w.add(ctx, proto{sender: req.Creator, evType: spec.MRoomMember, stateKey: ptr(u), content: mustJSON(content), unsigned: unsigned}, "", ""); err != nil {
				return err
			}
		}
		_, err = w.finish(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.rooms.Store(room.id, room)
	slog.InfoContext(ctx, "room created", "room_id", room.id, "version", version, "preset", preset)
	// Remote invitees' servers co-sign their invites, which needs the room
	// to exist. As other servers do, a failed remote invite does not undo
	// the room: it is logged and the creator can invite again.
	for _, u := range remoteInvitees {
		if _, err := s.inviteRemote(ctx, MembershipRequest{RoomID: room.id, Sender: req.Creator, Target: u, IsDirect: req.IsDirect}); err != nil {
			slog.WarnContext(ctx, "remote invite of createRoom failed", "room_id", room.id, "user_id", u, "err", err)
		}
	}
	return &CreateRoomResult{RoomID: room.id, Alias: alias}, nil
}

// checkInvitees validates createRoom's invite list: local invitees must
// exist (their profiles come back for the invite content), remote ones
// must be on a federation partner.
func (s *Service) checkInvitees(ctx context.Context, creator string, ids []string) (local []string, profiles [][2]string, remote []string, err error) {
	seen := map[string]bool{}
	for _, u := range ids {
		if _, err := spec.NewUserID(u, true); err != nil {
			return nil, nil, nil, httputil.InvalidParam("invalid user ID in invite: " + u)
		}
		if u == creator || seen[u] {
			continue
		}
		seen[u] = true
		if !s.isLocal(u) {
			if s.fed == nil {
				return nil, nil, nil, s.federationOff()
			}
			if srv := serverOfID(u); !s.fed.allowed(srv) {
				return nil, nil, nil, httputil.Forbidden(srv + " is not a federation partner of this server")
			}
			remote = append(remote, u)
			continue
		}
		dn, av, err := s.profile(ctx, u)
		if err == ErrUnknownUser {
			return nil, nil, nil, httputil.NotFound("unknown user " + u)
		}
		if err != nil {
			return nil, nil, nil, fmt.Errorf("profile of %s: %w", u, err)
		}
		local = append(local, u)
		profiles = append(profiles, [2]string{dn, av})
	}
	return local, profiles, remote, nil
}

// isLocal reports whether a user ID belongs to this server.
func (s *Service) isLocal(userID string) bool {
	return strings.HasSuffix(userID, ":"+s.serverName)
}

// strippedStateKeys is what an invitee or knocker sees of a room before
// joining it.
var strippedStateKeys = []gomatrixserverlib.StateKeyTuple{
	{EventType: spec.MRoomCreate}, {EventType: spec.MRoomJoinRules}, {EventType: spec.MRoomName},
	{EventType: "m.room.avatar"}, {EventType: spec.MRoomCanonicalAlias}, {EventType: "m.room.encryption"},
	{EventType: spec.MRoomTopic},
}

// strippedStateUnsigned renders {key: [stripped state]} for the unsigned
// part of an invite or knock: the room's summary state plus the member
// event of sender.
func (w *writer) strippedStateUnsigned(ctx context.Context, key, sender string) (json.RawMessage, error) {
	keys := append([]gomatrixserverlib.StateKeyTuple{}, strippedStateKeys...)
	keys = append(keys, gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomMember, StateKey: sender})
	if err := w.load(ctx, keys); err != nil {
		return nil, err
	}
	type stripped struct {
		Type     string          `json:"type"`
		StateKey string          `json:"state_key"`
		Content  json.RawMessage `json:"content"`
		Sender   string          `json:"sender"`
	}
	list := []stripped{}
	for _, k := range keys {
		if e := w.state[k].pdu; e != nil {
			list = append(list, stripped{Type: e.Type(), StateKey: *e.StateKey(), Content: e.Content(), Sender: string(e.SenderID())})
		}
	}
	return mustJSON(map[string]any{key: list}), nil
}

func setProfile(content map[string]any, displayName, avatarURL string) {
	if displayName != "" {
		content["displayname"] = displayName
	}
	if avatarURL != "" {
		content["avatar_url"] = avatarURL
	}
}

// objectOrEmpty decodes an optional JSON object.
func objectOrEmpty(raw json.RawMessage, what string) (map[string]any, error) {
	m := map[string]any{}
	t := strings.TrimSpace(string(raw))
	if t == "" || t == "null" {
		return m, nil
	}
	if t[0] != '{' {
		return nil, httputil.BadJSON(what + " must be a JSON object")
	}
	d := json.NewDecoder(strings.NewReader(t))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		return nil, httputil.BadJSON(what + " must be a JSON object")
	}
	return m, nil
}

func ptr[T any](v T) *T { return &v }

const idAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

// randomID returns n random letters for opaque IDs.
func randomID(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand: " + err.Error())
	}
	for i := range b {
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
	}
	return string(b)
}
