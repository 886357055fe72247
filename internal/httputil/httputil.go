// Package httputil holds the HTTP plumbing every API shares: JSON bodies
// with size limits, Matrix error responses, and middleware.
package httputil

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Error is a Matrix error with its HTTP status.
type Error struct {
	Status  int
	ErrCode string
	Message string
	// Extra fields merged into the JSON body (e.g. retry_after_ms).
	Extra map[string]any
}

func (e *Error) Error() string { return e.ErrCode + ": " + e.Message }

// Errorf builds an *Error.
func Errorf(status int, errcode, format string, args ...any) *Error {
	return &Error{Status: status, ErrCode: errcode, Message: fmt.Sprintf(format, args...)}
}

// Common errors, named after their errcode.
func Forbidden(msg string) *Error { return Errorf(http.StatusForbidden, "M_FORBIDDEN", "%s", msg) }
func NotFound(msg string) *Error  { return Errorf(http.StatusNotFound, "M_NOT_FOUND", "%s", msg) }
func BadJSON(msg string) *Error   { return Errorf(http.StatusBadRequest, "M_BAD_JSON", "%s", msg) }
func NotJSON(msg string) *Error   { return Errorf(http.StatusBadRequest, "M_NOT_JSON", "%s", msg) }
func InvalidParam(msg string) *Error {
	return Errorf(http.StatusBadRequest, "M_INVALID_PARAM", "%s", msg)
}
func MissingParam(msg string) *Error {
	return Errorf(http.StatusBadRequest, "M_MISSING_PARAM", "%s", msg)
}
func Unrecognized(msg string) *Error { return Errorf(http.StatusNotFound, "M_UNRECOGNIZED", "%s", msg) }
func TooLarge(msg string) *Error {
	return Errorf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "%s", msg)
}
func UnknownToken(msg string) *Error {
	return Errorf(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "%s", msg)
}
func MissingToken(msg string) *Error {
	return Errorf(http.StatusUnauthorized, "M_MISSING_TOKEN", "%s", msg)
}
func Unknown(msg string) *Error { return Errorf(http.StatusBadRequest, "M_UNKNOWN", "%s", msg) }
func LimitExceeded(retryAfterMS int64) *Error {
	e := Errorf(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "too many requests")
	e.Extra = map[string]any{"retry_after_ms": retryAfterMS}
	return e
}

// errorBody renders e as the JSON the spec wants.
func (e *Error) body() map[string]any {
	m := map[string]any{"errcode": e.ErrCode, "error": e.Message}
	for k, v := range e.Extra {
		m[k] = v
	}
	return m
}

// WriteJSON writes v with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"errcode":"M_UNKNOWN","error":"internal error encoding response"}`)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// WriteError maps err to a Matrix error response. Anything that is not a
// Matrix error becomes 500 M_UNKNOWN; its detail is logged, never sent.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	e := ToError(err)
	if e.Status >= 500 {
		slog.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	if ms, ok := e.Extra["retry_after_ms"].(int64); ok && e.Status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.FormatInt((ms+999)/1000, 10))
	}
	if e.Status == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") == "" {
		// RFC 6750: clients may need to know this is a bearer-token failure.
		w.Header().Set("WWW-Authenticate", `Bearer realm="matrix"`)
	}
	WriteJSON(w, e.Status, e.body())
}

// ToError converts any error into an *Error.
func ToError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var le spec.LimitExceededError
	if errors.As(err, &le) {
		return LimitExceeded(le.RetryAfterMS)
	}
	var me spec.MatrixError
	if errors.As(err, &me) {
		return &Error{Status: statusFor(me.ErrCode), ErrCode: string(me.ErrCode), Message: me.Err}
	}
	var mep *spec.MatrixError
	if errors.As(err, &mep) {
		return &Error{Status: statusFor(mep.ErrCode), ErrCode: string(mep.ErrCode), Message: mep.Err}
	}
	if errors.Is(err, context.Canceled) {
		return Errorf(499, "M_UNKNOWN", "request cancelled")
	}
	return Errorf(http.StatusInternalServerError, "M_UNKNOWN", "internal server error")
}

func statusFor(code spec.MatrixErrorCode) int {
	switch code {
	case spec.ErrorForbidden, spec.ErrorGuestAccessForbidden:
		return http.StatusForbidden
	case spec.ErrorNotFound, spec.ErrorUnrecognized:
		return http.StatusNotFound
	case spec.ErrorUnknownToken, spec.ErrorMissingToken:
		return http.StatusUnauthorized
	case spec.ErrorLimitExceeded:
		return http.StatusTooManyRequests
	case "M_TOO_LARGE":
		return http.StatusRequestEntityTooLarge
	case spec.ErrorUnknown:
		return http.StatusInternalServerError
	}
	return http.StatusBadRequest
}

type limitKey struct{}

// WithBodyLimit records the JSON body limit for DecodeJSON.
func WithBodyLimit(ctx context.Context, n int64) context.Context {
	return context.WithValue(ctx, limitKey{}, n)
}

// ReadBody reads the request body up to the configured limit.
func ReadBody(r *http.Request) ([]byte, error) {
	limit, _ := r.Context().Value(limitKey{}).(int64)
	if limit <= 0 {
		limit = 1 << 20
	}
	if r.ContentLength > limit {
		return nil, TooLarge(fmt.Sprintf("request body is larger than %d bytes", limit))
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, BadJSON("could not read request body")
	}
	if int64(len(body)) > limit {
		return nil, TooLarge(fmt.Sprintf("request body is larger than %d bytes", limit))
	}
	return body, nil
}

// DecodeJSON reads a JSON object body into v: M_NOT_JSON for bytes that are
// not JSON, M_BAD_JSON for JSON of the wrong shape, M_TOO_LARGE past the
// limit. An empty body decodes as {}.
func DecodeJSON(r *http.Request, v any) error {
	body, err := ReadBody(r)
	if err != nil {
		return err
	}
	return Unmarshal(body, v)
}

// Unmarshal is DecodeJSON for bytes already read.
func Unmarshal(body []byte, v any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		body = []byte("{}")
	}
	// json.Valid accepts invalid UTF-8 inside strings; the spec's JSON
	// is UTF-8, and a stored event with broken text breaks every reader.
	if !json.Valid(body) || !utf8.Valid(body) {
		return NotJSON("request body is not valid UTF-8 JSON")
	}
	if body[0] != '{' {
		return BadJSON("request body must be a JSON object")
	}
	if !FiniteNumbers(body) {
		return BadJSON("request body has a number out of range")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return BadJSON("request body has the wrong shape: " + shortJSONError(err))
	}
	return nil
}

func shortJSONError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Sprintf("field %q must be %s", te.Field, te.Type.String())
		}
		return "value must be " + te.Type.String()
	}
	return err.Error()
}
