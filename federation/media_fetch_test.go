package federation

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/media"
)

// fakeMediaClient answers DownloadMedia with a canned response.
type fakeMediaClient struct {
	fclient.FederationClient
	resp *http.Response
	err  error
	got  string // destination/mediaID asked for
}

func (f *fakeMediaClient) DownloadMedia(ctx context.Context, origin, destination spec.ServerName, mediaID string) (*http.Response, error) {
	f.got = string(destination) + "/" + mediaID
	return f.resp, f.err
}

type trackingBody struct {
	io.Reader
	closed bool
}

func (b *trackingBody) Close() error { b.closed = true; return nil }

func mediaResponse(status int, contentType, body string) (*http.Response, *trackingBody) {
	b := &trackingBody{Reader: strings.NewReader(body)}
	h := http.Header{}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	return &http.Response{StatusCode: status, Header: h, Body: b, ContentLength: -1}, b
}

const pdf = "%PDF-1.4\n%%EOF\n"

func parts(ps ...string) string {
	var sb strings.Builder
	for _, p := range ps {
		sb.WriteString("--B\r\n" + p + "\r\n")
	}
	sb.WriteString("--B--\r\n")
	return sb.String()
}

func TestFetchRemoteMedia(t *testing.T) {
	cdn := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ab/letter" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/pdf")
		w.Header().Set("Content-Disposition", `attachment; filename="brief.pdf"`)
		io.WriteString(w, pdf)
	}))
	defer cdn.Close()

	const mp = "multipart/mixed; boundary=B"
	meta := "Content-Type: application/json\r\n\r\n{}"
	for _, tc := range []struct {
		name        string
		status      int
		contentType string
		body        string
		clientErr   error
		wantErr     error // nil: success; errAny: some other error
		wantType    string
		wantName    string
		wantBody    string
		wantReadErr bool // the file part itself is broken
	}{
		{name: "file part", status: 200, contentType: mp,
			body:     parts(meta, "Content-Type: application/pdf\r\nContent-Disposition: attachment; filename*=utf-8''Befund%20M%C3%BCller.pdf\r\n\r\n"+pdf),
			wantType: "application/pdf", wantName: "Befund Müller.pdf", wantBody: pdf},
		{name: "file part without a name", status: 200, contentType: mp,
			body:     parts(meta, "Content-Type: image/png\r\n\r\nPNG"),
			wantType: "image/png", wantBody: "PNG"},
		{name: "metadata with fields", status: 200, contentType: mp,
			body:     parts("Content-Type: application/json\r\n\r\n{\"future\": 1}", "Content-Type: text/plain\r\n\r\nhi"),
			wantType: "text/plain", wantBody: "hi"},
		{name: "Location part is followed", status: 200, contentType: mp,
			body:     parts(meta, "Location: "+cdn.URL+"/ab/letter\r\n"),
			wantType: "application/pdf", wantName: "brief.pdf", wantBody: pdf},
		{name: "Location that does not exist", status: 200, contentType: mp,
			body: parts(meta, "Location: "+cdn.URL+"/gone\r\n"), wantErr: media.ErrRemoteNotFound},
		{name: "plain http Location is refused", status: 200, contentType: mp,
			body: parts(meta, "Location: http://cdn.example/ab\r\n"), wantErr: errAny},
		{name: "file part cut off", status: 200, contentType: mp,
			body:     "--B\r\n" + meta + "\r\n--B\r\nContent-Type: application/pdf\r\n\r\n" + pdf,
			wantType: "application/pdf", wantReadErr: true},
		{name: "origin does not have it", status: 404, contentType: "application/json", body: `{"errcode":"M_NOT_FOUND"}`, wantErr: media.ErrRemoteNotFound},
		{name: "origin fails", status: 502, contentType: "application/json", body: `{}`, wantErr: errAny},
		{name: "not multipart", status: 200, contentType: "application/pdf", body: pdf, wantErr: errAny},
		{name: "multipart without boundary", status: 200, contentType: "multipart/mixed", body: parts(meta), wantErr: errAny},
		{name: "metadata not JSON", status: 200, contentType: mp,
			body: parts("Content-Type: application/json\r\n\r\nnope", "Content-Type: text/plain\r\n\r\nhi"), wantErr: errAny},
		{name: "metadata too large", status: 200, contentType: mp,
			body: parts("Content-Type: application/json\r\n\r\n{\"x\":\""+strings.Repeat("a", maxMediaMetadata)+"\"}", "Content-Type: text/plain\r\n\r\nhi"), wantErr: errAny},
		{name: "no file part", status: 200, contentType: mp, body: parts(meta), wantErr: errAny},
		{name: "origin not a partner", clientErr: fmt.Errorf("hs9.test: %w", ErrNotAllowed), wantErr: media.ErrRemoteNotFound},
		{name: "origin unreachable", clientErr: errors.New("connection refused"), wantErr: errAny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := mediaResponse(tc.status, tc.contentType, tc.body)
			fc := &fakeMediaClient{resp: resp, err: tc.clientErr}
			if tc.clientErr != nil {
				fc.resp = nil
			}
			m := &Media{API: &API{ServerName: "hs1.test"}, Client: fc, Redirect: cdn.Client()}
			rc, err := m.Fetch(context.Background(), "hs2.test", "abc")
			if fc.got != "hs2.test/abc" {
				t.Fatalf("asked for %q, want hs2.test/abc", fc.got)
			}
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("Fetch: %v", err)
			case tc.wantErr == errAny && (err == nil || errors.Is(err, media.ErrRemoteNotFound)):
				t.Fatalf("Fetch = %v, want an error other than not-found", err)
			case tc.wantErr != nil && tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
				t.Fatalf("Fetch = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if tc.clientErr == nil && !body.closed {
					t.Error("response body left open after an error")
				}
				return
			}
			got, readErr := io.ReadAll(rc.Body)
			rc.Body.Close()
			if tc.wantReadErr {
				if readErr == nil {
					t.Fatalf("reading a cut-off file part succeeded with %q, want an error", got)
				}
			} else if readErr != nil || string(got) != tc.wantBody {
				t.Fatalf("body %q (%v), want %q", got, readErr, tc.wantBody)
			}
			if rc.ContentType != tc.wantType || rc.FileName != tc.wantName {
				t.Errorf("type %q name %q, want %q %q", rc.ContentType, rc.FileName, tc.wantType, tc.wantName)
			}
			if !body.closed {
				t.Error("federation response body not closed")
			}
		})
	}
}

var errAny = errors.New("any error")
