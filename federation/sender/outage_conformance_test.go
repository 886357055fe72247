package sender_test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// toDeviceInbox collects the to-device messages of one client across
// incremental syncs (a message is gone once a sync acknowledged it).
type toDeviceInbox struct {
	c     *mautrix.Client
	since string
	got   []string // "type:key" of every message seen
}

func (b *toDeviceInbox) poll(t *testing.T) {
	t.Helper()
	resp, err := b.c.SyncRequest(context.Background(), 0, b.since, "", false, event.PresenceOnline)
	if err != nil {
		t.Logf("sync: %v", err)
		return
	}
	b.since = resp.NextBatch
	for _, ev := range resp.ToDevice.Events {
		k, _ := ev.Content.Raw["key"].(string)
		b.got = append(b.got, ev.Type.Type+":"+k)
	}
}

func (b *toDeviceInbox) has(t *testing.T, want string) bool {
	b.poll(t)
	for _, g := range b.got {
		if g == want {
			return true
		}
	}
	return false
}

func sendToDevice(t *testing.T, from, to *mautrix.Client, key string) {
	t.Helper()
	if _, err := from.SendToDevice(context.Background(), event.NewEventType("org.praxis.test"), &mautrix.ReqSendToDevice{
		Messages: map[id.UserID]map[id.DeviceID]*event.Content{to.UserID: {to.DeviceID: {Raw: map[string]any{"key": key}}}},
	}); err != nil {
		t.Fatalf("send to-device %s: %v", key, err)
	}
}

// Complement TestToDeviceMessagesOverFederation: a to-device message
// queued while the partner is down arrives once it is back, also when an
// earlier message had emptied the queue and nothing else moved the stream
// since. (Transaction IDs were built from stream positions and the EDU's
// row number; SQLite numbers a row again once the queue is empty, so the
// second message went out under the first one's ID and the partner
// dropped it as a retry.)
func TestToDeviceQueuedDuringOutageArrives(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, testToDeviceQueuedDuringOutageArrives)
}

func testToDeviceQueuedDuringOutageArrives(t *testing.T, n *hstest.Network) {
	ctx := context.Background()
	hs1 := n.Server("hs1.test")
	alice, bob := hs1.Register(t, "alice"), n.Server("hs2.test").Register(t, "bob")
	inbox := &toDeviceInbox{c: bob}
	inbox.poll(t)

	for _, step := range []struct {
		name string
		down bool
	}{
		{"good connectivity", false},
		{"partner down while sending", true},
		{"down again", true},
	} {
		key := step.name
		if step.down {
			n.SetDown("hs2.test", true)
		}
		sendToDevice(t, alice, bob, key)
		if step.down {
			waitFor(t, 10*time.Second, step.name+": a failed attempt", func() bool {
				var failures int64
				hs1.DB.QueryRow(ctx, `SELECT failures FROM federation_destinations WHERE server_name = 'hs2.test'`).Scan(&failures)
				return failures > 0
			})
			n.SetDown("hs2.test", false)
		}
		waitFor(t, 20*time.Second, step.name+": the message on hs2", func() bool { return inbox.has(t, "org.praxis.test:"+key) })
	}
}

// A partner that was down long enough for the backoff to grow to its cap
// gets what is queued as soon as it sends us a signed request, not when
// the backoff ends: its request shows it is up.
func TestBackoffEndsWhenPartnerIsHeardFrom(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, testBackoffEndsWhenPartnerIsHeardFrom)
}

func testBackoffEndsWhenPartnerIsHeardFrom(t *testing.T, n *hstest.Network) {
	ctx := context.Background()
	hs1 := n.Server("hs1.test")
	alice, bob := hs1.Register(t, "alice"), n.Server("hs2.test").Register(t, "bob")
	inbox := &toDeviceInbox{c: bob}
	inbox.poll(t)

	n.SetDown("hs2.test", true)
	sendToDevice(t, alice, bob, "queued")
	waitFor(t, 10*time.Second, "a failed attempt", func() bool {
		var failures int64
		hs1.DB.QueryRow(ctx, `SELECT failures FROM federation_destinations WHERE server_name = 'hs2.test'`).Scan(&failures)
		return failures > 0
	})
	// as after an hour of failures: the next attempt is minutes away
	if _, err := hs1.DB.Exec(ctx, `UPDATE federation_destinations SET failures = 13, retry_at_ts = $1 WHERE server_name = 'hs2.test'`,
		time.Now().Add(time.Hour).UnixMilli()); err != nil {
		t.Fatal(err)
	}
	n.SetDown("hs2.test", false)
	// the backoff holds while hs2 is silent (several sender rounds)
	time.Sleep(2500 * time.Millisecond)
	if inbox.has(t, "org.praxis.test:queued") {
		t.Fatal("delivered before the backoff ended or hs2 was heard from: the test shows nothing")
	}
	// bob looks alice up: hs2 sends hs1 a signed profile query
	if _, err := bob.GetProfile(ctx, alice.UserID); err != nil {
		t.Fatalf("remote profile query: %v", err)
	}
	waitFor(t, 10*time.Second, "the queued message on hs2 after hs2 was heard from", func() bool {
		return inbox.has(t, "org.praxis.test:queued")
	})
	var failures, retryAt int64
	hs1.DB.QueryRow(ctx, `SELECT failures, retry_at_ts FROM federation_destinations WHERE server_name = 'hs2.test'`).Scan(&failures, &retryAt)
	if failures != 0 || retryAt != 0 {
		t.Errorf("hs2's backoff after delivery: failures %d, retry_at_ts %d, want 0, 0", failures, retryAt)
	}
}
