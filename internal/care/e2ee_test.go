package care_test

// The product's acceptance flow with real Olm/Megolm: mautrix-go crypto
// clients (pure-Go goolm, build tag goolm) on the in-process server. The
// server never reads messages, so the claim must work out through who the
// patient's client encrypts for: the staff invited into the coupling room.

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/care"
	"praxis/internal/hstest"
)

// e2eeClient is a device with its own Olm account, syncing in the
// background and recording what it could decrypt.
type e2eeClient struct {
	*mautrix.Client
	mu        sync.Mutex
	decrypted map[id.EventID]string
	// machMu serialises the test's sends with sync processing (mautrix's
	// OlmMachine is not safe for both at once).
	machMu sync.Mutex
}

type lockedSyncer struct {
	*mautrix.DefaultSyncer
	mu *sync.Mutex
}

func (l *lockedSyncer) ProcessResponse(ctx context.Context, resp *mautrix.RespSync, since string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.DefaultSyncer.ProcessResponse(ctx, resp, since)
}

func newE2EEClient(t *testing.T, c *mautrix.Client) *e2eeClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e := &e2eeClient{Client: c, decrypted: map[id.EventID]string{}}
	c.StateStore = mautrix.NewMemoryStateStore()
	syncer := c.Syncer.(*mautrix.DefaultSyncer)
	c.Syncer = &lockedSyncer{DefaultSyncer: syncer, mu: &e.machMu}
	h, err := cryptohelper.NewCryptoHelper(c, []byte("praxis care test"), crypto.NewMemoryStore(nil))
	if err != nil {
		t.Fatalf("crypto helper: %v", err)
	}
	syncer.OnEvent(c.StateStoreSyncHandler)
	if err := h.Init(ctx); err != nil {
		t.Fatalf("crypto init for %s: %v", c.UserID, err)
	}
	c.Crypto = h
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

func (e *e2eeClient) send(t *testing.T, room id.RoomID, body string) id.EventID {
	t.Helper()
	e.machMu.Lock()
	resp, err := e.SendMessageEvent(context.Background(), room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
	e.machMu.Unlock()
	if err != nil {
		t.Fatalf("%s sends: %v", e.UserID, err)
	}
	return resp.EventID
}

func (e *e2eeClient) waitDecrypt(t *testing.T, evt id.EventID, want string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s to decrypt %q", e.UserID, want), func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.decrypted[evt] == want
	})
}

// waitMembers waits until the client's state store has the room as
// encrypted with every user joined or invited, so encryption covers them.
func (e *e2eeClient) waitMembers(t *testing.T, room id.RoomID, users ...id.UserID) {
	t.Helper()
	ctx := context.Background()
	waitFor(t, string(e.UserID)+" to see the coupling room's members", func() bool {
		// the memory state store is written by sync processing without a lock
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

// TestAcceptanceClaimerDecryptsFirstMessage is issue 6's acceptance
// flow: a patient couples with a one-time code from a stock client, the
// request lands on the board, a doctor claims it and reads the patient's
// first, encrypted message; a colleague's later claim is refused and the
// code cannot be used again.
func TestAcceptanceClaimerDecryptsFirstMessage(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		n := newPractice(t, srv, "mueller", map[string]string{"drx": care.RoleDoctor, "mfa": care.RoleAssistant})
		drx, mfa := newE2EEClient(t, n.staff["drx"]), newE2EEClient(t, n.staff["mfa"])
		code := n.code(t, care.CodePatient)
		patient := newE2EEClient(t, srv.Register(t, "anna"))

		room := couple(t, patient.Client, code)
		patient.waitMembers(t, room, patient.UserID, drx.UserID, mfa.UserID)
		first := patient.send(t, room, "Ich habe seit drei Tagen Fieber")

		var claimed care.Request
		if err := praxis(drx.Client, http.MethodPost, "/board/"+room.String()+"/claim", &claimed); err != nil {
			t.Fatalf("claim: %v", err)
		}
		drx.waitDecrypt(t, first, "Ich habe seit drei Tagen Fieber")

		err := praxis(mfa.Client, http.MethodPost, "/board/"+room.String()+"/claim", nil)
		if err == nil || !strings.Contains(err.Error(), care.ErrCodeClaimed) {
			t.Errorf("colleague's later claim: %v, want %s", err, care.ErrCodeClaimed)
		}

		// the conversation goes on both ways
		drx.waitMembers(t, room, patient.UserID, drx.UserID)
		reply := drx.send(t, room, "Bitte kommen Sie morgen um 9 Uhr")
		patient.waitDecrypt(t, reply, "Bitte kommen Sie morgen um 9 Uhr")

		// the server holds only ciphertext of the conversation
		rows, err := srv.DB.Query(ctx, `SELECT e.json FROM events e JOIN rooms r ON r.room_nid = e.room_nid WHERE r.room_id = $1`, room.String())
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var js string
			if err := rows.Scan(&js); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(js, "Fieber") || strings.Contains(js, "9 Uhr") {
				t.Fatalf("plaintext in the database: %s", js)
			}
		}

		other := srv.Register(t, "bernd")
		if _, err := other.JoinRoom(ctx, "#couple-"+code+":hs1.test", nil); hstest.ErrCode(err) != "M_FORBIDDEN" {
			t.Errorf("reusing the one-time code: %v, want M_FORBIDDEN", err)
		}
	}, enforce)
}
