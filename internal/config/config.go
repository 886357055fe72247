// Package config loads Praxis' configuration: defaults, then a YAML file,
// then PRAXIS_* environment variables, then command-line flags (each later
// source wins). It is the only package that imports viper.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

// Config is the whole configuration. The mapstructure tags are the config
// keys; PRAXIS_ + the upper-cased key path with "_" names the environment
// variable (registration.open → PRAXIS_REGISTRATION_OPEN).
type Config struct {
	// ServerName is the name in user and room IDs: a host name ("hs1") or
	// host:port. It cannot change once users exist.
	ServerName string `mapstructure:"server_name"`
	// DataDir holds the SQLite database, the signing key and media.
	DataDir string `mapstructure:"data_dir"`
	// Database is "sqlite:PATH" or a postgres:// URL; empty means SQLite in DataDir.
	Database string `mapstructure:"database"`
	// SigningKey is the path of the ed25519 server key; empty means DataDir/signing.key.
	SigningKey string `mapstructure:"signing_key"`
	// PublicBaseURL is how clients reach this node, for .well-known.
	PublicBaseURL string `mapstructure:"public_baseurl"`

	Listen       Listen       `mapstructure:"listen"`
	Registration Registration `mapstructure:"registration"`
	RateLimit    RateLimit    `mapstructure:"ratelimit"`
	Limits       Limits       `mapstructure:"limits"`
	Rooms        Rooms        `mapstructure:"rooms"`
	Presence     Presence     `mapstructure:"presence"`
	Admin        Admin        `mapstructure:"admin"`
	Log          Log          `mapstructure:"log"`
	Media        Media        `mapstructure:"media"`
	Federation   Federation   `mapstructure:"federation"`
	TURN         TURN         `mapstructure:"turn"`
	Metrics      Metrics      `mapstructure:"metrics"`
	Care         Care         `mapstructure:"care"`
}

// Care configures the health domain (internal/care).
type Care struct {
	// Policy is enforce (the health rules: self-registered accounts are
	// patients, the contact policy holds) or off (a plain Matrix node).
	Policy string `mapstructure:"policy"`
}

type Listen struct {
	// Client serves the Client-Server API, the admin API and /metrics.
	Client string `mapstructure:"client"`
	// Federation serves the Server-Server API; empty disables the listener.
	Federation string `mapstructure:"federation"`
}

type Registration struct {
	// Open lets anyone register with the m.login.dummy stage.
	Open bool `mapstructure:"open"`
	// RequiresToken makes registration need an m.login.registration_token stage.
	RequiresToken bool `mapstructure:"requires_token"`
	// SharedSecret enables /_synapse/admin/v1/register (HMAC-SHA1 nonce protocol).
	SharedSecret string `mapstructure:"shared_secret"`
}

type RateLimit struct {
	Enabled bool `mapstructure:"enabled"`
	// PerSecond and Burst apply per client address to login and registration.
	PerSecond float64 `mapstructure:"per_second"`
	Burst     int     `mapstructure:"burst"`
}

type Limits struct {
	// MaxBodyBytes bounds JSON request bodies (413 M_TOO_LARGE beyond).
	MaxBodyBytes int64 `mapstructure:"max_body_bytes"`
}

type Rooms struct {
	// DefaultVersion is used by createRoom without room_version.
	DefaultVersion string `mapstructure:"default_version"`
	// EncryptByDefault adds m.room.encryption to private_chat and trusted_private_chat rooms.
	EncryptByDefault bool `mapstructure:"encrypt_by_default"`
}

type Presence struct {
	Enabled bool `mapstructure:"enabled"`
}

type Admin struct {
	// Listen moves the admin API to its own listener; empty keeps it on the client listener.
	Listen string `mapstructure:"listen"`
}

type Log struct {
	Level  string `mapstructure:"level"`  // debug, info, warn, error
	Format string `mapstructure:"format"` // text or json
}

