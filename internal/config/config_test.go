package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "praxis.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, "server_name: file.example\nregistration:\n  open: true\nlisten:\n  client: 127.0.0.1:9000\n")
	for _, tc := range []struct {
		name  string
		flags Flags
		env   []string
		check func(*Config) string
	}{
		{"file overrides default", Flags{ConfigFile: file}, nil, func(c *Config) string {
			if c.ServerName != "file.example" || !c.Registration.Open {
				return "file values not applied"
			}
			return ""
		}},
		{"env overrides file", Flags{ConfigFile: file}, []string{"PRAXIS_SERVER_NAME=env.example", "PRAXIS_REGISTRATION_OPEN=false"}, func(c *Config) string {
			if c.ServerName != "env.example" || c.Registration.Open {
				return "env values not applied"
			}
			return ""
		}},
		{"flag overrides env", Flags{ConfigFile: file, ServerName: "flag.example"}, []string{"PRAXIS_SERVER_NAME=env.example"}, func(c *Config) string {
			if c.ServerName != "flag.example" {
				return "flag not applied: " + c.ServerName
			}
			return ""
		}},
		{"env lists are space separated", Flags{}, []string{"PRAXIS_FEDERATION_ALLOWED_SERVERS=hs2 hs3:8448"}, func(c *Config) string {
			if len(c.Federation.AllowedServers) != 2 || c.Federation.AllowedServers[1] != "hs3:8448" {
				return "allowlist = " + strings.Join(c.Federation.AllowedServers, ",")
			}
			return ""
		}},
		{"durations from env", Flags{}, []string{"PRAXIS_TURN_TTL=90s"}, func(c *Config) string {
			if c.TURN.TTL != 90*time.Second {
				return "ttl = " + c.TURN.TTL.String()
			}
			return ""
		}},
		{"unknown env var is ignored", Flags{}, []string{"PRAXIS_NO_SUCH_KEY=1"}, func(c *Config) string { return "" }},
		{"database defaults into data dir", Flags{DataDir: "/srv/praxis"}, nil, func(c *Config) string {
			if c.Database != "sqlite:/srv/praxis/praxis.db" || c.SigningKey != "/srv/praxis/signing.key" {
				return "derived paths: " + c.Database + " " + c.SigningKey
			}
			return ""
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(tc.flags, tc.env)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if msg := tc.check(c); msg != "" {
				t.Fatal(msg)
			}
		})
	}
}

func TestBadConfigIsRefusedNamingTheKey(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    string
		env     []string
		wantKey string
	}{
		{"unknown file key", "registation:\n  open: true\n", nil, "registation.open"},
		{"bad listen address", "listen:\n  client: nonsense\n", nil, "listen.client"},
		{"bad room version", "rooms:\n  default_version: \"99\"\n", nil, "rooms.default_version"},
		{"bad log level", "", []string{"PRAXIS_LOG_LEVEL=loud"}, "log.level"},
		{"bad database", "database: mysql://x\n", nil, "database"},
		{"bad server name", "server_name: \"a b\"\n", nil, "server_name"},
		{"turn without secret", "turn:\n  enabled: true\n", nil, "turn"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(Flags{ConfigFile: writeFile(t, tc.file)}, tc.env)
			if err == nil {
				t.Fatal("Load accepted a bad config")
			}
			if !strings.Contains(err.Error(), tc.wantKey) {
				t.Fatalf("error %q does not name %q", err, tc.wantKey)
			}
		})
	}
}

func TestDefaultTemplateLoadsAndMatchesDefaults(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "praxis.yaml")
	created, err := WriteDefaultFile(p, "")
	if err != nil || !created {
		t.Fatalf("WriteDefaultFile = %v, %v", created, err)
	}
	if again, _ := WriteDefaultFile(p, ""); again {
		t.Fatal("WriteDefaultFile overwrote an existing file")
	}
	c, err := Load(Flags{ConfigFile: p}, nil)
	if err != nil {
		t.Fatalf("generated config does not load: %v", err)
	}
	d := Defaults()
	if c.ServerName != d.ServerName || c.Registration.Open != d.Registration.Open || c.Rooms.DefaultVersion != d.Rooms.DefaultVersion {
		t.Fatalf("template disagrees with Defaults(): %+v", c)
	}
	if c.Registration.SharedSecret == "" {
		t.Fatal("template has no generated shared secret")
	}
	if c.DataDir != dir {
		t.Fatalf("data_dir = %q, want the config's directory %q", c.DataDir, dir)
	}
}
