package keyserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"praxis/internal/hstest"
)

// Benchmarks of issue 3 through the real HTTP stack on SQLite:
//
//	go test -tags goolm -run ^$ -bench . ./crypto/keyserver/
//
// Targets on the 2-core machine: claim ≥ 1,000/s, upload of 50 one-time
// keys ≥ 300/s, to-device fan-out to 50 devices p99 ≤ 50 ms.

func rawReq(b testing.TB, c *mautrix.Client, method string, path []any, body any) json.RawMessage {
	u := c.BuildClientURL(append([]any{"v3"}, path...)...)
	out, err := c.MakeFullRequest(context.Background(), mautrix.FullRequest{Method: method, URL: u, RequestJSON: body, MaxAttempts: 1})
	if err != nil {
		b.Fatalf("%s %v: %v", method, path, err)
	}
	return out
}

func otkBatch(from, n int) map[string]any {
	keys := map[string]any{}
	for i := from; i < from+n; i++ {
		keys[fmt.Sprintf("signed_curve25519:%08d", i)] = map[string]any{"key": fmt.Sprintf("key%d", i), "signatures": map[string]any{}}
	}
	return keys
}

// BenchmarkKeysUpload50 uploads 50 one-time keys per request, each to its
// own device, as a client does after login or when its stock runs low (a
// device holds at most ~100 unclaimed keys, so one device receiving every
// upload would measure an unrealistic table).
func BenchmarkKeysUpload50(b *testing.B) {
	srv := hstest.New(b)
	srv.Register(b, "alice")
	clients := make([]*mautrix.Client, b.N)
	for i := range clients {
		clients[i] = srv.Login(b, "alice")
	}
	var n atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(n.Add(1)) - 1
			rawReq(b, clients[i], http.MethodPost, []any{"keys", "upload"}, map[string]any{"one_time_keys": otkBatch(0, 50)})
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "uploads/s")
}

func BenchmarkKeysClaim(b *testing.B) {
	srv := hstest.New(b)
	alice := srv.Register(b, "alice")
	for i := 0; i < b.N; i += 500 {
		rawReq(b, alice, http.MethodPost, []any{"keys", "upload"}, map[string]any{"one_time_keys": otkBatch(i, 500)})
	}
	bob := srv.Register(b, "bob")
	body := map[string]any{"one_time_keys": map[string]any{alice.UserID.String(): map[string]string{alice.DeviceID.String(): "signed_curve25519"}}}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rawReq(b, bob, http.MethodPost, []any{"keys", "claim"}, body)
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "claims/s")
}

func BenchmarkKeysQuery50Users(b *testing.B) {
	srv := hstest.New(b)
	users := map[string][]string{}
	var last *mautrix.Client
	for i := 0; i < 50; i++ {
		c := srv.Register(b, fmt.Sprintf("user%d", i))
		dev := signedDeviceKeysFor(b, c.UserID.String(), c.DeviceID.String())
		rawReq(b, c, http.MethodPost, []any{"keys", "upload"}, map[string]any{"device_keys": dev})
		users[c.UserID.String()] = []string{}
		last = c
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rawReq(b, last, http.MethodPost, []any{"keys", "query"}, map[string]any{"device_keys": users})
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
}

// BenchmarkToDeviceFanout50 measures send → visible in the inbox of all 50
// recipient devices (what /sync reads), reporting the p99 latency.
func BenchmarkToDeviceFanout50(b *testing.B) {
	srv := hstest.New(b)
	sender := srv.Register(b, "sender")
	bob := srv.Register(b, "bob")
	devices := []*mautrix.Client{bob}
	for i := 1; i < 50; i++ {
		devices = append(devices, srv.Login(b, "bob"))
	}
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	body := map[string]any{"messages": map[string]any{bob.UserID.String(): map[string]any{"*": map[string]any{"k": "v"}}}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		since, _ := srv.DB.StreamHead(ctx)
		start := time.Now()
		rawReq(b, sender, http.MethodPut, []any{"sendToDevice", "m.bench", fmt.Sprintf("t%d", i)}, body)
		pos := srv.Notifier.Wait(ctx, since)
		for _, d := range devices {
			msgs, _, err := srv.E2EE.ToDevice(ctx, d.UserID.String(), d.DeviceID.String(), since, pos, 10)
			if err != nil || len(msgs) != 1 {
				b.Fatalf("device %s: %d messages, %v", d.DeviceID, len(msgs), err)
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
