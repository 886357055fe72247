package media_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/attachment"
	"maunium.net/go/mautrix/id"

	"praxis/internal/config"
	"praxis/internal/hstest"
)

var (
	pdfFile = []byte("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n")
	zipFile = []byte("PK\x03\x04\x14\x00\x00\x00\x08\x00\x00\x00!\x00payload.exe")
)

func encodePNG(t testing.TB, w, h int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, picture(w, h)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func encodeJPEG(t testing.TB, w, h int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, picture(w, h), &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func picture(w, h int) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x ^ y), 255})
		}
	}
	return img
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// get performs a GET with an optional access token and returns the
// response with its body read.
func get(t *testing.T, srv *hstest.Server, path, token string) (*http.Response, []byte) {
	t.Helper()
	return do(t, srv, http.MethodGet, path, token, "", nil)
}

func do(t *testing.T, srv *hstest.Server, method, path, token, contentType string, body []byte) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func errcodeOf(body []byte) string {
	var e struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.Unmarshal(body, &e)
	return e.ErrCode
}

func uploadBytes(t *testing.T, c *mautrix.Client, ct, name string, b []byte) id.ContentURI {
	t.Helper()
	resp, err := c.UploadMedia(context.Background(), mautrix.ReqUploadMedia{ContentBytes: b, ContentType: ct, FileName: name})
	if err != nil {
		t.Fatalf("upload %s: %v", ct, err)
	}
	return resp.ContentURI
}

func downloadPath(u id.ContentURI) string {
	return "/_matrix/client/v1/media/download/" + u.Homeserver + "/" + u.FileID
}

