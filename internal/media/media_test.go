package media

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"praxis/internal/config"
	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
)

const alice, bob = "@alice:hs1.test", "@bob:hs1.test"

// fakeClock is a settable clock for retention and expiry.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestService(t *testing.T, db *storage.DB, mod func(*config.Media)) (*Service, *fakeClock) {
	t.Helper()
	cfg := config.Defaults().Media
	cfg.MaxUploadBytes = 1 << 20
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(db, filepath.Join(t.TempDir(), "media"), "hs1.test", cfg)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)}
	s.SetClock(clk.now)
	return s, clk
}

// storageRun runs fn with a fresh service on every engine.
func storageRun(t *testing.T, fn func(t *testing.T, s *Service)) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		s, _ := newTestService(t, db, nil)
		fn(t, s)
	})
}

func upload(t *testing.T, s *Service, user, ct string, body []byte) *Media {
	t.Helper()
	m, err := s.Upload(context.Background(), UploadRequest{UserID: user, ContentType: ct, FileName: "f", ContentLength: int64(len(body)), Body: bytes.NewReader(body)})
	if err != nil {
		t.Fatalf("upload %s: %v", ct, err)
	}
	return m
}

func errcode(err error) string {
	var he *httputil.Error
	if errors.As(err, &he) {
		return he.ErrCode
	}
	if err != nil {
		return "non-Matrix error: " + err.Error()
	}
	return ""
}

// contentFiles lists the files in the content store.
func contentFiles(t *testing.T, s *Service) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(filepath.Join(s.Root(), "content"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, filepath.Base(p))
		}
		return nil
	})
	return out
}

func tmpFiles(t *testing.T, s *Service) int {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(s.Root(), "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

func readAll(t *testing.T, c *Content) []byte {
	t.Helper()
	defer c.Body.Close()
	b, err := io.ReadAll(c.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDedupAndDeleteKeepSharedContent(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db, nil)
		a := upload(t, s, alice, "application/pdf", pdfBytes)
		b := upload(t, s, bob, "application/pdf", pdfBytes)
		if a.MediaID == b.MediaID || a.ContentHash != b.ContentHash {
			t.Fatalf("two uploads: ids %s/%s hashes %s/%s; want two IDs, one hash", a.MediaID, b.MediaID, a.ContentHash, b.ContentHash)
		}
		if got := contentFiles(t, s); len(got) != 1 || got[0] != a.ContentHash {
			t.Fatalf("files on disk = %v, want exactly [%s]", got, a.ContentHash)
		}
		if err := s.Delete(ctx, "hs1.test", a.MediaID); err != nil {
			t.Fatal(err)
		}
		c, err := s.Download(ctx, "hs1.test", b.MediaID, 0)
		if err != nil {
			t.Fatalf("download of the other ID after deleting the first: %v", err)
		}
		if got := readAll(t, c); !bytes.Equal(got, pdfBytes) {
			t.Fatalf("content after deleting the twin = %q", got)
		}
		if err := s.Delete(ctx, "hs1.test", b.MediaID); err != nil {
			t.Fatal(err)
		}
		if got := contentFiles(t, s); len(got) != 0 {
			t.Fatalf("files left after deleting every reference: %v", got)
		}
		var rows int
		db.QueryRow(ctx, `SELECT COUNT(*) FROM media_content`).Scan(&rows)
		if rows != 0 {
			t.Fatalf("media_content rows left: %d", rows)
		}
		if err := s.Delete(ctx, "hs1.test", b.MediaID); errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("second delete = %v, want M_NOT_FOUND", err)
		}
	})
}

func TestRejectedUploadsStoreNothing(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db, func(c *config.Media) { c.MaxUploadBytes = 1000 })
		big := append([]byte("%PDF-1.4\n"), bytes.Repeat([]byte("x"), 1000)...)
		for _, tc := range []struct {
			name, ct string
			body     []byte
			length   int64
			want     string
		}{
			{"zip as pdf", "application/pdf", zipBytes, -1, "M_INVALID_PARAM"},
			{"text/plain", "text/plain", []byte("hi"), -1, "M_FORBIDDEN"},
			{"declared too large", "application/pdf", big, int64(len(big)), "M_TOO_LARGE"},
			{"streamed too large", "application/pdf", big, -1, "M_TOO_LARGE"},
			{"bad content type", "no/such/type", pdfBytes, -1, "M_INVALID_PARAM"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := s.Upload(ctx, UploadRequest{UserID: alice, ContentType: tc.ct, ContentLength: tc.length, Body: bytes.NewReader(tc.body)})
				if got := errcode(err); got != tc.want {
					t.Fatalf("upload = %v, want %s", err, tc.want)
				}
			})
		}
		var rows int
		db.QueryRow(ctx, `SELECT COUNT(*) FROM media`).Scan(&rows)
		if rows != 0 || len(contentFiles(t, s)) != 0 || tmpFiles(t, s) != 0 {
			t.Fatalf("after rejected uploads: %d rows, files %v, %d temp files; want nothing", rows, contentFiles(t, s), tmpFiles(t, s))
		}
	})
}

