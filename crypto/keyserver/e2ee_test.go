package keyserver_test

// Acceptance tests of issue 3 with real Olm/Megolm: mautrix-go crypto
// clients (pure-Go goolm, build tag goolm) talking to the in-process
// server, through /sync, /keys/*, /sendToDevice and /room_keys.

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// pairingRoom has the practice create a private_chat room (encrypted by
// default) with the patient, who joins.
func pairingRoom(t *testing.T, practice, patient *hstest.CryptoClient) id.RoomID {
	t.Helper()
	ctx := context.Background()
	// CreateRoom and JoinRoomByID write the state store that sync
	// processing reads, so they run under the client's lock.
	var resp *mautrix.RespCreateRoom
	if err := practice.Locked(func() (err error) {
		resp, err = practice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{patient.UserID}})
		return err
	}); err != nil {
		t.Fatalf("create room: %v", err)
	}
	if err := patient.Locked(func() error { _, err := patient.JoinRoomByID(ctx, resp.RoomID); return err }); err != nil {
		t.Fatalf("join: %v", err)
	}
	practice.WaitRoom(t, resp.RoomID, practice, patient)
	patient.WaitRoom(t, resp.RoomID, practice, patient)
	return resp.RoomID
}

// Flow 1: both send, both decrypt; the database holds only ciphertext.
func TestE2EEPracticeAndPatientDecrypt(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		practice := hstest.NewCryptoClient(t, srv.Register(t, "praxis"))
		patient := hstest.NewCryptoClient(t, srv.Register(t, "patient"))
		room := pairingRoom(t, practice, patient)

		e1 := practice.Send(t, room, "Ihr Befund ist da")
		patient.WaitDecrypt(t, e1, "Ihr Befund ist da")
		e2 := patient.Send(t, room, "Danke, ich komme morgen")
		practice.WaitDecrypt(t, e2, "Danke, ich komme morgen")

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
		practice := hstest.NewCryptoClient(t, srv.Register(t, "praxis"))
		patient := hstest.NewCryptoClient(t, srv.Register(t, "patient"))
		room := pairingRoom(t, practice, patient)
		first := patient.Send(t, room, "vorher")
		practice.WaitDecrypt(t, first, "vorher")

		practice2 := hstest.NewCryptoClient(t, srv.Login(t, "praxis"))
		practice2.WaitRoom(t, room, practice, patient)
		// The patient's client learns of the new device through
		// device_lists.changed and fetches its keys.
		ctx := context.Background()
		hstest.WaitFor(t, hstest.DefaultWaitTimeout, "the patient to know the second practice device", func() bool {
			dev, _ := patient.Store.GetDevice(ctx, practice.UserID, practice2.DeviceID)
			return dev != nil
		})
		after := patient.Send(t, room, "nachher")
		practice.WaitDecrypt(t, after, "nachher")
		practice2.WaitDecrypt(t, after, "nachher")
		if _, ok := practice2.Body(first); ok {
			t.Fatal("the new device decrypted a message sent before it existed without a backup")
		}
	})
}

// backupRoomKeys uploads every inbound Megolm session the client holds for
// room into the current backup version, encrypted to the backup key.
func backupRoomKeys(t *testing.T, e *hstest.CryptoClient, version id.KeyBackupVersion, key *backup.MegolmBackupKey, room id.RoomID) int {
	t.Helper()
	ctx := context.Background()
	sessions, err := e.Store.GetGroupSessionsForRoom(ctx, room).AsList()
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

func newBackup(t *testing.T, e *hstest.CryptoClient) (id.KeyBackupVersion, *backup.MegolmBackupKey) {
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
func decryptHistory(t *testing.T, e *hstest.CryptoClient, room id.RoomID) (ok map[id.EventID]string, failed map[id.EventID]error) {
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
		err = e.Locked(func() (err error) { dec, err = e.Helper.Decrypt(ctx, evt); return err })
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
		practice := hstest.NewCryptoClient(t, srv.Register(t, "praxis"))
		patient := hstest.NewCryptoClient(t, srv.Register(t, "patient"))
		room := pairingRoom(t, practice, patient)
		old1 := practice.Send(t, room, "alte Nachricht 1")
		patient.WaitDecrypt(t, old1, "alte Nachricht 1")
		old2 := patient.Send(t, room, "alte Nachricht 2")
		practice.WaitDecrypt(t, old2, "alte Nachricht 2")

		version, key := newBackup(t, patient)
		if n := backupRoomKeys(t, patient, version, key, room); n != 2 {
			t.Fatalf("backup holds %d sessions, want 2 (one per sender)", n)
		}

		// Flow 3: restore on a new device.
		restored := hstest.NewCryptoClient(t, srv.Login(t, "patient"))
		restored.WaitRoom(t, room, practice, patient)
		if _, failed := decryptHistory(t, restored, room); len(failed) != 2 {
			t.Fatalf("before restoring, %d old messages undecryptable, want 2", len(failed))
		}
		var got id.KeyBackupVersion
		var err error
		err = restored.Locked(func() (err error) {
			got, err = restored.Helper.Machine().DownloadAndStoreLatestKeyBackup(ctx, key)
			return err
		})
		if err != nil || got != version {
			t.Fatalf("restore: version %q, %v", got, err)
		}
		ok, failed := decryptHistory(t, restored, room)
		if len(failed) != 0 || ok[old1] != "alte Nachricht 1" || ok[old2] != "alte Nachricht 2" {
			t.Fatalf("after restore: decrypted %v, failed %v", ok, failed)
		}

		// Flow 4: security key reset.
		mach := patient.Helper.Machine()
		keys, err := mach.GenerateCrossSigningKeys()
		if err != nil {
			t.Fatal(err)
		}
		err = patient.Locked(func() error { return mach.PublishCrossSigningKeys(ctx, keys, nil) })
		if err != nil {
			t.Fatalf("first cross-signing upload (no UIA): %v", err)
		}
		keys2, _ := mach.GenerateCrossSigningKeys()
		uiaCalled := false
		err = patient.Locked(func() error {
			return mach.PublishCrossSigningKeys(ctx, keys2, func(uia *mautrix.RespUserInteractive) any {
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
		if err := patient.Store.RemoveOutboundGroupSession(ctx, room); err != nil {
			t.Fatal(err)
		}
		new1 := patient.Send(t, room, "neue Nachricht 1")
		practice.WaitDecrypt(t, new1, "neue Nachricht 1")
		new2 := practice.Send(t, room, "neue Nachricht 2")
		patient.WaitDecrypt(t, new2, "neue Nachricht 2")
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
		sessions, _ := patient.Store.GetGroupSessionsForRoom(ctx, room).AsList()
		for _, s := range sessions {
			if !newSessions[s.ID()] {
				_ = patient.Store.RedactGroupSession(ctx, room, s.ID(), "test: pre-reset session")
			}
		}
		backupRoomKeys(t, patient, version2, key2, room)

		fresh := hstest.NewCryptoClient(t, srv.Login(t, "patient"))
		fresh.WaitRoom(t, room, practice, patient)
		err = fresh.Locked(func() (err error) {
			_, err = fresh.Helper.Machine().DownloadAndStoreLatestKeyBackup(ctx, key2)
			return err
		})
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
