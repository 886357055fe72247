package keyserver_test

// Acceptance tests of issue 3 with real Olm/Megolm: mautrix-go crypto
// clients (pure-Go goolm, build tag goolm) talking to the in-process
// server, through /sync, /keys/*, /sendToDevice and /room_keys.

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// e2eeClient is a logged-in device with its own Olm account, syncing in
// the background and recording the messages it could decrypt.
type e2eeClient struct {
	*mautrix.Client
	helper *cryptohelper.CryptoHelper
	store  *crypto.MemoryStore

	mu        sync.Mutex
	decrypted map[id.EventID]string // event ID → body
	failed    map[id.EventID]error

	// machMu serialises the test's own crypto calls with sync processing:
	// mautrix's OlmMachine caches cross-signing keys without a lock, so a
	// send racing a device-list update trips the race detector (a client
	// library issue, not a server one).
	machMu sync.Mutex
}

// lockedSyncer processes sync responses under the client's machMu.
type lockedSyncer struct {
	*mautrix.DefaultSyncer
	mu *sync.Mutex
}

func (l *lockedSyncer) ProcessResponse(ctx context.Context, resp *mautrix.RespSync, since string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.DefaultSyncer.ProcessResponse(ctx, resp, since)
}

// locked runs fn while no sync response is being processed.
func (e *e2eeClient) locked(fn func()) {
	e.machMu.Lock()
	defer e.machMu.Unlock()
	fn()
}

func newE2EEClient(t *testing.T, c *mautrix.Client) *e2eeClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e := &e2eeClient{Client: c, store: crypto.NewMemoryStore(nil), decrypted: map[id.EventID]string{}, failed: map[id.EventID]error{}}
	c.StateStore = mautrix.NewMemoryStateStore()
	syncer := c.Syncer.(*mautrix.DefaultSyncer)
	c.Syncer = &lockedSyncer{DefaultSyncer: syncer, mu: &e.machMu}
	h, err := cryptohelper.NewCryptoHelper(c, []byte("praxis test pickle key"), e.store)
	if err != nil {
		t.Fatalf("crypto helper: %v", err)
	}
	h.DecryptErrorCallback = func(evt *event.Event, err error) {
		e.mu.Lock()
		e.failed[evt.ID] = err
		e.mu.Unlock()
	}
	syncer.OnEvent(c.StateStoreSyncHandler)
	if err := h.Init(ctx); err != nil {
		t.Fatalf("crypto init for %s: %v", c.DeviceID, err)
	}
	c.Crypto = h
	e.helper = h
	syncer.OnEventType(event.EventMessage, func(ctx context.Context, evt *event.Event) {
		if evt.Mautrix.EventSource&event.SourceDecrypted == 0 {
			return
		}
		e.mu.Lock()
		e.decrypted[evt.ID] = evt.Content.AsMessage().Body
		e.mu.Unlock()
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if err := c.SyncWithContext(ctx); err != nil && ctx.Err() == nil {
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return e
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (e *e2eeClient) body(evt id.EventID) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	b, ok := e.decrypted[evt]
	return b, ok
}

// knowsRoom waits until the client's state store has the room as
// encrypted with every given user joined, so encryption targets them all.
func (e *e2eeClient) waitRoom(t *testing.T, room id.RoomID, members ...*e2eeClient) {
	t.Helper()
	ctx := context.Background()
	waitFor(t, string(e.UserID)+" to see the encrypted room", func() bool {
		enc, _ := e.StateStore.IsEncrypted(ctx, room)
		if !enc {
			return false
		}
		for _, m := range members {
			if !e.StateStore.IsInRoom(ctx, room, m.UserID) {
				return false
			}
		}
		return true
	})
}

func (e *e2eeClient) send(t *testing.T, room id.RoomID, body string) id.EventID {
	t.Helper()
	var resp *mautrix.RespSendEvent
	var err error
	e.locked(func() {
		resp, err = e.SendMessageEvent(context.Background(), room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
	})
	if err != nil {
		t.Fatalf("%s sends: %v", e.DeviceID, err)
	}
	return resp.EventID
}

func (e *e2eeClient) waitDecrypt(t *testing.T, evt id.EventID, want string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s/%s to decrypt %q", e.UserID, e.DeviceID, want), func() bool {
		b, ok := e.body(evt)
		return ok && b == want
	})
}

// pairingRoom has the practice create a private_chat room (encrypted by
// default) with the patient, who joins.
func pairingRoom(t *testing.T, practice, patient *e2eeClient) id.RoomID {
	t.Helper()
	ctx := context.Background()
	resp, err := practice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{patient.UserID}})
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	if _, err := patient.JoinRoomByID(ctx, resp.RoomID); err != nil {
		t.Fatalf("join: %v", err)
	}
	practice.waitRoom(t, resp.RoomID, practice, patient)
	patient.waitRoom(t, resp.RoomID, practice, patient)
	return resp.RoomID
}

