package media

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/draw"
	"image/jpeg"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"praxis/internal/httputil"
	"praxis/internal/storage"
)

const (
	// maxThumbSide bounds a requested thumbnail side; larger requests are
	// clamped (clients ask for at most 800×600 in practice).
	maxThumbSide = 1600
	// maxThumbSourcePixels refuses to decode images whose decoded form
	// would need more than ~200 MB: a small file can claim huge dimensions.
	maxThumbSourcePixels = 50_000_000
	// maxCachedThumbs bounds the stored thumbnails per media ID, so a
	// client walking through sizes cannot fill the disk; past it,
	// thumbnails are generated for the request and not kept.
	maxCachedThumbs = 16
)

// ThumbnailRequest is what GET …/thumbnail asks for.
type ThumbnailRequest struct {
	Width, Height int
	Method        string // "crop" or "scale"
}

// Thumbnail serves a thumbnail of a JPEG or PNG original: generated on
// first request, stored content-addressed, then served from the store.
// When the original is already within the requested size the spec wants
// the original itself.
func (s *Service) Thumbnail(ctx context.Context, origin, mediaID string, req ThumbnailRequest, wait time.Duration) (*Content, error) {
	if req.Width < 1 || req.Height < 1 {
		return nil, httputil.InvalidParam("width and height must be positive integers")
	}
	if req.Method != "crop" && req.Method != "scale" {
		return nil, httputil.InvalidParam(`method must be "crop" or "scale"`)
	}
	req.Width, req.Height = min(req.Width, maxThumbSide), min(req.Height, maxThumbSide)
	m, err := s.resolve(ctx, origin, mediaID, wait)
	if err != nil {
		return nil, err
	}
	var format string
	switch m.ContentType {
	case "image/jpeg", "image/png":
		format = m.ContentType
	default:
		return nil, httputil.Errorf(http.StatusBadRequest, "M_UNKNOWN", "the server cannot thumbnail %s files", m.ContentType)
	}
	if c, err := s.storedThumbnail(ctx, m, req); c != nil || err != nil {
		return c, err
	}

	// One generator per thumbnail in this process; others wait and then
	// find it stored.
	key := fmt.Sprintf("%s/%s/%d/%d/%s", m.Origin, m.MediaID, req.Width, req.Height, req.Method)
	unlock := s.lockKey(key)
	defer unlock()
	if c, err := s.storedThumbnail(ctx, m, req); c != nil || err != nil {
		return c, err
	}

	// Decoding a large photo takes tens of megabytes: bound how many run
	// at once.
	select {
	case s.thumbSem <- struct{}{}:
		defer func() { <-s.thumbSem }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	f, err := s.files.open(m.ContentHash)
	if err != nil {
		return nil, fmt.Errorf("open original %s: %w", m.MediaID, err)
	}
	defer f.Close()
	cfg, _, err := image.DecodeConfig(f)
	if err != nil {
		return nil, httputil.Errorf(http.StatusBadRequest, "M_UNKNOWN", "the image cannot be decoded for a thumbnail")
	}
	if int64(cfg.Width)*int64(cfg.Height) > maxThumbSourcePixels {
		return nil, httputil.TooLarge("the image is too large to thumbnail")
	}
	// Sizes are computed on the upright image; the stored one is resized
	// first and turned upright last, while it is small.
	o := 1
	if format == "image/jpeg" {
		head := make([]byte, 70<<10) // APP1 (EXIF) is at most 64 KiB
		n, _ := f.ReadAt(head, 0)
		o = jpegOrientation(head[:n])
	}
	ow, oh := cfg.Width, cfg.Height
	if o >= 5 {
		ow, oh = oh, ow
	}
	w, h, ok := thumbSize(ow, oh, req)
	if !ok {
		return s.Download(ctx, origin, mediaID, 0)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("rewind original: %w", err)
	}
	src, _, err := image.Decode(f)
	if err != nil {
		return nil, httputil.Errorf(http.StatusBadRequest, "M_UNKNOWN", "the image cannot be decoded for a thumbnail")
	}
	rw, rh := w, h
	if o >= 5 {
		rw, rh = h, w
	}
	out := orient(resize(src, rw, rh, req.Method == "crop"), o)
	var buf bytes.Buffer
	if format == "image/png" {
		enc := png.Encoder{CompressionLevel: png.BestSpeed}
		err = enc.Encode(&buf, out)
	} else {
		err = jpeg.Encode(&buf, out, &jpeg.Options{Quality: 85})
	}
	if err != nil {
		return nil, fmt.Errorf("encode thumbnail: %w", err)
	}
	if err := s.storeThumbnail(ctx, m, req, format, buf.Bytes()); err != nil {
		return nil, err
	}
	s.touch(ctx, m)
	return &Content{Media: m, ContentType: format, Size: int64(buf.Len()), ModTime: s.now(), Body: nopCloser{bytes.NewReader(buf.Bytes())}}, nil
}

type nopCloser struct{ io.ReadSeeker }

func (nopCloser) Close() error { return nil }

// thumbSize computes the thumbnail's dimensions for an original of ow×oh;
// ok is false when the original should be served as it is.
//
// scale fits the image within the requested box keeping its aspect ratio;
// crop fills the box exactly and cuts off what sticks out. Neither
// enlarges: an original smaller than the box is served unchanged.
func thumbSize(ow, oh int, req ThumbnailRequest) (w, h int, ok bool) {
	if req.Method == "crop" {
		if ow < req.Width || oh < req.Height || ow == req.Width && oh == req.Height {
			return 0, 0, false
		}
		return req.Width, req.Height, true
	}
	if ow <= req.Width && oh <= req.Height {
		return 0, 0, false
	}
	// The tighter side decides: compare ow/oh with Width/Height by cross
	// multiplication to stay in integers.
	if ow*req.Height >= oh*req.Width {
		w, h = req.Width, max(1, oh*req.Width/ow)
	} else {
		w, h = max(1, ow*req.Height/oh), req.Height
	}
	return w, h, true
}

// resize scales src to w×h by averaging the source pixels under each
// destination pixel (a box filter: cheap and without aliasing when
// shrinking). With crop, the source is first cut to the target aspect
// ratio around its centre.
func resize(src image.Image, w, h int, crop bool) *image.RGBA {
	b := src.Bounds()
	sx0, sy0, sw, sh := b.Min.X, b.Min.Y, b.Dx(), b.Dy()
	if crop {
		if sw*h > sh*w { // too wide: cut the sides
			cw := sh * w / h
			sx0 += (sw - cw) / 2
			sw = cw
		} else { // too tall: cut top and bottom
			ch := sw * h / w
			sy0 += (sh - ch) / 2
			sh = ch
		}
	}
	// Convert one strip of source rows at a time to premultiplied RGBA
	// (so transparent pixels do not bleed colour): memory stays at the
	// decoded image plus one strip, not a second full copy.
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	var strip *image.RGBA
	for dy := 0; dy < h; dy++ {
		y0 := dy * sh / h
		y1 := max(y0+1, (dy+1)*sh/h)
		if strip == nil || strip.Rect.Dy() < y1-y0 {
			strip = image.NewRGBA(image.Rect(0, 0, sw, y1-y0))
		}
		draw.Draw(strip, image.Rect(0, 0, sw, y1-y0), src, image.Pt(sx0, sy0+y0), draw.Src)
		for dx := 0; dx < w; dx++ {
			x0 := dx * sw / w
			x1 := max(x0+1, (dx+1)*sw/w)
			var r, g, bl, a, n uint64
			for y := 0; y < y1-y0; y++ {
				row := strip.Pix[y*strip.Stride+x0*4 : y*strip.Stride+x1*4]
				for i := 0; i < len(row); i += 4 {
					r += uint64(row[i])
					g += uint64(row[i+1])
					bl += uint64(row[i+2])
					a += uint64(row[i+3])
					n++
				}
			}
			o := dy*dst.Stride + dx*4
			dst.Pix[o] = uint8(r / n)
			dst.Pix[o+1] = uint8(g / n)
			dst.Pix[o+2] = uint8(bl / n)
			dst.Pix[o+3] = uint8(a / n)
		}
	}
	return dst
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

func (s *Service) lockKey(key string) (unlock func()) {
	s.keyMu.Lock()
	l := s.keyLocks[key]
	if l == nil {
		l = &keyLock{}
		s.keyLocks[key] = l
	}
	l.refs++
	s.keyMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.keyMu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(s.keyLocks, key)
		}
		s.keyMu.Unlock()
	}
}

