package federation_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"praxis/federation"
	"praxis/internal/hstest"
)

// signedGet sends a GET from origin to dest signed with key (through the
// network's transport) and returns status and errcode.
func signedGet(t *testing.T, n *hstest.Network, origin, dest, path string, keyID string, key ed25519.PrivateKey) (int, string) {
	t.Helper()
	req := fclient.NewFederationRequest("GET", spec.ServerName(origin), spec.ServerName(dest), path)
	if key != nil {
		if err := req.Sign(spec.ServerName(origin), gomatrixserverlib.KeyID(keyID), key); err != nil {
			t.Fatal(err)
		}
	}
	hreq, err := req.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := n.RoundTrip(hreq.WithContext(context.Background()))
	if err != nil {
		t.Fatalf("round trip: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, gjson.GetBytes(body, "errcode").String()
}

func TestInboundRequestAuth(t *testing.T) {
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	// hs3 would talk to hs2, but hs2 has not allowed it
	hs3 := n.Add(t, "hs3.test", []string{"hs2.test"})
	hs1 := n.Server("hs1.test")
	_, forged, _ := ed25519.GenerateKey(nil)
	const path = "/_matrix/federation/v1/no-such-endpoint"
	for _, tc := range []struct {
		name       string
		origin     string
		keyID      string
		key        ed25519.PrivateKey
		wantStatus int
		wantCode   string
	}{
		{"signed by an allowed partner passes auth", "hs1.test", hs1.SigningKey.KeyID, hs1.SigningKey.PrivateKey, 404, "M_UNRECOGNIZED"},
		{"unsigned", "", "", nil, 401, "M_UNAUTHORIZED"},
		{"signed with a key that is not the origin's", "hs1.test", hs1.SigningKey.KeyID, forged, 401, "M_UNAUTHORIZED"},
		{"unknown key ID", "hs1.test", "ed25519:nope", hs1.SigningKey.PrivateKey, 401, "M_UNAUTHORIZED"},
		{"origin not on the allowlist", "hs3.test", hs3.SigningKey.KeyID, hs3.SigningKey.PrivateKey, 403, "M_FORBIDDEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, code := signedGet(t, n, tc.origin, "hs2.test", path, tc.keyID, tc.key)
			if status != tc.wantStatus || code != tc.wantCode {
				t.Fatalf("got %d %s, want %d %s", status, code, tc.wantStatus, tc.wantCode)
			}
		})
	}
}

func TestOutboundRefusesServersNotAllowed(t *testing.T) {
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	n.Add(t, "hs3.test", nil)
	hs1 := n.Server("hs1.test")
	if _, err := hs1.Fed.Client.GetServerKeys(context.Background(), "hs2.test"); err != nil {
		t.Fatalf("keys of an allowed partner: %v", err)
	}
	_, err := hs1.Fed.Client.GetServerKeys(context.Background(), "hs3.test")
	if !errors.Is(err, federation.ErrNotAllowed) {
		t.Fatalf("keys of hs3 (not allowed): got %v, want ErrNotAllowed", err)
	}
}

func TestNotary(t *testing.T) {
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	n.Add(t, "hs3.test", nil)
	hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
	ctx := context.Background()
	// hs2 asks hs1 (as a notary) for hs1's and hs2's keys and for hs3's,
	// which hs1 must not vouch for.
	keys, err := hs2.Fed.Client.LookupServerKeys(ctx, "hs1.test", map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{
		{ServerName: "hs1.test"}: 0, {ServerName: "hs2.test"}: 0, {ServerName: "hs3.test"}: 0,
	})
	if err != nil {
		t.Fatalf("notary query: %v", err)
	}
	got := map[string]bool{}
	for _, k := range keys {
		got[string(k.ServerName)] = true
		if err := gomatrixserverlib.VerifyJSON("hs1.test", gomatrixserverlib.KeyID(hs1.SigningKey.KeyID), hs1.SigningKey.PublicKey(), k.Raw); err != nil {
			t.Errorf("response for %s is not signed by the notary: %v", k.ServerName, err)
		}
		if k.ServerName == "hs2.test" {
			if err := gomatrixserverlib.VerifyJSON("hs2.test", gomatrixserverlib.KeyID(hs2.SigningKey.KeyID), hs2.SigningKey.PublicKey(), k.Raw); err != nil {
				t.Errorf("hs2's own signature lost: %v", err)
			}
		}
	}
	if !got["hs1.test"] || !got["hs2.test"] || got["hs3.test"] {
		t.Fatalf("notary answered for %v, want hs1 and hs2 only", got)
	}
}

// The request signature covers the body: a changed body is refused.
func TestTamperedBodyIsRefused(t *testing.T) {
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	hs1 := n.Server("hs1.test")
	req := fclient.NewFederationRequest("PUT", "hs1.test", "hs2.test", "/_matrix/federation/v1/send/t1")
	if err := req.SetContent(map[string]any{"origin": "hs1.test", "origin_server_ts": 1, "pdus": []any{}}); err != nil {
		t.Fatal(err)
	}
	if err := req.Sign("hs1.test", gomatrixserverlib.KeyID(hs1.SigningKey.KeyID), hs1.SigningKey.PrivateKey); err != nil {
		t.Fatal(err)
	}
	hreq, err := req.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	body := `{"origin":"hs1.test","origin_server_ts":2,"pdus":[]}`
	hreq.Body = io.NopCloser(strings.NewReader(body))
	hreq.ContentLength = int64(len(body))
	resp, err := n.RoundTrip(hreq)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e gomatrix.RespError
	json.NewDecoder(resp.Body).Decode(&e)
	if resp.StatusCode != http.StatusUnauthorized || e.ErrCode != "M_UNAUTHORIZED" {
		t.Fatalf("got %d %s, want 401 M_UNAUTHORIZED", resp.StatusCode, e.ErrCode)
	}
}
