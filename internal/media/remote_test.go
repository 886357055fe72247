package media

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"testing"

	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
)

// fakeRemote serves a fixed set of files and counts fetches.
type fakeRemote struct {
	files   map[string]remoteFile // origin/mediaID →
	fetches atomic.Int32
}

type remoteFile struct {
	contentType, name string
	length            int64 // as announced
	body              []byte
}

func (f *fakeRemote) Fetch(ctx context.Context, origin, mediaID string) (*RemoteContent, error) {
	f.fetches.Add(1)
	rf, ok := f.files[origin+"/"+mediaID]
	if !ok {
		return nil, fmt.Errorf("GET %s: %w", mediaID, ErrRemoteNotFound)
	}
	return &RemoteContent{ContentType: rf.contentType, FileName: rf.name, ContentLength: rf.length, Body: io.NopCloser(bytes.NewReader(rf.body))}, nil
}

func TestRemoteMediaIsFetchedOnceAndPoliced(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db, nil)
		photo := testPNG(t, 120, 80)
		remote := &fakeRemote{files: map[string]remoteFile{
			"hs2.test/photo": {"image/png", "p.png", -1, photo},
			"hs2.test/zip":   {"application/pdf", "", -1, zipBytes},
			"hs2.test/huge":  {"application/pdf", "", 2 << 20, pdfBytes},
		}}
		if _, err := s.Download(ctx, "hs2.test", "photo", 0); errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("remote media without a federation client = %v, want M_NOT_FOUND", err)
		}
		s.SetRemote(remote)
		for i := range 2 {
			c, err := s.Download(ctx, "hs2.test", "photo", 0)
			if err != nil {
				t.Fatalf("download %d of remote media: %v", i, err)
			}
			if b := readAll(t, c); !bytes.Equal(b, photo) || c.Media.UploadName != "p.png" {
				t.Fatalf("download %d: wrong bytes or name %q", i, c.Media.UploadName)
			}
		}
		if n := remote.fetches.Load(); n != 1 {
			t.Fatalf("remote fetched %d times, want once (then cached)", n)
		}
		c, err := s.Thumbnail(ctx, "hs2.test", "photo", ThumbnailRequest{32, 32, "crop"}, 0)
		if err != nil {
			t.Fatalf("thumbnail of cached remote media: %v", err)
		}
		c.Body.Close()
		for _, tc := range []struct{ id, want string }{
			{"missing", "M_NOT_FOUND"},
			{"zip", "M_UNKNOWN"},
			{"huge", "M_TOO_LARGE"},
		} {
			if _, err := s.Download(ctx, "hs2.test", tc.id, 0); errcode(err) != tc.want {
				t.Errorf("remote %s = %v, want %s", tc.id, err, tc.want)
			}
		}
		if err := s.Quarantine(ctx, "hs2.test", "photo", "@admin:hs1.test", true); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Download(ctx, "hs2.test", "photo", 0); errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("quarantined remote media = %v, want M_NOT_FOUND", err)
		}
		if got := len(contentFiles(t, s)); got != 2 { // the photo and its thumbnail; nothing of the refused ones
			t.Fatalf("%d files stored, want 2", got)
		}
	})
}
