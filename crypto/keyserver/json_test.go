package keyserver_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
)

func jsonMarshal(v any) (json.RawMessage, error) { return json.Marshal(v) }

// signedDeviceKeysFor builds self-signed device keys for benchmarks.
func signedDeviceKeysFor(t testing.TB, userID, deviceID string) json.RawMessage {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	curve, _, _ := ed25519.GenerateKey(rand.Reader)
	b64 := base64.RawStdEncoding.EncodeToString
	obj := fmt.Sprintf(`{"user_id":%q,"device_id":%q,"algorithms":["m.olm.v1.curve25519-aes-sha2","m.megolm.v1.aes-sha2"],"keys":{"ed25519:%s":%q,"curve25519:%s":%q}}`,
		userID, deviceID, deviceID, b64(pub), deviceID, b64(curve))
	out, err := gomatrixserverlib.SignJSON(userID, gomatrixserverlib.KeyID("ed25519:"+deviceID), priv, []byte(obj))
	if err != nil {
		t.Fatal(err)
	}
	return out
}