func TestAsyncUpload(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, clk := newTestService(t, db, nil)
		m, err := s.Create(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		if want := clk.now().Add(24 * time.Hour).UnixMilli(); m.UnusedExpiresTS != want {
			t.Fatalf("unused_expires_at = %d, want %d", m.UnusedExpiresTS, want)
		}
		if _, err := s.Download(ctx, "hs1.test", m.MediaID, 0); errcode(err) != "M_NOT_YET_UPLOADED" {
			t.Fatalf("download before upload = %v, want M_NOT_YET_UPLOADED", err)
		}
		put := func(user string, body []byte) error {
			_, err := s.Upload(ctx, UploadRequest{UserID: user, ContentType: "image/png", Body: bytes.NewReader(body), ContentLength: -1, MediaID: m.MediaID})
			return err
		}
		if err := put(bob, pngBytes); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("upload by another user = %v, want M_FORBIDDEN", err)
		}
		if err := put(alice, pngBytes); err != nil {
			t.Fatalf("upload by the creator: %v", err)
		}
		if err := put(alice, pngBytes); errcode(err) != "M_CANNOT_OVERWRITE_MEDIA" {
			t.Fatalf("second upload = %v, want M_CANNOT_OVERWRITE_MEDIA", err)
		}
		_, err = s.Upload(ctx, UploadRequest{UserID: alice, ContentType: "image/png", Body: bytes.NewReader(pngBytes), ContentLength: -1, MediaID: "neverCreated"})
		if errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("upload to an unknown ID = %v, want M_NOT_FOUND", err)
		}

		// An unused ID expires: uploads and downloads then find nothing,
		// and the retention pass forgets it.
		late, err := s.Create(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		clk.advance(25 * time.Hour)
		_, err = s.Upload(ctx, UploadRequest{UserID: alice, ContentType: "image/png", Body: bytes.NewReader(pngBytes), ContentLength: -1, MediaID: late.MediaID})
		if errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("upload after expiry = %v, want M_NOT_FOUND", err)
		}
		if _, err := s.Download(ctx, "hs1.test", late.MediaID, time.Second); errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("download of an expired ID = %v, want M_NOT_FOUND", err)
		}
		res, err := s.Purge(ctx)
		if err != nil || res.ExpiredIDs != 1 || res.Media != 0 {
			t.Fatalf("purge = %+v, %v; want one expired ID and no media", res, err)
		}
	})
}

func TestDownloadWaitsForAsyncUpload(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db, nil)
		m, err := s.Create(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		started := time.Now()
		go func() {
			c, err := s.Download(ctx, "hs1.test", m.MediaID, 30*time.Second)
			if err == nil {
				if b := readAll(t, c); !bytes.Equal(b, pdfBytes) {
					err = errors.New("wrong bytes")
				}
			}
			got <- err
		}()
		time.Sleep(50 * time.Millisecond) // let the download start waiting
		if _, err := s.Upload(ctx, UploadRequest{UserID: alice, ContentType: "application/pdf", Body: bytes.NewReader(pdfBytes), ContentLength: -1, MediaID: m.MediaID}); err != nil {
			t.Fatal(err)
		}
		if err := <-got; err != nil {
			t.Fatalf("waiting download: %v", err)
		}
		if d := time.Since(started); d > 5*time.Second {
			t.Fatalf("waiting download took %v: it was not woken by the upload", d)
		}
	})
}

