package homeserver_test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// TestAvatarsAreKeptByRetention checks the keep hook's two sources:
// profile avatars and current room avatars.
func TestAvatarsAreKeptByRetention(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		profile := id.ContentURI{Homeserver: "hs1.test", FileID: "profilepic"}
		roomPic := id.ContentURI{Homeserver: "hs1.test", FileID: "roompic"}
		if err := alice.SetAvatarURL(ctx, profile); err != nil {
			t.Fatal(err)
		}
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendStateEvent(ctx, room.RoomID, event.StateRoomAvatar, "", map[string]string{"url": roomPic.String()}); err != nil {
			t.Fatal(err)
		}
		letter := "mxc://hs1.test/letter"
		asked := []string{profile.String(), roomPic.String(), letter}
		users, err := srv.Users.AvatarsInUse(ctx, asked)
		if err != nil {
			t.Fatal(err)
		}
		rooms, err := srv.Rooms.RoomAvatarsInUse(ctx, asked)
		if err != nil {
			t.Fatal(err)
		}
		if !users[profile.String()] || users[letter] || users[roomPic.String()] {
			t.Fatalf("profile avatars in use = %v", users)
		}
		if !rooms[roomPic.String()] || rooms[letter] {
			t.Fatalf("room avatars in use = %v", rooms)
		}
	})
}