type Media struct {
	MaxUploadBytes int64 `mapstructure:"max_upload_bytes"`
	// AllowedTypes is the practice file policy for uploads the server can see.
	AllowedTypes []string `mapstructure:"allowed_types"`
	// LegacyUnauthenticated serves /_matrix/media/v3/download|thumbnail without a token.
	LegacyUnauthenticated bool `mapstructure:"legacy_unauthenticated"`
	// RetentionDays deletes media older than this; 0 keeps media forever.
	RetentionDays int `mapstructure:"retention_days"`
	// RetentionUnaccessedDays deletes media nobody downloaded for this
	// many days; 0 keeps it.
	RetentionUnaccessedDays int `mapstructure:"retention_unaccessed_days"`
}

type Federation struct {
	// AllowedServers names the health partners this node federates with;
	// nobody else. ["*"] is open federation; empty turns federation off.
	AllowedServers     []string `mapstructure:"allowed_servers"`
	TLSCert            string   `mapstructure:"tls_cert"`
	TLSKey             string   `mapstructure:"tls_key"`
	TrustedCAFile      string   `mapstructure:"trusted_ca_file"`
	InsecureSkipVerify bool     `mapstructure:"insecure_skip_verify"`
}

// TURN configures /voip/turnServer credentials (TURN REST scheme, so an
// external coturn with the same static-auth-secret works too) and the
// embedded relay, which runs when enabled and at least one listen_* is set.
type TURN struct {
	// Enabled offers TURN to clients; off, /voip/turnServer answers 404 M_NOT_FOUND.
	Enabled bool `mapstructure:"enabled"`
	// URIs are handed to clients; empty derives them from public_ip and the embedded listeners.
	URIs []string `mapstructure:"uris"`
	// SharedSecret signs credentials (HMAC-SHA1); SharedSecretFile reads it from a file instead.
	SharedSecret     string `mapstructure:"shared_secret"`
	SharedSecretFile string `mapstructure:"shared_secret_file"`
	// TTL is how long handed-out credentials are valid.
	TTL time.Duration `mapstructure:"ttl"`
	// StaffOnly hands credentials to staff and admins; patients get them
	// only while in a call with staff.
	StaffOnly bool `mapstructure:"staff_only"`
	// ListenUDP, ListenTCP and ListenTLS are the embedded server's listeners
	// (host:port, empty = off). TLS (TURNS) needs TLSCert and TLSKey.
	ListenUDP string `mapstructure:"listen_udp"`
	ListenTCP string `mapstructure:"listen_tcp"`
	ListenTLS string `mapstructure:"listen_tls"`
	TLSCert   string `mapstructure:"tls_cert"`
	TLSKey    string `mapstructure:"tls_key"`
	// PublicIP is the relay address announced to peers; empty uses the listen IP when it is specific.
	PublicIP string `mapstructure:"public_ip"`
	// Realm of the long-term credentials; empty uses the server name's host.
	Realm string `mapstructure:"realm"`
	// RelayPorts is the UDP port range "min-max" for relay sockets; empty lets the OS choose.
	RelayPorts string `mapstructure:"relay_ports"`
	// UserQuota caps concurrent allocations per user; TotalQuota per node (0 = unlimited).
	UserQuota  int `mapstructure:"user_quota"`
	TotalQuota int `mapstructure:"total_quota"`
	// UserBandwidthKbps caps one user's relayed traffic, both directions summed (0 = unlimited).
	UserBandwidthKbps int `mapstructure:"user_bandwidth_kbps"`
	// AllowPrivatePeers permits relaying to loopback, private and link-local
	// peers (tests, closed LANs); off, only public peers and our own relay IP.
	AllowPrivatePeers bool `mapstructure:"allow_private_peers"`
}

// TURNEmbedded reports whether the embedded relay should run.
func (t TURN) TURNEmbedded() bool {
	return t.Enabled && (t.ListenUDP != "" || t.ListenTCP != "" || t.ListenTLS != "")
}

type Metrics struct {
	Enabled bool `mapstructure:"enabled"`
}