// storedThumbnail opens a thumbnail generated earlier; (nil, nil) if none.
func (s *Service) storedThumbnail(ctx context.Context, m *Media, req ThumbnailRequest) (*Content, error) {
	var hash, ct string
	var size, created int64
	err := s.db.QueryRow(ctx, `SELECT content_hash, content_type, size, created_ts FROM media_thumbnails
		WHERE origin = $1 AND media_id = $2 AND width = $3 AND height = $4 AND method = $5`,
		m.Origin, m.MediaID, req.Width, req.Height, req.Method).Scan(&hash, &ct, &size, &created)
	if err != nil {
		if isNoRows(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("read thumbnail of %s: %w", m.MediaID, err)
	}
	f, err := s.files.open(hash)
	if err != nil {
		slog.WarnContext(ctx, "stored thumbnail missing on disk; regenerating", "media_id", m.MediaID, "content_hash", hash)
		return nil, nil
	}
	s.touch(ctx, m)
	return &Content{Media: m, ContentType: ct, Size: size, ModTime: time.UnixMilli(created), Body: f}, nil
}

// storeThumbnail keeps a generated thumbnail, unless the media ID already
// has maxCachedThumbs of them or was deleted meanwhile.
func (s *Service) storeThumbnail(ctx context.Context, m *Media, req ThumbnailRequest, ct string, b []byte) error {
	var n int
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM media_thumbnails WHERE origin = $1 AND media_id = $2`, m.Origin, m.MediaID).Scan(&n); err != nil {
		return fmt.Errorf("count thumbnails of %s: %w", m.MediaID, err)
	}
	if n >= maxCachedThumbs {
		return nil
	}
	t, err := s.files.writeBytes(b)
	if err != nil {
		return err
	}
	defer s.files.discard(t)
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		// Lock the original's row first, as Delete does: a thumbnail is
		// never added to media that is being deleted.
		res, err := tx.Exec(ctx, `UPDATE media SET last_access_ts = last_access_ts WHERE origin = $1 AND media_id = $2`, m.Origin, m.MediaID)
		if err != nil {
			return fmt.Errorf("lock media %s: %w", m.MediaID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		if err := s.addContent(ctx, tx, t); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO media_thumbnails (origin, media_id, width, height, method, content_hash, content_type, size, created_ts)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (origin, media_id, width, height, method) DO NOTHING`,
			m.Origin, m.MediaID, req.Width, req.Height, req.Method, t.hash, ct, t.size, s.nowMS())
		if err != nil {
			return fmt.Errorf("record thumbnail of %s: %w", m.MediaID, err)
		}
		return nil
	})
}
