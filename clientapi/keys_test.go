package clientapi_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"

	"praxis/internal/hstest"
	"praxis/internal/storage/storagetest"
)

// keyReq sends a JSON request to a client API path under v3 and decodes
// the answer into a gjson result.
func keyReq(t *testing.T, c *mautrix.Client, method string, path []any, query map[string]string, body any) (gjson.Result, error) {
	t.Helper()
	u := c.BuildURLWithQuery(mautrix.ClientURLPath(append([]any{"v3"}, path...)), query)
	raw, err := c.MakeFullRequest(context.Background(), mautrix.FullRequest{Method: method, URL: u, RequestJSON: body, MaxAttempts: 1})
	return gjson.ParseBytes(raw), err
}

func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }

type testDevice struct {
	userID, deviceID string
	priv             ed25519.PrivateKey
	keys             json.RawMessage
}

// signedDeviceKeys builds device keys the way a client does, signed with
// the device's own ed25519 key.
func signedDeviceKeys(t *testing.T, userID, deviceID string) testDevice {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	curve, _, _ := ed25519.GenerateKey(rand.Reader)
	obj := fmt.Sprintf(`{"user_id":%q,"device_id":%q,"algorithms":["m.olm.v1.curve25519-aes-sha2","m.megolm.v1.aes-sha2"],"keys":{"ed25519:%s":%q,"curve25519:%s":%q}}`,
		userID, deviceID, deviceID, b64(pub), deviceID, b64(curve))
	return testDevice{userID, deviceID, priv, signJSON(t, []byte(obj), userID, "ed25519:"+deviceID, priv)}
}

