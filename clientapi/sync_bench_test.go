package clientapi_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
	"praxis/roomserver"
)

// BenchmarkSync measures the sync targets on SQLite: an initial
// sync of 100 rooms with 20 messages each (target ≤ 100 ms) and an empty
// incremental sync (target ≤ 2 ms).
func BenchmarkSync(b *testing.B) {
	srv := hstest.New(b)
	ctx := context.Background()
	alice := srv.Register(b, "alice")
	for r := range 100 {
		res, err := srv.Rooms.CreateRoom(ctx, roomserver.CreateRoomRequest{Creator: string(alice.UserID), RoomVersion: "10",
			Preset: roomserver.PresetPrivateChat})
		if err != nil {
			b.Fatal(err)
		}
		for i := range 20 {
			if _, err := srv.Rooms.Send(ctx, roomserver.SendRequest{RoomID: res.RoomID, Sender: string(alice.UserID),
				Type: "m.room.message", Content: []byte(fmt.Sprintf(`{"msgtype":"m.text","body":"room %d message %d"}`, r, i))}); err != nil {
				b.Fatal(err)
			}
		}
	}
	var since string
	b.Run("initial-100x20", func(b *testing.B) {
		for b.Loop() {
			resp, err := syncErr(alice, map[string]string{"filter": `{"room":{"timeline":{"limit":20}}}`})
			if err != nil {
				b.Fatal(err)
			}
			if n := len(resp.Get("rooms.join").Map()); n != 100 {
				b.Fatalf("%d rooms", n)
			}
			since = resp.Get("next_batch").String()
		}
	})
	b.Run("empty-incremental", func(b *testing.B) {
		for b.Loop() {
			if _, err := syncErr(alice, map[string]string{"since": since}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSyncFanOut measures send→/sync delivery in a 50-member room with
// every member long-polling (target p99 ≤ 50 ms).
func BenchmarkSyncFanOut(b *testing.B) {
	srv := hstest.New(b)
	ctx := context.Background()
	const members = 50
	clients := make([]*mautrix.Client, members)
	for i := range clients {
		clients[i] = srv.Register(b, fmt.Sprintf("u%d", i))
	}
	res, err := srv.Rooms.CreateRoom(ctx, roomserver.CreateRoomRequest{Creator: string(clients[0].UserID), RoomVersion: "10", Preset: roomserver.PresetPublicChat})
	if err != nil {
		b.Fatal(err)
	}
	roomID := id.RoomID(res.RoomID)
	for _, c := range clients[1:] {
		if _, err := c.JoinRoomByID(ctx, roomID); err != nil {
			b.Fatal(err)
		}
	}
	var mu sync.Mutex
	var lat []time.Duration
	sentAt := map[string]time.Time{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range clients {
		since, err := syncErr(c, map[string]string{})
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := since.Get("next_batch").String()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := syncErr(c, map[string]string{"since": tok, "timeout": "1000"})
				if err != nil {
					return
				}
				now := time.Now()
				tok = resp.Get("next_batch").String()
				for _, body := range bodies(room(resp, "join", roomID).Get("timeline")) {
					mu.Lock()
					if t, ok := sentAt[body]; ok {
						lat = append(lat, now.Sub(t))
					}
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ResetTimer()
	rounds := 0
	for i := 0; b.Loop(); i++ {
		rounds++
		body := fmt.Sprintf("fan %d", i)
		mu.Lock()
		sentAt[body] = time.Now()
		mu.Unlock()
		if _, err := srv.Rooms.Send(ctx, roomserver.SendRequest{RoomID: res.RoomID, Sender: string(clients[0].UserID),
			Type: "m.room.message", Content: []byte(`{"msgtype":"m.text","body":"` + body + `"}`)}); err != nil {
			b.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	close(stop)
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(len(lat)), "deliveries")
		// CPU of the whole process (server and the 50 clients) per message
		cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) / time.Duration(rounds)
		b.ReportMetric(float64(cpu.Microseconds())/1000, "cpu-ms/msg")
	}
}
