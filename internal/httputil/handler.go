package httputil

import (
	"context"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"
)

// JSONHandler adapts a function returning (response, error) to an
// http.Handler: the response is written as 200 JSON, the error through
// WriteError.
func JSONHandler[T any](fn func(r *http.Request) (T, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := fn(r)
		if err != nil {
			WriteError(w, r, err)
			return
		}
		WriteJSON(w, http.StatusOK, resp)
	})
}

type requestIDKey struct{}

var requestSeq atomic.Uint64

// RequestID returns the ID Middleware gave this request.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// StatusRecorder remembers the status a handler wrote (200 if it wrote a
// body without one), for logging and metrics. It passes Flush through so
// that streaming responses keep working.
type StatusRecorder struct {
	http.ResponseWriter
	Status int
}

func (s *StatusRecorder) WriteHeader(code int) {
	if s.Status == 0 {
		s.Status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *StatusRecorder) Write(b []byte) (int, error) {
	if s.Status == 0 {
		s.Status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *StatusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *StatusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Middleware gives each request an ID, a JSON body limit, CORS headers for
// browser clients, panic recovery and one debug log line. It logs the
// path's template-free form only: IDs are fine, bodies never.
func Middleware(next http.Handler, maxBody int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := strconv.FormatUint(requestSeq.Add(1), 36)
		ctx := context.WithValue(r.Context(), requestIDKey{}, id)
		ctx = WithBodyLimit(ctx, maxBody)
		r = r.WithContext(ctx)
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		rec := &StatusRecorder{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				slog.ErrorContext(ctx, "handler panic", "request_id", id, "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
				if rec.Status == 0 {
					WriteJSON(rec, http.StatusInternalServerError, map[string]any{"errcode": "M_UNKNOWN", "error": "internal server error"})
				}
			}
			slog.DebugContext(ctx, "request", "request_id", id, "method", r.Method, "path", r.URL.Path,
				"status", rec.Status, "duration_ms", time.Since(start).Milliseconds())
		}()
		next.ServeHTTP(rec, r)
	})
}
