package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"praxis/federation"
)

// Two real praxis processes federating over TLS on loopback: each has a
// self-signed certificate, trusts the other's through
// federation.trusted_ca_file, and they fetch each other's keys through
// server discovery (host:port names) and the notary endpoint.
func TestTwoProcessesFederateOverTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	type node struct {
		dir, client, fed, name string
		p                      *proc
	}
	nodes := make([]*node, 2)
	for i := range nodes {
		n := &node{dir: t.TempDir(), client: freeAddr(t), fed: freeAddr(t)}
		n.name = n.fed // server name host:port = the federation listener
		if err := federation.WriteSelfSigned(filepath.Join(n.dir, "federation-tls.crt"), filepath.Join(n.dir, "federation-tls.key"), n.name); err != nil {
			t.Fatal(err)
		}
		nodes[i] = n
	}
	// one CA file with both certificates
	caFile := filepath.Join(t.TempDir(), "partners.pem")
	var pems []byte
	pool := x509.NewCertPool()
	for _, n := range nodes {
		b, err := os.ReadFile(filepath.Join(n.dir, "federation-tls.crt"))
		if err != nil {
			t.Fatal(err)
		}
		pems = append(pems, b...)
		pool.AppendCertsFromPEM(b)
	}
	if err := os.WriteFile(caFile, pems, 0o644); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		other := nodes[1-i]
		n.p = startPraxis(t, fmt.Sprintf("--data-dir %s --listen-client %s --listen-federation %s --server-name %s", n.dir, n.client, n.fed, n.name),
			"PRAXIS_FEDERATION_ALLOWED_SERVERS="+other.name, "PRAXIS_FEDERATION_TRUSTED_CA_FILE="+caFile, "PRAXIS_LOG_LEVEL=warn")
	}
	for _, n := range nodes {
		n.p.waitReady(t, n.client)
	}

	// Ask node 0's notary (over TLS) for node 1's keys: node 0 fetches
	// them from node 1 over TLS and countersigns.
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := c.Get("https://" + nodes[0].fed + "/_matrix/key/v2/query/" + nodes[1].name)
	if err != nil {
		t.Fatalf("notary over TLS: %v\nnode 0 stderr:\n%s", err, nodes[0].p.stderr)
	}
	defer resp.Body.Close()
	var body struct {
		ServerKeys []json.RawMessage `json:"server_keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 {
		t.Fatalf("notary answered %d (%v)", resp.StatusCode, err)
	}
	if len(body.ServerKeys) != 1 {
		t.Fatalf("notary returned %d key responses, want node 1's; node 0 stderr:\n%s", len(body.ServerKeys), nodes[0].p.stderr)
	}
	var keys gomatrixserverlib.ServerKeys
	if err := json.Unmarshal(body.ServerKeys[0], &keys); err != nil {
		t.Fatal(err)
	}
	if string(keys.ServerName) != nodes[1].name {
		t.Fatalf("keys are for %s, want %s", keys.ServerName, nodes[1].name)
	}
	ids, _ := gomatrixserverlib.ListKeyIDs(nodes[0].name, keys.Raw)
	if len(ids) == 0 {
		t.Fatal("response is not countersigned by the notary")
	}
	// An unsigned request to a federation endpoint over TLS is refused.
	resp2, err := c.Get("https://" + nodes[1].fed + "/_matrix/federation/v1/query/profile?user_id=@x:" + nodes[1].name)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unsigned request: %d, want 401", resp2.StatusCode)
	}
}