func contentFileCount(t *testing.T, srv *hstest.Server) int {
	t.Helper()
	n := 0
	filepath.WalkDir(filepath.Join(srv.Media.Root(), "content"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

func TestMediaAPI(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")

		t.Run("round trip per allowed type, with headers", func(t *testing.T) {
			for _, tc := range []struct {
				ct, name, disposition string
				body                  []byte
			}{
				{"application/pdf", "Arztbrief.pdf", `attachment; filename=Arztbrief.pdf`, pdfFile},
				{"image/jpeg", "foto.jpg", `inline; filename=foto.jpg`, encodeJPEG(t, 64, 48)},
				{"image/png", "scan.png", `inline; filename=scan.png`, encodePNG(t, 64, 48)},
				{"application/octet-stream", "", `attachment`, randomBytes(t, 300_000)},
			} {
				t.Run(tc.ct, func(t *testing.T) {
					mxc := uploadBytes(t, alice, tc.ct, tc.name, tc.body)
					if mxc.Homeserver != "hs1.test" {
						t.Fatalf("content URI %s: want server hs1.test", mxc)
					}
					// bob downloads what alice uploaded
					resp, got := get(t, srv, downloadPath(mxc), bob.AccessToken)
					if resp.StatusCode != http.StatusOK {
						t.Fatalf("download: %d %s", resp.StatusCode, got)
					}
					if sha256.Sum256(got) != sha256.Sum256(tc.body) || len(got) != len(tc.body) {
						t.Fatalf("downloaded %d bytes that differ from the %d uploaded", len(got), len(tc.body))
					}
					for h, want := range map[string]string{
						"Content-Type":                 tc.ct,
						"Content-Disposition":          tc.disposition,
						"X-Content-Type-Options":       "nosniff",
						"Cross-Origin-Resource-Policy": "cross-origin",
					} {
						if v := resp.Header.Get(h); v != want {
							t.Errorf("%s = %q, want %q", h, v, want)
						}
					}
					if csp := resp.Header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "sandbox;") || !strings.Contains(csp, "default-src 'none'") {
						t.Errorf("Content-Security-Policy = %q, want sandbox and default-src 'none'", csp)
					}
					// The file name in the path overrides the uploaded one.
					resp, _ = get(t, srv, downloadPath(mxc)+"/other%20name.bin", bob.AccessToken)
					if cd := resp.Header.Get("Content-Disposition"); !strings.Contains(cd, `filename="other name.bin"`) {
						t.Errorf("Content-Disposition with a path file name = %q", cd)
					}
				})
			}
		})

		t.Run("identical content is stored once", func(t *testing.T) {
			body := encodePNG(t, 33, 17)
			before := contentFileCount(t, srv)
			a := uploadBytes(t, alice, "image/png", "a.png", body)
			b := uploadBytes(t, bob, "image/png", "b.png", body)
			if a == b {
				t.Fatal("two uploads got the same media ID")
			}
			if n := contentFileCount(t, srv) - before; n != 1 {
				t.Fatalf("two identical uploads added %d files, want 1", n)
			}
		})

		t.Run("file policy", func(t *testing.T) {
			for _, tc := range []struct {
				name, ct string
				body     []byte
				status   int
				errcode  string
			}{
				{"zip labelled pdf", "application/pdf", zipFile, 400, "M_INVALID_PARAM"},
				{"png labelled jpeg", "image/jpeg", encodePNG(t, 8, 8), 400, "M_INVALID_PARAM"},
				// the spec's answer for a file type the server does not permit
				{"text/plain", "text/plain", []byte("hello"), 403, "M_FORBIDDEN"},
				{"zip smuggled as octet-stream", "application/octet-stream", zipFile, 403, "M_FORBIDDEN"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					before := contentFileCount(t, srv)
					resp, body := do(t, srv, http.MethodPost, "/_matrix/media/v3/upload?filename=x", alice.AccessToken, tc.ct, tc.body)
					if resp.StatusCode != tc.status || errcodeOf(body) != tc.errcode {
						t.Fatalf("upload = %d %s, want %d %s", resp.StatusCode, body, tc.status, tc.errcode)
					}
					var e struct{ Error string }
					json.Unmarshal(body, &e)
					if e.Error == "" {
						t.Error("rejection carries no error text")
					}
					if n := contentFileCount(t, srv); n != before {
						t.Errorf("a rejected upload left a file (%d → %d)", before, n)
					}
				})
			}
		})

		t.Run("async upload: only the creator, only once", func(t *testing.T) {
			created, err := alice.CreateMXC(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if created.UnusedExpiresAt.IsZero() || created.ContentURI.Homeserver != "hs1.test" {
				t.Fatalf("create = %+v", created)
			}
			put := func(c *mautrix.Client, body []byte) error {
				_, err := c.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: body, ContentType: "application/pdf", MXC: created.ContentURI})
				return err
			}
			if err := put(bob, pdfFile); hstest.ErrCode(err) != "M_FORBIDDEN" {
				t.Fatalf("PUT by another user = %v, want M_FORBIDDEN", err)
			}
			if err := put(alice, pdfFile); err != nil {
				t.Fatalf("PUT by the creator: %v", err)
			}
			if err := put(alice, pdfFile); hstest.ErrCode(err) != "M_CANNOT_OVERWRITE_MEDIA" {
				t.Fatalf("second PUT = %v, want M_CANNOT_OVERWRITE_MEDIA", err)
			}
			got, err := bob.DownloadBytes(ctx, created.ContentURI)
			if err != nil || !bytes.Equal(got, pdfFile) {
				t.Fatalf("download of async upload: %v (%d bytes)", err, len(got))
			}
		})

		t.Run("download waits for a pending upload", func(t *testing.T) {
			created, err := alice.CreateMXC(ctx)
			if err != nil {
				t.Fatal(err)
			}
			resp, body := get(t, srv, downloadPath(created.ContentURI)+"?timeout_ms=100", bob.AccessToken)
			if resp.StatusCode != http.StatusGatewayTimeout || errcodeOf(body) != "M_NOT_YET_UPLOADED" {
				t.Fatalf("download before upload = %d %s, want 504 M_NOT_YET_UPLOADED", resp.StatusCode, body)
			}
			type result struct {
				status int
				body   []byte
			}
			done := make(chan result, 1)
			go func() {
				req, _ := http.NewRequest(http.MethodGet, srv.URL+downloadPath(created.ContentURI)+"?timeout_ms=20000", nil)
				req.Header.Set("Authorization", "Bearer "+bob.AccessToken)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					done <- result{}
					return
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				done <- result{resp.StatusCode, b}
			}()
			time.Sleep(100 * time.Millisecond)
			body = encodePNG(t, 10, 10)
			if _, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: body, ContentType: "image/png", MXC: created.ContentURI}); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-done:
				if r.status != http.StatusOK || !bytes.Equal(r.body, body) {
					t.Fatalf("waiting download = %d (%d bytes), want 200 with the upload", r.status, len(r.body))
				}
			case <-time.After(10 * time.Second):
				t.Fatal("waiting download did not return after the upload")
			}
		})

		t.Run("thumbnails have the requested bounds", func(t *testing.T) {
			for _, src := range []struct {
				ct   string
				body []byte
			}{{"image/png", encodePNG(t, 640, 480)}, {"image/jpeg", encodeJPEG(t, 640, 480)}} {
				mxc := uploadBytes(t, alice, src.ct, "photo", src.body)
				for _, tc := range []struct {
					w, h         int
					method       string
					wantW, wantH int
				}{
					{32, 32, "crop", 32, 32},
					{96, 96, "crop", 96, 96},
					{320, 240, "scale", 320, 240},
					{200, 200, "scale", 200, 150},
				} {
					resp, err := bob.DownloadThumbnail(ctx, mxc, tc.h, tc.w, mautrix.DownloadThumbnailExtra{Method: tc.method})
					if err != nil {
						t.Fatalf("%s %dx%d %s: %v", src.ct, tc.w, tc.h, tc.method, err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
					if err != nil {
						t.Fatalf("%s thumbnail does not decode: %v", src.ct, err)
					}
					if cfg.Width != tc.wantW || cfg.Height != tc.wantH || "image/"+format != src.ct {
						t.Errorf("%s %dx%d %s: got %s %d×%d, want %d×%d", src.ct, tc.w, tc.h, tc.method, format, cfg.Width, cfg.Height, tc.wantW, tc.wantH)
					}
					if ct := resp.Header.Get("Content-Type"); ct != src.ct {
						t.Errorf("thumbnail Content-Type = %q", ct)
					}
				}
			}
			resp, body := get(t, srv, "/_matrix/client/v1/media/thumbnail/hs1.test/whatever?width=32", alice.AccessToken)
			if resp.StatusCode != 400 || errcodeOf(body) != "M_MISSING_PARAM" {
				t.Fatalf("thumbnail without height = %d %s", resp.StatusCode, body)
			}
		})

		t.Run("authentication and unknown media", func(t *testing.T) {
			mxc := uploadBytes(t, alice, "image/png", "x.png", encodePNG(t, 5, 5))
			for _, tc := range []struct {
				name, path, token string
				status            int
				errcode           string
			}{
				{"download without token", downloadPath(mxc), "", 401, "M_MISSING_TOKEN"},
				{"thumbnail without token", "/_matrix/client/v1/media/thumbnail/hs1.test/" + mxc.FileID + "?width=1&height=1", "", 401, "M_MISSING_TOKEN"},
				{"bad token", downloadPath(mxc), "nope", 401, "M_UNKNOWN_TOKEN"},
				{"unknown media", "/_matrix/client/v1/media/download/hs1.test/doesNotExist", alice.AccessToken, 404, "M_NOT_FOUND"},
				{"remote media (federation not wired)", "/_matrix/client/v1/media/download/other.test/abc", alice.AccessToken, 404, "M_NOT_FOUND"},
				{"legacy download is off", "/_matrix/media/v3/download/hs1.test/" + mxc.FileID, "", 404, "M_NOT_FOUND"},
				{"legacy thumbnail is off", "/_matrix/media/v3/thumbnail/hs1.test/" + mxc.FileID + "?width=1&height=1", "", 404, "M_NOT_FOUND"},
				{"no URL previews", "/_matrix/client/v1/media/preview_url?url=https://example.org", alice.AccessToken, 404, "M_UNRECOGNIZED"},
				{"no legacy URL previews", "/_matrix/media/v3/preview_url?url=https://example.org", alice.AccessToken, 404, "M_UNRECOGNIZED"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					resp, body := get(t, srv, tc.path, tc.token)
					if resp.StatusCode != tc.status || errcodeOf(body) != tc.errcode {
						t.Fatalf("GET %s = %d %s, want %d %s", tc.path, resp.StatusCode, body, tc.status, tc.errcode)
					}
				})
			}
		})

		t.Run("config", func(t *testing.T) {
			for _, path := range []string{"/_matrix/client/v1/media/config", "/_matrix/media/v3/config"} {
				resp, body := get(t, srv, path, alice.AccessToken)
				var cfg struct {
					UploadSize int64 `json:"m.upload.size"`
				}
				if json.Unmarshal(body, &cfg); resp.StatusCode != 200 || cfg.UploadSize != srv.Config.Media.MaxUploadBytes {
					t.Errorf("GET %s = %d %s, want m.upload.size %d", path, resp.StatusCode, body, srv.Config.Media.MaxUploadBytes)
				}
			}
		})

		t.Run("admin: quarantine, list, delete", func(t *testing.T) {
			if _, err := srv.Users.CreateAccount(ctx, "admin", "password-admin", true, "user"); err != nil {
				t.Fatal(err)
			}
			admin := srv.Login(t, "admin")
			body := encodePNG(t, 21, 21)
			mxc := uploadBytes(t, bob, "image/png", "bob.png", body)
			qpath := "/_synapse/admin/v1/media/quarantine/hs1.test/" + mxc.FileID
			if resp, b := do(t, srv, http.MethodPost, qpath, alice.AccessToken, "", nil); resp.StatusCode != 403 || errcodeOf(b) != "M_FORBIDDEN" {
				t.Fatalf("quarantine by non-admin = %d %s, want 403 M_FORBIDDEN", resp.StatusCode, b)
			}
			if resp, b := do(t, srv, http.MethodPost, qpath, "", "", nil); resp.StatusCode != 401 {
				t.Fatalf("quarantine without token = %d %s, want 401", resp.StatusCode, b)
			}
			if resp, b := do(t, srv, http.MethodPost, qpath, admin.AccessToken, "", nil); resp.StatusCode != 200 || string(bytes.TrimSpace(b)) != "{}" {
				t.Fatalf("quarantine = %d %s", resp.StatusCode, b)
			}
			for _, who := range []*mautrix.Client{alice, bob, admin} {
				if resp, b := get(t, srv, downloadPath(mxc), who.AccessToken); resp.StatusCode != 404 || errcodeOf(b) != "M_NOT_FOUND" {
					t.Fatalf("download of quarantined media by %s = %d %s, want 404", who.UserID, resp.StatusCode, b)
				}
			}

			resp, b := get(t, srv, "/_synapse/admin/v1/users/@bob:hs1.test/media?order_by=created_ts&dir=b", admin.AccessToken)
			var list struct {
				Media []struct {
					MediaID       string  `json:"media_id"`
					MediaType     string  `json:"media_type"`
					MediaLength   int64   `json:"media_length"`
					UploadName    *string `json:"upload_name"`
					QuarantinedBy *string `json:"quarantined_by"`
				} `json:"media"`
				Total int `json:"total"`
			}
			if err := json.Unmarshal(b, &list); err != nil || resp.StatusCode != 200 || len(list.Media) == 0 || list.Total != len(list.Media) {
				t.Fatalf("list = %d %s", resp.StatusCode, b)
			}
			first := list.Media[0]
			if first.MediaID != mxc.FileID || first.MediaType != "image/png" || first.MediaLength != int64(len(body)) ||
				first.UploadName == nil || *first.UploadName != "bob.png" || first.QuarantinedBy == nil || *first.QuarantinedBy != "@admin:hs1.test" {
				t.Fatalf("newest entry of bob's media = %+v", first)
			}
			if resp, b := get(t, srv, "/_synapse/admin/v1/users/@bob:hs1.test/media", bob.AccessToken); resp.StatusCode != 403 {
				t.Fatalf("list by non-admin = %d %s", resp.StatusCode, b)
			}

			del := "/_synapse/admin/v1/media/hs1.test/" + mxc.FileID
			resp, b = do(t, srv, http.MethodDelete, del, admin.AccessToken, "", nil)
			var dr struct {
				Deleted []string `json:"deleted_media"`
				Total   int      `json:"total"`
			}
			if json.Unmarshal(b, &dr); resp.StatusCode != 200 || dr.Total != 1 || len(dr.Deleted) != 1 || dr.Deleted[0] != mxc.FileID {
				t.Fatalf("delete = %d %s", resp.StatusCode, b)
			}
			if resp, b := do(t, srv, http.MethodDelete, del, admin.AccessToken, "", nil); resp.StatusCode != 404 {
				t.Fatalf("second delete = %d %s, want 404", resp.StatusCode, b)
			}
			if m, _ := srv.Media.Get(ctx, "hs1.test", mxc.FileID); m != nil {
				t.Fatal("deleted media still has a row")
			}
			// The actions are in the audit log.
			var n int
			srv.DB.QueryRow(ctx, `SELECT COUNT(*) FROM audit_log WHERE actor = $1 AND target = $2 AND action IN ('media.quarantine', 'media.delete')`,
				"@admin:hs1.test", "mxc://hs1.test/"+mxc.FileID).Scan(&n)
			if n != 2 {
				t.Fatalf("audit rows for quarantine and delete: %d, want 2", n)
			}
		})

		t.Run("encrypted attachment round trip", func(t *testing.T) {
			plaintext := append([]byte(nil), pdfFile...)
			plaintext = append(plaintext, randomBytes(t, 100_000)...)
			file := attachment.NewEncryptedFile()
			ciphertext := file.Encrypt(plaintext)
			mxc := uploadBytes(t, alice, "application/octet-stream", "", ciphertext)
			// The receiver gets the URL and keys inside an encrypted event;
			// here they travel as JSON like the event's "file" field.
			wire, err := json.Marshal(file)
			if err != nil {
				t.Fatal(err)
			}
			var received attachment.EncryptedFile
			if err := json.Unmarshal(wire, &received); err != nil {
				t.Fatal(err)
			}
			got, err := bob.DownloadBytes(ctx, mxc)
			if err != nil {
				t.Fatal(err)
			}
			decrypted, err := received.Decrypt(got)
			if err != nil {
				t.Fatalf("decrypt downloaded attachment: %v", err)
			}
			if !bytes.Equal(decrypted, plaintext) {
				t.Fatal("decrypted attachment differs from the original")
			}
		})
	})
}

