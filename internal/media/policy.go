package media

import (
	"bytes"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strings"

	"praxis/internal/httputil"
)

// sniffLen is how many leading bytes the policy looks at. Every signature
// below fits; http.DetectContentType also reads at most 512.
const sniffLen = 512

// octetStream is what clients declare for encrypted attachments: the
// server sees only ciphertext, so the real type is policed by clients.
const octetStream = "application/octet-stream"

// Policy is the practice file policy: which declared content types may be
// uploaded, and that the bytes really are what the type says.
type Policy struct {
	allowed []string // normalised; "image/*" allows a whole family
}

// NewPolicy builds a policy from media.allowed_types.
func NewPolicy(allowed []string) *Policy {
	p := &Policy{}
	for _, t := range allowed {
		if n := normaliseType(t); n != "" {
			p.allowed = append(p.allowed, n)
		}
	}
	return p
}

// normaliseType strips parameters and case: "Image/PNG; x=y" → "image/png".
// An unparsable type yields "".
func normaliseType(t string) string {
	t = strings.TrimSpace(t)
	if t == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(t)
	if err != nil {
		return ""
	}
	return strings.ToLower(mt)
}

// Allows reports whether the normalised type t is on the list.
func (p *Policy) Allows(t string) bool {
	for _, a := range p.allowed {
		if a == t {
			return true
		}
		if fam, ok := strings.CutSuffix(a, "/*"); ok && strings.HasPrefix(t, fam+"/") {
			return true
		}
	}
	return false
}

// Check decides an upload from its declared type (normalised) and its
// first bytes. It returns a Matrix error for the client: 403 M_FORBIDDEN
// when the type is not allowed (what the spec names for "the server does
// not permit the file type"), 400 when the bytes contradict the type.
func (p *Policy) Check(declared string, head []byte) error {
	if !p.Allows(declared) {
		return httputil.Errorf(http.StatusForbidden, "M_FORBIDDEN",
			"files of type %q are not accepted by this server's file policy (allowed: %s)", declared, strings.Join(p.allowed, ", "))
	}
	detected := detect(head, false)
	switch {
	case declared == octetStream:
		// Ciphertext practically never matches a signature of four bytes or
		// more, so a recognisable file labelled octet-stream is a plain
		// upload trying to slip past the list: it must be of an allowed
		// type itself.
		if strong := detect(head, true); strong != nil && !slices.ContainsFunc(strong.types, p.Allows) {
			return httputil.Errorf(http.StatusForbidden, "M_FORBIDDEN",
				"the file is declared as %s but its content is %s, which this server's file policy does not accept", declared, strong.name)
		}
	case detected != nil:
		if !slices.Contains(detected.types, declared) {
			return mismatch(declared, detected)
		}
	case signatureKnown(declared):
		return mismatch(declared, nil)
	case strings.HasPrefix(declared, "text/"):
		if !strings.HasPrefix(http.DetectContentType(head), "text/plain") {
			return httputil.Errorf(http.StatusBadRequest, "M_INVALID_PARAM",
				"the file is declared as %s but its content is not text", declared)
		}
		// Other types we know no signature for pass when the bytes are
		// nothing we recognise.
	}
	return nil
}

func mismatch(declared string, detected *signature) error {
	if detected == nil {
		return httputil.Errorf(http.StatusBadRequest, "M_INVALID_PARAM",
			"the file is declared as %s but its content is not a valid %s file", declared, declared)
	}
	return httputil.Errorf(http.StatusBadRequest, "M_INVALID_PARAM",
		"the file is declared as %s but its content is %s", declared, detected.name)
}

// signature recognises a file format by its leading bytes.
type signature struct {
	name  string
	types []string // declared types these bytes are valid for
	match func(b []byte) bool
	// short signatures (three bytes) match one in 2^24 random ciphertexts:
	// too often to hold against an encrypted attachment.
	short bool
}

func prefix(p string) func([]byte) bool {
	return func(b []byte) bool { return bytes.HasPrefix(b, []byte(p)) }
}

