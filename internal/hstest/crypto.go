//go:build goolm

package hstest

// An end-to-end encrypting test client: mautrix-go's crypto with the
// pure-Go goolm backend (build tag goolm), shared by the acceptance tests
// that need real Olm/Megolm.

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// DefaultWaitTimeout is how long a CryptoClient's waits poll by default.
const DefaultWaitTimeout = 20 * time.Second

// CryptoClient is a logged-in device with its own Olm account, syncing in
// the background and recording the messages it could decrypt.
type CryptoClient struct {
	*mautrix.Client
	Helper *cryptohelper.CryptoHelper
	Store  *crypto.MemoryStore
	// Timeout bounds WaitRoom, WaitMembers and WaitDecrypt.
	Timeout time.Duration

	mu        sync.Mutex
	decrypted map[id.EventID]string // event ID → body
	failed    map[id.EventID]error

	// machMu serialises the test's own crypto calls with sync processing:
	// mautrix's OlmMachine caches cross-signing keys without a lock, so a
	// send racing a device-list update trips the race detector (a client
	// library issue, not a server one), and the memory state store is
	// written by sync processing without a lock.
	machMu sync.Mutex
}

// lockedSyncer processes sync responses under the client's machMu.
type lockedSyncer struct {
	*mautrix.DefaultSyncer
	mu *sync.Mutex
}

func (l *lockedSyncer) ProcessResponse(ctx context.Context, resp *mautrix.RespSync, since string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.DefaultSyncer.ProcessResponse(ctx, resp, since)
}

// NewCryptoClient gives c a crypto helper on a memory store and syncs it
// in the background until the test ends.
func NewCryptoClient(t *testing.T, c *mautrix.Client) *CryptoClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e := &CryptoClient{Client: c, Store: crypto.NewMemoryStore(nil), Timeout: DefaultWaitTimeout,
		decrypted: map[id.EventID]string{}, failed: map[id.EventID]error{}}
	c.StateStore = mautrix.NewMemoryStateStore()
	syncer := c.Syncer.(*mautrix.DefaultSyncer)
	c.Syncer = &lockedSyncer{DefaultSyncer: syncer, mu: &e.machMu}
	h, err := cryptohelper.NewCryptoHelper(c, []byte("praxis test pickle key"), e.Store)
	if err != nil {
		t.Fatalf("crypto helper: %v", err)
	}
	h.DecryptErrorCallback = func(evt *event.Event, err error) {
		e.mu.Lock()
		e.failed[evt.ID] = err
		e.mu.Unlock()
	}
	syncer.OnEvent(c.StateStoreSyncHandler)
	if err := h.Init(ctx); err != nil {
		t.Fatalf("crypto init for %s/%s: %v", c.UserID, c.DeviceID, err)
	}
	c.Crypto = h
	e.Helper = h
	syncer.OnEventType(event.EventMessage, func(ctx context.Context, evt *event.Event) {
		if evt.Mautrix.EventSource&event.SourceDecrypted == 0 {
			return
		}
		e.mu.Lock()
		e.decrypted[evt.ID] = evt.Content.AsMessage().Body
		e.mu.Unlock()
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if err := c.SyncWithContext(ctx); err != nil && ctx.Err() == nil {
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return e
}

// WaitFor polls cond until it holds, failing the test once timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Locked runs fn (a crypto call or one that touches the state store)
// while no sync response is being processed, and returns its error.
func (e *CryptoClient) Locked(fn func() error) error {
	e.machMu.Lock()
	defer e.machMu.Unlock()
	return fn()
}

// Body is the decrypted body of evt, if the client decrypted it.
func (e *CryptoClient) Body(evt id.EventID) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	b, ok := e.decrypted[evt]
	return b, ok
}

// DecryptError is the error decrypting evt during sync, if it failed.
func (e *CryptoClient) DecryptError(evt id.EventID) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.failed[evt]
}

// WaitRoom waits until the client's state store has the room as
// encrypted with every given client joined, so encryption targets them all.
func (e *CryptoClient) WaitRoom(t *testing.T, room id.RoomID, members ...*CryptoClient) {
	t.Helper()
	ctx := context.Background()
	WaitFor(t, e.Timeout, string(e.UserID)+" to see the encrypted room with everyone", func() bool {
		e.machMu.Lock()
		defer e.machMu.Unlock()
		if enc, _ := e.StateStore.IsEncrypted(ctx, room); !enc {
			return false
		}
		for _, m := range members {
			if !e.StateStore.IsInRoom(ctx, room, m.UserID) {
				return false
			}
		}
		return true
	})
}

// WaitMembers waits until the client's state store has the room as
// encrypted with every user joined or invited, so encryption covers them.
func (e *CryptoClient) WaitMembers(t *testing.T, room id.RoomID, users ...id.UserID) {
	t.Helper()
	ctx := context.Background()
	WaitFor(t, e.Timeout, string(e.UserID)+" to see the room's members", func() bool {
		e.machMu.Lock()
		defer e.machMu.Unlock()
		if enc, _ := e.StateStore.IsEncrypted(ctx, room); !enc {
			return false
		}
		members, _ := e.StateStore.GetRoomJoinedOrInvitedMembers(ctx, room)
		for _, u := range users {
			found := false
			for _, m := range members {
				found = found || m == u
			}
			if !found {
				return false
			}
		}
		return true
	})
}

// Send sends an encrypted text message and returns its event ID.
func (e *CryptoClient) Send(t *testing.T, room id.RoomID, body string) id.EventID {
	t.Helper()
	var resp *mautrix.RespSendEvent
	err := e.Locked(func() (err error) {
		resp, err = e.SendMessageEvent(context.Background(), room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
		return err
	})
	if err != nil {
		t.Fatalf("%s/%s sends: %v", e.UserID, e.DeviceID, err)
	}
	return resp.EventID
}

// WaitDecrypt waits until the client decrypted evt with body want.
func (e *CryptoClient) WaitDecrypt(t *testing.T, evt id.EventID, want string) {
	t.Helper()
	WaitFor(t, e.Timeout, fmt.Sprintf("%s/%s to decrypt %q", e.UserID, e.DeviceID, want), func() bool {
		b, ok := e.Body(evt)
		return ok && b == want
	})
}