// Defaults are safe for a first start: a single node on loopback, closed
// registration, encryption on, presence and URL previews off, federation
// closed.
func Defaults() Config {
	return Config{
		ServerName: "localhost:8008",
		DataDir:    "./data",
		Listen:     Listen{Client: "127.0.0.1:8008", Federation: ""},
		Registration: Registration{
			Open: false,
		},
		RateLimit: RateLimit{Enabled: true, PerSecond: 0.5, Burst: 5},
		Limits:    Limits{MaxBodyBytes: 1 << 20},
		Rooms:     Rooms{DefaultVersion: "10", EncryptByDefault: true},
		Log:       Log{Level: "info", Format: "text"},
		Media: Media{
			MaxUploadBytes: 50 << 20,
			AllowedTypes:   []string{"application/pdf", "image/jpeg", "image/png", "application/octet-stream"},
		},
		Federation: Federation{AllowedServers: []string{}},
		TURN: TURN{
			TTL:               24 * time.Hour,
			RelayPorts:        "49152-65535",
			UserQuota:         10,
			TotalQuota:        1000,
			UserBandwidthKbps: 8000,
		},
		Metrics: Metrics{Enabled: true},
		Care:    Care{Policy: "enforce"},
	}
}

// Flags are the command-line overrides of the stable start contract.
type Flags struct {
	ConfigFile       string
	ServerName       string
	DataDir          string
	ListenClient     string
	ListenFederation string
}

// Load builds the configuration from defaults, the file (if any), the
// environment and flags, then validates it.
func Load(flags Flags, environ []string) (*Config, error) {
	v := viper.New()
	setDefaults(v, "", reflect.ValueOf(Defaults()))

	if flags.ConfigFile != "" {
		if err := checkFileKeys(flags.ConfigFile); err != nil {
			return nil, err
		}
		v.SetConfigFile(flags.ConfigFile)
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("read config %s: %w", flags.ConfigFile, err)
		}
	}
	// Environment: only keys this build knows are looked at, so an
	// unknown PRAXIS_ variable is ignored rather than refused.
	env := map[string]string{}
	for _, kv := range environ {
		k, val, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, "PRAXIS_") {
			env[k] = val
		}
	}
	for _, key := range v.AllKeys() {
		name := "PRAXIS_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
		if val, ok := env[name]; ok {
			v.Set(key, val)
		}
	}
	for key, val := range map[string]string{
		"server_name":       flags.ServerName,
		"data_dir":          flags.DataDir,
		"listen.client":     flags.ListenClient,
		"listen.federation": flags.ListenFederation,
	} {
		if val != "" {
			v.Set(key, val)
		}
	}
	var c Config
	err := v.Unmarshal(&c, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		spaceSeparatedList,
	)))
	if err != nil {
		return nil, decodeProblems(err)
	}
	c.fillDerived()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// decodeProblems turns mapstructure's error (a header, a blank line and
// one line per value) into one "config key K: problem" line per value, the
// form Validate uses.
func decodeProblems(err error) error {
	var lines []error
	var walk func(error)
	walk = func(e error) {
		de, isDecode := e.(*mapstructure.DecodeError)
		switch {
		case isDecode && de.Name() != "":
			lines = append(lines, fmt.Errorf("config key %s: %w", de.Name(), de.Unwrap()))
		case e == nil:
		default:
			if j, ok := e.(interface{ Unwrap() []error }); ok {
				for _, x := range j.Unwrap() {
					walk(x)
				}
				return
			}
			if u := errors.Unwrap(e); u != nil {
				walk(u)
				return
			}
			lines = append(lines, fmt.Errorf("config: %w", e))
		}
	}
	walk(err)
	if len(lines) == 0 {
		return fmt.Errorf("config: %w", err)
	}
	return errors.Join(lines...)
}

// spaceSeparatedList decodes "a b c" (how lists arrive from the environment)
// into a []string.
func spaceSeparatedList(from, to reflect.Type, data any) (any, error) {
	if from.Kind() == reflect.String && to == reflect.TypeOf([]string{}) {
		return strings.Fields(data.(string)), nil
	}
	return data, nil
}

func (c *Config) fillDerived() {
	if c.Database == "" {
		c.Database = "sqlite:" + filepath.Join(c.DataDir, "praxis.db")
	}
	if c.SigningKey == "" {
		c.SigningKey = filepath.Join(c.DataDir, "signing.key")
	}
	if c.PublicBaseURL == "" {
		c.PublicBaseURL = "http://" + c.Listen.Client
	}
}

