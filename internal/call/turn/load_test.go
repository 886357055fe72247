package turn

import (
	"context"
	"testing"
	"time"
)

func TestLoadSmall(t *testing.T) {
	r, _ := startRelay(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	res, err := Load(ctx, LoadConfig{URI: udpURI(r), Secret: testSecret, Calls: 2, Bitrate: 200_000, Duration: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// A lightly loaded loopback relay loses nothing; allow a little for a
	// busy CI machine, but a broken relay path receives nothing.
	if res.Received == 0 || res.Loss > 0.2 {
		t.Fatalf("load run: %s", res)
	}
}

// BenchmarkRelay20Calls is the target: 20 relayed calls at
// 1.5 Mbit/s per direction, 0 % loss and under one core. Run with
// go test -tags goolm -run '^$' -bench Relay20Calls ./internal/call/turn/
func BenchmarkRelay20Calls(b *testing.B) {
	r, _ := startRelay(b, nil)
	res, err := Load(context.Background(), LoadConfig{URI: udpURI(r), Secret: testSecret, Calls: 20, Bitrate: 1_500_000, Duration: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(100*res.Loss, "loss%")
	b.ReportMetric(float64(res.P99.Microseconds()), "p99-µs")
	b.ReportMetric(res.CPU.Seconds()/5, "cores")
	b.Logf("%s", res)
}
