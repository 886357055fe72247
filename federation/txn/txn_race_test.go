package txn_test

import (
	"context"
	"sync"
	"testing"

	"praxis/internal/hstest"
	"praxis/roomserver"
)

// The same event may be input twice at once (it came from two servers,
// or a join made through another server races that server's
// transaction). Exactly one input stores it; the others answer duplicate,
// none fails — a failure would reach the client or make the sender retry.
func TestSameEventInputConcurrently(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, func(t *testing.T, n *hstest.Network) {
		_, hs1, hs2, _, room := setup(t, n)
		key, keyID := hs1.SigningKey.PrivateKey, hs1.SigningKey.KeyID
		bob := "@bob:hs1.test"
		join := room.build("hs1.test", keyID, key, bob, "m.room.member", &bob, map[string]any{"membership": "join"})
		const inputs = 6
		outcomes := make(chan roomserver.InputOutcome, inputs)
		errs := make(chan error, inputs)
		var wg sync.WaitGroup
		for range inputs {
			wg.Add(1)
			// each input its own copy, as from two transactions
			pdu, err := room.ver.NewEventFromTrustedJSON(join.JSON(), false)
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				defer wg.Done()
				o, err := hs2.Rooms.InputPDU(context.Background(), pdu, nil)
				if err != nil {
					errs <- err
					return
				}
				outcomes <- o
			}()
		}
		wg.Wait()
		close(errs)
		close(outcomes)
		for err := range errs {
			t.Errorf("concurrent input of one event failed: %v", err)
		}
		count := map[roomserver.InputOutcome]int{}
		for o := range outcomes {
			count[o]++
		}
		if count[roomserver.InputAccepted] != 1 || count[roomserver.InputDuplicate] != inputs-1 {
			t.Errorf("outcomes %v, want one accepted and %d duplicates", count, inputs-1)
		}
		if m, _ := hs2.Rooms.Membership(context.Background(), room.roomID, bob); m != "join" {
			t.Errorf("bob's membership = %q, want join", m)
		}
	})
}
