// Package metrics exposes Prometheus metrics: the Go runtime and process,
// HTTP requests by route pattern, and text written by services that keep
// their own counters (media, TURN).
package metrics

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"praxis/internal/httputil"
)

// Registry is one node's metrics.
type Registry struct {
	reg      *prometheus.Registry
	requests *prometheus.HistogramVec
	// extra writers append their own exposition text.
	extra []func(io.Writer) error
}

// New returns a registry with the runtime and process collectors.
func New() *Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	requests := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "praxis_http_request_duration_seconds",
		Help:    "HTTP requests by route pattern (never by raw path: IDs stay out of labels), method and status class.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 35},
	}, []string{"route", "status"})
	reg.MustRegister(requests)
	return &Registry{reg: reg, requests: requests}
}

// Register adds a collector.
func (r *Registry) Register(c prometheus.Collector) { r.reg.MustRegister(c) }

// AddText appends a service's own exposition text to every scrape.
func (r *Registry) AddText(w func(io.Writer) error) { r.extra = append(r.extra, w) }

// Instrument times every request. The route label is the ServeMux pattern
// that matched, so a label never carries a user, room or event ID.
func (r *Registry) Instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		start := time.Now()
		sw := &httputil.StatusRecorder{ResponseWriter: w}
		next.ServeHTTP(sw, req)
		route := req.Pattern
		if route == "" {
			route = "unmatched"
		}
		status := sw.Status
		if status == 0 {
			status = http.StatusOK
		}
		r.requests.WithLabelValues(route, strconv.Itoa(status/100)+"xx").Observe(time.Since(start).Seconds())
	})
}

// Handler serves the exposition format.
func (r *Registry) Handler() http.Handler {
	inner := promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{DisableCompression: true})
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// Plain text only: the services' own text cannot be merged into
		// the protobuf or OpenMetrics encodings.
		req.Header.Set("Accept", "text/plain")
		var buf bytes.Buffer
		rec := &bufferWriter{header: w.Header(), buf: &buf}
		inner.ServeHTTP(rec, req)
		for _, fn := range r.extra {
			if err := fn(&buf); err != nil {
				http.Error(w, "metrics: "+err.Error(), http.StatusInternalServerError)
				return
			}
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Header().Del("Content-Encoding")
		w.WriteHeader(http.StatusOK)
		w.Write(buf.Bytes())
	})
}

type bufferWriter struct {
	header http.Header
	buf    *bytes.Buffer
}

func (b *bufferWriter) Header() http.Header         { return b.header }
func (b *bufferWriter) Write(p []byte) (int, error) { return b.buf.Write(p) }
func (b *bufferWriter) WriteHeader(int)             {}
