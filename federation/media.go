package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/httputil"
	"praxis/internal/media"
)

const (
	// maxMediaMetadata bounds the JSON part of a federation media answer;
	// the spec defines it as an (so far empty) object.
	maxMediaMetadata = 64 << 10
	// maxMediaRedirects bounds the hops when following a Location part.
	maxMediaRedirects = 3
	// mediaRedirectTimeout bounds fetching a Location part, body included.
	mediaRedirectTimeout = 2 * time.Minute
)

// Media is the federation side of the media repository (authenticated
// media, Matrix v1.11): it serves our media to partners and, as a
// media.Remote, fetches partners' media for our users.
type Media struct {
	API *API
	// Repo is our media repository.
	Repo *media.Service
	// Client is the signed outbound client; its transport enforces the
	// allowlist, so a non-partner origin is refused without a request.
	Client fclient.FederationClient
	// Redirect fetches the URL of a Location part (a partner pointing at
	// its storage); nil uses a client with a timeout and a hop limit.
	Redirect *http.Client
}

// Routes mounts the federation media endpoints.
func (m *Media) Routes(mux *http.ServeMux) {
	mux.Handle("GET /_matrix/federation/v1/media/download/{mediaId}", m.handler(m.download))
	mux.Handle("GET /_matrix/federation/v1/media/thumbnail/{mediaId}", m.handler(m.thumbnail))
}

// download serves GET /_matrix/federation/v1/media/download/{mediaId}:
// only media uploaded here (the path has no server name, it is ours), so
// media we cached from another server is never relayed.
func (m *Media) download(r *http.Request) (*media.Content, string, error) {
	wait, err := mediaWait(r)
	if err != nil {
		return nil, "", err
	}
	c, err := m.Repo.Download(r.Context(), m.API.ServerName, r.PathValue("mediaId"), wait)
	if err != nil {
		return nil, "", err
	}
	return c, c.Media.UploadName, nil
}

// thumbnail serves GET /_matrix/federation/v1/media/thumbnail/{mediaId}?width=&height=&method=&animated=.
// Parameters are checked as on the client endpoint; animated is accepted
// and answered with a still thumbnail, as the spec allows.
func (m *Media) thumbnail(r *http.Request) (*media.Content, string, error) {
	q := r.URL.Query()
	var req media.ThumbnailRequest
	for _, p := range []struct {
		name string
		dst  *int
	}{{"width", &req.Width}, {"height", &req.Height}} {
		v := q.Get(p.name)
		if v == "" {
			return nil, "", httputil.MissingParam(p.name + " is required")
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, "", httputil.InvalidParam(p.name + " must be a positive integer")
		}
		*p.dst = n
	}
	req.Method = q.Get("method")
	if req.Method == "" {
		req.Method = "scale"
	}
	wait, err := mediaWait(r)
	if err != nil {
		return nil, "", err
	}
	c, err := m.Repo.Thumbnail(r.Context(), m.API.ServerName, r.PathValue("mediaId"), req, wait)
	return c, "", err
}

// mediaWait reads timeout_ms: how long to wait for a pending async upload.
func mediaWait(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("timeout_ms")
	if v == "" {
		return media.DefaultWait, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 {
		return 0, httputil.InvalidParam("timeout_ms must be a non-negative integer")
	}
	return min(time.Duration(ms)*time.Millisecond, media.MaxWait), nil
}

// handler authenticates the request like Authed, then answers with the
// spec's multipart/mixed body: a JSON metadata part ({}) and the file
// part, streamed from the store. fn returns the content and the file
// name for its Content-Disposition.
func (m *Media) handler(fn func(r *http.Request) (*media.Content, string, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin, _, err := m.API.Verify(r)
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		c, name, err := fn(r)
		if err != nil {
			if e := httputil.ToError(err); e.ErrCode == "M_NOT_YET_UPLOADED" {
				// An expected 504, not a server failure: keep it out of the error log.
				httputil.WriteJSON(w, e.Status, map[string]string{"errcode": e.ErrCode, "error": e.Message})
				return
			}
			httputil.WriteError(w, r, err)
			return
		}
		defer c.Body.Close()
		ct := c.ContentType
		if ct == "" {
			ct = "application/octet-stream"
		}
		mw := multipart.NewWriter(w)
		h := w.Header()
		h.Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "private, no-cache")
		w.WriteHeader(http.StatusOK)
		err = writeMediaParts(mw, ct, media.ContentDisposition(ct, name), c.Body)
		if err != nil {
			// The status is out already; the missing closing boundary
			// tells the partner the answer is incomplete.
			slog.WarnContext(r.Context(), "serve federation media", "origin", origin, "media_id", r.PathValue("mediaId"), "err", err)
			return
		}
		slog.DebugContext(r.Context(), "federation media served", "origin", origin, "media_id", r.PathValue("mediaId"), "size", c.Size)
	})
}

func writeMediaParts(mw *multipart.Writer, contentType, disposition string, body io.Reader) error {
	meta, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	if err != nil {
		return err
	}
	if _, err := io.WriteString(meta, "{}"); err != nil {
		return err
	}
	file, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {contentType}, "Content-Disposition": {disposition}})
	if err != nil {
		return err
	}
	if _, err := io.Copy(file, body); err != nil {
		return fmt.Errorf("copy media: %w", err)
	}
	return mw.Close()
}