// Flow 1: both send, both decrypt; the database holds only ciphertext.
func TestE2EEPracticeAndPatientDecrypt(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		practice := newE2EEClient(t, srv.Register(t, "praxis"))
		patient := newE2EEClient(t, srv.Register(t, "patient"))
		room := pairingRoom(t, practice, patient)

		e1 := practice.send(t, room, "Ihr Befund ist da")
		patient.waitDecrypt(t, e1, "Ihr Befund ist da")
		e2 := patient.send(t, room, "Danke, ich komme morgen")
		practice.waitDecrypt(t, e2, "Danke, ich komme morgen")

		ctx := context.Background()
		rows, err := srv.DB.Query(ctx, `SELECT e.type, e.json FROM events e JOIN rooms r ON r.room_nid = e.room_nid WHERE r.room_id = $1`, room.String())
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		encrypted := 0
		for rows.Next() {
			var typ, js string
			if err := rows.Scan(&typ, &js); err != nil {
				t.Fatal(err)
			}
			if typ == "m.room.message" || strings.Contains(js, "Befund") || strings.Contains(js, "morgen") {
				t.Fatalf("plaintext in the database: %s event %s", typ, js)
			}
			if typ == "m.room.encrypted" {
				encrypted++
			}
		}
		if encrypted != 2 {
			t.Fatalf("%d m.room.encrypted events stored, want 2", encrypted)
		}
	})
}

// Flow 2: a second practice device appears in the patient's device list
// and decrypts messages sent after it logged in.
func TestE2EENewDeviceReceivesKeys(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		practice := newE2EEClient(t, srv.Register(t, "praxis"))
		patient := newE2EEClient(t, srv.Register(t, "patient"))
		room := pairingRoom(t, practice, patient)
		first := patient.send(t, room, "vorher")
		practice.waitDecrypt(t, first, "vorher")

		practice2 := newE2EEClient(t, srv.Login(t, "praxis"))
		practice2.waitRoom(t, room, practice, patient)
		// The patient's client learns of the new device through
		// device_lists.changed and fetches its keys.
		ctx := context.Background()
		waitFor(t, "the patient to know the second practice device", func() bool {
			dev, _ := patient.store.GetDevice(ctx, practice.UserID, practice2.DeviceID)
			return dev != nil
		})
		after := patient.send(t, room, "nachher")
		practice.waitDecrypt(t, after, "nachher")
		practice2.waitDecrypt(t, after, "nachher")
		if _, ok := practice2.body(first); ok {
			t.Fatal("the new device decrypted a message sent before it existed without a backup")
		}
	})
}

