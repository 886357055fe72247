package media

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// files is the content-addressed store on disk:
//
//	<root>/content/ab/abcdef…   the bytes, named by their hex SHA-256
//	<root>/tmp/                 uploads in flight and files being deleted
//
// A file appears under content/ only by rename after it was written and
// fsynced, so a crash leaves at most a stray file in tmp/, never a partial
// file behind a media ID.
type files struct {
	root string
}

// copyBufs recycles the copy buffers: large enough for throughput, small
// and bounded so an upload never holds more than one buffer in memory.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

func newFiles(root string) (*files, error) {
	for _, d := range []string{"content", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			return nil, fmt.Errorf("create media directory: %w", err)
		}
	}
	return &files{root: root}, nil
}

func (f *files) path(hash string) string {
	return filepath.Join(f.root, "content", hash[:2], hash)
}

// errTooLarge reports an upload past the size limit.
var errTooLarge = errors.New("upload exceeds the size limit")

// temp is a fully written, fsynced upload not yet named by its hash.
type temp struct {
	path string
	hash string
	size int64
}

// writeTemp streams r into a temporary file, hashing on the way, and
// fsyncs it. More than limit bytes → errTooLarge and nothing kept.
func (f *files) writeTemp(r io.Reader, limit int64) (*temp, error) {
	tf, err := os.CreateTemp(filepath.Join(f.root, "tmp"), "upload-*")
	if err != nil {
		return nil, fmt.Errorf("create temp file: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tf.Close()
			os.Remove(tf.Name())
		}
	}()
	h := sha256.New()
	bp := copyBufs.Get().(*[]byte)
	n, err := io.CopyBuffer(hashWriter{tf, h}, io.LimitReader(r, limit+1), *bp)
	copyBufs.Put(bp)
	if err != nil {
		return nil, fmt.Errorf("receive upload: %w", err)
	}
	if n > limit {
		return nil, errTooLarge
	}
	if err := tf.Sync(); err != nil {
		return nil, fmt.Errorf("sync temp file: %w", err)
	}
	if err := tf.Close(); err != nil {
		return nil, fmt.Errorf("close temp file: %w", err)
	}
	ok = true
	return &temp{path: tf.Name(), hash: hex.EncodeToString(h.Sum(nil)), size: n}, nil
}

// hashWriter writes to the file and the hash; it hides the file's
// ReadFrom so that io.CopyBuffer really uses the pooled buffer.
type hashWriter struct {
	f *os.File
	h hash.Hash
}

func (w hashWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	return n, err
}

// writeBytes stores b (a generated thumbnail) as a temp file.
func (f *files) writeBytes(b []byte) (*temp, error) {
	return f.writeTemp(bytes.NewReader(b), int64(len(b)))
}

// discard removes a temp file that was not committed.
func (f *files) discard(t *temp) {
	if t != nil {
		os.Remove(t.path)
	}
}

// commit names t by its hash. The caller holds the media_content row lock
// of t.hash. If the content is already there the bytes are identical (same
// hash) and the temp file is dropped.
func (f *files) commit(t *temp) error {
	final := f.path(t.hash)
	if _, err := os.Stat(final); err == nil {
		os.Remove(t.path)
		return nil
	}
	dir := filepath.Dir(final)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create content directory: %w", err)
	}
	if err := os.Rename(t.path, final); err != nil {
		return fmt.Errorf("store content: %w", err)
	}
	return syncDir(dir)
}

// trash moves the content of hash out of content/ and returns a function
// that restores it (when the deleting transaction rolls back) and one that
// removes it for good (after commit). Missing content is not an error:
// deletion must be able to finish after a crash half-way through.
func (f *files) trash(hash string) (restore, purge func(), err error) {
	final := f.path(hash)
	var b [8]byte
	_, _ = rand.Read(b[:])
	tr := filepath.Join(f.root, "tmp", "trash-"+hash+"-"+hex.EncodeToString(b[:]))
	if err := os.Rename(final, tr); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return func() {}, func() {}, nil
		}
		return nil, nil, fmt.Errorf("remove content: %w", err)
	}
	restore = func() { _ = os.Rename(tr, final) }
	purge = func() { _ = os.Remove(tr) }
	return restore, purge, nil
}

// open opens the content of hash for reading.
func (f *files) open(hash string) (*os.File, error) {
	return os.Open(f.path(hash))
}

// sweepTemp removes leftovers in tmp/ older than age: uploads cut off by a
// crash, trash not purged. Younger files may belong to a live upload of
// another process sharing the directory.
func (f *files) sweepTemp(now time.Time, age time.Duration) (int, error) {
	dir := filepath.Join(f.root, "tmp")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("read media tmp: %w", err)
	}
	n := 0
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || now.Sub(info.ModTime()) < age {
			continue
		}
		if os.Remove(filepath.Join(dir, e.Name())) == nil {
			n++
		}
	}
	return n, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory for sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}
