package media

import (
	"bytes"
	"image"
	"image/jpeg"
	"testing"
)

// BenchmarkThumbnailOf12MPPhoto: decode a 4000×3000 JPEG and scale it to
// 320×240, the work of a first thumbnail request for a phone photo.
func BenchmarkThumbnailOf12MPPhoto(b *testing.B) {
	photo := testJPEG(b, 4000, 3000)
	b.ReportAllocs()
	for b.Loop() {
		img, err := jpeg.Decode(bytes.NewReader(photo))
		if err != nil {
			b.Fatal(err)
		}
		out := resize(img, 320, 240, false)
		var buf bytes.Buffer
		if err := jpeg.Encode(&buf, out, &jpeg.Options{Quality: 85}); err != nil {
			b.Fatal(err)
		}
		_ = image.Image(out)
	}
}