// backupRoomKeys uploads every inbound Megolm session the client holds for
// room into the current backup version, encrypted to the backup key.
func backupRoomKeys(t *testing.T, e *e2eeClient, version id.KeyBackupVersion, key *backup.MegolmBackupKey, room id.RoomID) int {
	t.Helper()
	ctx := context.Background()
	sessions, err := e.store.GetGroupSessionsForRoom(ctx, room).AsList()
	if err != nil {
		t.Fatal(err)
	}
	req := &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{room: {Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{}}}}
	for _, s := range sessions {
		exported, err := s.Internal.Export(s.Internal.FirstKnownIndex())
		if err != nil {
			t.Fatal(err)
		}
		data, err := backup.EncryptSessionData(key, backup.MegolmSessionData{
			Algorithm: id.AlgorithmMegolmV1, ForwardingKeyChain: []string{}, SenderKey: s.SenderKey,
			SenderClaimedKeys: backup.SenderClaimedKeys{Ed25519: s.SigningKey}, SessionKey: string(exported),
		})
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := jsonMarshal(data)
		req.Rooms[room].Sessions[s.ID()] = mautrix.ReqKeyBackupData{FirstMessageIndex: int(s.Internal.FirstKnownIndex()), SessionData: raw}
	}
	resp, err := e.PutKeysInBackup(ctx, version, req)
	if err != nil {
		t.Fatalf("put keys in backup: %v", err)
	}
	return resp.Count
}

func newBackup(t *testing.T, e *e2eeClient) (id.KeyBackupVersion, *backup.MegolmBackupKey) {
	t.Helper()
	key, err := backup.NewMegolmBackupKey()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.CreateKeyBackupVersion(context.Background(), &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
		Algorithm: id.KeyBackupAlgorithmMegolmBackupV1,
		AuthData:  backup.MegolmAuthData{PublicKey: id.Ed25519(base64.RawStdEncoding.EncodeToString(key.PublicKey().Bytes()))},
	})
	if err != nil {
		t.Fatalf("create backup version: %v", err)
	}
	return resp.Version, key
}

// decryptHistory fetches the room's timeline and tries to decrypt every
// encrypted event with the client's keys.
func decryptHistory(t *testing.T, e *e2eeClient, room id.RoomID) (ok map[id.EventID]string, failed map[id.EventID]error) {
	t.Helper()
	ctx := context.Background()
	resp, err := e.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatalf("messages: %v", err)
	}
	ok, failed = map[id.EventID]string{}, map[id.EventID]error{}
	for _, evt := range resp.Chunk {
		if evt.Type != event.EventEncrypted {
			continue
		}
		if err := evt.Content.ParseRaw(evt.Type); err != nil && !errors.Is(err, event.ErrContentAlreadyParsed) {
			t.Fatal(err)
		}
		evt.RoomID = room
		var dec *event.Event
		e.locked(func() { dec, err = e.helper.Decrypt(ctx, evt) })
		if err != nil {
			failed[evt.ID] = err
			continue
		}
		ok[evt.ID] = dec.Content.AsMessage().Body
	}
	return ok, failed
}

