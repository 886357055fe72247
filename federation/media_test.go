package federation_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"image"
	"image/color"
	"image/png"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"praxis/federation"
	"praxis/internal/hstest"
	"praxis/internal/media"
)

func testPNG(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for x := range w {
		for y := range h {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 200, 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var testPDF = []byte("%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")

func upload(t *testing.T, c *mautrix.Client, body []byte, contentType, name string) id.ContentURI {
	t.Helper()
	resp, err := c.UploadMedia(context.Background(), mautrix.ReqUploadMedia{ContentBytes: body, ContentType: contentType, FileName: name})
	if err != nil {
		t.Fatalf("upload %s: %v", name, err)
	}
	return resp.ContentURI
}

// download fetches mxc through c's own server (authenticated media).
func download(c *mautrix.Client, mxc id.ContentURI) ([]byte, http.Header, error) {
	resp, err := c.Download(context.Background(), mxc)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return b, resp.Header, err
}

// fedGet sends a GET from origin to dest, signed with origin's key unless
// unsigned, through the network's transport.
func fedGet(t *testing.T, n *hstest.Network, origin *hstest.Server, dest, path string, unsigned bool) *http.Response {
	t.Helper()
	name := spec.ServerName(origin.Config.ServerName)
	req := fclient.NewFederationRequest("GET", name, spec.ServerName(dest), path)
	if !unsigned {
		if err := req.Sign(name, gomatrixserverlib.KeyID(origin.SigningKey.KeyID), origin.SigningKey.PrivateKey); err != nil {
			t.Fatal(err)
		}
	}
	hreq, err := req.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := n.RoundTrip(hreq.WithContext(context.Background()))
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

type mediaPart struct {
	header http.Header
	body   []byte
}

// readMultipart parses a federation media answer into its parts.
func readMultipart(t *testing.T, resp *http.Response) []mediaPart {
	t.Helper()
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		t.Fatalf("Content-Type %q, want multipart/mixed with a boundary", resp.Header.Get("Content-Type"))
	}
	var parts []mediaPart
	mr := multipart.NewReader(resp.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return parts
		}
		if err != nil {
			t.Fatalf("part %d: %v", len(parts), err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("part %d body: %v", len(parts), err)
		}
		parts = append(parts, mediaPart{http.Header(p.Header), b})
	}
}

func TestFederatedMedia(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test", "hs3.test"}, func(t *testing.T, n *hstest.Network) {
		ctx := context.Background()
		hs1, hs2, hs3 := n.Server("hs1.test"), n.Server("hs2.test"), n.Server("hs3.test")
		// hs4 talks to hs1 and hs2, but neither has it on its allowlist.
		hs4 := n.Add(t, "hs4.test", []string{"hs1.test", "hs2.test"})
		alice, bob, carol, dave := hs1.Register(t, "alice"), hs2.Register(t, "bob"), hs3.Register(t, "carol"), hs4.Register(t, "dave")

		photo, letter := testPNG(t, 120, 80), testPDF
		// a scan of a few megabytes: streamed through several reads on
		// both sides of the federation request
		scan := append(append([]byte{}, testPDF...), make([]byte, 3<<20)...)
		if _, err := rand.Read(scan[len(testPDF):]); err != nil {
			t.Fatal(err)
		}
		photoURI := upload(t, alice, photo, "image/png", "photo.png")
		letterURI := upload(t, alice, letter, "application/pdf", "Befund Müller.pdf")
		scanURI := upload(t, alice, scan, "application/pdf", "scan.pdf")
		strangerURI := upload(t, dave, letter, "application/pdf", "x.pdf")

		t.Run("a partner's media is fetched through our own server", func(t *testing.T) {
			for _, tc := range []struct {
				name            string
				mxc             id.ContentURI
				want            []byte
				wantType        string
				wantDisposition string
			}{
				{"png", photoURI, photo, "image/png", `inline; filename=photo.png`},
				{"pdf", letterURI, letter, "application/pdf", `attachment; filename*=utf-8''Befund%20M%C3%BCller.pdf`},
				{"large pdf", scanURI, scan, "application/pdf", `attachment; filename=scan.pdf`},
			} {
				t.Run(tc.name, func(t *testing.T) {
					b, h, err := download(bob, tc.mxc)
					if err != nil {
						t.Fatalf("bob downloads %s: %v", tc.mxc, err)
					}
					if !bytes.Equal(b, tc.want) {
						t.Fatalf("got %d bytes, want the %d uploaded", len(b), len(tc.want))
					}
					if got := h.Get("Content-Type"); got != tc.wantType {
						t.Errorf("Content-Type %q, want %q", got, tc.wantType)
					}
					if got := h.Get("Content-Disposition"); got != tc.wantDisposition {
						t.Errorf("Content-Disposition %q, want %q", got, tc.wantDisposition)
					}
				})
			}
		})

		t.Run("thumbnail of a partner's image", func(t *testing.T) {
			resp, err := bob.DownloadThumbnail(ctx, photoURI, 40, 40, mautrix.DownloadThumbnailExtra{Method: "scale"})
			if err != nil {
				t.Fatalf("thumbnail: %v", err)
			}
			defer resp.Body.Close()
			img, format, err := image.Decode(resp.Body)
			if err != nil || format != "png" {
				t.Fatalf("thumbnail decodes as %q: %v", format, err)
			}
			if got := img.Bounds().Size(); got != (image.Point{40, 26}) {
				t.Fatalf("thumbnail is %v, want 40×26 (120×80 scaled into 40×40)", got)
			}
		})

		t.Run("cached: served while the origin is down", func(t *testing.T) {
			n.SetDown("hs1.test", true)
			defer n.SetDown("hs1.test", false)
			b, _, err := download(bob, letterURI)
			if err != nil || !bytes.Equal(b, letter) {
				t.Fatalf("second download with hs1 down: %d bytes, %v; want the cached file", len(b), err)
			}
			// Proof that hs1 really is unreachable: media hs2 never saw fails.
			other := upload(t, alice, letter, "application/pdf", "other.pdf")
			if _, _, err := download(bob, other); hstest.ErrCode(err) == "" {
				t.Fatalf("uncached media with hs1 down: %v, want an error", err)
			}
		})

		t.Run("unknown media", func(t *testing.T) {
			_, _, err := download(bob, id.ContentURI{Homeserver: "hs1.test", FileID: "nosuchmedia"})
			if code := hstest.ErrCode(err); code != "M_NOT_FOUND" {
				t.Fatalf("unknown remote media: %v, want M_NOT_FOUND", err)
			}
		})

		t.Run("a server not on the allowlist is never asked", func(t *testing.T) {
			_, _, err := download(bob, strangerURI)
			if code := hstest.ErrCode(err); code != "M_NOT_FOUND" {
				t.Fatalf("media of hs4 (not a partner of hs2): %v, want M_NOT_FOUND", err)
			}
			// The refusal comes from the transport's allowlist check,
			// before anything is sent.
			fm := &federation.Media{API: hs2.Fed.API, Client: hs2.Fed.Client}
			_, err = fm.Fetch(ctx, "hs4.test", strangerURI.FileID)
			if !errors.Is(err, federation.ErrNotAllowed) || !errors.Is(err, media.ErrRemoteNotFound) {
				t.Fatalf("Fetch from hs4 = %v, want ErrNotAllowed reported as ErrRemoteNotFound", err)
			}
		})

		dl := "/_matrix/federation/v1/media/download/"
		th := "/_matrix/federation/v1/media/thumbnail/"
		t.Run("federation endpoint", func(t *testing.T) {
			for _, tc := range []struct {
				name       string
				origin     *hstest.Server
				dest       string
				path       string
				unsigned   bool
				wantStatus int
				wantCode   string
			}{
				{"unsigned", hs2, "hs1.test", dl + photoURI.FileID, true, 401, "M_UNAUTHORIZED"},
				{"origin not a partner", hs4, "hs1.test", dl + photoURI.FileID, false, 403, "M_FORBIDDEN"},
				{"unknown media", hs2, "hs1.test", dl + "nosuchmedia", false, 404, "M_NOT_FOUND"},
				// hs2 holds hs1's photo in its cache, but serves only its own media.
				{"media of another origin", hs3, "hs2.test", dl + photoURI.FileID, false, 404, "M_NOT_FOUND"},
				{"thumbnail of media of another origin", hs3, "hs2.test", th + photoURI.FileID + "?width=32&height=32", false, 404, "M_NOT_FOUND"},
				{"thumbnail without width", hs2, "hs1.test", th + photoURI.FileID + "?height=32", false, 400, "M_MISSING_PARAM"},
				{"thumbnail with a bad width", hs2, "hs1.test", th + photoURI.FileID + "?width=-3&height=32", false, 400, "M_INVALID_PARAM"},
				{"thumbnail with a bad height", hs2, "hs1.test", th + photoURI.FileID + "?width=32&height=abc", false, 400, "M_INVALID_PARAM"},
				{"thumbnail with a bad method", hs2, "hs1.test", th + photoURI.FileID + "?width=32&height=32&method=stretch", false, 400, "M_INVALID_PARAM"},
				{"bad timeout_ms", hs2, "hs1.test", dl + photoURI.FileID + "?timeout_ms=soon", false, 400, "M_INVALID_PARAM"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					resp := fedGet(t, n, tc.origin, tc.dest, tc.path, tc.unsigned)
					body, _ := io.ReadAll(resp.Body)
					if code := gjson.GetBytes(body, "errcode").String(); resp.StatusCode != tc.wantStatus || code != tc.wantCode {
						t.Fatalf("got %d %s, want %d %s", resp.StatusCode, code, tc.wantStatus, tc.wantCode)
					}
				})
			}
		})

		t.Run("download answer is multipart/mixed: metadata, then the file", func(t *testing.T) {
			resp := fedGet(t, n, hs3, "hs1.test", dl+letterURI.FileID, false)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
			parts := readMultipart(t, resp)
			if len(parts) != 2 {
				t.Fatalf("%d parts, want 2", len(parts))
			}
			if ct := parts[0].header.Get("Content-Type"); ct != "application/json" || string(parts[0].body) != "{}" {
				t.Errorf("metadata part %q %q, want application/json {}", ct, parts[0].body)
			}
			if ct := parts[1].header.Get("Content-Type"); ct != "application/pdf" {
				t.Errorf("file part Content-Type %q, want application/pdf", ct)
			}
			if cd := parts[1].header.Get("Content-Disposition"); cd != `attachment; filename*=utf-8''Befund%20M%C3%BCller.pdf` {
				t.Errorf("file part Content-Disposition %q", cd)
			}
			if !bytes.Equal(parts[1].body, letter) {
				t.Errorf("file part has %d bytes, want the %d uploaded", len(parts[1].body), len(letter))
			}
		})

		t.Run("thumbnail answer is multipart/mixed with a thumbnail", func(t *testing.T) {
			resp := fedGet(t, n, hs3, "hs1.test", th+photoURI.FileID+"?width=30&height=30&method=crop&animated=true", false)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
			parts := readMultipart(t, resp)
			if len(parts) != 2 || parts[1].header.Get("Content-Type") != "image/png" {
				t.Fatalf("got %d parts (file part %v), want 2 with an image/png", len(parts), parts[len(parts)-1].header)
			}
			img, err := png.Decode(bytes.NewReader(parts[1].body))
			if err != nil {
				t.Fatalf("thumbnail part: %v", err)
			}
			if got := img.Bounds().Size(); got != (image.Point{30, 30}) {
				t.Fatalf("cropped thumbnail is %v, want 30×30", got)
			}
		})

		t.Run("quarantined media is not served to partners", func(t *testing.T) {
			if err := hs1.Media.Quarantine(ctx, "hs1.test", letterURI.FileID, "@admin:hs1.test", true); err != nil {
				t.Fatal(err)
			}
			resp := fedGet(t, n, hs3, "hs1.test", dl+letterURI.FileID, false)
			body, _ := io.ReadAll(resp.Body)
			if code := gjson.GetBytes(body, "errcode").String(); resp.StatusCode != 404 || code != "M_NOT_FOUND" {
				t.Fatalf("federation download of quarantined media: %d %s, want 404 M_NOT_FOUND", resp.StatusCode, code)
			}
			if _, _, err := download(carol, letterURI); hstest.ErrCode(err) != "M_NOT_FOUND" {
				t.Fatalf("carol@hs3 downloads quarantined media: %v, want M_NOT_FOUND", err)
			}
		})
	})
}