func TestUploadSizeLimit(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		alice := srv.Register(t, "alice")
		big := append([]byte("%PDF-1.4\n"), bytes.Repeat([]byte{'x'}, 5000)...)
		resp, body := do(t, srv, http.MethodPost, "/_matrix/media/v3/upload", alice.AccessToken, "application/pdf", big)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || errcodeOf(body) != "M_TOO_LARGE" {
			t.Fatalf("upload over the limit = %d %s, want 413 M_TOO_LARGE", resp.StatusCode, body)
		}
		if n := contentFileCount(t, srv); n != 0 {
			t.Fatalf("a too large upload left %d files", n)
		}
		ok := big[:4096]
		if resp, body := do(t, srv, http.MethodPost, "/_matrix/media/v3/upload", alice.AccessToken, "application/pdf", ok); resp.StatusCode != 200 {
			t.Fatalf("upload at the limit = %d %s", resp.StatusCode, body)
		}
	}, hstest.WithConfig(func(c *config.Config) { c.Media.MaxUploadBytes = 4096 }))
}

func TestLegacyMediaWhenEnabled(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		alice := srv.Register(t, "alice")
		body := encodePNG(t, 200, 100)
		mxc := uploadBytes(t, alice, "image/png", "legacy.png", body)
		resp, got := get(t, srv, "/_matrix/media/v3/download/hs1.test/"+mxc.FileID, "")
		if resp.StatusCode != 200 || !bytes.Equal(got, body) {
			t.Fatalf("legacy download = %d (%d bytes)", resp.StatusCode, len(got))
		}
		resp, got = get(t, srv, "/_matrix/media/v3/thumbnail/hs1.test/"+mxc.FileID+"?width=50&height=50&method=crop", "")
		if resp.StatusCode != 200 {
			t.Fatalf("legacy thumbnail = %d %s", resp.StatusCode, got)
		}
		if cfg, _, err := image.DecodeConfig(bytes.NewReader(got)); err != nil || cfg.Width != 50 || cfg.Height != 50 {
			t.Fatalf("legacy thumbnail: %v %+v", err, cfg)
		}
	}, hstest.WithConfig(func(c *config.Config) { c.Media.LegacyUnauthenticated = true }))
}