func signJSON(t *testing.T, obj []byte, signer, keyID string, priv ed25519.PrivateKey) json.RawMessage {
	t.Helper()
	out, err := gomatrixserverlib.SignJSON(signer, gomatrixserverlib.KeyID(keyID), priv, obj)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestKeysUploadQueryClaim(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		dev := signedDeviceKeys(t, alice.UserID.String(), alice.DeviceID.String())
		otks := map[string]any{}
		for i := 0; i < 3; i++ {
			otks[fmt.Sprintf("signed_curve25519:AAAA%d", i)] = map[string]any{"key": fmt.Sprintf("k%d", i)}
		}
		resp, err := keyReq(t, alice, http.MethodPost, []any{"keys", "upload"}, nil, map[string]any{
			"device_keys":   dev.keys,
			"one_time_keys": otks,
			"fallback_keys": map[string]any{"signed_curve25519:FB": map[string]any{"key": "fb", "fallback": true}},
		})
		if err != nil {
			t.Fatalf("upload: %v", err)
		}
		if n := resp.Get("one_time_key_counts.signed_curve25519").Int(); n != 3 {
			t.Fatalf("one_time_key_counts = %s, want 3", resp.Get("one_time_key_counts").Raw)
		}

		t.Run("errors", func(t *testing.T) {
			otherUser := signedDeviceKeys(t, bob.UserID.String(), alice.DeviceID.String())
			otherDevice := signedDeviceKeys(t, alice.UserID.String(), "NOTMINE")
			newIdentity := signedDeviceKeys(t, alice.UserID.String(), alice.DeviceID.String())
			for _, tc := range []struct {
				name string
				body any
				want string
			}{
				{"device keys of another user", map[string]any{"device_keys": otherUser.keys}, "M_INVALID_PARAM"},
				{"device keys of another device", map[string]any{"device_keys": otherDevice.keys}, "M_INVALID_PARAM"},
				{"changed identity keys", map[string]any{"device_keys": newIdentity.keys}, "M_INVALID_PARAM"},
				{"one-time key without algorithm", map[string]any{"one_time_keys": map[string]any{"nokey": "x"}}, "M_INVALID_PARAM"},
				{"device keys not an object", map[string]any{"device_keys": "x"}, "M_BAD_JSON"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					_, err := keyReq(t, alice, http.MethodPost, []any{"keys", "upload"}, nil, tc.body)
					if got := hstest.ErrCode(err); got != tc.want {
						t.Fatalf("got %q (%v), want %q", got, err, tc.want)
					}
				})
			}
		})

		q, err := keyReq(t, bob, http.MethodPost, []any{"keys", "query"}, nil, map[string]any{
			"device_keys": map[string]any{alice.UserID.String(): []string{}, "@someone:remote.test": []string{}},
		})
		if err != nil {
			t.Fatalf("query: %v", err)
		}
		served := q.Get("device_keys." + gjson.Escape(alice.UserID.String()) + "." + gjson.Escape(alice.DeviceID.String()))
		// Served bytes are the uploaded ones (plus unsigned display name).
		if got := served.Get("signatures").Raw; got != gjson.GetBytes(dev.keys, "signatures").Raw {
			t.Fatalf("served signatures %s, uploaded %s", got, gjson.GetBytes(dev.keys, "signatures").Raw)
		}
		if !q.Get("failures." + gjson.Escape("remote.test")).Exists() {
			t.Fatalf("no failure for the unreachable server: %s", q.Raw)
		}

		claim := func() string {
			c, err := keyReq(t, bob, http.MethodPost, []any{"keys", "claim"}, nil, map[string]any{
				"one_time_keys": map[string]any{alice.UserID.String(): map[string]string{alice.DeviceID.String(): "signed_curve25519"}},
			})
			if err != nil {
				t.Fatalf("claim: %v", err)
			}
			var id string
			c.Get("one_time_keys." + gjson.Escape(alice.UserID.String()) + "." + gjson.Escape(alice.DeviceID.String())).ForEach(func(k, _ gjson.Result) bool {
				id = k.String()
				return false
			})
			return id
		}
		got := []string{claim(), claim(), claim(), claim()}
		if fmt.Sprint(got) != "[signed_curve25519:AAAA0 signed_curve25519:AAAA1 signed_curve25519:AAAA2 signed_curve25519:FB]" {
			t.Fatalf("claims = %v", got)
		}
		resp, _ = keyReq(t, alice, http.MethodPost, []any{"keys", "upload"}, nil, map[string]any{})
		if n := resp.Get("one_time_key_counts.signed_curve25519").Int(); n != 0 {
			t.Fatalf("count after claims = %d", n)
		}

		// Deleting the device removes its keys.
		if err := srv.Users.DeleteDevices(context.Background(), alice.UserID.String(), []string{alice.DeviceID.String()}); err != nil {
			t.Fatal(err)
		}
		q, _ = keyReq(t, bob, http.MethodPost, []any{"keys", "query"}, nil, map[string]any{"device_keys": map[string]any{alice.UserID.String(): []string{}}})
		if n := len(q.Get("device_keys." + gjson.Escape(alice.UserID.String())).Map()); n != 0 {
			t.Fatalf("%d devices served after deletion", n)
		}
	})
}

func TestKeysClaimConcurrentOverHTTP(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		alice := srv.Register(t, "alice")
		const keys, claimers = 40, 8
		otks := map[string]any{}
		for i := 0; i < keys; i++ {
			otks[fmt.Sprintf("signed_curve25519:K%03d", i)] = map[string]any{"key": fmt.Sprintf("k%d", i)}
		}
		if _, err := keyReq(t, alice, http.MethodPost, []any{"keys", "upload"}, nil, map[string]any{"one_time_keys": otks}); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		seen := map[string]int{}
		var wg sync.WaitGroup
		for i := 0; i < claimers; i++ {
			c := srv.Register(t, fmt.Sprintf("claimer%d", i))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < keys/claimers+1; j++ {
					r, err := keyReq(t, c, http.MethodPost, []any{"keys", "claim"}, nil, map[string]any{
						"one_time_keys": map[string]any{alice.UserID.String(): map[string]string{alice.DeviceID.String(): "signed_curve25519"}},
					})
					if err != nil {
						t.Errorf("claim: %v", err)
						return
					}
					r.Get("one_time_keys." + gjson.Escape(alice.UserID.String()) + "." + gjson.Escape(alice.DeviceID.String())).ForEach(func(k, _ gjson.Result) bool {
						mu.Lock()
						seen[k.String()]++
						mu.Unlock()
						return true
					})
				}
			}()
		}
		wg.Wait()
		if len(seen) != keys {
			t.Errorf("%d distinct keys handed out, want %d", len(seen), keys)
		}
		for k, n := range seen {
			if n > 1 {
				t.Errorf("key %s handed out %d times", k, n)
			}
		}
	})
}

