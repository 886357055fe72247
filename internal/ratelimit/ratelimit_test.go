package ratelimit

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(2, 3) // 2 per second, burst 3
	l.SetClock(func() time.Time { return now })

	for i := range 3 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("request %d within burst refused", i+1)
		}
	}
	ok, wait := l.Allow("a")
	if ok {
		t.Fatal("request past burst allowed")
	}
	if wait != 500*time.Millisecond {
		t.Errorf("retry after %v, want 500ms", wait)
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Error("another address shares the bucket")
	}
	now = now.Add(500 * time.Millisecond)
	if ok, _ := l.Allow("a"); !ok {
		t.Error("token not refilled after 500ms")
	}
	if ok, _ := l.Allow("a"); ok {
		t.Error("second request after one refill allowed")
	}
	// Refill never exceeds burst.
	now = now.Add(time.Hour)
	for i := range 3 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("request %d after long idle refused", i+1)
		}
	}
	if ok, _ := l.Allow("a"); ok {
		t.Error("bucket refilled past burst")
	}
}

func TestLimiterSweep(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(1, 1)
	l.SetClock(func() time.Time { return now })
	l.Allow("a")
	now = now.Add(2 * time.Minute)
	l.Allow("b")
	if _, ok := l.buckets["a"]; ok {
		t.Error("idle full bucket was not swept")
	}
}

func TestNilLimiterAllows(t *testing.T) {
	var l *Limiter
	if ok, _ := l.Allow("x"); !ok {
		t.Error("nil limiter refused")
	}
}
