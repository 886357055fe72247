package media_test

import (
	"crypto/sha256"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime"
	"testing"

	"praxis/internal/config"
	"praxis/internal/hstest"
)

// randReader yields n pseudo-random bytes without holding them.
type randReader struct {
	r *rand.ChaCha8
	n int64
}

func (r *randReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.n {
		p = p[:r.n]
	}
	r.r.Read(p)
	r.n -= int64(len(p))
	return len(p), nil
}

// A large upload and download must stream: the bytes allocated while
// moving 64 MiB through the server stay far below the file's size.
func TestUploadAndDownloadStream(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 64 MiB")
	}
	const size = 64 << 20
	srv := hstest.New(t, hstest.WithConfig(func(c *config.Config) { c.Media.MaxUploadBytes = size }))
	alice := srv.Register(t, "alice")
	seed := [32]byte{1, 2, 3}
	want := sha256.New()
	io.Copy(want, &randReader{rand.NewChaCha8(seed), size})

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/_matrix/media/v3/upload", &randReader{rand.NewChaCha8(seed), size})
	req.ContentLength = size
	req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var up struct {
		ContentURI string `json:"content_uri"`
	}
	json.NewDecoder(resp.Body).Decode(&up)
	resp.Body.Close()
	if resp.StatusCode != 200 || up.ContentURI == "" {
		t.Fatalf("upload = %d", resp.StatusCode)
	}
	req, _ = http.NewRequest(http.MethodGet, srv.URL+"/_matrix/client/v1/media/download/"+up.ContentURI[len("mxc://"):], nil)
	req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, _ := io.Copy(got, resp.Body)
	resp.Body.Close()

	runtime.ReadMemStats(&after)
	if n != size || string(got.Sum(nil)) != string(want.Sum(nil)) {
		t.Fatalf("downloaded %d bytes, hash equal: %v", n, string(got.Sum(nil)) == string(want.Sum(nil)))
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("allocated %d KiB while moving %d MiB", alloc>>10, size>>20)
	if alloc > 16<<20 {
		t.Fatalf("moving %d MiB up and down allocated %d MiB: the server buffers instead of streaming", size>>20, alloc>>20)
	}
}