func TestQuarantineHidesMedia(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db, nil)
		m := upload(t, s, alice, "image/png", testPNG(t, 64, 48))
		if err := s.Quarantine(ctx, "hs1.test", m.MediaID, "@admin:hs1.test", true); err != nil {
			t.Fatal(err)
		}
		_, err := s.Upload(ctx, UploadRequest{UserID: bob, ContentType: "image/png", Body: bytes.NewReader(testPNG(t, 64, 48)), ContentLength: -1})
		if errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("re-upload of quarantined bytes = %v, want M_FORBIDDEN", err)
		}
		if _, err := s.Download(ctx, "hs1.test", m.MediaID, 0); errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("download of quarantined media = %v, want M_NOT_FOUND", err)
		}
		if _, err := s.Thumbnail(ctx, "hs1.test", m.MediaID, ThumbnailRequest{32, 32, "crop"}, 0); errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("thumbnail of quarantined media = %v, want M_NOT_FOUND", err)
		}
		if err := s.Quarantine(ctx, "hs1.test", m.MediaID, "@admin:hs1.test", false); err != nil {
			t.Fatal(err)
		}
		c, err := s.Download(ctx, "hs1.test", m.MediaID, 0)
		if err != nil {
			t.Fatalf("download after unquarantine: %v", err)
		}
		c.Body.Close()
		if err := s.Quarantine(ctx, "hs1.test", "nope", "@admin:hs1.test", true); errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("quarantine of unknown media = %v, want M_NOT_FOUND", err)
		}
	})
}

func TestRetention(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, clk := newTestService(t, db, func(c *config.Media) { c.RetentionDays = 30; c.RetentionUnaccessedDays = 10 })
		day := 24 * time.Hour
		old := upload(t, s, alice, "application/pdf", pdfBytes)       // day 0
		oldRead := upload(t, s, alice, "image/png", testPNG(t, 4, 4)) // day 0, downloaded regularly
		clk.advance(8 * day)
		unread := upload(t, s, alice, "image/jpeg", testJPEG(t, 4, 4)) // day 8, never downloaded
		clk.advance(8 * day)
		shared := upload(t, s, bob, "application/pdf", pdfBytes) // day 16, same bytes as old
		for d := 16; d <= 31; d += 5 {
			c, err := s.Download(ctx, "hs1.test", oldRead.MediaID, 0)
			if err != nil {
				t.Fatal(err)
			}
			c.Body.Close()
			c, err = s.Download(ctx, "hs1.test", shared.MediaID, 0)
			if err != nil {
				t.Fatal(err)
			}
			c.Body.Close()
			clk.advance(5 * day)
		}
		// Now day 36: old and oldRead are past 30 days, unread was not
		// downloaded for 28 days; shared is 20 days old and was read.
		res, err := s.Purge(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if res.Media != 3 || s.DeletedByRetention() != 3 {
			t.Fatalf("purge deleted %d media (counter %d), want 3", res.Media, s.DeletedByRetention())
		}
		for _, m := range []*Media{old, oldRead, unread} {
			if _, err := s.Download(ctx, "hs1.test", m.MediaID, 0); errcode(err) != "M_NOT_FOUND" {
				t.Errorf("%s after retention: %v, want M_NOT_FOUND", m.ContentType, err)
			}
		}
		c, err := s.Download(ctx, "hs1.test", shared.MediaID, 0)
		if err != nil {
			t.Fatalf("young media deleted by retention: %v", err)
		}
		if b := readAll(t, c); !bytes.Equal(b, pdfBytes) {
			t.Fatal("young media's shared content was removed with the old twin")
		}
		if got := contentFiles(t, s); len(got) != 1 {
			t.Fatalf("files after retention: %v, want only the shared PDF", got)
		}
	})
}

func testPNG(t testing.TB, w, h int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, gradient(w, h)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func testJPEG(t testing.TB, w, h int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, gradient(w, h), nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gradient(w, h int) image.Image {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.NRGBA{uint8(x * 255 / max(1, w-1)), uint8(y * 255 / max(1, h-1)), 128, 255})
		}
	}
	return img
}

