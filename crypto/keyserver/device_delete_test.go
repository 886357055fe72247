package keyserver

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/tidwall/gjson"

	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
)

// TestDeviceListStreamNamesDevices: every change on the local device-list
// stream says which device it was about and whether it was deleted, each
// at a position of its own (the stream_id partners see), with prev
// chaining over device changes only; /user/devices reports the last
// device change as its stream_id.
func TestDeviceListStreamNamesDevices(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newService(t, db)
		keys := map[string]json.RawMessage{}
		for _, d := range []string{"A1", "A2", "A3"} {
			k, _ := device(t, alice, d)
			keys[d] = k
			if _, err := s.Upload(ctx, alice, d, UploadRequest{DeviceKeys: k}); err != nil {
				t.Fatal(err)
			}
		}
		// a change of alice as a whole: her cross-signing keys
		mk, _, ssk, ssPriv := crossSigning(t, alice)
		if err := s.UploadCrossSigning(ctx, alice, CrossSigningKeys{Master: mk, SelfSigning: ssk}); err != nil {
			t.Fatal(err)
		}
		// signing a device is a change of that device
		ssPub := gjson.GetBytes(ssk, "keys.@values.0").String()
		signed := sign(t, stripSigned(keys["A1"]), alice, "ed25519:"+ssPub, ssPriv)
		if failures, err := s.UploadSignatures(ctx, alice, map[string]map[string]json.RawMessage{alice: {"A1": signed}}); err != nil || len(failures) != 0 {
			t.Fatalf("sign A1: %v %v", failures, err)
		}
		// logging out two devices at once
		if err := db.Transact(ctx, func(tx *storage.DB) error { return s.DeleteDevices(ctx, tx, alice, []string{"A2", "A3"}) }); err != nil {
			t.Fatal(err)
		}
		// remote users' changes are not ours to announce
		if err := s.MarkDeviceListChanged(ctx, "@rem:other.test"); err != nil {
			t.Fatal(err)
		}
		head, _ := db.StreamHead(ctx)
		got, err := s.LocalDeviceListChanges(ctx, 0, head, 100)
		if err != nil {
			t.Fatal(err)
		}
		want := []struct {
			device  string
			deleted bool
		}{{"A1", false}, {"A2", false}, {"A3", false}, {"", false}, {"A1", false}, {"A2", true}, {"A3", true}}
		if len(got) != len(want) {
			t.Fatalf("changes = %+v, want %d", got, len(want))
		}
		var lastDevicePos int64
		for i, w := range want {
			c := got[i]
			if c.UserID != alice || c.DeviceID != w.device || c.Deleted != w.deleted {
				t.Fatalf("change %d = %+v, want device %q deleted %v", i, c, w.device, w.deleted)
			}
			if i > 0 && c.StreamPos <= got[i-1].StreamPos {
				t.Fatalf("change %d shares or reverses a position: %+v", i, got)
			}
			if w.device == "" {
				if c.PrevPos != 0 {
					t.Fatalf("a user-level change has a prev: %+v", c)
				}
				continue
			}
			if c.PrevPos != lastDevicePos {
				t.Fatalf("change %d prev = %d, want %d (the previous device change)", i, c.PrevPos, lastDevicePos)
			}
			lastDevicePos = c.StreamPos
		}
		// paging: the limit cuts the list
		if page, err := s.LocalDeviceListChanges(ctx, 0, head, 2); err != nil || len(page) != 2 || page[1].DeviceID != "A2" {
			t.Fatalf("first page = %+v, %v", page, err)
		}
		ud, err := s.LocalUserDevices(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		if ud.StreamID != lastDevicePos || len(ud.Devices) != 1 || ud.Devices[0].DeviceID != "A1" {
			t.Fatalf("/user/devices = stream_id %d, %+v; want %d and only A1", ud.StreamID, ud.Devices, lastDevicePos)
		}
	})
}

// TestDeactivationAnnouncesEveryDevice: deactivating an account announces
// each of its devices (and its dehydrated device) as deleted.
func TestDeactivationAnnouncesEveryDevice(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newService(t, db)
		if _, err := db.Exec(ctx, `INSERT INTO accounts (user_id, localpart, created_ts, deactivated) VALUES ($1, 'alice', 0, FALSE)`, alice); err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{"A1", "A2"} {
			k, _ := device(t, alice, d)
			if _, err := s.Upload(ctx, alice, d, UploadRequest{DeviceKeys: k}); err != nil {
				t.Fatal(err)
			}
		}
		dk, _ := device(t, alice, "DEHYD")
		if err := s.PutDehydratedDevice(ctx, alice, DehydratedDevice{DeviceID: "DEHYD", DeviceData: json.RawMessage(`{"algorithm":"x"}`), DeviceKeys: dk}); err != nil {
			t.Fatal(err)
		}
		from, _ := db.StreamHead(ctx)
		if err := db.Transact(ctx, func(tx *storage.DB) error {
			if _, err := tx.Exec(ctx, `UPDATE accounts SET deactivated = TRUE WHERE user_id = $1`, alice); err != nil {
				return err
			}
			return s.DeleteDevices(ctx, tx, alice, []string{"A1", "A2"})
		}); err != nil {
			t.Fatal(err)
		}
		head, _ := db.StreamHead(ctx)
		got, err := s.LocalDeviceListChanges(ctx, from, head, 100)
		if err != nil {
			t.Fatal(err)
		}
		deleted := map[string]bool{}
		for _, c := range got {
			if !c.Deleted {
				t.Fatalf("deactivation recorded a non-deletion: %+v", c)
			}
			deleted[c.DeviceID] = true
		}
		if len(got) != 3 || !deleted["A1"] || !deleted["A2"] || !deleted["DEHYD"] {
			t.Fatalf("deactivation changes = %+v, want A1, A2 and DEHYD deleted", got)
		}
	})
}