// crossSigningSet is a master key and a self-signing key signed by it.
type crossSigningSet struct {
	master, selfSigning json.RawMessage
	masterPub, ssPub    string
	masterPriv, ssPriv  ed25519.PrivateKey
}

func newCrossSigning(t *testing.T, userID string) crossSigningSet {
	mPub, mPriv, _ := ed25519.GenerateKey(rand.Reader)
	sPub, sPriv, _ := ed25519.GenerateKey(rand.Reader)
	master := fmt.Sprintf(`{"user_id":%q,"usage":["master"],"keys":{"ed25519:%s":%q}}`, userID, b64(mPub), b64(mPub))
	ss := fmt.Sprintf(`{"user_id":%q,"usage":["self_signing"],"keys":{"ed25519:%s":%q}}`, userID, b64(sPub), b64(sPub))
	return crossSigningSet{
		master: json.RawMessage(master), selfSigning: signJSON(t, []byte(ss), userID, "ed25519:"+b64(mPub), mPriv),
		masterPub: b64(mPub), ssPub: b64(sPub), masterPriv: mPriv, ssPriv: sPriv,
	}
}

func TestCrossSigningUploadUIA(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		alice := srv.Register(t, "alice")
		first := newCrossSigning(t, alice.UserID.String())
		body := map[string]any{"master_key": first.master, "self_signing_key": first.selfSigning}
		// The first upload needs no UIA (MSC3967), nor does repeating it.
		for i := 0; i < 2; i++ {
			if _, err := keyReq(t, alice, http.MethodPost, []any{"keys", "device_signing", "upload"}, nil, body); err != nil {
				t.Fatalf("upload %d without auth: %v", i+1, err)
			}
		}
		second := newCrossSigning(t, alice.UserID.String())
		body = map[string]any{"master_key": second.master, "self_signing_key": second.selfSigning}
		challenge, err := keyReq(t, alice, http.MethodPost, []any{"keys", "device_signing", "upload"}, nil, body)
		var httpErr mautrix.HTTPError
		if !errors.As(err, &httpErr) || httpErr.Response == nil || httpErr.Response.StatusCode != http.StatusUnauthorized {
			t.Fatalf("replacing keys without auth: %v, want 401", err)
		}
		var uia mautrix.RespUserInteractive
		if err := json.Unmarshal([]byte(challenge.Raw), &uia); err != nil || uia.Session == "" || len(uia.Flows) == 0 || uia.Flows[0].Stages[0] != mautrix.AuthTypePassword {
			t.Fatalf("401 body %s is not a password UIA challenge", challenge.Raw)
		}
		password := func(pw string) map[string]any {
			return map[string]any{"type": "m.login.password", "session": uia.Session, "password": pw,
				"identifier": map[string]any{"type": "m.id.user", "user": alice.UserID.String()}}
		}
		body["auth"] = password("wrong")
		if _, err := keyReq(t, alice, http.MethodPost, []any{"keys", "device_signing", "upload"}, nil, body); hstest.ErrCode(err) != "M_FORBIDDEN" {
			t.Fatalf("wrong password: %v, want M_FORBIDDEN", err)
		}
		body["auth"] = password("password-alice")
		if _, err := keyReq(t, alice, http.MethodPost, []any{"keys", "device_signing", "upload"}, nil, body); err != nil {
			t.Fatalf("upload with password: %v", err)
		}
		q, _ := keyReq(t, alice, http.MethodPost, []any{"keys", "query"}, nil, map[string]any{"device_keys": map[string]any{alice.UserID.String(): []string{}}})
		if got := q.Get("master_keys." + gjson.Escape(alice.UserID.String()) + ".keys.@values.0").String(); got != second.masterPub {
			t.Fatalf("master key after replacement = %q, want %q", got, second.masterPub)
		}
	})
}

