package turn

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/turn/v5"
)

// LoadConfig describes a relay load run: Calls simulated calls, each two
// relay-only peers sending to each other at Bitrate bits/s per direction.
type LoadConfig struct {
	URI string
	// Secret signs one user per call, so per-user quotas do not cap the run.
	Secret     string
	Calls      int
	Bitrate    int
	PacketSize int
	Duration   time.Duration
}

// LoadResult is what a run measured.
type LoadResult struct {
	Sent, Received int64
	// Mbps is the achieved send rate per call and direction.
	Mbps float64
	// Loss is the lost fraction of sent packets, 0..1.
	Loss float64
	// P50 and P99 are one-way latencies through the relay.
	P50, P99 time.Duration
	// CPU is user+system time of this whole process during the run: an
	// upper bound for the relay when it runs in-process with the peers.
	CPU time.Duration
}

func (r LoadResult) String() string {
	return fmt.Sprintf("sent %d (%.2f Mbit/s per call and direction), received %d, loss %.3f%%, latency p50 %s p99 %s, cpu %s",
		r.Sent, r.Mbps, r.Received, 100*r.Loss, r.P50, r.P99, r.CPU)
}

// Load runs the load described by cfg against the TURN server at cfg.URI.
func Load(ctx context.Context, cfg LoadConfig) (LoadResult, error) {
	if cfg.PacketSize < 16 {
		cfg.PacketSize = 1200
	}
	e, err := ParseURI(cfg.URI)
	if err != nil {
		return LoadResult{}, err
	}
	type peer struct {
		client *turn.Client
		relay  net.PacketConn
	}
	var peers []peer
	defer func() {
		for _, p := range peers {
			p.relay.Close()
			p.client.Close()
		}
	}()
	for i := range cfg.Calls * 2 {
		user := Username(fmt.Sprintf("@load-%d:bench", i/2), time.Now().Add(time.Hour))
		c, err := Dial(ctx, e, user, Password(cfg.Secret, user), nil)
		if err != nil {
			return LoadResult{}, err
		}
		relay, err := c.AllocateWithContext(ctx)
		if err != nil {
			c.Close()
			return LoadResult{}, fmt.Errorf("allocate peer %d: %w", i, err)
		}
		peers = append(peers, peer{c, relay})
	}
	for i := 0; i < len(peers); i += 2 {
		a, b := peers[i], peers[i+1]
		if err := a.client.CreatePermission(b.relay.LocalAddr()); err != nil {
			return LoadResult{}, err
		}
		if err := b.client.CreatePermission(a.relay.LocalAddr()); err != nil {
			return LoadResult{}, err
		}
	}

	var (
		sent, received atomic.Int64
		mu             sync.Mutex
		latencies      []time.Duration
		wg             sync.WaitGroup
	)
	cpuBefore := cpuTime()
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	interval := time.Duration(float64(cfg.PacketSize*8) / float64(cfg.Bitrate) * float64(time.Second))
	for i := range peers {
		from, to := peers[i], peers[i^1]
		wg.Add(2)
		go func() { // sender
			defer wg.Done()
			buf := make([]byte, cfg.PacketSize)
			// Pace by elapsed time, not by ticks: a ticker drops ticks
			// under load and would quietly lower the bitrate.
			tick := time.NewTicker(max(interval, 5*time.Millisecond))
			defer tick.Stop()
			begin, n := time.Now(), int64(0)
			for {
				select {
				case <-runCtx.Done():
					return
				case <-tick.C:
					for due := int64(time.Since(begin) / interval); n < due; n++ {
						binary.BigEndian.PutUint64(buf, uint64(time.Now().UnixNano()))
						if _, err := from.relay.WriteTo(buf, to.relay.LocalAddr()); err == nil {
							sent.Add(1)
						}
					}
				}
			}
		}()
		go func() { // receiver: reads until a grace period after the senders stop
			defer wg.Done()
			buf := make([]byte, 2048)
			var local []time.Duration
			for {
				from.relay.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				n, _, err := from.relay.ReadFrom(buf)
				if err != nil {
					if runCtx.Err() != nil {
						break
					}
					continue
				}
				if n >= 8 {
					received.Add(1)
					local = append(local, time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(buf)))))
				}
			}
			mu.Lock()
			latencies = append(latencies, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res := LoadResult{Sent: sent.Load(), Received: received.Load(), CPU: cpuTime() - cpuBefore}
	if res.Sent == 0 {
		return res, errors.New("nothing was sent")
	}
	res.Mbps = float64(res.Sent*int64(cfg.PacketSize)*8) / cfg.Duration.Seconds() / float64(2*cfg.Calls) / 1e6
	res.Loss = max(0, float64(res.Sent-res.Received)/float64(res.Sent))
	if len(latencies) > 0 {
		slices.Sort(latencies)
		res.P50 = latencies[len(latencies)/2]
		res.P99 = latencies[len(latencies)*99/100]
	}
	return res, nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