func TestRetentionThroughServer(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		var clock atomic.Int64 // the retention job reads the clock concurrently
		clock.Store(time.Now().UnixMilli())
		srv.Media.SetClock(func() time.Time { return time.UnixMilli(clock.Load()) })
		alice := srv.Register(t, "alice")
		old := uploadBytes(t, alice, "application/pdf", "old.pdf", pdfFile)
		clock.Add((5 * 24 * time.Hour).Milliseconds())
		young := uploadBytes(t, alice, "image/png", "young.png", encodePNG(t, 3, 3))
		clock.Add((3 * 24 * time.Hour).Milliseconds()) // old is 8 days old, young 3
		res, err := srv.Media.Purge(ctx)
		if err != nil || res.Media != 1 {
			t.Fatalf("purge = %+v, %v; want one media deleted", res, err)
		}
		if resp, b := get(t, srv, downloadPath(old), alice.AccessToken); resp.StatusCode != 404 {
			t.Fatalf("old media after retention = %d %s, want 404", resp.StatusCode, b)
		}
		if resp, _ := get(t, srv, downloadPath(young), alice.AccessToken); resp.StatusCode != 200 {
			t.Fatalf("young media after retention = %d, want 200", resp.StatusCode)
		}
	}, hstest.WithConfig(func(c *config.Config) { c.Media.RetentionDays = 7 }))
}