func TestSignaturesUpload(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		alice := srv.Register(t, "alice")
		uid, did := alice.UserID.String(), alice.DeviceID.String()
		dev := signedDeviceKeys(t, uid, did)
		if _, err := keyReq(t, alice, http.MethodPost, []any{"keys", "upload"}, nil, map[string]any{"device_keys": dev.keys}); err != nil {
			t.Fatal(err)
		}
		cs := newCrossSigning(t, uid)
		if _, err := keyReq(t, alice, http.MethodPost, []any{"keys", "device_signing", "upload"}, nil, map[string]any{"master_key": cs.master, "self_signing_key": cs.selfSigning}); err != nil {
			t.Fatal(err)
		}
		unsignedDev := json.RawMessage(gjson.GetBytes(dev.keys, `@this`).Raw)
		var m map[string]json.RawMessage
		json.Unmarshal(unsignedDev, &m)
		delete(m, "signatures")
		stripped, _ := json.Marshal(m)
		good := signJSON(t, stripped, uid, "ed25519:"+cs.ssPub, cs.ssPriv)
		bad := signJSON(t, stripped, uid, "ed25519:"+cs.ssPub, cs.masterPriv) // right key ID, wrong key
		// The device signs the master key: the usual "verify this session" step.
		masterByDevice := signJSON(t, cs.master, uid, "ed25519:"+did, dev.priv)

		r, err := keyReq(t, alice, http.MethodPost, []any{"keys", "signatures", "upload"}, nil, map[string]any{uid: map[string]any{did: bad}})
		if err != nil {
			t.Fatal(err)
		}
		if code := r.Get("failures." + gjson.Escape(uid) + "." + gjson.Escape(did) + ".errcode").String(); code != "M_INVALID_SIGNATURE" {
			t.Fatalf("bad signature: failures = %s", r.Get("failures").Raw)
		}
		r, err = keyReq(t, alice, http.MethodPost, []any{"keys", "signatures", "upload"}, nil, map[string]any{uid: map[string]any{did: good, cs.masterPub: masterByDevice}})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Get("failures").Map()) != 0 {
			t.Fatalf("good signatures failed: %s", r.Get("failures").Raw)
		}
		bob := srv.Register(t, "bob")
		q, _ := keyReq(t, bob, http.MethodPost, []any{"keys", "query"}, nil, map[string]any{"device_keys": map[string]any{uid: []string{}}})
		sigs := q.Get("device_keys." + gjson.Escape(uid) + "." + gjson.Escape(did) + ".signatures." + gjson.Escape(uid))
		if !sigs.Get(gjson.Escape("ed25519:"+cs.ssPub)).Exists() || !sigs.Get(gjson.Escape("ed25519:"+did)).Exists() {
			t.Fatalf("device signatures served: %s", sigs.Raw)
		}
		if !q.Get("master_keys." + gjson.Escape(uid) + ".signatures." + gjson.Escape(uid) + "." + gjson.Escape("ed25519:"+did)).Exists() {
			t.Fatalf("master key signature by device not merged: %s", q.Get("master_keys").Raw)
		}
		if q.Get("user_signing_keys." + gjson.Escape(uid)).Exists() {
			t.Fatal("user-signing key served to another user")
		}
	})
}

func TestSendToDeviceIdempotent(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		bob2 := srv.Login(t, "bob")
		body := map[string]any{"messages": map[string]any{bob.UserID.String(): map[string]any{"*": map[string]any{"hello": "world"}}}}
		for i := 0; i < 2; i++ {
			if _, err := keyReq(t, alice, http.MethodPut, []any{"sendToDevice", "m.test", "txn1"}, nil, body); err != nil {
				t.Fatalf("send %d: %v", i+1, err)
			}
		}
		ctx := context.Background()
		head, _ := srv.DB.StreamHead(ctx)
		for _, c := range []*mautrix.Client{bob, bob2} {
			msgs, _, err := srv.E2EE.ToDevice(ctx, c.UserID.String(), c.DeviceID.String(), 0, head, 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) != 1 || gjson.GetBytes(msgs[0], "content.hello").String() != "world" || gjson.GetBytes(msgs[0], "sender").String() != alice.UserID.String() {
				t.Fatalf("%s got %d messages: %s", c.DeviceID, len(msgs), msgs)
			}
		}
		// The same txn ID from another device of the same user is a new message.
		alice2 := srv.Login(t, "alice")
		if _, err := keyReq(t, alice2, http.MethodPut, []any{"sendToDevice", "m.test", "txn1"}, nil, body); err != nil {
			t.Fatal(err)
		}
		head, _ = srv.DB.StreamHead(ctx)
		msgs, _, _ := srv.E2EE.ToDevice(ctx, bob.UserID.String(), bob.DeviceID.String(), 0, head, 100)
		if len(msgs) != 2 {
			t.Fatalf("after a second device's send: %d messages, want 2", len(msgs))
		}
		if _, err := keyReq(t, alice, http.MethodPut, []any{"sendToDevice", "m.test", "txn2"}, nil, map[string]any{"messages": map[string]any{"nobody": map[string]any{"X": map[string]any{}}}}); hstest.ErrCode(err) != "M_INVALID_PARAM" {
			t.Fatalf("bad user ID: %v", err)
		}
	})
}

