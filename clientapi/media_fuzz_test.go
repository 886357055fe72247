package clientapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"praxis/internal/hstest"
)

var fuzzMediaTypes = []string{"application/pdf", "image/jpeg", "image/png", "application/octet-stream", "application/zip", "text/html", "image/png; charset=x", ""}

// FuzzMediaUpload uploads arbitrary bytes under each content type.
// Properties: never a 5xx; a refusal is a Matrix error; an accepted file
// downloads byte for byte, and asking for its thumbnail is never a 5xx
// (a PNG or JPEG with valid magic bytes and a broken body included).
func FuzzMediaUpload(f *testing.F) {
	png := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00")
	for i := range fuzzMediaTypes {
		for _, seed := range [][]byte{nil, []byte("%PDF-1.7\n%%EOF"), []byte("\xff\xd8\xff\xe0\x00\x10JFIF\x00"), png, []byte("PK\x03\x04zip"), []byte("<html>")} {
			f.Add(uint8(i), seed)
		}
	}
	srv := hstest.New(f)
	alice := srv.Register(f, "fuzz")
	httpc := &http.Client{Timeout: 20 * time.Second}
	do := func(t *testing.T, method, u, ctype string, body []byte) (int, []byte) {
		req, err := http.NewRequest(method, u, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := httpc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, u, err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %s (%s, %d bytes): %d %s", method, u, ctype, len(body), resp.StatusCode, out)
		}
		if resp.StatusCode >= 300 && resp.StatusCode != http.StatusTemporaryRedirect {
			var e struct {
				Errcode string `json:"errcode"`
			}
			if json.Unmarshal(out, &e) != nil || !strings.HasPrefix(e.Errcode, "M_") {
				t.Fatalf("%s %s: %d without a Matrix error: %.200s", method, u, resp.StatusCode, out)
			}
		}
		return resp.StatusCode, out
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		ctype := fuzzMediaTypes[int(which)%len(fuzzMediaTypes)]
		status, out := do(t, "POST", srv.URL+"/_matrix/media/v3/upload?filename="+url.QueryEscape("f.bin"), ctype, body)
		if status != http.StatusOK {
			return
		}
		var up struct {
			ContentURI string `json:"content_uri"`
		}
		if err := json.Unmarshal(out, &up); err != nil || !strings.HasPrefix(up.ContentURI, "mxc://") {
			t.Fatalf("upload answer %s", out)
		}
		path := strings.TrimPrefix(up.ContentURI, "mxc://")
		status, got := do(t, "GET", srv.URL+"/_matrix/client/v1/media/download/"+path, "", nil)
		if status != http.StatusOK || !bytes.Equal(got, body) {
			t.Fatalf("download of an accepted %s upload: %d, %d bytes, want the %d uploaded", ctype, status, len(got), len(body))
		}
		do(t, "GET", srv.URL+"/_matrix/client/v1/media/thumbnail/"+path+"?width=32&height=32&method=crop", "", nil)
	})
}
