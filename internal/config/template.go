package config

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// defaultTemplate is the config written on first start. Every key is
// present with its default so that an operator sees what can be set.
const defaultTemplate = `# Praxis homeserver configuration.
# Every key can also be set by an environment variable: PRAXIS_ + the key
# path in upper case with "_" (registration.open → PRAXIS_REGISTRATION_OPEN);
# lists are space-separated there. Flags override the environment, which
# overrides this file.

# The name in user and room IDs (@alice:NAME). A host name or host:port.
# It cannot change once users exist.
server_name: "localhost:8008"

# SQLite database, signing key and media live here.
data_dir: "./data"

# Empty: SQLite in data_dir. For several praxis processes sharing one
# database: postgres://user:password@host:5432/praxis?sslmode=disable
database: ""

# ed25519 server signing key; empty: data_dir/signing.key (generated).
signing_key: ""

# How clients reach this node (served in /.well-known/matrix/client).
public_baseurl: ""

listen:
  # Client-Server API, admin API and /metrics.
  client: "127.0.0.1:8008"
  # Server-Server API (federation); empty disables it.
  federation: ""

registration:
  # Anyone may register (m.login.dummy). Closed by default: create
  # accounts with praxisctl, or hand out registration tokens.
  open: false
  # Registration needs a token (m.login.registration_token).
  requires_token: false
  # Enables /_synapse/admin/v1/register for praxisctl user create.
  shared_secret: "%s"

ratelimit:
  # Login, registration and password-confirmation attempts per client
  # address (token bucket: per_second refill, burst at once). Buckets live
  # in each process: N processes on one database allow up to N times this.
  enabled: true
  per_second: 0.5
  burst: 5

limits:
  # Largest JSON request body in bytes (413 M_TOO_LARGE beyond).
  max_body_bytes: 1048576

rooms:
  # Room version for new rooms (10 is what TI-Messenger requires); 1–12 accepted.
  default_version: "10"
  # private_chat and trusted_private_chat rooms start end-to-end encrypted.
  encrypt_by_default: true

# Online status (m.presence) of people who share a room, sent in /sync.
# Off: when a patient or a doctor is online is health-adjacent data.
presence:
  enabled: false

admin:
  # Serve the admin API on its own address; empty keeps it on listen.client.
  listen: ""

log:
  level: "info"   # debug, info, warn, error
  format: "text"  # text or json

media:
  max_upload_bytes: 52428800
  # The practice file policy for files the server can see. Encrypted
  # attachments arrive as application/octet-stream and are policed by clients.
  allowed_types: ["application/pdf", "image/jpeg", "image/png", "application/octet-stream"]
  # Serve the old unauthenticated download endpoints (off: TI-Messenger).
  legacy_unauthenticated: false
  # Delete media older than this many days; 0 keeps it.
  retention_days: 0
  # Delete media nobody downloaded for this many days; 0 keeps it.
  retention_unaccessed_days: 0

federation:
  # Health partners this node federates with; nobody else. ["*"] is open
  # federation, [] turns federation off. praxisctl federation allow|deny
  # changes it at runtime.
  allowed_servers: []
  tls_cert: ""
  tls_key: ""
  trusted_ca_file: ""
  # Test networks only.
  insecure_skip_verify: false

# Video consultations: TURN credentials for clients (GET /voip/turnServer)
# and the embedded TURN relay. See docs/calls.md.
turn:
  enabled: false
  # Empty: derived from public_ip and the listen_* ports of the embedded relay.
  # For an external coturn: ["turn:turn.example.org:3478?transport=udp", ...]
  uris: []
  # The TURN REST shared secret (coturn: static-auth-secret). At least 16 characters.
  shared_secret: ""
  shared_secret_file: ""
  # How long handed-out credentials stay valid.
  ttl: "24h"
  # Only staff and admins get credentials; patients only during a call with staff.
  staff_only: false
  # Embedded relay listeners; all empty = no embedded relay. TURN over TLS on
  # port 443 gets through the strictest practice firewalls.
  listen_udp: ""
  listen_tcp: ""
  listen_tls: ""
  tls_cert: ""
  tls_key: ""
  # The relay address announced to peers (this host's public IP).
  public_ip: ""
  # Empty: the host part of server_name.
  realm: ""
  relay_ports: "49152-65535"
  # Concurrent allocations per user and per node; relayed bandwidth per user.
  user_quota: 10
  total_quota: 1000
  user_bandwidth_kbps: 8000
  # Relaying to loopback/private/link-local peers. Keep off in production.
  allow_private_peers: false

metrics:
  enabled: true

# The health domain: practices, staff, patients. enforce: self-registered
# accounts are patients and the contact policy holds (patients reach only
# the practices they coupled with). off: a plain Matrix node. See docs/care.md.
care:
  policy: "enforce"
`

// WriteDefaultFile writes the commented default config to path unless a
// file is already there. created reports whether it wrote one. dataDir is
// the data directory this start uses (from --data-dir or PRAXIS_DATA_DIR);
// empty means the config file's own directory.
func WriteDefaultFile(path, dataDir string) (created bool, err error) {
	if _, err := os.Stat(path); err == nil {
		return false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("config %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, fmt.Errorf("create config directory: %w", err)
	}
	secret := make([]byte, 24)
	if _, err := rand.Read(secret); err != nil {
		return false, err
	}
	body := fmt.Sprintf(defaultTemplate, hex.EncodeToString(secret))
	// The file must name the directory this start really uses: a later
	// start without the flag would otherwise come up on an empty one. Without
	// a flag, keep the template's ./data when the file lives there and
	// point at the file's own directory when it lives elsewhere.
	if dataDir == "" {
		dataDir = filepath.Dir(path)
	}
	if dataDir != "data" && dataDir != "./data" {
		body = strings.Replace(body, `data_dir: "./data"`, fmt.Sprintf("data_dir: %q", dataDir), 1)
	}
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		return false, fmt.Errorf("write config %s: %w", path, err)
	}
	return true, nil
}
