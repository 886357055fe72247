package streams

import (
	"context"
	"testing"
	"time"
)

func TestWaitReturnsAtOnceWhenAhead(t *testing.T) {
	n := NewNotifier(5)
	if got := n.Wait(context.Background(), 4); got != 5 {
		t.Fatalf("Wait = %d, want 5", got)
	}
}

func TestPublishWakesWaiter(t *testing.T) {
	n := NewNotifier(1)
	got := make(chan int64)
	go func() { got <- n.Wait(context.Background(), 1) }()
	time.Sleep(10 * time.Millisecond)
	n.Publish(3)
	select {
	case p := <-got:
		if p != 3 {
			t.Fatalf("woke with %d, want 3", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter not woken")
	}
}

func TestPublishKeepsHighest(t *testing.T) {
	n := NewNotifier(0)
	n.Publish(7)
	n.Publish(4)
	if p := n.Position(); p != 7 {
		t.Fatalf("Position = %d, want 7", p)
	}
}

func TestWaitHonoursContext(t *testing.T) {
	n := NewNotifier(2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if got := n.Wait(ctx, 2); got != 2 {
		t.Fatalf("Wait after timeout = %d, want 2", got)
	}
}
