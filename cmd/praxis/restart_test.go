package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/config"
)

// TestGracefulRestartKeepsEverything stops the server with SIGTERM and
// starts it again on the same data directory: sessions, rooms, history,
// profiles, account data, filters, media and the sync position must all be
// as they were, so a client that was open across the restart just carries
// on.
func TestGracefulRestartKeepsEverything(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	eachEngine(t, gracefulRestartKeepsEverything)
}

func gracefulRestartKeepsEverything(t *testing.T, dsn string) {
	dir := t.TempDir()
	addr := freeAddr(t)
	args := fmt.Sprintf("--data-dir %s --listen-client %s --server-name hs1", dir, addr)
	env := []string{"PRAXIS_DATABASE=" + dsn, "PRAXIS_REGISTRATION_OPEN=true", "PRAXIS_RATELIMIT_ENABLED=false", "PRAXIS_LOG_LEVEL=warn", "PRAXIS_CARE_POLICY=off"}
	p := startPraxis(t, args, env...)
	p.waitReady(t, addr)
	ctx := context.Background()

	register := func(name string) *mautrix.Client {
		c, err := mautrix.NewClient(p.url, "", "")
		if err != nil {
			t.Fatal(err)
		}
		reg, err := c.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: name, Password: name + "-password-1"})
		if err != nil {
			t.Fatalf("register %s: %v", name, err)
		}
		c.SetCredentials(reg.UserID, reg.AccessToken)
		c.DeviceID = reg.DeviceID
		return c
	}
	alice, bob := register("alice"), register("bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Befund", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatalf("createRoom: %v", err)
	}
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatalf("join: %v", err)
	}
	sent, err := alice.SendText(ctx, room.RoomID, "before the restart")
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if err := alice.SetDisplayName(ctx, "Dr. Alice"); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetAccountData(ctx, "org.example.settings", map[string]any{"theme": "dark"}); err != nil {
		t.Fatal(err)
	}
	filter, err := bob.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 7}}})
	if err != nil {
		t.Fatal(err)
	}
	file := bytes.Repeat([]byte("encrypted attachment "), 500)
	up, err := alice.UploadBytes(ctx, file, "application/octet-stream")
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	before, err := bob.SyncRequest(ctx, 0, "", filter.FilterID, false, "")
	if err != nil {
		t.Fatalf("sync: %v", err)
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v; stderr:\n%s", err, p.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("praxis did not stop after SIGTERM")
	}

	p2 := startPraxis(t, args, env...)
	p2.waitReady(t, addr)

	// The access tokens of before still work: nobody is logged out.
	for _, c := range []*mautrix.Client{alice, bob} {
		who, err := c.Whoami(ctx)
		if err != nil || who.UserID != c.UserID || who.DeviceID != c.DeviceID {
			t.Fatalf("whoami %s after restart: %+v, %v", c.UserID, who, err)
		}
	}
	rooms, err := bob.JoinedRooms(ctx)
	if err != nil || len(rooms.JoinedRooms) != 1 || rooms.JoinedRooms[0] != room.RoomID {
		t.Fatalf("joined rooms after restart: %+v, %v", rooms, err)
	}
	ev, err := bob.GetEvent(ctx, room.RoomID, sent.EventID)
	if err != nil || ev.Content.Raw["body"] != "before the restart" {
		t.Fatalf("message after restart: %+v, %v", ev, err)
	}
	if name, err := bob.GetDisplayName(ctx, alice.UserID); err != nil || name.DisplayName != "Dr. Alice" {
		t.Fatalf("display name after restart: %+v, %v", name, err)
	}
	var settings map[string]any
	if err := alice.GetAccountData(ctx, "org.example.settings", &settings); err != nil || settings["theme"] != "dark" {
		t.Fatalf("account data after restart: %v, %v", settings, err)
	}
	got, err := bob.DownloadBytes(ctx, up.ContentURI)
	if err != nil || !bytes.Equal(got, file) {
		t.Fatalf("media after restart: %d bytes, %v", len(got), err)
	}

	// The sync token from before the restart is still valid and the stream
	// goes on from it: what was sent after it arrives, nothing is replayed.
	after, err := alice.SendText(ctx, room.RoomID, "after the restart")
	if err != nil {
		t.Fatalf("send after restart: %v", err)
	}
	next, err := bob.SyncRequest(ctx, 5000, before.NextBatch, filter.FilterID, false, "")
	if err != nil {
		t.Fatalf("incremental sync across the restart: %v", err)
	}
	joined := next.Rooms.Join[room.RoomID]
	if joined == nil {
		t.Fatalf("the sync across the restart has no section for the room")
	}
	var ids []id.EventID
	for _, e := range joined.Timeline.Events {
		if e.Type == event.EventMessage {
			ids = append(ids, e.ID)
		}
	}
	if len(ids) != 1 || ids[0] != after.EventID {
		t.Fatalf("messages in the sync across the restart: %v, want only %s", ids, after.EventID)
	}
}

// TestFirstStartWithDataDirFlagWritesIt: `praxis --config F --data-dir D`
// on a fresh node writes D into F, so the next start with only --config
// finds the same database instead of a new empty one.
func TestFirstStartWithDataDirFlagWritesIt(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	cfgPath := filepath.Join(t.TempDir(), "etc", "praxis.yaml")
	dataDir := filepath.Join(t.TempDir(), "var")
	addr := freeAddr(t)
	env := []string{"PRAXIS_REGISTRATION_OPEN=true", "PRAXIS_RATELIMIT_ENABLED=false", "PRAXIS_LOG_LEVEL=warn", "PRAXIS_LISTEN_CLIENT=" + addr}
	p := startPraxis(t, "--config "+cfgPath+" --data-dir "+dataDir, env...)
	p.waitReady(t, addr)
	c, err := mautrix.NewClient(p.url, "", "")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := c.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{Username: "alice", Password: "alice-password-1"})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()

	cfg, err := config.Load(config.Flags{ConfigFile: cfgPath}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != dataDir {
		t.Fatalf("written config has data_dir %q, want the flag's %q", cfg.DataDir, dataDir)
	}
	p2 := startPraxis(t, "--config "+cfgPath, env...)
	p2.waitReady(t, addr)
	c.SetCredentials(reg.UserID, reg.AccessToken)
	if _, err := c.Whoami(context.Background()); err != nil {
		t.Fatalf("the second start without --data-dir lost the account: %v", err)
	}
}