// Fetch implements media.Remote: a signed GET of
// /_matrix/federation/v1/media/download/{mediaId} on the origin. The file
// is streamed to the caller (the media service bounds and stores it); a
// Location part is followed with a plain GET.
func (m *Media) Fetch(ctx context.Context, origin, mediaID string) (*media.RemoteContent, error) {
	resp, err := m.Client.DownloadMedia(ctx, spec.ServerName(m.API.ServerName), spec.ServerName(origin), mediaID)
	if errors.Is(err, ErrNotAllowed) {
		// Not a partner: nothing was sent, and for our users the media
		// does not exist.
		return nil, fmt.Errorf("%s/%s: %w (%w)", origin, mediaID, media.ErrRemoteNotFound, err)
	}
	if err != nil {
		return nil, fmt.Errorf("download %s/%s: %w", origin, mediaID, err)
	}
	rc, loc, err := readMediaResponse(resp)
	if err != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("download %s/%s: %w", origin, mediaID, err)
	}
	if loc == "" {
		return rc, nil
	}
	resp.Body.Close()
	rc, err = m.follow(ctx, loc)
	if err != nil {
		return nil, fmt.Errorf("download %s/%s from its Location: %w", origin, mediaID, err)
	}
	return rc, nil
}

// readMediaResponse parses a federation media answer. It returns the
// file part (whose Body closes resp.Body) or the URL of a Location part.
func readMediaResponse(resp *http.Response) (*media.RemoteContent, string, error) {
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, "", fmt.Errorf("origin answered 404: %w", media.ErrRemoteNotFound)
	case resp.StatusCode != http.StatusOK:
		return nil, "", fmt.Errorf("origin answered %d", resp.StatusCode)
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return nil, "", fmt.Errorf("answer is %q, not multipart/mixed with a boundary", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	meta, err := mr.NextPart()
	if err != nil {
		return nil, "", fmt.Errorf("metadata part: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(meta, maxMediaMetadata+1))
	if err != nil {
		return nil, "", fmt.Errorf("metadata part: %w", err)
	}
	var obj map[string]json.RawMessage
	if len(b) > maxMediaMetadata || json.Unmarshal(b, &obj) != nil || obj == nil {
		return nil, "", errors.New("metadata part is not a JSON object")
	}
	file, err := mr.NextPart()
	if err != nil {
		return nil, "", fmt.Errorf("file part: %w", err)
	}
	if loc := file.Header.Get("Location"); loc != "" {
		return nil, loc, nil
	}
	return &media.RemoteContent{
		ContentType:   file.Header.Get("Content-Type"),
		FileName:      dispositionName(file.Header.Get("Content-Disposition")),
		ContentLength: -1,
		Body:          readCloser{file, resp.Body},
	}, "", nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// dispositionName is the file name of a Content-Disposition header
// (filename* decoded), or "".
func dispositionName(v string) string {
	if v == "" {
		return ""
	}
	_, params, err := mime.ParseMediaType(v)
	if err != nil {
		return ""
	}
	return params["filename"]
}

// follow fetches the URL of a Location part. Only https: a partner must
// not make us fetch from plain-text or internal-only schemes.
func (m *Media) follow(ctx context.Context, loc string) (*media.RemoteContent, error) {
	u, err := url.Parse(loc)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("refusing Location %q: not an https URL", loc)
	}
	client := m.Redirect
	if client == nil {
		client = defaultRedirectClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		resp.Body.Close()
		return nil, fmt.Errorf("the Location answered 404: %w", media.ErrRemoteNotFound)
	case resp.StatusCode != http.StatusOK:
		resp.Body.Close()
		return nil, fmt.Errorf("the Location answered %d", resp.StatusCode)
	}
	return &media.RemoteContent{
		ContentType:   resp.Header.Get("Content-Type"),
		FileName:      dispositionName(resp.Header.Get("Content-Disposition")),
		ContentLength: resp.ContentLength,
		Body:          resp.Body,
	}, nil
}

// defaultRedirectClient follows Location parts. It dials public addresses
// only: a partner must not be able to point our server at its own
// loopback, the practice's internal network or cloud metadata services.
var defaultRedirectClient = &http.Client{
	Timeout: mediaRedirectTimeout,
	Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, Control: publicAddressesOnly}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   true,
	},
	CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= maxMediaRedirects {
			return errors.New("too many redirects")
		}
		if req.URL.Scheme != "https" {
			return fmt.Errorf("refusing redirect to %s: not https", req.URL.Scheme)
		}
		return nil
	},
}

// publicAddressesOnly refuses connections to loopback, private,
// link-local, unspecified and multicast addresses (checked on the address
// actually dialled, after name resolution).
func publicAddressesOnly(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("refusing to dial %s: not an IP address", address)
	}
	if !publicAddr(ip) {
		return fmt.Errorf("refusing to dial %s: not a public address", address)
	}
	return nil
}

func publicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsValid() && !(ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() || carrierNAT.Contains(ip))
}

// carrierNAT is the shared address space of RFC 6598, internal to
// providers and not covered by netip's IsPrivate.
var carrierNAT = netip.MustParsePrefix("100.64.0.0/10")
