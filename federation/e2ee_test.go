package federation_test

// The federation acceptance test of issue 5 with real Olm/Megolm:
// mautrix-go goolm crypto clients on two in-process servers that federate
// through hstest.NewNetwork.

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// newE2EEClient is an hstest.CryptoClient whose waits keep this package's
// waitFor deadline (membership_test.go).
func newE2EEClient(t *testing.T, c *mautrix.Client) *hstest.CryptoClient {
	t.Helper()
	e := hstest.NewCryptoClient(t, c)
	e.Timeout = 15 * time.Second
	return e
}

// A practice on hs1 invites a practice on hs2 into an encrypted room;
// both send and decrypt; hs2's new device gets keys over federation
// (device-list EDU, remote /keys/query and /keys/claim, to-device EDUs);
// a colleague who joins later sees the earlier history.
func TestFederatedE2EE(t *testing.T) { eachNetwork(t, testFederatedE2EE) }

func testFederatedE2EE(t *testing.T, n *hstest.Network) {
	ctx := context.Background()
	hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
	gp := newE2EEClient(t, hs1.Register(t, "gp"))
	cardio := newE2EEClient(t, hs2.Register(t, "cardio"))

	var created *mautrix.RespCreateRoom
	if err := gp.Locked(func() (err error) {
		created, err = gp.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Konsil"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if err := gp.Locked(func() error {
		_, err := gp.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: cardio.UserID})
		return err
	}); err != nil {
		t.Fatalf("invite: %v", err)
	}
	if err := cardio.Locked(func() error { _, err := cardio.JoinRoomByID(ctx, room); return err }); err != nil {
		t.Fatalf("join: %v", err)
	}
	gp.WaitRoom(t, room, gp, cardio)
	cardio.WaitRoom(t, room, gp, cardio)

	e1 := gp.Send(t, room, "EKG anbei")
	cardio.WaitDecrypt(t, e1, "EKG anbei")
	e2 := cardio.Send(t, room, "Befund folgt")
	gp.WaitDecrypt(t, e2, "Befund folgt")

	cardio2 := newE2EEClient(t, hs2.Login(t, "cardio"))
	cardio2.WaitRoom(t, room, gp, cardio)
	waitFor(t, "hs1's client to learn hs2's new device", func() bool {
		dev, _ := gp.Store.GetDevice(ctx, cardio.UserID, cardio2.DeviceID)
		return dev != nil
	})
	e3 := gp.Send(t, room, "nachher")
	cardio.WaitDecrypt(t, e3, "nachher")
	cardio2.WaitDecrypt(t, e3, "nachher")

	// A colleague on hs2 joins later and sees the history (as ciphertext:
	// room keys reach devices that existed when they were shared).
	colleague := hs2.Register(t, "assist")
	if err := cardio.Locked(func() error {
		_, err := cardio.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: colleague.UserID})
		return err
	}); err != nil {
		t.Fatalf("invite colleague: %v", err)
	}
	if _, err := colleague.JoinRoomByID(ctx, room); err != nil {
		t.Fatalf("colleague joins: %v", err)
	}
	resp, err := colleague.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[id.EventID]bool{}
	for _, ev := range resp.Chunk {
		seen[ev.ID] = true
	}
	for _, want := range []id.EventID{e1, e2, e3} {
		if !seen[want] {
			t.Fatalf("the later joiner does not see %s in the history", want)
		}
	}
	// and hs1 sees the colleague join through federation
	waitFor(t, "hs1 to see the colleague's join", func() bool { return membershipOf(ctx, gp.Client, room, colleague.UserID) == "join" })
}

// hs1 caches hs2's users' keys: the device-list EDU for a new device
// updates the cache without a query, and while hs2 is down the cached
// keys are still served.
func TestRemoteKeysCachedAndFollowedByEDUs(t *testing.T) {
	ctx := context.Background()
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
	alice := hs1.Register(t, "alice")
	bob := newE2EEClient(t, hs2.Register(t, "bob"))
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.Locked(func() error {
		_, err := bob.JoinRoom(ctx, created.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	devices := func() (int, map[string]any) {
		resp, err := alice.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{bob.UserID: {}}})
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.DeviceKeys[bob.UserID]), resp.Failures
	}
	if got, failures := devices(); got != 1 || len(failures) != 0 {
		t.Fatalf("bob's devices seen from hs1: %d (failures %v), want 1", got, failures)
	}
	cached := func() int {
		var c int
		if err := hs1.DB.QueryRow(ctx, `SELECT COUNT(*) FROM remote_device_keys WHERE user_id = $1`, bob.UserID.String()).Scan(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	newE2EEClient(t, hs2.Login(t, "bob"))
	waitFor(t, "the device-list EDU to reach hs1's cache", func() bool { return cached() == 2 })
	mach := bob.Crypto.(*cryptohelper.CryptoHelper).Machine()
	if err := bob.Locked(func() error {
		_, _, err := mach.GenerateAndUploadCrossSigningKeysWithPassword(ctx, "password-bob", "")
		return err
	}); err != nil {
		t.Fatalf("cross-signing keys: %v", err)
	}
	waitFor(t, "the signing-key EDU to reach hs1's cache", func() bool {
		var c int
		_ = hs1.DB.QueryRow(ctx, `SELECT COUNT(*) FROM remote_cross_signing_keys WHERE user_id = $1 AND key_type = 'master'`, bob.UserID.String()).Scan(&c)
		return c == 1
	})

	n.SetDown("hs2.test", true)
	if got, failures := devices(); got != 2 || len(failures) != 0 {
		t.Fatalf("with hs2 down hs1 serves %d devices (failures %v), want the 2 cached", got, failures)
	}
	if resp, err := alice.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{bob.UserID: {}}}); err != nil || resp.MasterKeys[bob.UserID].UserID != bob.UserID {
		t.Fatalf("with hs2 down bob's master key is not served from the cache: %v", err)
	}
	// a user hs1 never cached is a failure while hs2 is down
	resp, err := alice.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{"@nobody:hs2.test": {}}})
	if err != nil || resp.Failures["hs2.test"] == nil {
		t.Fatalf("uncached user with hs2 down: failures %v, %v; want hs2.test", resp.Failures, err)
	}
	n.SetDown("hs2.test", false)
}
