package federation

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/crypto/keyserver"
)

type fakeKeys struct {
	KeyService
	marked []string
}

func (f *fakeKeys) MarkDeviceListChanged(_ context.Context, users ...string) error {
	f.marked = append(f.marked, users...)
	return nil
}

func (f *fakeKeys) LocalUserDevices(context.Context, string) (*keyserver.UserDevices, error) {
	return &keyserver.UserDevices{}, nil
}

type fakeInbox struct {
	got map[string]map[string]json.RawMessage
}

func (f *fakeInbox) Send(_ context.Context, _, _, _, _ string, msgs map[string]map[string]json.RawMessage) error {
	f.got = msgs
	return nil
}

// TestE2EEEDUsCheckOrigin: an EDU about a user of another server than
// the one that sent it is refused and changes nothing; messages for
// other servers' users are not delivered here.
func TestE2EEEDUsCheckOrigin(t *testing.T) {
	for _, tc := range []struct {
		name, edu, content string
		wantErr            bool
		wantMarked         string
		wantDelivered      []string
	}{
		{"device list update of origin's user", "m.device_list_update", `{"user_id":"@bob:hs2.test","device_id":"D","stream_id":3,"prev_id":[2]}`, false, "@bob:hs2.test", nil},
		{"forged device list update", "m.device_list_update", `{"user_id":"@alice:hs1.test","device_id":"D","stream_id":3}`, true, "", nil},
		{"signing key update of origin's user", "m.signing_key_update", `{"user_id":"@bob:hs2.test"}`, false, "@bob:hs2.test", nil},
		{"forged signing key update", "m.signing_key_update", `{"user_id":"@carol:hs3.test"}`, true, "", nil},
		{"to-device from origin's user", "m.direct_to_device",
			`{"sender":"@bob:hs2.test","type":"m.room_key_request","message_id":"m1","messages":{"@alice:hs1.test":{"*":{}},"@eve:hs3.test":{"*":{}}}}`,
			false, "", []string{"@alice:hs1.test"}},
		{"forged to-device", "m.direct_to_device", `{"sender":"@alice:hs1.test","type":"x","message_id":"m2","messages":{"@alice:hs1.test":{"*":{}}}}`, true, "", nil},
		{"to-device without message_id", "m.direct_to_device", `{"sender":"@bob:hs2.test","type":"x","messages":{"@alice:hs1.test":{"*":{}}}}`, true, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, inbox := &fakeKeys{}, &fakeInbox{}
			e := &E2EE{API: &API{ServerName: "hs1.test"}, Keys: keys, Inbox: inbox}
			h := map[string]func(context.Context, string, json.RawMessage) error{
				"m.device_list_update": func(ctx context.Context, o string, c json.RawMessage) error { return e.DeviceListUpdate(ctx, sn(o), c) },
				"m.signing_key_update": func(ctx context.Context, o string, c json.RawMessage) error { return e.SigningKeyUpdate(ctx, sn(o), c) },
				"m.direct_to_device":   func(ctx context.Context, o string, c json.RawMessage) error { return e.DirectToDevice(ctx, sn(o), c) },
			}[tc.edu]
			err := h(context.Background(), "hs2.test", json.RawMessage(tc.content))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if got := len(keys.marked); (tc.wantMarked == "" && got != 0) || (tc.wantMarked != "" && (got != 1 || keys.marked[0] != tc.wantMarked)) {
				t.Fatalf("marked %v, want %q", keys.marked, tc.wantMarked)
			}
			if len(inbox.got) != len(tc.wantDelivered) {
				t.Fatalf("delivered to %v, want %v", inbox.got, tc.wantDelivered)
			}
			for _, u := range tc.wantDelivered {
				if _, ok := inbox.got[u]; !ok {
					t.Fatalf("not delivered to %s: %v", u, inbox.got)
				}
			}
		})
	}
}

func sn(s string) spec.ServerName { return spec.ServerName(s) }