func TestAdminDeleteBefore(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		if _, err := srv.Users.CreateAccount(ctx, "admin", "password-admin", true, "user"); err != nil {
			t.Fatal(err)
		}
		admin := srv.Login(t, "admin")
		small := uploadBytes(t, alice, "application/pdf", "small.pdf", pdfFile)
		big := uploadBytes(t, alice, "image/png", "big.png", encodePNG(t, 300, 300))
		future := strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10)
		path := "/_synapse/admin/v1/media/delete?before_ts=" + future + "&size_gt=" + strconv.Itoa(len(pdfFile))

		if resp, b := do(t, srv, http.MethodPost, path, alice.AccessToken, "", nil); resp.StatusCode != 403 {
			t.Fatalf("delete-before by non-admin = %d %s", resp.StatusCode, b)
		}
		if resp, b := do(t, srv, http.MethodPost, "/_synapse/admin/v1/media/delete", admin.AccessToken, "", nil); resp.StatusCode != 400 || errcodeOf(b) != "M_MISSING_PARAM" {
			t.Fatalf("delete-before without before_ts = %d %s", resp.StatusCode, b)
		}
		resp, b := do(t, srv, http.MethodPost, path, admin.AccessToken, "", nil)
		var dr struct {
			Deleted []string `json:"deleted_media"`
			Total   int      `json:"total"`
		}
		if json.Unmarshal(b, &dr); resp.StatusCode != 200 || dr.Total != 1 || dr.Deleted[0] != big.FileID {
			t.Fatalf("delete-before = %d %s, want only the large PNG", resp.StatusCode, b)
		}
		if resp, _ := get(t, srv, downloadPath(small), alice.AccessToken); resp.StatusCode != 200 {
			t.Fatalf("small media after size-bounded delete = %d", resp.StatusCode)
		}
		old := "/_synapse/admin/v1/media/hs1.test/delete?before_ts=" + future
		if resp, b := do(t, srv, http.MethodPost, old, admin.AccessToken, "", nil); resp.StatusCode != 200 || !strings.Contains(string(b), small.FileID) {
			t.Fatalf("delete-before (server name form) = %d %s", resp.StatusCode, b)
		}
	})
}