// Flow 3: the patient backs up room keys with a recovery key, logs in on a
// new device, restores the backup and reads messages older than the device.
// Flow 4: after a security key reset (new cross-signing keys, new backup
// version) new messages work both ways, and a new device restoring the new
// backup cannot read messages from before the reset.
func TestE2EEKeyBackupAndReset(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		practice := newE2EEClient(t, srv.Register(t, "praxis"))
		patient := newE2EEClient(t, srv.Register(t, "patient"))
		room := pairingRoom(t, practice, patient)
		old1 := practice.send(t, room, "alte Nachricht 1")
		patient.waitDecrypt(t, old1, "alte Nachricht 1")
		old2 := patient.send(t, room, "alte Nachricht 2")
		practice.waitDecrypt(t, old2, "alte Nachricht 2")

		version, key := newBackup(t, patient)
		if n := backupRoomKeys(t, patient, version, key, room); n != 2 {
			t.Fatalf("backup holds %d sessions, want 2 (one per sender)", n)
		}

		// Flow 3: restore on a new device.
		restored := newE2EEClient(t, srv.Login(t, "patient"))
		restored.waitRoom(t, room, practice, patient)
		if _, failed := decryptHistory(t, restored, room); len(failed) != 2 {
			t.Fatalf("before restoring, %d old messages undecryptable, want 2", len(failed))
		}
		var got id.KeyBackupVersion
		var err error
		restored.locked(func() { got, err = restored.helper.Machine().DownloadAndStoreLatestKeyBackup(ctx, key) })
		if err != nil || got != version {
			t.Fatalf("restore: version %q, %v", got, err)
		}
		ok, failed := decryptHistory(t, restored, room)
		if len(failed) != 0 || ok[old1] != "alte Nachricht 1" || ok[old2] != "alte Nachricht 2" {
			t.Fatalf("after restore: decrypted %v, failed %v", ok, failed)
		}

		// Flow 4: security key reset.
		mach := patient.helper.Machine()
		keys, err := mach.GenerateCrossSigningKeys()
		if err != nil {
			t.Fatal(err)
		}
		patient.locked(func() { err = mach.PublishCrossSigningKeys(ctx, keys, nil) })
		if err != nil {
			t.Fatalf("first cross-signing upload (no UIA): %v", err)
		}
		keys2, _ := mach.GenerateCrossSigningKeys()
		uiaCalled := false
		patient.locked(func() {
			err = mach.PublishCrossSigningKeys(ctx, keys2, func(uia *mautrix.RespUserInteractive) any {
				uiaCalled = true
				return map[string]any{"type": "m.login.password", "session": uia.Session, "password": "password-patient",
					"identifier": map[string]any{"type": "m.id.user", "user": patient.UserID.String()}}
			})
		})
		if err != nil || !uiaCalled {
			t.Fatalf("cross-signing reset: uia called %v, err %v", uiaCalled, err)
		}
		version2, key2 := newBackup(t, patient)
		if version2 == version {
			t.Fatal("the new backup reused the old version")
		}
		// The old backup version no longer accepts keys.
		if _, err := patient.PutKeysInBackup(ctx, version, &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{}}); hstest.ErrCode(err) != "M_WRONG_ROOM_KEYS_VERSION" {
			t.Fatalf("upload to the old version: %v, want M_WRONG_ROOM_KEYS_VERSION", err)
		}
		// A new Megolm session after the reset: the patient rotates its
		// outbound session, as clients do when the user resets.
		if err := patient.store.RemoveOutboundGroupSession(ctx, room); err != nil {
			t.Fatal(err)
		}
		new1 := patient.send(t, room, "neue Nachricht 1")
		practice.waitDecrypt(t, new1, "neue Nachricht 1")
		new2 := practice.send(t, room, "neue Nachricht 2")
		patient.waitDecrypt(t, new2, "neue Nachricht 2")
		// Back up only what was received after the reset: the sessions
		// from before belong to the old, abandoned backup.
		newSessions := map[id.SessionID]bool{}
		for _, evt := range []id.EventID{new1, new2} {
			e, err := patient.GetEvent(ctx, room, evt)
			if err != nil {
				t.Fatal(err)
			}
			_ = e.Content.ParseRaw(e.Type)
			newSessions[e.Content.AsEncrypted().SessionID] = true
		}
		sessions, _ := patient.store.GetGroupSessionsForRoom(ctx, room).AsList()
		for _, s := range sessions {
			if !newSessions[s.ID()] {
				_ = patient.store.RedactGroupSession(ctx, room, s.ID(), "test: pre-reset session")
			}
		}
		backupRoomKeys(t, patient, version2, key2, room)

		fresh := newE2EEClient(t, srv.Login(t, "patient"))
		fresh.waitRoom(t, room, practice, patient)
		fresh.locked(func() { _, err = fresh.helper.Machine().DownloadAndStoreLatestKeyBackup(ctx, key2) })
		if err != nil {
			t.Fatalf("restore new backup: %v", err)
		}
		ok, failed = decryptHistory(t, fresh, room)
		if ok[new1] != "neue Nachricht 1" || ok[new2] != "neue Nachricht 2" {
			t.Fatalf("after reset: new messages not decrypted: ok %v failed %v", ok, failed)
		}
		for _, old := range []id.EventID{old1, old2} {
			if _, decrypted := ok[old]; decrypted {
				t.Fatalf("a message from before the reset decrypted on a new device: %s", old)
			}
			if _, f := failed[old]; !f {
				t.Fatalf("message %s from before the reset neither decrypted nor failed", old)
			}
		}
	})
}
