package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// pngOf encodes a w×h picture; noisy pictures do not compress, so their
// size grows with w×h.
func pngOf(t *testing.T, w, h int, noisy bool) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for x := range w {
		for y := range h {
			c := color.RGBA{R: uint8(x), G: uint8(y), B: 200, A: 255}
			if noisy {
				c.R, c.G, c.B = uint8(rand.IntN(256)), uint8(rand.IntN(256)), uint8(rand.IntN(256))
			}
			img.Set(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func upload(t *testing.T, c *mautrix.Client, name string, body []byte) id.ContentURI {
	t.Helper()
	resp, err := c.UploadMedia(context.Background(), mautrix.ReqUploadMedia{ContentBytes: body, ContentType: "image/png", FileName: name})
	if err != nil {
		t.Fatalf("upload %s: %v", name, err)
	}
	return resp.ContentURI
}

func TestMediaCommands(t *testing.T) {
	srv, tok := bootstrap(t)
	ctx := context.Background()
	alice := srv.Register(t, "alice")
	admin := []string{"--server", srv.URL, "--token", tok}
	mustA := func(args ...string) string { return mustCtl(t, append(admin, args...)...) }
	ctlA := func(args ...string) (int, string, string) { return ctl(t, append(admin, args...)...) }

	body := pngOf(t, 16, 16, false)
	mxc := upload(t, alice, "xray.png", body)

	out := mustA("media", "list", "alice")
	for _, want := range []string{"MXC", mxc.String(), "image/png", "xray.png", "ok", "1 of 1 files"} {
		if !strings.Contains(out, want) {
			t.Errorf("media list lacks %q:\n%s", want, out)
		}
	}
	out = mustA("--json", "media", "list", "@alice:hs1.test")
	var list struct {
		Media []mediaEntry `json:"media"`
		Total int          `json:"total"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || list.Total != 1 || len(list.Media) != 1 ||
		list.Media[0].MediaID != mxc.FileID || list.Media[0].MediaLength != int64(len(body)) {
		t.Fatalf("media list --json: %q (%v)", out, err)
	}

	out = mustA("media", "quarantine", mxc.String())
	if !strings.Contains(out, "quarantined "+mxc.String()) {
		t.Errorf("media quarantine printed %q", out)
	}
	if _, err := alice.DownloadBytes(ctx, mxc); hstest.ErrCode(err) != "M_NOT_FOUND" {
		t.Fatalf("download of quarantined media: %v, want M_NOT_FOUND", err)
	}
	if out = mustA("media", "list", "alice"); !strings.Contains(out, "quarantined by @boss:hs1.test") {
		t.Errorf("media list does not show the quarantine:\n%s", out)
	}
	// the short form without mxc://
	out = mustA("media", "unquarantine", "hs1.test/"+mxc.FileID)
	if !strings.Contains(out, "released "+mxc.String()) {
		t.Errorf("media unquarantine printed %q", out)
	}
	if got, err := alice.DownloadBytes(ctx, mxc); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("download after unquarantine: %d bytes, %v", len(got), err)
	}

	out = mustA("media", "delete", mxc.String())
	if !strings.Contains(out, "deleted "+mxc.String()) {
		t.Errorf("media delete printed %q", out)
	}
	if _, err := alice.DownloadBytes(ctx, mxc); hstest.ErrCode(err) != "M_NOT_FOUND" {
		t.Fatalf("download of deleted media: %v, want M_NOT_FOUND", err)
	}
	if code, _, errOut := ctlA("media", "delete", mxc.String()); code != 1 || !strings.Contains(errOut, "M_NOT_FOUND") {
		t.Errorf("second delete: exit %d, %q", code, errOut)
	}
	if out = mustA("media", "list", "alice"); !strings.Contains(out, "0 of 0 files") {
		t.Errorf("media list after delete:\n%s", out)
	}

	// The actions are audited under the admin's name.
	out = mustA("audit", "list", "--actor", "@boss:hs1.test", "--target", mxc.String())
	for _, want := range []string{"media.quarantine", "media.unquarantine", "media.delete"} {
		if !strings.Contains(out, want) {
			t.Errorf("audit list lacks %s:\n%s", want, out)
		}
	}
}

func TestMediaList_Paging(t *testing.T) {
	srv, tok := bootstrap(t)
	alice := srv.Register(t, "alice")
	var mxcs []id.ContentURI
	for i := range 3 {
		mxcs = append(mxcs, upload(t, alice, "scan.png", pngOf(t, 4+i, 4, false)))
	}
	admin := []string{"--server", srv.URL, "--token", tok}
	out := mustCtl(t, append(admin, "media", "list", "alice", "--limit", "2")...)
	if !strings.Contains(out, "2 of 3 files (next page: --from 2)") || strings.Count(out, "mxc://") != 2 {
		t.Errorf("first page:\n%s", out)
	}
	out = mustCtl(t, append(admin, "media", "list", "alice", "--limit", "2", "--from", "2")...)
	if !strings.Contains(out, "1 of 3 files\n") || strings.Count(out, "mxc://") != 1 {
		t.Errorf("second page:\n%s", out)
	}
	seen := 0
	for _, page := range []string{"0", "2"} {
		out := mustCtl(t, append(admin, "media", "list", "alice", "--limit", "2", "--from", page)...)
		for _, m := range mxcs {
			seen += strings.Count(out, m.String())
		}
	}
	if seen != 3 {
		t.Errorf("the two pages show %d of the 3 files, want each once", seen)
	}
}

func TestMediaPurge(t *testing.T) {
	srv, tok := bootstrap(t)
	ctx := context.Background()
	alice := srv.Register(t, "alice")
	big := upload(t, alice, "big.png", pngOf(t, 64, 64, true))
	small := upload(t, alice, "small.png", pngOf(t, 2, 2, false))
	avatar := upload(t, alice, "me.png", pngOf(t, 3, 3, false))
	if err := alice.SetAvatarURL(ctx, avatar); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // created_ts < before_ts, in milliseconds
	admin := []string{"--server", srv.URL, "--token", tok}
	exists := func(u id.ContentURI) bool {
		m, _ := srv.Media.Get(ctx, u.Homeserver, u.FileID)
		return m != nil
	}

	// nothing is that old
	if out := mustCtl(t, append(admin, "media", "purge", "--before", "1h")...); !strings.Contains(out, "deleted 0 files") {
		t.Errorf("purge --before 1h printed %q", out)
	}
	out := mustCtl(t, append(admin, "media", "purge", "--before", "0s", "--size-gt", "5000")...)
	if !strings.Contains(out, "deleted 1 files") || exists(big) || !exists(small) || !exists(avatar) {
		t.Errorf("purge --size-gt 5000 printed %q; big exists %v, small %v, avatar %v", out, exists(big), exists(small), exists(avatar))
	}
	out = mustCtl(t, append(admin, "--json", "media", "purge", "--before", "0s")...)
	var resp mediaDeleted
	if err := json.Unmarshal([]byte(out), &resp); err != nil || resp.Total != 1 || len(resp.DeletedMedia) != 1 || resp.DeletedMedia[0] != small.FileID {
		t.Errorf("purge --json printed %q (%v), want only the small file", out, err)
	}
	if !exists(avatar) {
		t.Error("purge deleted the avatar although profiles are kept by default")
	}
	mustCtl(t, append(admin, "media", "purge", "--before", "0s", "--keep-profiles=false")...)
	if exists(avatar) {
		t.Error("purge --keep-profiles=false kept the avatar")
	}
}

func TestMediaFailures(t *testing.T) {
	srv, tok := bootstrap(t)
	alice := srv.Register(t, "alice")
	mxc := upload(t, alice, "a.png", pngOf(t, 2, 2, false))
	admin := []string{"--server", srv.URL, "--token", tok}
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no reference", append(admin, "media", "quarantine"), 2, "want one media reference"},
		{"two references", append(admin, "media", "delete", mxc.String(), mxc.String()), 2, "want one media reference"},
		{"not a media reference", append(admin, "media", "quarantine", "just-an-id"), 2, "not a media reference"},
		{"empty media ID", append(admin, "media", "delete", "mxc://hs1.test/"), 2, "not a media reference"},
		{"path in media ID", append(admin, "media", "delete", "hs1.test/a/../b"), 2, "not a media reference"},
		{"no user", append(admin, "media", "list"), 2, "want one user"},
		{"purge without --before", append(admin, "media", "purge"), 2, "--before is required"},
		{"purge in the future", append(admin, "media", "purge", "--before", "2999-01-01"), 2, "lies in the future"},
		{"purge with a bad time", append(admin, "media", "purge", "--before", "lately"), 2, "lately"},
		{"negative size", append(admin, "media", "purge", "--before", "1d", "--size-gt", "-1"), 2, "--size-gt"},
		{"non-admin", []string{"--server", srv.URL, "--token", alice.AccessToken, "media", "quarantine", mxc.String()}, 1, "M_FORBIDDEN"},
		{"non-admin list", []string{"--server", srv.URL, "--token", alice.AccessToken, "media", "list", "@alice:hs1.test"}, 1, "M_FORBIDDEN"},
		{"unknown media", append(admin, "media", "quarantine", "hs1.test/nothingHere"), 1, "M_NOT_FOUND"},
		{"remote media cannot be deleted", append(admin, "media", "delete", "mxc://other.test/abc"), 1, "M_INVALID_PARAM"},
		{"remote user", append(admin, "media", "list", "@bob:other.test"), 1, "M_INVALID_PARAM"},
		{"bad order", append(admin, "media", "list", "alice", "--order-by", "colour"), 1, "M_INVALID_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := ctl(t, tc.args...)
			if code != tc.wantCode || !strings.Contains(errOut, tc.wantErr) {
				t.Errorf("exit %d, stderr %q; want exit %d mentioning %q", code, errOut, tc.wantCode, tc.wantErr)
			}
			if lines := strings.Count(errOut, "\n"); tc.wantCode == 1 && lines != 1 {
				t.Errorf("stderr has %d lines, want a one-line reason: %q", lines, errOut)
			}
		})
	}
	// nothing above changed the file
	if got, err := alice.DownloadBytes(context.Background(), mxc); err != nil || len(got) == 0 {
		t.Errorf("the file is gone after failed commands: %v", err)
	}
}

func TestParseMXC(t *testing.T) {
	for _, tc := range []struct {
		in, server, id string
		ok             bool
	}{
		{"mxc://hs1.test/AbC_-9", "hs1.test", "AbC_-9", true},
		{"hs1.test/AbC", "hs1.test", "AbC", true},
		{"mxc://clinic.example:8448/x", "clinic.example:8448", "x", true},
		{"mxc://[::1]:8448/x", "[::1]:8448", "x", true},
		{"mxc://hs1.test", "", "", false},
		{"/abc", "", "", false},
		{"hs1.test/a/b", "", "", false},
		{"hs1.test/a%2Fb", "", "", false},
		{"hs1.test/a?b", "", "", false},
		{"https://hs1.test/abc", "", "", false},
		{"", "", "", false},
	} {
		server, mediaID, err := parseMXC(tc.in)
		if (err == nil) != tc.ok || server != tc.server || mediaID != tc.id {
			t.Errorf("parseMXC(%q) = %q, %q, %v; want %q, %q, ok %v", tc.in, server, mediaID, err, tc.server, tc.id, tc.ok)
		}
	}
}

func TestParseBefore(t *testing.T) {
	now := time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"30d", now.Add(-30 * 24 * time.Hour).UnixMilli(), false},
		{"0s", now.UnixMilli(), false},
		{"2026-01-01", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(), false},
		{"1767225600000", 1767225600000, false},
		{"0", 0, false},
		{"2027-01-01", 0, true},     // the future
		{"99999999999999", 0, true}, // the future, in ms
		{"-5", 0, true},             // not a time
		{"soon", 0, true},
	} {
		got, err := parseBefore(tc.in, now)
		if (err != nil) != tc.wantErr || (!tc.wantErr && got != tc.want) {
			t.Errorf("parseBefore(%q) = %d, %v; want %d (error %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestFmtSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := fmtSize(n); got != want {
			t.Errorf("fmtSize(%d) = %q, want %q", n, got, want)
		}
	}
}