func TestKeyChanges(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		alice := srv.Register(t, "alice")
		ctx := context.Background()
		from, _ := srv.DB.StreamHead(ctx)
		dev := signedDeviceKeys(t, alice.UserID.String(), alice.DeviceID.String())
		if _, err := keyReq(t, alice, http.MethodPost, []any{"keys", "upload"}, nil, map[string]any{"device_keys": dev.keys}); err != nil {
			t.Fatal(err)
		}
		to, _ := srv.DB.StreamHead(ctx)
		resp, err := alice.GetKeyChanges(ctx, fmt.Sprintf("s%d", from), fmt.Sprintf("s%d", to))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Changed) != 1 || resp.Changed[0] != alice.UserID {
			t.Fatalf("changed = %v, want alice", resp.Changed)
		}
		if _, err := alice.GetKeyChanges(ctx, "garbage", "s1"); hstest.ErrCode(err) != "M_INVALID_PARAM" {
			t.Fatalf("bad token: %v", err)
		}
	})
}

func dehydratedReq(t *testing.T, c *mautrix.Client, method string, path []any, body any) (gjson.Result, error) {
	t.Helper()
	u := c.BuildURLWithQuery(mautrix.ClientURLPath(append([]any{"unstable", "org.matrix.msc3814.v1"}, path...)), nil)
	raw, err := c.MakeFullRequest(context.Background(), mautrix.FullRequest{Method: method, URL: u, RequestJSON: body, MaxAttempts: 1})
	return gjson.ParseBytes(raw), err
}

