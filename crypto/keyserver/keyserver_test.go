package keyserver

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"

	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
	"praxis/internal/streams"
)

const alice, bob = "@alice:hs.test", "@bob:hs.test"

func newService(t *testing.T, db *storage.DB) *Service {
	return New(db, streams.NewNotifier(0), "hs.test")
}

func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }

func genKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func sign(t testing.TB, obj []byte, signer, keyID string, priv ed25519.PrivateKey) json.RawMessage {
	t.Helper()
	out, err := gomatrixserverlib.SignJSON(signer, gomatrixserverlib.KeyID(keyID), priv, obj)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return out
}

// device builds signed device keys; the extra field checks that unknown
// fields survive storage.
func device(t testing.TB, userID, deviceID string) (json.RawMessage, ed25519.PrivateKey) {
	pub, priv := genKey(t)
	curve, _ := genKey(t)
	obj := fmt.Sprintf(`{"user_id":%q,"device_id":%q,"algorithms":["m.olm.v1.curve25519-aes-sha2","m.megolm.v1.aes-sha2"],"keys":{"ed25519:%s":%q,"curve25519:%s":%q},"org.example.extra":{"z":1,"a":[2,1]}}`,
		userID, deviceID, deviceID, b64(pub), deviceID, b64(curve))
	return sign(t, []byte(obj), userID, "ed25519:"+deviceID, priv), priv
}

func errCode(err error) string {
	if err == nil {
		return ""
	}
	return httputil.ToError(err).ErrCode
}

func TestUploadValidatesDeviceKeys(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newService(t, db)
		good, _ := device(t, alice, "DEV1")
		wrongUser, _ := device(t, bob, "DEV1")
		wrongDevice, _ := device(t, alice, "OTHER")
		unsigned := json.RawMessage(gjson.GetBytes(good, `@this`).Raw)
		unsigned = json.RawMessage(removeField(t, unsigned, "signatures"))
		tampered := json.RawMessage(replaceField(t, good, "algorithms", `["x"]`))
		for _, tc := range []struct {
			name string
			keys json.RawMessage
			want string
		}{
			{"wrong user", wrongUser, "M_INVALID_PARAM"},
			{"wrong device", wrongDevice, "M_INVALID_PARAM"},
			{"no signature", unsigned, "M_BAD_JSON"},
			{"bad signature", tampered, "M_INVALID_SIGNATURE"},
			{"not an object", json.RawMessage(`[1]`), "M_BAD_JSON"},
			{"good", good, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := s.Upload(ctx, alice, "DEV1", UploadRequest{DeviceKeys: tc.keys})
				if got := errCode(err); got != tc.want {
					t.Fatalf("upload: got %q (%v), want %q", got, err, tc.want)
				}
			})
		}
		// Re-uploading the same keys is fine; new identity keys are not.
		if _, err := s.Upload(ctx, alice, "DEV1", UploadRequest{DeviceKeys: good}); err != nil {
			t.Fatalf("re-upload: %v", err)
		}
		other, _ := device(t, alice, "DEV1")
		if _, err := s.Upload(ctx, alice, "DEV1", UploadRequest{DeviceKeys: other}); errCode(err) != "M_INVALID_PARAM" {
			t.Fatalf("identity change: got %v, want M_INVALID_PARAM", err)
		}
		// The stored bytes are exactly the uploaded ones.
		resp, err := s.Query(ctx, alice, map[string][]string{alice: nil})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(resp.DeviceKeys[alice]["DEV1"]); got != string(good) {
			t.Fatalf("served keys differ from uploaded:\n got %s\nwant %s", got, good)
		}
	})
}

func removeField(t *testing.T, obj []byte, field string) []byte {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, field)
	b, _ := json.Marshal(m)
	return b
}

func replaceField(t *testing.T, obj []byte, field, value string) []byte {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		t.Fatal(err)
	}
	m[field] = json.RawMessage(value)
	b, _ := json.Marshal(m)
	return b
}

func otks(n, from int) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for i := from; i < from+n; i++ {
		out[fmt.Sprintf("signed_curve25519:K%04d", i)] = json.RawMessage(fmt.Sprintf(`{"key":"k%d","signatures":{}}`, i))
	}
	return out
}

