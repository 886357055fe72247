package media_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"praxis/internal/hstest"
)

// BenchmarkMediaThroughput measures 1 MiB uploads and downloads through the
// real server with 4 concurrent clients (go test -bench Media -benchtime 200x).
// Issue 4 targets ≥ 300 MiB/s up and ≥ 500 MiB/s down on loopback.
func BenchmarkMediaThroughput(b *testing.B) {
	srv := hstest.New(b)
	alice := srv.Register(b, "alice")
	body := append([]byte("%PDF-1.7\n"), bytes.Repeat([]byte{0x42}, 1<<20-9)...)
	post := func(payload []byte) (string, error) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/_matrix/media/v3/upload", bytes.NewReader(payload))
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		req.Header.Set("Content-Type", "application/pdf")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return string(out), nil
	}
	b.Run("upload", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.SetParallelism(2) // 2 × GOMAXPROCS(2) = 4 clients
		b.RunParallel(func(pb *testing.PB) {
			// Distinct bytes per upload, so dedup does not flatter the number.
			p := append([]byte(nil), body...)
			n := 0
			for pb.Next() {
				n++
				p[100], p[101], p[102] = byte(n), byte(n>>8), byte(n>>16)
				if _, err := post(p); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	out, err := post(body)
	if err != nil {
		b.Fatal(err)
	}
	mxc := out[len(`{"content_uri":"mxc://hs1.test/`) : len(out)-3]
	b.Run("download", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.SetParallelism(2)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req, _ := http.NewRequest(http.MethodGet, srv.URL+"/_matrix/client/v1/media/download/hs1.test/"+mxc, nil)
				req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if n != int64(len(body)) {
					b.Errorf("downloaded %d bytes", n)
					return
				}
			}
		})
	})
}