func TestDehydratedDevice(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		uid := alice.UserID.String()
		if _, err := dehydratedReq(t, alice, http.MethodGet, []any{"dehydrated_device"}, nil); hstest.ErrCode(err) != "M_NOT_FOUND" {
			t.Fatalf("no dehydrated device yet: %v", err)
		}
		put := func(deviceID string) {
			t.Helper()
			dev := signedDeviceKeys(t, uid, deviceID)
			r, err := dehydratedReq(t, alice, http.MethodPut, []any{"dehydrated_device"}, map[string]any{
				"device_id": deviceID, "device_data": map[string]any{"algorithm": "m.dehydration.v1.olm", "device_pickle": "opaque"},
				"device_keys": dev.keys, "one_time_keys": map[string]any{"signed_curve25519:A": map[string]any{"key": "k"}},
				"initial_device_display_name": "offline device",
			})
			if err != nil || r.Get("device_id").String() != deviceID {
				t.Fatalf("put dehydrated device: %s %v", r.Raw, err)
			}
		}
		// Taking the ID of a real device is refused.
		dev := signedDeviceKeys(t, uid, alice.DeviceID.String())
		if _, err := dehydratedReq(t, alice, http.MethodPut, []any{"dehydrated_device"}, map[string]any{"device_id": alice.DeviceID.String(), "device_data": map[string]any{}, "device_keys": dev.keys}); hstest.ErrCode(err) != "M_INVALID_PARAM" {
			t.Fatalf("real device ID: %v", err)
		}
		put("DEHYD1")
		g, err := dehydratedReq(t, alice, http.MethodGet, []any{"dehydrated_device"}, nil)
		if err != nil || g.Get("device_id").String() != "DEHYD1" || g.Get("device_data.device_pickle").String() != "opaque" {
			t.Fatalf("get: %s %v", g.Raw, err)
		}
		// Others see its keys and can claim its one-time key.
		q, _ := keyReq(t, bob, http.MethodPost, []any{"keys", "query"}, nil, map[string]any{"device_keys": map[string]any{uid: []string{}}})
		if !q.Get("device_keys." + gjson.Escape(uid) + ".DEHYD1").Exists() {
			t.Fatalf("dehydrated device keys not served: %s", q.Raw)
		}
		c, _ := keyReq(t, bob, http.MethodPost, []any{"keys", "claim"}, nil, map[string]any{"one_time_keys": map[string]any{uid: map[string]string{"DEHYD1": "signed_curve25519"}}})
		if !c.Get("one_time_keys." + gjson.Escape(uid) + ".DEHYD1").Exists() {
			t.Fatalf("claim for dehydrated device: %s", c.Raw)
		}
		// Messages sent to it wait in its inbox, paged and acknowledged by next_batch.
		for i := 0; i < 3; i++ {
			body := map[string]any{"messages": map[string]any{uid: map[string]any{"DEHYD1": map[string]any{"i": i}}}}
			if _, err := keyReq(t, bob, http.MethodPut, []any{"sendToDevice", "m.room.encrypted", fmt.Sprintf("d%d", i)}, nil, body); err != nil {
				t.Fatal(err)
			}
		}
		ev, err := dehydratedReq(t, alice, http.MethodPost, []any{"dehydrated_device", "DEHYD1", "events"}, map[string]any{})
		if err != nil || len(ev.Get("events").Array()) != 3 || ev.Get("events.0.sender").String() != bob.UserID.String() {
			t.Fatalf("events: %s %v", ev.Raw, err)
		}
		next := ev.Get("next_batch").String()
		ev, _ = dehydratedReq(t, alice, http.MethodPost, []any{"dehydrated_device", "DEHYD1", "events"}, map[string]any{"next_batch": next})
		if len(ev.Get("events").Array()) != 0 {
			t.Fatalf("after next_batch: %s", ev.Raw)
		}
		if _, err := dehydratedReq(t, bob, http.MethodPost, []any{"dehydrated_device", "DEHYD1", "events"}, map[string]any{}); hstest.ErrCode(err) != "M_FORBIDDEN" {
			t.Fatalf("someone else's dehydrated device: %v", err)
		}
		// Replacing it drops the old device's keys.
		put("DEHYD2")
		q, _ = keyReq(t, bob, http.MethodPost, []any{"keys", "query"}, nil, map[string]any{"device_keys": map[string]any{uid: []string{}}})
		if q.Get("device_keys."+gjson.Escape(uid)+".DEHYD1").Exists() || !q.Get("device_keys."+gjson.Escape(uid)+".DEHYD2").Exists() {
			t.Fatalf("after replacement: %s", q.Get("device_keys").Raw)
		}
		d, err := dehydratedReq(t, alice, http.MethodDelete, []any{"dehydrated_device"}, nil)
		if err != nil || d.Get("device_id").String() != "DEHYD2" {
			t.Fatalf("delete: %s %v", d.Raw, err)
		}
		if _, err := dehydratedReq(t, alice, http.MethodGet, []any{"dehydrated_device"}, nil); hstest.ErrCode(err) != "M_NOT_FOUND" {
			t.Fatalf("after delete: %v", err)
		}
	})
}