func TestOneTimeAndFallbackKeys(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newService(t, db)
		counts, err := s.Upload(ctx, alice, "DEV1", UploadRequest{OneTimeKeys: otks(2, 0),
			FallbackKeys: map[string]json.RawMessage{"signed_curve25519:FB1": json.RawMessage(`{"key":"fb1","fallback":true}`)}})
		if err != nil {
			t.Fatal(err)
		}
		if counts["signed_curve25519"] != 2 {
			t.Fatalf("counts = %v, want 2 signed_curve25519", counts)
		}
		// Same key again is idempotent; same ID with other content is not.
		if _, err := s.Upload(ctx, alice, "DEV1", UploadRequest{OneTimeKeys: otks(1, 0)}); err != nil {
			t.Fatalf("re-upload same key: %v", err)
		}
		_, err = s.Upload(ctx, alice, "DEV1", UploadRequest{OneTimeKeys: map[string]json.RawMessage{"signed_curve25519:K0000": json.RawMessage(`{"key":"other"}`)}})
		if errCode(err) != "M_INVALID_PARAM" {
			t.Fatalf("conflicting key: got %v", err)
		}
		if _, err := s.Upload(ctx, alice, "DEV1", UploadRequest{OneTimeKeys: map[string]json.RawMessage{"nocolon": json.RawMessage(`"x"`)}}); errCode(err) != "M_INVALID_PARAM" {
			t.Fatalf("bad key id: got %v", err)
		}
		claim := func() string {
			r, err := s.Claim(ctx, map[string]map[string]string{alice: {"DEV1": "signed_curve25519"}})
			if err != nil {
				t.Fatal(err)
			}
			for id := range r.OneTimeKeys[alice]["DEV1"] {
				return id
			}
			return ""
		}
		got := []string{claim(), claim(), claim(), claim()}
		want := []string{"signed_curve25519:K0000", "signed_curve25519:K0001", "signed_curve25519:FB1", "signed_curve25519:FB1"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("claims = %v, want %v", got, want)
		}
		types, err := s.UnusedFallbackKeyTypes(ctx, alice, "DEV1")
		if err != nil || len(types) != 0 {
			t.Fatalf("unused fallback types after use = %v, %v; want none", types, err)
		}
		// A new fallback key replaces the used one and is unused.
		if _, err := s.Upload(ctx, alice, "DEV1", UploadRequest{FallbackKeys: map[string]json.RawMessage{"signed_curve25519:FB2": json.RawMessage(`{"key":"fb2"}`)}}); err != nil {
			t.Fatal(err)
		}
		types, _ = s.UnusedFallbackKeyTypes(ctx, alice, "DEV1")
		if fmt.Sprint(types) != "[signed_curve25519]" {
			t.Fatalf("unused fallback types = %v", types)
		}
		if id := claim(); id != "signed_curve25519:FB2" {
			t.Fatalf("claim after new fallback = %q", id)
		}
	})
}

// One-time keys go out oldest upload first, whatever their IDs say: a
// client that tops up its keys expects the older ones used first.
func TestClaimsFollowUploadOrder(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newService(t, db)
		for _, batch := range []map[string]json.RawMessage{otks(2, 5), otks(2, 0)} {
			if _, err := s.Upload(ctx, alice, "DEV1", UploadRequest{OneTimeKeys: batch}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Millisecond) // distinct upload times
		}
		var got []string
		for range 4 {
			r, err := s.Claim(ctx, map[string]map[string]string{alice: {"DEV1": "signed_curve25519"}})
			if err != nil {
				t.Fatal(err)
			}
			for id := range r.OneTimeKeys[alice]["DEV1"] {
				got = append(got, id)
			}
		}
		want := []string{"signed_curve25519:K0005", "signed_curve25519:K0006", "signed_curve25519:K0000", "signed_curve25519:K0001"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("claims = %v, want the first upload's keys first: %v", got, want)
		}
	})
}

// TestConcurrentClaimsNeverShareAKey is the bug that breaks Olm sessions:
// two claimers must never receive the same one-time key.
func TestConcurrentClaimsNeverShareAKey(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newService(t, db)
		const keys, claimers = 60, 16
		if _, err := s.Upload(ctx, alice, "DEV1", UploadRequest{OneTimeKeys: otks(keys, 0)}); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		seen := map[string]int{}
		var wg sync.WaitGroup
		errs := make(chan error, claimers)
		for i := 0; i < claimers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < keys/claimers+2; j++ {
					r, err := s.Claim(ctx, map[string]map[string]string{alice: {"DEV1": "signed_curve25519"}})
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					for id := range r.OneTimeKeys[alice]["DEV1"] {
						seen[id]++
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("claim: %v", err)
		}
		if len(seen) != keys {
			t.Errorf("%d distinct keys handed out, want all %d", len(seen), keys)
		}
		for id, n := range seen {
			if n > 1 {
				t.Errorf("key %s handed out %d times", id, n)
			}
		}
	})
}