var signatures = []signature{
	{"a PDF document", []string{"application/pdf"}, prefix("%PDF-"), false},
	{"a JPEG image", []string{"image/jpeg", "image/jpg", "image/pjpeg"}, prefix("\xFF\xD8\xFF"), true},
	{"a PNG image", []string{"image/png", "image/apng"}, prefix("\x89PNG\r\n\x1a\n"), false},
	{"a GIF image", []string{"image/gif"}, func(b []byte) bool {
		return bytes.HasPrefix(b, []byte("GIF87a")) || bytes.HasPrefix(b, []byte("GIF89a"))
	}, false},
	{"a WebP image", []string{"image/webp"}, func(b []byte) bool {
		return len(b) >= 12 && string(b[:4]) == "RIFF" && string(b[8:12]) == "WEBP"
	}, false},
	{"a ZIP archive", []string{
		"application/zip", "application/x-zip-compressed", "application/epub+zip",
		"application/vnd.openxmlformats-officedocument.wordprocessingml.document",
		"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
		"application/vnd.openxmlformats-officedocument.presentationml.presentation",
		"application/vnd.oasis.opendocument.text", "application/vnd.oasis.opendocument.spreadsheet",
	}, func(b []byte) bool {
		return bytes.HasPrefix(b, []byte("PK\x03\x04")) || bytes.HasPrefix(b, []byte("PK\x05\x06"))
	}, false},
	{"an OLE2 (legacy Office) document", []string{"application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint", "application/x-ole-storage"},
		prefix("\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1"), false},
	{"a RAR archive", []string{"application/vnd.rar", "application/x-rar-compressed"}, prefix("Rar!\x1a\x07"), false},
	{"a 7-Zip archive", []string{"application/x-7z-compressed"}, prefix("7z\xBC\xAF\x27\x1C"), false},
	{"a gzip archive", []string{"application/gzip", "application/x-gzip"}, prefix("\x1f\x8b\x08"), true},
	{"an ELF executable", []string{"application/x-executable", "application/x-elf"}, prefix("\x7fELF"), false},
	{"a PostScript document", []string{"application/postscript"}, prefix("%!PS"), false},
	{"an MP4/QuickTime/HEIF file", []string{"video/mp4", "video/quicktime", "audio/mp4", "image/heic", "image/heif", "image/avif"}, func(b []byte) bool {
		return len(b) >= 12 && string(b[4:8]) == "ftyp"
	}, false},
	{"an Ogg file", []string{"audio/ogg", "video/ogg", "application/ogg"}, prefix("OggS"), false},
	{"a WebM/Matroska file", []string{"video/webm", "audio/webm", "video/x-matroska"}, prefix("\x1A\x45\xDF\xA3"), false},
	{"an HTML, SVG or XML document", []string{"text/html", "image/svg+xml", "application/xml", "text/xml"}, markup, false},
}

// markup recognises documents a browser would render with scripts.
func markup(b []byte) bool {
	b = bytes.TrimLeft(b, "\t\n\x0c\r \xef\xbb\xbf")
	lower := bytes.ToLower(b[:min(len(b), 16)])
	for _, p := range []string{"<!doctype html", "<html", "<script", "<svg", "<?xml", "<head", "<body", "<iframe"} {
		if bytes.HasPrefix(lower, []byte(p)) {
			return true
		}
	}
	return false
}

// detect names the format of head; strongOnly skips short signatures.
func detect(head []byte, strongOnly bool) *signature {
	for i := range signatures {
		if strongOnly && signatures[i].short {
			continue
		}
		if signatures[i].match(head) {
			return &signatures[i]
		}
	}
	return nil
}

func signatureKnown(t string) bool {
	for _, s := range signatures {
		if slices.Contains(s.types, t) {
			return true
		}
	}
	return false
}

// safeInline lists the types the spec lets a server serve with
// Content-Disposition: inline; everything else is an attachment, so a
// browser never renders, say, an HTML or PDF upload in our origin.
var safeInline = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true,
	"application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true,
	"audio/wave": true, "audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// ContentDisposition renders the header for serving a file of type
// contentType under fileName.
func ContentDisposition(contentType, fileName string) string {
	disp := "attachment"
	if safeInline[normaliseType(contentType)] {
		disp = "inline"
	}
	if fileName == "" {
		return disp
	}
	if v := mime.FormatMediaType(disp, map[string]string{"filename": fileName}); v != "" {
		return v
	}
	return disp
}

// String describes the policy for logs and docs.
func (p *Policy) String() string { return fmt.Sprint(p.allowed) }
