package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"

	"praxis/federation/keyring"
	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
)

// unreachable is a partner that cannot be reached; it counts the tries
// (a resync shows up as one).
type unreachable struct{ tries atomic.Int32 }

func (u *unreachable) RoundTrip(r *http.Request) (*http.Response, error) {
	u.tries.Add(1)
	return nil, errors.New("partner down")
}

// TestDeviceListUpdateFollowsDeletions: how an m.device_list_update
// about a cached remote user changes the cache. A chained update (prev_id
// names the stream_id we are at) applies without asking the partner; a
// deletion removes the device even when a gap makes us resync (and the
// resync fails); old news and repeats change nothing.
func TestDeviceListUpdateFollowsDeletions(t *testing.T) {
	const bob = "@bob:hs2.test"
	keysOf := func(dev string) string {
		return fmt.Sprintf(`{"user_id":%q,"device_id":%q,"keys":{"ed25519:%s":"x"}}`, bob, dev, dev)
	}
	for _, tc := range []struct {
		name        string
		cur         int64
		edu         string
		wantDevices []string
		wantStream  int64
		wantStale   bool
		wantResync  bool
	}{
		{"chained deletion", 10, `{"device_id":"B2","stream_id":12,"prev_id":[10],"deleted":true}`, []string{"B1"}, 12, false, false},
		{"chained new device", 10, `{"device_id":"B3","stream_id":11,"prev_id":[10],"keys":` + keysOf("B3") + `}`, []string{"B1", "B2", "B3"}, 11, false, false},
		{"repeat of the current update", 10, `{"device_id":"B2","stream_id":10,"prev_id":[7],"deleted":true}`, []string{"B1"}, 10, false, false},
		{"old deletion", 10, `{"device_id":"B2","stream_id":9,"prev_id":[8],"deleted":true}`, []string{"B1", "B2"}, 10, false, false},
		{"deletion after a gap", 10, `{"device_id":"B2","stream_id":14,"prev_id":[13],"deleted":true}`, []string{"B1"}, 10, true, true},
		{"deletion with the stream unknown", 0, `{"device_id":"B2","stream_id":14,"prev_id":[13],"deleted":true}`, []string{"B1"}, 0, true, true},
		{"update after a gap", 10, `{"device_id":"B3","stream_id":14,"prev_id":[13],"keys":` + keysOf("B3") + `}`, []string{"B1", "B2"}, 10, true, true},
		{"keys of another device", 10, `{"device_id":"B3","stream_id":11,"prev_id":[10],"keys":` + keysOf("B4") + `}`, []string{"B1", "B2"}, 10, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			storagetest.Run(t, func(t *testing.T, db *storage.DB) {
				ctx := context.Background()
				key, err := keyring.Generate()
				if err != nil {
					t.Fatal(err)
				}
				partner := &unreachable{}
				client := fclient.NewFederationClient([]*fclient.SigningIdentity{{ServerName: "hs1.test", KeyID: gomatrixserverlib.KeyID(key.KeyID), PrivateKey: key.PrivateKey}},
					fclient.WithTransport(partner))
				keys := &fakeKeys{}
				e := &E2EE{API: &API{ServerName: "hs1.test", Key: key, Client: client}, Keys: keys, DB: db}
				if _, err := db.Exec(ctx, `INSERT INTO remote_device_lists (user_id, stream_id, stale, updated_ts) VALUES ($1, $2, FALSE, 0)`, bob, tc.cur); err != nil {
					t.Fatal(err)
				}
				for _, d := range []string{"B1", "B2"} {
					if _, err := db.Exec(ctx, `INSERT INTO remote_device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)`, bob, d, keysOf(d)); err != nil {
						t.Fatal(err)
					}
				}
				content := `{"user_id":"` + bob + `",` + tc.edu[1:]
				if err := e.DeviceListUpdate(ctx, "hs2.test", json.RawMessage(content)); err != nil {
					t.Fatal(err)
				}
				var devices []string
				rows, err := db.Query(ctx, `SELECT device_id FROM remote_device_keys WHERE user_id = $1 ORDER BY device_id`, bob)
				if err != nil {
					t.Fatal(err)
				}
				for rows.Next() {
					var d string
					if err := rows.Scan(&d); err != nil {
						t.Fatal(err)
					}
					devices = append(devices, d)
				}
				rows.Close()
				var stream int64
				var stale bool
				if err := db.QueryRow(ctx, `SELECT stream_id, stale FROM remote_device_lists WHERE user_id = $1`, bob).Scan(&stream, &stale); err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(devices, tc.wantDevices) || stream != tc.wantStream || stale != tc.wantStale {
					t.Fatalf("cache = %v stream_id %d stale %v; want %v %d %v", devices, stream, stale, tc.wantDevices, tc.wantStream, tc.wantStale)
				}
				if resynced := partner.tries.Load() > 0; resynced != tc.wantResync {
					t.Fatalf("asked the partner: %v, want %v", resynced, tc.wantResync)
				}
				// local room-mates re-query whatever the cache did
				if !slices.Equal(keys.marked, []string{bob}) {
					t.Fatalf("marked changed: %v", keys.marked)
				}
			})
		})
	}
}

// TestSharingServersAtAChange: a device change goes to the servers that
// share a room with the user now, and to those of rooms the user left
// after the change (a deactivated account leaves its rooms right after
// its devices are deleted).
func TestSharingServersAtAChange(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const alice = "@alice:hs1.test"
		for _, m := range []struct {
			room       int
			user, memb string
			pos        int64
		}{
			{1, alice, "join", 1}, {1, "@bob:hs2.test", "join", 2}, {1, "@ann:hs1.test", "join", 3},
			{2, alice, "leave", 20}, {2, "@carol:hs3.test", "join", 4},
			{3, alice, "join", 5}, {3, "@dave:hs4.test", "leave", 6},
			{4, alice, "ban", 10}, {4, "@erin:hs5.test", "join", 7},
		} {
			if _, err := db.Exec(ctx, `INSERT INTO room_members (room_nid, user_id, membership, event_nid, stream_pos) VALUES ($1, $2, $3, 0, $4)`,
				m.room, m.user, m.memb, m.pos); err != nil {
				t.Fatal(err)
			}
		}
		e := &E2EE{API: &API{ServerName: "hs1.test"}, DB: db}
		for _, tc := range []struct {
			at   int64
			want []string
		}{
			{15, []string{"hs2.test", "hs3.test"}},
			{25, []string{"hs2.test"}},
			{8, []string{"hs2.test", "hs3.test", "hs5.test"}},
		} {
			got, err := e.sharingServers(ctx, alice, tc.at)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("servers sharing a room with alice at %d = %v, want %v", tc.at, got, tc.want)
			}
		}
	})
}