func TestCrossSigningAndSignatures(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newService(t, db)
		devKeys, devPriv := device(t, alice, "DEV1")
		if _, err := s.Upload(ctx, alice, "DEV1", UploadRequest{DeviceKeys: devKeys}); err != nil {
			t.Fatal(err)
		}
		mk, msk, ssk, ssPriv := crossSigning(t, alice)
		need, err := s.CrossSigningNeedsAuth(ctx, alice, CrossSigningKeys{Master: mk, SelfSigning: ssk})
		if err != nil || need {
			t.Fatalf("first upload needs auth = %v, %v; want false", need, err)
		}
		// A self-signing key not signed by the master key is refused.
		_, _, other, _ := crossSigning(t, alice)
		if err := s.UploadCrossSigning(ctx, alice, CrossSigningKeys{Master: mk, SelfSigning: other}); errCode(err) != "M_INVALID_SIGNATURE" {
			t.Fatalf("foreign self-signing key: got %v", err)
		}
		if err := s.UploadCrossSigning(ctx, alice, CrossSigningKeys{Master: mk, SelfSigning: ssk}); err != nil {
			t.Fatal(err)
		}
		if need, _ := s.CrossSigningNeedsAuth(ctx, alice, CrossSigningKeys{Master: mk, SelfSigning: ssk}); need {
			t.Fatal("re-uploading identical keys needs auth")
		}
		mk2, _, _, _ := crossSigning(t, alice)
		if need, _ := s.CrossSigningNeedsAuth(ctx, alice, CrossSigningKeys{Master: mk2}); !need {
			t.Fatal("replacing the master key needs no auth")
		}
		_ = msk

		// Sign the device with the self-signing key: accepted and merged.
		ssPub := gjson.GetBytes(ssk, "keys.@values.0").String()
		signed := sign(t, stripSigned(devKeys), alice, "ed25519:"+ssPub, ssPriv)
		// A signature by the wrong key id fails per key.
		bad := sign(t, stripSigned(devKeys), alice, "ed25519:"+ssPub, devPriv)
		failures, err := s.UploadSignatures(ctx, alice, map[string]map[string]json.RawMessage{alice: {"DEV1": bad}})
		if err != nil {
			t.Fatal(err)
		}
		if failures[alice]["DEV1"].ErrCode != "M_INVALID_SIGNATURE" {
			t.Fatalf("bad signature failures = %+v", failures)
		}
		failures, err = s.UploadSignatures(ctx, alice, map[string]map[string]json.RawMessage{alice: {"DEV1": signed, "NOPE": signed}})
		if err != nil {
			t.Fatal(err)
		}
		if len(failures[alice]) != 1 || failures[alice]["NOPE"].ErrCode != "M_NOT_FOUND" {
			t.Fatalf("failures = %+v, want only NOPE not found", failures)
		}
		resp, err := s.Query(ctx, bob, map[string][]string{alice: {"DEV1"}})
		if err != nil {
			t.Fatal(err)
		}
		got := resp.DeviceKeys[alice]["DEV1"]
		if !gjson.GetBytes(got, "signatures."+gjson.Escape(alice)+"."+gjson.Escape("ed25519:"+ssPub)).Exists() {
			t.Fatalf("self-signing signature not merged: %s", got)
		}
		if !gjson.GetBytes(got, "org\\.example\\.extra").Exists() {
			t.Fatalf("unknown field lost: %s", got)
		}
		if resp.MasterKeys[alice] == nil || resp.SelfSigningKeys[alice] == nil {
			t.Fatalf("cross-signing keys missing: %+v", resp)
		}
		// What another server sees on /user/devices.
		ud, err := s.LocalUserDevices(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		if len(ud.Devices) != 1 || ud.Devices[0].DeviceID != "DEV1" || ud.StreamID == 0 || ud.MasterKey == nil || ud.SelfSigningKey == nil {
			t.Fatalf("user devices: %+v", ud)
		}
	})
}

// crossSigning builds a master key and a self-signing key signed by it.
func crossSigning(t *testing.T, userID string) (master, masterUnused, selfSigning json.RawMessage, ssPriv ed25519.PrivateKey) {
	mPub, mPriv := genKey(t)
	sPub, sPriv := genKey(t)
	master = json.RawMessage(fmt.Sprintf(`{"user_id":%q,"usage":["master"],"keys":{"ed25519:%s":%q}}`, userID, b64(mPub), b64(mPub)))
	ss := fmt.Sprintf(`{"user_id":%q,"usage":["self_signing"],"keys":{"ed25519:%s":%q}}`, userID, b64(sPub), b64(sPub))
	selfSigning = sign(t, []byte(ss), userID, "ed25519:"+b64(mPub), mPriv)
	return master, nil, selfSigning, sPriv
}