func TestThumbnails(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db, nil)
		for _, src := range []struct {
			ct   string
			body []byte
		}{{"image/png", testPNG(t, 400, 300)}, {"image/jpeg", testJPEG(t, 400, 300)}} {
			m := upload(t, s, alice, src.ct, src.body)
			for _, tc := range []struct {
				req          ThumbnailRequest
				wantW, wantH int
				original     bool
			}{
				{ThumbnailRequest{96, 96, "crop"}, 96, 96, false},
				{ThumbnailRequest{32, 32, "crop"}, 32, 32, false},
				{ThumbnailRequest{320, 240, "scale"}, 320, 240, false},
				{ThumbnailRequest{100, 100, "scale"}, 100, 75, false},
				{ThumbnailRequest{150, 300, "scale"}, 150, 112, false},
				{ThumbnailRequest{800, 600, "scale"}, 400, 300, true},
				{ThumbnailRequest{500, 100, "crop"}, 400, 300, true},
			} {
				c, err := s.Thumbnail(ctx, "hs1.test", m.MediaID, tc.req, 0)
				if err != nil {
					t.Fatalf("%s %+v: %v", src.ct, tc.req, err)
				}
				b := readAll(t, c)
				if c.ContentType != src.ct {
					t.Errorf("%s %+v: thumbnail type %s", src.ct, tc.req, c.ContentType)
				}
				cfg, _, err := image.DecodeConfig(bytes.NewReader(b))
				if err != nil {
					t.Fatalf("%s %+v: thumbnail does not decode: %v", src.ct, tc.req, err)
				}
				if cfg.Width != tc.wantW || cfg.Height != tc.wantH {
					t.Errorf("%s %+v: %d×%d, want %d×%d", src.ct, tc.req, cfg.Width, cfg.Height, tc.wantW, tc.wantH)
				}
				if tc.original != bytes.Equal(b, src.body) {
					t.Errorf("%s %+v: served original = %v, want %v", src.ct, tc.req, !tc.original, tc.original)
				}
			}
			// Generated once: a second request is served from the store.
			var n int
			db.QueryRow(ctx, `SELECT COUNT(*) FROM media_thumbnails WHERE media_id = $1`, m.MediaID).Scan(&n)
			if n != 5 {
				t.Fatalf("%s: %d stored thumbnails, want 5", src.ct, n)
			}
			c, err := s.Thumbnail(ctx, "hs1.test", m.MediaID, ThumbnailRequest{96, 96, "crop"}, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := c.Body.(*os.File); !ok {
				t.Errorf("%s: repeated thumbnail was generated again instead of read from the store", src.ct)
			}
			c.Body.Close()
			db.QueryRow(ctx, `SELECT COUNT(*) FROM media_thumbnails WHERE media_id = $1`, m.MediaID).Scan(&n)
			if n != 5 {
				t.Fatalf("%s: %d stored thumbnails after a repeat, want 5", src.ct, n)
			}
			// Deleting the original removes its thumbnails' files too.
			if err := s.Delete(ctx, "hs1.test", m.MediaID); err != nil {
				t.Fatal(err)
			}
			if got := contentFiles(t, s); len(got) != 0 {
				t.Fatalf("%s: files left after deleting the original with its thumbnails: %d", src.ct, len(got))
			}
		}
		pdf := upload(t, s, alice, "application/pdf", pdfBytes)
		if _, err := s.Thumbnail(ctx, "hs1.test", pdf.MediaID, ThumbnailRequest{32, 32, "crop"}, 0); errcode(err) != "M_UNKNOWN" {
			t.Fatalf("thumbnail of a PDF = %v, want 400 M_UNKNOWN", err)
		}
		if _, err := s.Thumbnail(ctx, "hs1.test", pdf.MediaID, ThumbnailRequest{32, 32, "stretch"}, 0); errcode(err) != "M_INVALID_PARAM" {
			t.Fatalf("unknown method = %v, want M_INVALID_PARAM", err)
		}
	})
}

func TestResizeAveragesColours(t *testing.T) {
	// Left half black, right half white: a 2×1 scale of it keeps both.
	src := image.NewRGBA(image.Rect(0, 0, 10, 4))
	for y := range 4 {
		for x := 5; x < 10; x++ {
			src.Set(x, y, color.White)
		}
		for x := range 5 {
			src.Set(x, y, color.Black)
		}
	}
	out := resize(src, 2, 1, false)
	if l, r := out.RGBAAt(0, 0), out.RGBAAt(1, 0); l.R != 0 || r.R != 255 || l.A != 255 {
		t.Fatalf("resize mixed the halves: left %v right %v", l, r)
	}
	// Crop to a square keeps the centre: 4×4 from the middle → grey-free
	// halves again.
	sq := resize(src, 2, 2, true)
	if l, r := sq.RGBAAt(0, 1), sq.RGBAAt(1, 1); l.R != 0 || r.R != 255 {
		t.Fatalf("crop lost the centre: left %v right %v", l, r)
	}
}

