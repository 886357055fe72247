package care

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"praxis/internal/httputil"
	"praxis/roomserver"
)

// A coupling code's lobby. Stock clients open a matrix.to link to
// #couple-<code>:<server> in one of two ways: they join the alias
// (POST /join/#couple-…), or they first resolve it
// (GET /directory/room/#couple-…) and join the room ID they got. The
// coupling room cannot exist before the join: it is made for the patient
// who joins, and an unauthenticated lookup must not create rooms. So the
// alias resolves to the code's lobby, a room ID that names no room; a
// join to it redeems the code exactly like a join to the alias and
// answers with the fresh coupling room's ID.
//
// The lobby is derived from the code (so every lookup of one code gives
// the same ID, and knowing the lobby is worth exactly as much as knowing
// the code) and stored only as a hash, like the code itself.

// LobbyPrefix starts the localpart of a lobby room ID.
const LobbyPrefix = "couple-"

// lobbyLocalpart derives a code's lobby: 128 bits, domain-separated from
// the code's stored hash.
func lobbyLocalpart(code string) string {
	sum := sha256.Sum256([]byte("praxis coupling lobby\x00" + strings.ToLower(code)))
	return LobbyPrefix + hex.EncodeToString(sum[:16])
}

// LobbyRoomID is the room ID a code's alias resolves to.
func (s *Service) LobbyRoomID(code string) string {
	return "!" + lobbyLocalpart(code) + ":" + s.serverName
}

// ResolveAlias answers a directory lookup of a coupling alias
// (GET /_matrix/client/v3/directory/room/#couple-<code>:<server>) with the
// code's lobby. ok is false for any other alias. An unknown, withdrawn,
// expired or used code is 404 M_NOT_FOUND, with a message saying which:
// the spec's answer for an alias that leads nowhere. Nothing is created.
// For the patient who redeemed the code (userID, "" when the lookup is
// anonymous) the alias leads to their coupling room, so opening the link
// again shows their room.
func (s *Service) ResolveAlias(ctx context.Context, userID, alias string) (roomID string, ok bool, err error) {
	code, ok := s.aliasCode(alias)
	if !ok {
		return "", false, nil
	}
	if userID != "" {
		if roomID, err := s.redeemedBy(ctx, hashCode(code), userID); err != nil || roomID != "" {
			return roomID, true, err
		}
	}
	roomID, _, ok, err = s.resolveAlias(ctx, alias)
	return roomID, ok, err
}

func (s *Service) resolveAlias(ctx context.Context, alias string) (string, *codeRow, bool, error) {
	code, ok := s.aliasCode(alias)
	if !ok {
		return "", nil, false, nil
	}
	codeHash := hashCode(code)
	c, err := s.lookupUsable(ctx, codeHash)
	if err != nil {
		return "", nil, true, err
	}
	local := lobbyLocalpart(code)
	// codes made before lobbies existed learn theirs on first lookup
	if _, err := s.db.Exec(ctx, `UPDATE care_codes SET lobby_hash = $1 WHERE code_hash = $2 AND lobby_hash IS NULL`, hashCode(local), codeHash); err != nil {
		return "", nil, true, fmt.Errorf("store lobby of a coupling code: %w", err)
	}
	return "!" + local + ":" + s.serverName, c, true, nil
}

// lookupUsable is usableCode for the read paths: a code that can no
// longer be used leads nowhere, 404 with the reason.
func (s *Service) lookupUsable(ctx context.Context, codeHash string) (*codeRow, error) {
	c, err := s.usableCode(ctx, s.db, codeHash)
	var he *httputil.Error
	if errors.As(err, &he) && he.Status == http.StatusForbidden {
		return nil, httputil.NotFound(he.Message)
	}
	return c, err
}

// LobbySummary previews a coupling alias or lobby before the join
// (GET /_matrix/client/v1/room_summary/{roomIdOrAlias}), so that clients
// which show a preview first offer to join: the practice's name and logo,
// encrypted, join rule "public" (whoever holds the code may join). ok is
// false for any other address; an unusable code is 404 as in the lookup.
func (s *Service) LobbySummary(ctx context.Context, address string) (*roomserver.RoomPreview, bool, error) {
	var lobby string
	var c *codeRow
	var err error
	if strings.HasPrefix(address, "#") {
		var ok bool
		if lobby, c, ok, err = s.resolveAlias(ctx, address); !ok || err != nil {
			return nil, ok, err
		}
	} else {
		codeHash, err := s.lobbyCode(ctx, address)
		if err != nil || codeHash == "" {
			return nil, false, err
		}
		if c, err = s.lookupUsable(ctx, codeHash); err != nil {
			return nil, true, err
		}
		lobby = address
	}
	p, err := s.Practice(ctx, c.practiceID)
	if err != nil {
		return nil, true, err
	}
	return &roomserver.RoomPreview{
		PublicRoom: roomserver.PublicRoom{RoomID: lobby, Name: p.Name, AvatarURL: p.LogoURL, JoinRule: "public"},
		Encryption: "m.megolm.v1.aes-sha2",
	}, true, nil
}

// lobbyCode returns the hash of the code whose lobby roomID is; "" when
// roomID is no lobby of this server.
func (s *Service) lobbyCode(ctx context.Context, roomID string) (string, error) {
	local, server, ok := strings.Cut(strings.TrimPrefix(roomID, "!"), ":")
	if !strings.HasPrefix(roomID, "!") || !ok || server != s.serverName || !strings.HasPrefix(local, LobbyPrefix) {
		return "", nil
	}
	var codeHash string
	err := s.db.QueryRow(ctx, `SELECT code_hash FROM care_codes WHERE lobby_hash = $1`, hashCode(local)).Scan(&codeHash)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up coupling lobby: %w", err)
	}
	return codeHash, nil
}