func TestDeviceListChanges(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newService(t, db)
		const carol = "@carol:hs.test"
		// alice and bob share room 1; carol is alone in room 2.
		member := func(room int, user, membership string) int64 {
			var pos int64
			err := db.Transact(ctx, func(tx *storage.DB) error {
				var err error
				if pos, err = tx.NextStreamPos(ctx, 1); err != nil {
					return err
				}
				_, err = tx.Exec(ctx, `INSERT INTO room_members (room_nid, user_id, membership, event_nid, stream_pos) VALUES ($1, $2, $3, 0, $4)
					ON CONFLICT (room_nid, user_id) DO UPDATE SET membership = $3, stream_pos = $4`, room, user, membership, pos)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			return pos
		}
		member(1, alice, "join")
		start := member(1, bob, "join")
		member(2, carol, "join")
		upload := func(user, dev string) {
			k, _ := device(t, user, dev)
			if _, err := s.Upload(ctx, user, dev, UploadRequest{DeviceKeys: k}); err != nil {
				t.Fatal(err)
			}
		}
		upload(bob, "B1")
		upload(carol, "C1")
		head, _ := db.StreamHead(ctx)
		changed, left, err := s.DeviceListChanges(ctx, alice, start, head)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(changed, left) != "[@bob:hs.test] []" {
			t.Fatalf("after uploads: changed=%v left=%v, want bob only", changed, left)
		}
		// carol joins room 1: she is new to alice.
		from := head
		member(1, carol, "join")
		head, _ = db.StreamHead(ctx)
		changed, _, _ = s.DeviceListChanges(ctx, alice, from, head)
		if fmt.Sprint(changed) != "[@carol:hs.test]" {
			t.Fatalf("after carol joined: changed=%v", changed)
		}
		// ...and carol herself is listed for carol: her other devices now
		// have alice and bob to share keys with.
		changed, _, _ = s.DeviceListChanges(ctx, carol, from, head)
		if fmt.Sprint(changed) != "[@alice:hs.test @bob:hs.test @carol:hs.test]" {
			t.Fatalf("carol after joining: changed=%v, want alice, bob and herself", changed)
		}
		// bob leaves: he no longer shares a room with alice.
		from = head
		member(1, bob, "leave")
		head, _ = db.StreamHead(ctx)
		changed, left, _ = s.DeviceListChanges(ctx, alice, from, head)
		if fmt.Sprint(changed, left) != "[] [@bob:hs.test]" {
			t.Fatalf("after bob left: changed=%v left=%v", changed, left)
		}
		// Deleting alice's device shows up for carol and alice.
		upload(alice, "A1")
		from, _ = db.StreamHead(ctx)
		if err := db.Transact(ctx, func(tx *storage.DB) error { return s.DeleteDevices(ctx, tx, alice, []string{"A1"}) }); err != nil {
			t.Fatal(err)
		}
		head, _ = db.StreamHead(ctx)
		for _, u := range []string{alice, carol} {
			changed, _, _ = s.DeviceListChanges(ctx, u, from, head)
			if fmt.Sprint(changed) != "[@alice:hs.test]" {
				t.Fatalf("%s after device deletion: changed=%v", u, changed)
			}
		}
		if r, _ := s.Query(ctx, carol, map[string][]string{alice: nil}); len(r.DeviceKeys[alice]) != 0 {
			t.Fatalf("deleted device still served: %v", r.DeviceKeys[alice])
		}
		// A remote room-mate's device update arriving over federation.
		const remote = "@rem:other.test"
		member(1, remote, "join")
		from, _ = db.StreamHead(ctx)
		if err := s.MarkDeviceListChanged(ctx, remote); err != nil {
			t.Fatal(err)
		}
		head, _ = db.StreamHead(ctx)
		changed, _, _ = s.DeviceListChanges(ctx, alice, from, head)
		if fmt.Sprint(changed) != "[@rem:other.test]" {
			t.Fatalf("after a remote device update: changed=%v", changed)
		}
		// The same through federation's EDU, which only the user's own
		// server may send.
		if err := s.HandleDeviceListUpdateEDU(ctx, "evil.test", json.RawMessage(`{"user_id":"@rem:other.test","device_id":"X"}`)); errCode(err) != "M_FORBIDDEN" {
			t.Fatalf("device list EDU from the wrong server: %v", err)
		}
		if err := s.HandleSigningKeyUpdateEDU(ctx, "other.test", json.RawMessage(`{"user_id":"@rem:other.test"}`)); err != nil {
			t.Fatal(err)
		}
		// What the federation sender tails: local users only.
		local, err := s.LocalDeviceListChanges(ctx, 0, head+10, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range local {
			if c.UserID == "@rem:other.test" {
				t.Fatalf("remote user in the local device-list stream: %+v", local)
			}
		}
		if len(local) == 0 {
			t.Fatal("no local device-list changes")
		}
	})
}
