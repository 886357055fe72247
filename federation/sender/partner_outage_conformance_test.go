package sender

import (
	"context"
	"encoding/json"
	"testing"

	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
	"praxis/internal/streams"
)

// PartnerUp clears a destination's persisted backoff — whichever process
// holds its lease reads the row on its next round — and wakes this
// process's sender; anything else stays as it was.
func TestPartnerUpEndsBackoff(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, err := db.Exec(ctx, `INSERT INTO federation_destinations (server_name, sent_pos, failures, retry_at_ts, lease_owner, lease_until_ts) VALUES
			('down.test', 5, 12, 9999999999999, 'other-process', 9999999999999),
			('fine.test', 7, 0, 0, '', 0),
			('other.test', 3, 4, 9999999999999, '', 0)`); err != nil {
			t.Fatal(err)
		}
		// the process that hears from the partner is not the one holding
		// its lease
		s := New(db, nil, allowAll{}, streams.NewNotifier(0), "hs1.test")
		for _, tc := range []struct {
			name       string
			server     string
			wantWake   bool
			wantFail   int64
			wantRetry  int64
			wantLeased string
		}{
			{"backing off: cleared, lease kept", "down.test", true, 0, 0, "other-process"},
			{"not backing off: untouched", "fine.test", false, 0, 0, ""},
			{"never queued for: nothing to do", "new.test", false, -1, -1, ""},
			{"our own name: ignored", "hs1.test", false, -1, -1, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				select { // drain an earlier wake-up
				case <-s.wakeCh:
				default:
				}
				s.PartnerUp(ctx, tc.server)
				woke := false
				select {
				case <-s.wakeCh:
					woke = true
				default:
				}
				if woke != tc.wantWake {
					t.Errorf("woke = %v, want %v", woke, tc.wantWake)
				}
				failures, retryAt := int64(-1), int64(-1)
				var owner string
				db.QueryRow(ctx, `SELECT failures, retry_at_ts, lease_owner FROM federation_destinations WHERE server_name = $1`, tc.server).
					Scan(&failures, &retryAt, &owner)
				if failures != tc.wantFail || retryAt != tc.wantRetry || owner != tc.wantLeased {
					t.Errorf("row = (%d, %d, %q), want (%d, %d, %q)", failures, retryAt, owner, tc.wantFail, tc.wantRetry, tc.wantLeased)
				}
			})
		}
		var failures int64
		db.QueryRow(ctx, `SELECT failures FROM federation_destinations WHERE server_name = 'other.test'`).Scan(&failures)
		if failures != 4 {
			t.Errorf("another destination's failures = %d, want 4 (untouched)", failures)
		}
	})
}

// A transaction ID names one batch: a retry of the batch keeps it (the
// receiver deduplicates), any other batch — even one reusing a delivered
// EDU's row number — and any other process gets a new one.
func TestTransactionIDs(t *testing.T) {
	a := New(nil, nil, allowAll{}, streams.NewNotifier(0), "hs1.test")
	b := New(nil, nil, allowAll{}, streams.NewNotifier(0), "hs1.test")
	pdu := []json.RawMessage{json.RawMessage(`{"type":"m.room.message"}`)}

	first := a.txnID("hs2.test", nil, []int64{1})
	if again := a.txnID("hs2.test", nil, []int64{1}); again != first {
		t.Errorf("retry of the same batch: ID %q, want %q", again, first)
	}
	if other := a.txnID("hs3.test", nil, []int64{1}); other == first {
		t.Errorf("another destination reuses %q", first)
	}
	if withPDU := a.txnID("hs2.test", pdu, []int64{1}); withPDU == first {
		t.Errorf("a batch with another PDU reuses %q", first)
	}
	// delivered (deliver forgets the batch), then the queue's next EDU
	// gets row number 1 again
	a.mu.Lock()
	delete(a.txns, "hs2.test")
	a.mu.Unlock()
	if next := a.txnID("hs2.test", nil, []int64{1}); next == first {
		t.Errorf("the next batch after a delivery reuses %q", first)
	}
	if fromB := b.txnID("hs2.test", nil, []int64{1}); fromB == first {
		t.Errorf("another process reuses %q", first)
	}
}
