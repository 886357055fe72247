package clientapi_test

import (
	"context"
	"strings"
	"testing"

	"maunium.net/go/mautrix"

	"praxis/internal/hstest"
)

// TestReadsAcceptDomainlessRoomIDs: room version 12 IDs have no server
// part; every read endpoint must take them.
func TestReadsAcceptDomainlessRoomIDs(t *testing.T) {
	srv := hstest.New(t)
	ctx := context.Background()
	alice := srv.Register(t, "alice")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "12"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(room.RoomID), ":") {
		t.Fatalf("v12 room ID %s has a server part", room.RoomID)
	}
	if _, err := alice.State(ctx, room.RoomID); err != nil {
		t.Errorf("GET /state: %v", err)
	}
	if _, err := alice.JoinedMembers(ctx, room.RoomID); err != nil {
		t.Errorf("GET /joined_members: %v", err)
	}
	if _, err := alice.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 10); err != nil {
		t.Errorf("GET /messages: %v", err)
	}
	if _, err := alice.Members(ctx, room.RoomID); err != nil {
		t.Errorf("GET /members: %v", err)
	}
}
