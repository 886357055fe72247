package main

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
)

// TestSIGTERMAnswersLongPolls: a client's /sync long-poll must not hold a
// restart up. On SIGTERM the waiting request is answered at once, as if
// its timeout had passed (200 with the unchanged position), and the
// process exits well before the long-poll's timeout.
func TestSIGTERMAnswersLongPolls(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	args := fmt.Sprintf("--data-dir %s --listen-client %s --server-name hs1", dir, addr)
	p := startPraxis(t, args, "PRAXIS_REGISTRATION_OPEN=true", "PRAXIS_RATELIMIT_ENABLED=false", "PRAXIS_LOG_LEVEL=warn")
	p.waitReady(t, addr)
	ctx := context.Background()
	c, err := mautrix.NewClient(p.url, "", "")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := c.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: "alice-password-1"})
	if err != nil {
		t.Fatal(err)
	}
	c.SetCredentials(reg.UserID, reg.AccessToken)
	first, err := c.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		next string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := c.SyncRequest(ctx, 30000, first.NextBatch, "", false, "")
		if err != nil {
			got <- result{err: err}
			return
		}
		got <- result{next: resp.NextBatch}
	}()
	time.Sleep(300 * time.Millisecond) // the long-poll is waiting now
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("long-poll during shutdown: %v", r.err)
		}
		if r.next == "" {
			t.Fatal("long-poll answered without next_batch")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the long-poll was not answered within 5 s of SIGTERM")
	}
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v; stderr:\n%s", err, p.stderr)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("praxis did not exit within 5 s of SIGTERM with a long-poll open")
	}
	t.Logf("long-poll answered and process gone %v after SIGTERM", time.Since(start))
}