func TestSweepTemp(t *testing.T) {
	f, err := newFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tmp, err := f.writeTemp(strings.NewReader("crashed upload"), 100)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := f.sweepTemp(time.Now(), time.Hour); n != 0 {
		t.Fatalf("swept %d young temp files, want 0", n)
	}
	if n, _ := f.sweepTemp(time.Now().Add(2*time.Hour), time.Hour); n != 1 {
		t.Fatalf("swept %d old temp files, want 1", n)
	}
	if _, err := os.Stat(tmp.path); !os.IsNotExist(err) {
		t.Fatalf("old temp file still there: %v", err)
	}
}

// Uploads of the same bytes racing with deletions of their twins must
// never leave a media ID whose file is gone, nor a file nobody references.
func TestConcurrentUploadAndDeleteOfSameContent(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db, nil)
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 15 {
					m, err := s.Upload(ctx, UploadRequest{UserID: alice, ContentType: "application/pdf", Body: bytes.NewReader(pdfBytes), ContentLength: -1})
					if err != nil {
						errs <- err
						return
					}
					if (w+i)%2 == 0 {
						if err := s.Delete(ctx, "hs1.test", m.MediaID); err != nil {
							errs <- err
							return
						}
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		var live int
		db.QueryRow(ctx, `SELECT COUNT(*) FROM media`).Scan(&live)
		if live != 30 {
			t.Fatalf("%d media left, want 30", live)
		}
		files := contentFiles(t, s)
		if len(files) != 1 {
			t.Fatalf("files on disk: %v, want the one shared PDF", files)
		}
		rows, err := db.Query(ctx, `SELECT media_id FROM media`)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for rows.Next() {
			var id string
			rows.Scan(&id)
			ids = append(ids, id)
		}
		rows.Close()
		for _, id := range ids {
			c, err := s.Download(ctx, "hs1.test", id, 0)
			if err != nil {
				t.Fatalf("download %s: %v", id, err)
			}
			if b := readAll(t, c); !bytes.Equal(b, pdfBytes) {
				t.Fatalf("download %s: wrong bytes", id)
			}
		}
		for _, id := range ids {
			if err := s.Delete(ctx, "hs1.test", id); err != nil {
				t.Fatal(err)
			}
		}
		if files := contentFiles(t, s); len(files) != 0 {
			t.Fatalf("files left after deleting everything: %v", files)
		}
	})
}

func TestWritePrometheus(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		s, _ := newTestService(t, db, nil)
		upload(t, s, alice, "application/pdf", pdfBytes)
		s.Upload(context.Background(), UploadRequest{UserID: alice, ContentType: "application/pdf", Body: bytes.NewReader(zipBytes), ContentLength: -1})
		var buf bytes.Buffer
		if err := s.WritePrometheus(&buf); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"praxis_media_uploads_total 1\n",
			"praxis_media_uploaded_bytes_total " + strconv.Itoa(len(pdfBytes)) + "\n",
			"praxis_media_policy_rejections_total 1\n",
			"praxis_media_retention_deleted_total 0\n",
		} {
			if !strings.Contains(buf.String(), want) {
				t.Errorf("metrics lack %q:\n%s", want, buf.String())
			}
		}
	})
}

func TestRetentionSparesWhatTheKeepHookNames(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, clk := newTestService(t, db, func(c *config.Media) { c.RetentionDays = 1 })
		avatar := upload(t, s, alice, "image/png", testPNG(t, 2, 2))
		letter := upload(t, s, alice, "application/pdf", pdfBytes)
		var asked []string
		s.SetRetentionKeep(func(ctx context.Context, mxcs []string) (map[string]bool, error) {
			asked = append(asked, mxcs...)
			return map[string]bool{avatar.MXC(): true}, nil
		})
		clk.advance(48 * time.Hour)
		res, err := s.Purge(ctx)
		if err != nil || res.Media != 1 {
			t.Fatalf("purge = %+v, %v; want the letter deleted", res, err)
		}
		if len(asked) != 2 {
			t.Fatalf("keep hook asked about %v, want both media", asked)
		}
		if m, _ := s.Get(ctx, "hs1.test", avatar.MediaID); m == nil {
			t.Fatal("the avatar the hook kept was deleted")
		}
		if m, _ := s.Get(ctx, "hs1.test", letter.MediaID); m != nil {
			t.Fatal("the old letter survived retention")
		}
	})
}