// Validate reports every problem at once, each naming its key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config key %s: %s", key, fmt.Sprintf(format, args...)))
	}
	if err := validServerName(c.ServerName); err != nil {
		bad("server_name", "%v", err)
	}
	if c.DataDir == "" {
		bad("data_dir", "must not be empty")
	}
	if !strings.HasPrefix(c.Database, "sqlite:") && !strings.HasPrefix(c.Database, "postgres://") && !strings.HasPrefix(c.Database, "postgresql://") {
		bad("database", "want sqlite:PATH or a postgres:// URL")
	}
	for key, addr := range map[string]string{"listen.client": c.Listen.Client, "listen.federation": c.Listen.Federation, "admin.listen": c.Admin.Listen, "turn.listen_udp": c.TURN.ListenUDP, "turn.listen_tcp": c.TURN.ListenTCP, "turn.listen_tls": c.TURN.ListenTLS} {
		if addr == "" {
			if key == "listen.client" {
				bad(key, "must not be empty")
			}
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(key, "%q is not host:port: %v", addr, err)
		}
	}
	for _, name := range c.Federation.AllowedServers {
		if name == "*" {
			continue
		}
		if err := validServerName(name); err != nil {
			bad("federation.allowed_servers", "%q: %v", name, err)
		}
	}
	if c.RateLimit.Enabled && (c.RateLimit.PerSecond <= 0 || c.RateLimit.Burst < 1) {
		bad("ratelimit", "per_second must be > 0 and burst ≥ 1 when enabled")
	}
	if c.Limits.MaxBodyBytes < 4096 {
		bad("limits.max_body_bytes", "%d is too small (minimum 4096)", c.Limits.MaxBodyBytes)
	}
	if v, err := strconv.Atoi(c.Rooms.DefaultVersion); err != nil || v < 1 || v > 12 {
		bad("rooms.default_version", "%q is not a supported room version (1–12)", c.Rooms.DefaultVersion)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q: want text or json", c.Log.Format)
	}
	if c.Media.MaxUploadBytes <= 0 {
		bad("media.max_upload_bytes", "must be positive")
	}
	if c.Media.RetentionDays < 0 {
		bad("media.retention_days", "must not be negative (0 keeps media)")
	}
	if c.Media.RetentionUnaccessedDays < 0 {
		bad("media.retention_unaccessed_days", "must not be negative (0 keeps media)")
	}
	c.TURN.validate(bad)
	if c.Care.Policy != "enforce" && c.Care.Policy != "off" {
		bad("care.policy", "%q: want enforce or off", c.Care.Policy)
	}
	return errors.Join(errs...)
}

func validServerName(name string) error {
	if name == "" {
		return errors.New("must not be empty")
	}
	host, port, err := net.SplitHostPort(name)
	if err != nil {
		host, port = name, ""
	}
	if port != "" {
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("%q has an invalid port", name)
		}
	}
	if host == "" || strings.ContainsAny(host, "/@#!:? ") && !strings.HasPrefix(host, "[") {
		return fmt.Errorf("%q is not a valid host name", name)
	}
	return nil
}

// setDefaults registers every field of the struct as a viper key, so
// Unmarshal and the environment lookup know the full key set.
func setDefaults(v *viper.Viper, prefix string, val reflect.Value) {
	t := val.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		key := f.Tag.Get("mapstructure")
		if prefix != "" {
			key = prefix + "." + key
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
			setDefaults(v, key, val.Field(i))
			continue
		}
		v.SetDefault(key, val.Field(i).Interface())
	}
}

// checkFileKeys refuses a config file that names a key this build does not
// know: a typo such as "registation.open" must not silently be ignored.
func checkFileKeys(path string) error {
	fv := viper.New()
	fv.SetConfigFile(path)
	if err := fv.ReadInConfig(); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("config file %s does not exist", path)
		}
		return fmt.Errorf("read config %s: %w", path, err)
	}
	known := map[string]bool{}
	collectKeys("", reflect.TypeOf(Config{}), known)
	var unknown []string
	for _, k := range fv.AllKeys() {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("config file %s: unknown key(s) %s", path, strings.Join(unknown, ", "))
	}
	return nil
}

func collectKeys(prefix string, t reflect.Type, into map[string]bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		key := f.Tag.Get("mapstructure")
		if prefix != "" {
			key = prefix + "." + key
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
			collectKeys(key, f.Type, into)
			continue
		}
		into[key] = true
	}
}
