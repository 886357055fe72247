package clientapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// fuzzEndpoints are the JSON-taking endpoints a client drives most; {room}
// is a room the caller created and {txn} a fresh transaction ID. Typing is
// left out: its expiry writes to the stream later, in the background,
// which would blur the "a refusal writes nothing" property.
var fuzzEndpoints = []struct{ method, path string }{
	{"POST", "/_matrix/client/v3/createRoom"},
	{"PUT", "/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"},
	{"PUT", "/_matrix/client/v3/rooms/{room}/state/m.room.topic"},
	{"PUT", "/_matrix/client/v3/rooms/{room}/state/m.room.power_levels"},
	{"POST", "/_matrix/client/v3/rooms/{room}/invite"},
	{"POST", "/_matrix/client/v3/rooms/{room}/kick"},
	{"POST", "/_matrix/client/v3/rooms/{room}/read_markers"},
	{"PUT", "/_matrix/client/v3/user/@fuzz:hs1.test/account_data/org.example.fuzz"},
	{"POST", "/_matrix/client/v3/user/@fuzz:hs1.test/filter"},
	{"POST", "/_matrix/client/v3/keys/upload"},
	{"POST", "/_matrix/client/v3/keys/query"},
	{"POST", "/_matrix/client/v3/keys/claim"},
	{"PUT", "/_matrix/client/v3/sendToDevice/m.test/{txn}"},
	{"POST", "/_matrix/client/v3/room_keys/version"},
	{"PUT", "/_matrix/client/v3/room_keys/version/1"},
	{"PUT", "/_matrix/client/v3/room_keys/keys?version=1"},
	{"PUT", "/_matrix/client/v3/room_keys/keys/{room}/sess1?version=1"},
	{"POST", "/_matrix/client/v3/keys/signatures/upload"},
	{"POST", "/_matrix/client/v3/keys/device_signing/upload"},
	{"PUT", "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"},
	{"POST", "/_matrix/client/v3/rooms/{room}/receipt/m.read/$nonexistent"},
	{"PUT", "/_matrix/client/v3/rooms/{room}/redact/$nonexistent/{txn}"},
	{"POST", "/_matrix/client/v3/account/password"},
	{"POST", "/_matrix/client/v3/delete_devices"},
	{"PUT", "/_matrix/client/v3/devices/NOSUCHDEVICE"},
	{"PUT", "/_matrix/client/v3/pushrules/global/override/fuzz"},
	{"PUT", "/_matrix/client/v3/pushrules/global/override/.m.rule.master/actions"},
	{"POST", "/_matrix/client/v3/publicRooms"},
	{"POST", "/_matrix/client/v3/join/{room}"},
	{"POST", "/_matrix/client/v3/user_directory/search"},
	{"POST", "/_matrix/client/v3/login"},
	{"POST", "/_matrix/client/v3/register"},
}

// FuzzRequestJSON sends arbitrary bodies to the JSON endpoints of the real
// server. Properties: never a 5xx; every refusal is Matrix JSON with an
// M_ errcode; a body that is not JSON is 400 M_NOT_JSON; and a refused
// request writes nothing to the event stream.
func FuzzRequestJSON(f *testing.F) {
	for i := range fuzzEndpoints {
		for _, seed := range []string{
			`{}`, `{`, ``, `[]`, `null`, `"x"`, `{"preset":"private_chat","name":"n"}`,
			`{"msgtype":"m.text","body":"hi"}`, `{"topic":"t"}`, `{"user_id":"@bob:hs1.test"}`,
			`{"users":{"@x:y":"nope"}}`, `{"typing":true,"timeout":30000}`, `{"m.fully_read":"$e"}`,
			`{"device_keys":{"user_id":"@other:hs1.test"}}`, `{"one_time_keys":{"a:b":1}}`,
			`{"messages":{"@fuzz:hs1.test":{"*":{}}}}`, `{"algorithm":"m.megolm_backup.v1","auth_data":{}}`,
			`{"search_term":"a","limit":-1}`, `{"type":"m.login.password","user":"fuzz","password":"x"}`,
			`{"username":"Bad User","password":"p"}`, `{"a":1e999}`, "{\"a\":\"\\ud800\"}", `{"a":1,"a":2}`,
		} {
			f.Add(uint8(i), []byte(seed))
		}
	}
	srv := hstest.New(f)
	alice := srv.Register(f, "fuzz")
	room, err := alice.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		f.Fatal(err)
	}
	var txn atomic.Int64
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		ep := fuzzEndpoints[int(which)%len(fuzzEndpoints)]
		status, resp := fuzzDo(t, srv, alice, room.RoomID, ep.method, ep.path, txn.Add(1), body)
		if status >= 500 {
			t.Fatalf("%s %s with %q: status %d %s", ep.method, ep.path, body, status, resp)
		}
		if status < 300 {
			return
		}
		var e struct {
			Errcode string          `json:"errcode"`
			Flows   json.RawMessage `json:"flows"`
		}
		err := json.Unmarshal(resp, &e)
		if err == nil && status == http.StatusUnauthorized && e.Errcode == "" && len(e.Flows) > 0 {
			return // a user-interactive auth challenge, not a refusal
		}
		if err != nil || !strings.HasPrefix(e.Errcode, "M_") {
			t.Fatalf("%s %s with %q: status %d without a Matrix error: %s", ep.method, ep.path, body, status, resp)
		}
		// Surrounding whitespace is trimmed (bytes.TrimSpace, a little wider
		// than JSON's), so judge what is left.
		trimmed := bytes.TrimSpace(body)
		if !json.Valid(trimmed) && len(trimmed) > 0 && status != http.StatusUnauthorized && e.Errcode != "M_NOT_JSON" {
			t.Fatalf("%s %s with non-JSON %q: %d %s, want M_NOT_JSON", ep.method, ep.path, body, status, e.Errcode)
		}
	})
}

// fuzzDo sends one request and checks that a refusal left the stream head
// where it was.
func fuzzDo(t *testing.T, srv *hstest.Server, c *mautrix.Client, roomID id.RoomID, method, path string, txn int64, body []byte) (int, []byte) {
	t.Helper()
	ctx := context.Background()
	path = strings.NewReplacer("{room}", string(roomID), "{txn}", fmt.Sprintf("fuzz%d", txn)).Replace(path)
	before, err := srv.DB.StreamHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.AccessToken)
	req.Header.Set("Content-Type", "application/json")
	// No endpoint here waits for anything: a request that takes seconds
	// is stuck.
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s with %q: %v", method, path, body, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 {
		if after, _ := srv.DB.StreamHead(ctx); after != before {
			t.Fatalf("%s %s with %q was refused (%d %s) but moved the stream from %d to %d", method, path, body, resp.StatusCode, out, before, after)
		}
	}
	return resp.StatusCode, out
}