// TestKeysClaimAcrossProcesses runs two servers on one PostgreSQL
// database, as a care group scaled out would, and claims from both: no
// one-time key may go out twice.
func TestKeysClaimAcrossProcesses(t *testing.T) {
	if os.Getenv(storagetest.EnvPostgres) == "" {
		t.Skipf("needs %s", storagetest.EnvPostgres)
	}
	dsn := storagetest.FreshPostgres(t)
	srv1 := hstest.New(t, hstest.WithDatabase(dsn))
	srv2 := hstest.New(t, hstest.WithDatabase(dsn))
	alice := srv1.Register(t, "alice")
	const keys, claimers = 60, 8
	otks := map[string]any{}
	for i := 0; i < keys; i++ {
		otks[fmt.Sprintf("signed_curve25519:K%03d", i)] = map[string]any{"key": fmt.Sprintf("k%d", i)}
	}
	if _, err := keyReq(t, alice, http.MethodPost, []any{"keys", "upload"}, nil, map[string]any{"one_time_keys": otks}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for i := 0; i < claimers; i++ {
		srv := srv1
		if i%2 == 1 {
			srv = srv2
		}
		c := srv.Register(t, fmt.Sprintf("claimer%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < keys/claimers+1; j++ {
				r, err := keyReq(t, c, http.MethodPost, []any{"keys", "claim"}, nil, map[string]any{
					"one_time_keys": map[string]any{alice.UserID.String(): map[string]string{alice.DeviceID.String(): "signed_curve25519"}},
				})
				if err != nil {
					t.Errorf("claim: %v", err)
					return
				}
				r.Get("one_time_keys." + gjson.Escape(alice.UserID.String()) + "." + gjson.Escape(alice.DeviceID.String())).ForEach(func(k, _ gjson.Result) bool {
					mu.Lock()
					seen[k.String()]++
					mu.Unlock()
					return true
				})
			}
		}()
	}
	wg.Wait()
	if len(seen) != keys {
		t.Errorf("%d distinct keys handed out, want %d", len(seen), keys)
	}
	for k, n := range seen {
		if n > 1 {
			t.Errorf("key %s handed out %d times across processes", k, n)
		}
	}
}

// TestDeactivationForgetsKeys: logging out keeps cross-signing keys and
// backups; deactivating the account deletes them with every device key
// and the dehydrated device.
func TestDeactivationForgetsKeys(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		uid := alice.UserID.String()
		dev := signedDeviceKeys(t, uid, alice.DeviceID.String())
		if _, err := keyReq(t, alice, http.MethodPost, []any{"keys", "upload"}, nil, map[string]any{"device_keys": dev.keys}); err != nil {
			t.Fatal(err)
		}
		cs := newCrossSigning(t, uid)
		if _, err := keyReq(t, alice, http.MethodPost, []any{"keys", "device_signing", "upload"}, nil, map[string]any{"master_key": cs.master, "self_signing_key": cs.selfSigning}); err != nil {
			t.Fatal(err)
		}
		dehyd := signedDeviceKeys(t, uid, "DEHYD")
		if _, err := dehydratedReq(t, alice, http.MethodPut, []any{"dehydrated_device"}, map[string]any{"device_id": "DEHYD", "device_data": map[string]any{}, "device_keys": dehyd.keys}); err != nil {
			t.Fatal(err)
		}
		if _, err := keyReq(t, alice, http.MethodPost, []any{"room_keys", "version"}, nil, map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{}}); err != nil {
			t.Fatal(err)
		}
		query := func() gjson.Result {
			q, err := keyReq(t, bob, http.MethodPost, []any{"keys", "query"}, nil, map[string]any{"device_keys": map[string]any{uid: []string{}}})
			if err != nil {
				t.Fatal(err)
			}
			return q
		}
		// Logging out everywhere keeps the user's identity.
		alice2 := srv.Login(t, "alice")
		if err := srv.Users.DeleteOtherDevices(ctx, uid, alice2.DeviceID.String()); err != nil {
			t.Fatal(err)
		}
		if q := query(); !q.Get("master_keys."+gjson.Escape(uid)).Exists() || !q.Get("device_keys."+gjson.Escape(uid)+".DEHYD").Exists() {
			t.Fatalf("logout removed cross-signing or dehydrated keys: %s", q.Raw)
		}
		if err := srv.Users.Deactivate(ctx, uid); err != nil {
			t.Fatal(err)
		}
		q := query()
		if q.Get("master_keys."+gjson.Escape(uid)).Exists() || len(q.Get("device_keys."+gjson.Escape(uid)).Map()) != 0 {
			t.Fatalf("keys of a deactivated account still served: %s", q.Raw)
		}
		var backups, dehydrated int
		srv.DB.QueryRow(ctx, `SELECT COUNT(*) FROM backup_versions WHERE user_id = $1 AND deleted = FALSE`, uid).Scan(&backups)
		srv.DB.QueryRow(ctx, `SELECT COUNT(*) FROM dehydrated_devices WHERE user_id = $1`, uid).Scan(&dehydrated)
		if backups != 0 || dehydrated != 0 {
			t.Fatalf("after deactivation: %d live backup versions, %d dehydrated devices", backups, dehydrated)
		}
	})
}
