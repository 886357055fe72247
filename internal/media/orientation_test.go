package media

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/color"
	"image/jpeg"
	"testing"
)

// withOrientation inserts an EXIF APP1 segment carrying orientation o
// right after the SOI marker of a JPEG.
func withOrientation(t testing.TB, jpg []byte, o int, bo binary.ByteOrder) []byte {
	t.Helper()
	var tiff bytes.Buffer
	if bo == binary.LittleEndian {
		tiff.WriteString("II*\x00")
	} else {
		tiff.WriteString("MM\x00*")
	}
	binary.Write(&tiff, bo, uint32(8)) // IFD0 offset
	binary.Write(&tiff, bo, uint16(1)) // one entry
	binary.Write(&tiff, bo, uint16(0x0112))
	binary.Write(&tiff, bo, uint16(3)) // SHORT
	binary.Write(&tiff, bo, uint32(1))
	binary.Write(&tiff, bo, uint16(o))
	binary.Write(&tiff, bo, uint16(0))
	binary.Write(&tiff, bo, uint32(0)) // no next IFD
	seg := append([]byte("Exif\x00\x00"), tiff.Bytes()...)
	var out bytes.Buffer
	out.Write(jpg[:2])
	out.Write([]byte{0xFF, 0xE1})
	binary.Write(&out, binary.BigEndian, uint16(len(seg)+2))
	out.Write(seg)
	out.Write(jpg[2:])
	return out.Bytes()
}

func TestJPEGOrientation(t *testing.T) {
	plain := testJPEG(t, 8, 4)
	if got := jpegOrientation(plain); got != 1 {
		t.Fatalf("JPEG without EXIF: orientation %d, want 1", got)
	}
	for _, bo := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		for o := 1; o <= 8; o++ {
			if got := jpegOrientation(withOrientation(t, plain, o, bo)); got != o {
				t.Errorf("%v orientation %d read as %d", bo, o, got)
			}
		}
	}
	for _, junk := range [][]byte{nil, {0xFF}, {0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF}, pngBytes} {
		if got := jpegOrientation(junk); got != 1 {
			t.Errorf("jpegOrientation(% x) = %d, want 1", junk, got)
		}
	}
}

func TestOrientTurnsUpright(t *testing.T) {
	// A 3×2 image with a red top-left pixel. Stored with orientation 6 it
	// is displayed rotated 90° clockwise: 2×3 with red at the top right.
	src := image.NewRGBA(image.Rect(0, 0, 3, 2))
	red := color.RGBA{255, 0, 0, 255}
	src.SetRGBA(0, 0, red)
	for _, tc := range []struct {
		o        int
		w, h     int
		redX, rY int
	}{
		{1, 3, 2, 0, 0}, {2, 3, 2, 2, 0}, {3, 3, 2, 2, 1}, {4, 3, 2, 0, 1},
		{5, 2, 3, 0, 0}, {6, 2, 3, 1, 0}, {7, 2, 3, 1, 2}, {8, 2, 3, 0, 2},
	} {
		out := orient(src, tc.o)
		if b := out.Bounds(); b.Dx() != tc.w || b.Dy() != tc.h {
			t.Errorf("orientation %d: %d×%d, want %d×%d", tc.o, b.Dx(), b.Dy(), tc.w, tc.h)
			continue
		}
		if out.RGBAAt(tc.redX, tc.rY) != red {
			t.Errorf("orientation %d: red pixel not at (%d,%d)", tc.o, tc.redX, tc.rY)
		}
	}
}

func TestThumbnailHonoursEXIFOrientation(t *testing.T) {
	storageRun(t, func(t *testing.T, s *Service) {
		// Stored 400×300 but displayed 300×400 (orientation 6).
		body := withOrientation(t, testJPEG(t, 400, 300), 6, binary.BigEndian)
		m := upload(t, s, alice, "image/jpeg", body)
		c, err := s.Thumbnail(t.Context(), "hs1.test", m.MediaID, ThumbnailRequest{150, 150, "scale"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		img, err := jpeg.Decode(bytes.NewReader(readAll(t, c)))
		if err != nil {
			t.Fatal(err)
		}
		if b := img.Bounds(); b.Dx() != 112 || b.Dy() != 150 {
			t.Fatalf("thumbnail of a sideways photo: %d×%d, want 112×150 (upright)", b.Dx(), b.Dy())
		}
	})
}

// Uploaded bytes are untrusted: the EXIF reader must never panic and
// always answer a valid orientation.
func FuzzJPEGOrientation(f *testing.F) {
	f.Add(testJPEG(f, 4, 4))
	f.Add(withOrientation(f, testJPEG(f, 4, 4), 6, binary.LittleEndian))
	f.Add([]byte("\xFF\xD8\xFF\xE1\x00\x10Exif\x00\x00MM\x00*\x00\x00\x00\x08"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if o := jpegOrientation(b); o < 1 || o > 8 {
			t.Fatalf("orientation %d out of range", o)
		}
	})
}

func FuzzPolicyCheck(f *testing.F) {
	p := NewPolicy([]string{"application/pdf", "image/jpeg", "image/png", "application/octet-stream", "text/plain"})
	for _, seed := range [][]byte{pdfBytes, pngBytes, jpegBytes, zipBytes, htmlBytes, nil} {
		f.Add("application/pdf", seed)
	}
	f.Fuzz(func(t *testing.T, declared string, head []byte) {
		err := p.Check(normaliseType(declared), head)
		if err == nil && !p.Allows(normaliseType(declared)) {
			t.Fatalf("accepted a type the policy does not allow: %q", declared)
		}
	})
}
