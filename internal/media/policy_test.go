package media

import (
	"crypto/rand"
	"errors"
	"net/http"
	"testing"

	"praxis/internal/httputil"
)

var (
	pdfBytes  = []byte("%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n")
	pngBytes  = []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
	jpegBytes = []byte("\xFF\xD8\xFF\xE0\x00\x10JFIF\x00")
	zipBytes  = []byte("PK\x03\x04\x14\x00\x00\x00\x08\x00")
	htmlBytes = []byte("  <!DOCTYPE html><html><script>alert(1)</script>")
)

func TestPolicyCheck(t *testing.T) {
	defaults := NewPolicy([]string{"application/pdf", "image/jpeg", "image/png", "application/octet-stream"})
	random := make([]byte, 512)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		policy   *Policy
		declared string
		head     []byte
		status   int // 0 = accepted
	}{
		{"pdf as pdf", defaults, "application/pdf", pdfBytes, 0},
		{"png as png", defaults, "image/png", pngBytes, 0},
		{"jpeg as jpeg", defaults, "image/jpeg", jpegBytes, 0},
		{"zip labelled pdf", defaults, "application/pdf", zipBytes, http.StatusBadRequest},
		{"png labelled jpeg", defaults, "image/jpeg", pngBytes, http.StatusBadRequest},
		{"html labelled png", defaults, "image/png", htmlBytes, http.StatusBadRequest},
		{"empty file labelled pdf", defaults, "application/pdf", nil, http.StatusBadRequest},
		{"text/plain not allowed", defaults, "text/plain", []byte("hello"), http.StatusForbidden},
		{"zip not allowed", defaults, "application/zip", zipBytes, http.StatusForbidden},
		{"ciphertext as octet-stream", defaults, "application/octet-stream", random, 0},
		{"empty octet-stream", defaults, "application/octet-stream", nil, 0},
		{"pdf as octet-stream (allowed type)", defaults, "application/octet-stream", pdfBytes, 0},
		{"zip smuggled as octet-stream", defaults, "application/octet-stream", zipBytes, http.StatusForbidden},
		{"html smuggled as octet-stream", defaults, "application/octet-stream", htmlBytes, http.StatusForbidden},
		{"text allowed and text", NewPolicy([]string{"text/plain"}), "text/plain", []byte("Befund: unauffällig\n"), 0},
		{"text allowed but binary", NewPolicy([]string{"text/plain"}), "text/plain", []byte("\x00\x01\x02\x03binary"), http.StatusBadRequest},
		{"text allowed but zip", NewPolicy([]string{"text/plain"}), "text/plain", zipBytes, http.StatusBadRequest},
		{"wildcard family", NewPolicy([]string{"image/*"}), "image/png", pngBytes, 0},
		{"wildcard family, wrong bytes", NewPolicy([]string{"image/*"}), "image/gif", pngBytes, http.StatusBadRequest},
		{"docx is a zip", NewPolicy([]string{"application/vnd.openxmlformats-officedocument.wordprocessingml.document"}),
			"application/vnd.openxmlformats-officedocument.wordprocessingml.document", zipBytes, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.policy.Check(tc.declared, tc.head)
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("Check(%q) = %v, want accepted", tc.declared, err)
				}
				return
			}
			var he *httputil.Error
			if !errors.As(err, &he) {
				t.Fatalf("Check(%q) = %v, want a Matrix error with status %d", tc.declared, err, tc.status)
			}
			if he.Status != tc.status || he.Message == "" {
				t.Fatalf("Check(%q) = %d %s %q, want status %d with a message", tc.declared, he.Status, he.ErrCode, he.Message, tc.status)
			}
		})
	}
}

func TestNormaliseType(t *testing.T) {
	for in, want := range map[string]string{
		"image/PNG":                 "image/png",
		"text/plain; charset=utf-8": "text/plain",
		" application/pdf ":         "application/pdf",
		"not a type":                "",
		"":                          "",
	} {
		if got := normaliseType(in); got != want {
			t.Errorf("normaliseType(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestContentDisposition(t *testing.T) {
	for _, tc := range []struct {
		ct, name, want string
	}{
		{"image/png", "scan.png", "inline; filename=scan.png"},
		{"application/pdf", "Arztbrief.pdf", "attachment; filename=Arztbrief.pdf"},
		{"text/html", "x.html", "attachment; filename=x.html"},
		{"application/octet-stream", "", "attachment"},
		{"image/jpeg; charset=x", "", "inline"},
		{"application/pdf", "Befund Müller.pdf", "attachment; filename*=utf-8''Befund%20M%C3%BCller.pdf"},
	} {
		if got := ContentDisposition(tc.ct, tc.name); got != tc.want {
			t.Errorf("ContentDisposition(%q, %q) = %q, want %q", tc.ct, tc.name, got, tc.want)
		}
	}
}

// A ciphertext only fails the octet-stream check if it starts with a
// signature of four bytes or more; make sure no short one is consulted.
func TestOctetStreamIgnoresShortSignatures(t *testing.T) {
	p := NewPolicy([]string{"application/octet-stream"}) // not even JPEG allowed
	for _, head := range [][]byte{jpegBytes, []byte("\x1f\x8b\x08\x00rest")} {
		if err := p.Check(octetStream, head); err != nil {
			t.Errorf("Check(octet-stream, % x) = %v, want accepted", head[:4], err)
		}
	}
	if err := p.Check(octetStream, pngBytes); err == nil {
		t.Error("a PNG labelled octet-stream passed a policy that allows no PNG")
	}
}
