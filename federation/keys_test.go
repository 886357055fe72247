package federation

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"praxis/federation/keyring"
)

func TestServerKeysAreSelfSigned(t *testing.T) {
	key, err := keyring.Generate()
	if err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1_700_000_000_000)
	a := &API{ServerName: "hs1.test", Key: key, Now: func() time.Time { return now }}
	mux := http.NewServeMux()
	a.Routes(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/_matrix/key/v2/server", nil))
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	body := rec.Body.Bytes()
	if err := gomatrixserverlib.VerifyJSON("hs1.test", gomatrixserverlib.KeyID(key.KeyID), key.PublicKey(), body); err != nil {
		t.Fatalf("signature does not verify: %v", err)
	}
	var got gomatrixserverlib.ServerKeyFields
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if want := now.Add(KeyValidity).UnixMilli(); int64(got.ValidUntilTS) != want {
		t.Fatalf("valid_until_ts = %d, want %d", got.ValidUntilTS, want)
	}
	if _, ok := got.VerifyKeys[gomatrixserverlib.KeyID(key.KeyID)]; !ok {
		t.Fatalf("verify_keys lacks %s", key.KeyID)
	}
}

func TestSigningKeyFileRoundTrip(t *testing.T) {
	key, _ := keyring.Generate()
	back, err := keyring.Parse(key.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if back.KeyID != key.KeyID || !back.PrivateKey.Equal(key.PrivateKey) {
		t.Fatal("key changed in a marshal/parse round trip")
	}
	for _, bad := range []string{"", "ed25519 a_x", "rsa a_x AAAA", "ed25519 a_x !!!"} {
		if _, err := keyring.Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) accepted a bad key file", bad)
		}
	}
}
