package config

import (
	"bytes"
	"encoding/json"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestDefaults(t *testing.T) {
	c, err := Parse(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	got := []any{c.RedisURL, c.APIAddr, c.WorkerAddr, c.UploadDir, c.ModelPath, c.ORTProvider, c.APIKeys, c.MaxUploadBytes, c.ResultTTL, c.MaxQueue, c.PollInterval}
	want := []any{"redis://127.0.0.1:6379/0", ":5000", ":9091", "uploads", "models/yolov8n.onnx", "cpu", []string(nil), int64(20 << 20), time.Hour, 10000, time.Second}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}

// TestWorkerConcurrencyDefault: WORKER_CONCURRENCY wins; unset, a CUDA
// worker gets slots for two batches, at least 16, and a CPU worker leaves
// it to the detector (0).
func TestWorkerConcurrencyDefault(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want int
	}{
		{map[string]string{}, 0},
		{map[string]string{"BATCH_MAX": "8"}, 0},
		{map[string]string{"ORT_PROVIDER": "cuda"}, 16},
		{map[string]string{"ORT_PROVIDER": "cuda", "BATCH_MAX": "8"}, 16},
		{map[string]string{"ORT_PROVIDER": "cuda", "BATCH_MAX": "32"}, 64},
		{map[string]string{"ORT_PROVIDER": "cuda", "BATCH_MAX": "32", "WORKER_CONCURRENCY": "20"}, 20},
	} {
		c, err := Parse(env(tc.env))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Concurrency(); got != tc.want {
			t.Errorf("%v: concurrency %d, want %d", tc.env, got, tc.want)
		}
	}
}

func TestParse(t *testing.T) {
	c, err := Parse(env(map[string]string{
		"BROKER_URL": "redis://r:6379/2", "API_KEYS": " a, b ,,", "RESULT_TTL": "90", "ORT_PROVIDER": "CUDA",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.RedisURL != "redis://r:6379/2" || !cmp.Equal(c.APIKeys, []string{"a", "b"}) || c.ResultTTL != 90*time.Second || c.ORTProvider != "cuda" {
		t.Errorf("%+v", c)
	}
	c, _ = Parse(env(map[string]string{"REDIS_URL": "redis://a/0", "BROKER_URL": "redis://b/0"}))
	if c.RedisURL != "redis://a/0" {
		t.Errorf("REDIS_URL must win over BROKER_URL, got %s", c.RedisURL)
	}
}

func TestBadValueNamesVariable(t *testing.T) {
	for name, val := range map[string]string{
		"REDIS_URL": "http://x", "API_ADDR": "5000", "WORKER_ADDR": "nope", "ORT_PROVIDER": "tpu", "ORT_CUDNN_CONV_ALGO_SEARCH": "fastest", "ORT_CUDA_PINNED_MEMORY": "sometimes", "ORT_CUDA_TF32": "half", "BATCH_PADDING": "pow3", "HEAD_DECODE": "python",
		"WORKER_CONCURRENCY": "-1", "MAX_UPLOAD_BYTES": "lots", "RESULT_TTL": "forever", "ORT_FALLBACK_CPU": "perhaps", "ORT_TELEMETRY": "maybe",
		"MAX_QUEUE": "0", "LOG_LEVEL": "loud", "RATE_LIMIT": "-3", "QUEUE": "a b", "WORKER_POLL_INTERVAL": "0s",
		"WORKER_PREFETCH": "-1", "MAX_INFLIGHT_BYTES": "1000000", // under twice MAX_UPLOAD_BYTES
		"LOG_FORMAT": "xml", "CORS_ORIGINS": "app.example", "UPLOAD_FSYNC": "sometimes",
	} {
		_, err := Parse(env(map[string]string{name: val}))
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%s: error %v should name the variable", name, val, err)
		}
	}
}

// TestEveryVariableRead sets each variable to a value other than its
// default and checks that the configuration changes: a variable listed
// and documented but never parsed (ORT_SESSIONS was) is silently ignored.
func TestEveryVariableRead(t *testing.T) {
	values := map[string]string{
		"REDIS_URL": "redis://r:6380/1", "REDIS_WAIT_REPLICAS": "1", "API_ADDR": ":6000", "WORKER_ADDR": ":9092",
		"UPLOAD_DIR": "/tmp/up", "UPLOAD_STORE": "redis", "MODEL_PATH": "m.onnx", "ORT_LIB": "/x/libonnxruntime.so",
		"ORT_PROVIDER": "cuda", "ORT_FALLBACK_CPU": "true", "ORT_CUDNN_CONV_ALGO_SEARCH": "exhaustive", "ORT_CUDA_PINNED_MEMORY": "false", "ORT_CUDA_TF32": "true", "ORT_TELEMETRY": "true", "ORT_THREADS": "3", "ORT_SESSIONS": "1", "ORT_SOLO_THREADS": "1",
		"TURBOJPEG_LIB": "/x/libturbojpeg.so", "LIBPNG_LIB": "/x/libpng16.so", "LIBDEFLATE_LIB": "/x/libdeflate.so",
		"WORKER_CONCURRENCY": "5", "WORKER_PREFETCH": "0", "WORKER_POLL_INTERVAL": "50ms",
		"BATCH_MAX": "8", "BATCH_WAIT": "5ms", "BATCH_PADDING": "full", "HEAD_DECODE": "onnx", "API_KEYS": "k", "RATE_LIMIT": "10", "RATE_BURST": "5",
		"MAX_UPLOAD_BYTES": "4096", "MAX_PIXELS": "1000", "MAX_INFLIGHT_UPLOADS": "3", "MAX_INFLIGHT_BYTES": "100000000", "UPLOAD_MIN_RATE": "0", "MAX_QUEUE": "7", "UPLOAD_DISK_RESERVE": "0", "UPLOAD_FSYNC": "always",
		"RESULT_TTL": "2h", "TASK_TIMEOUT": "10s", "TASK_RETRIES": "1", "UPLOAD_MAX_AGE": "3h", "QUEUE": "q",
		"SHUTDOWN_TIMEOUT": "5s", "LOG_LEVEL": "debug", "LOG_FORMAT": "json", "CORS_ORIGINS": "https://app.example",
		"REDIS_TLS_CA": "ca.pem", "REDIS_TLS_CERT": "client.pem", "REDIS_TLS_KEY": "client.key", "REDIS_PASSWORD": "s3cret",
		"REDIS_SENTINEL_PASSWORD": "s3cret",
	}
	// What a variable needs beside it to be valid; compared with the
	// defaults all the same, so the variable's own value must show.
	const rediss = "rediss://r:6380/0"
	companions := map[string]map[string]string{
		"REDIS_TLS_CA":            {"REDIS_URL": rediss},
		"REDIS_TLS_CERT":          {"REDIS_URL": rediss, "REDIS_TLS_KEY": "c.key"},
		"REDIS_TLS_KEY":           {"REDIS_URL": rediss, "REDIS_TLS_CERT": "c.pem"},
		"REDIS_SENTINEL_PASSWORD": {"REDIS_URL": "redis-sentinel://s1:26379/mymaster/0"},
	}
	def, err := Parse(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range Vars {
		val, ok := values[v.Name]
		if !ok {
			t.Errorf("no test value for %s", v.Name)
			continue
		}
		set := map[string]string{v.Name: val}
		for name, val := range companions[v.Name] {
			set[name] = val
		}
		c, err := Parse(env(set))
		if err != nil {
			t.Errorf("%s=%s: %v", v.Name, val, err)
			continue
		}
		if cmp.Equal(c, def) {
			t.Errorf("%s=%s left the configuration at its defaults: the variable is not read", v.Name, val)
		}
	}
}

// TestEveryVariableDocumented checks that .env.example and the README
// list every variable.
func TestEveryVariableDocumented(t *testing.T) {
	for _, f := range []string{"../../.env.example", "../../README.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range Vars {
			if !strings.Contains(string(b), v.Name) {
				t.Errorf("%s does not document %s", f, v.Name)
			}
		}
	}
}

// TestLoggerFormats: LOG_FORMAT=json writes one JSON object a line, for log
// collectors, with the level and the attributes as fields; text writes
// key=value lines. Both keep to LOG_LEVEL.
func TestLoggerFormats(t *testing.T) {
	for format, want := range map[string]string{
		"json": `{"level":"WARN","msg":"Redis is nearly full","used_memory":9}`,
		"text": `level=WARN msg="Redis is nearly full" used_memory=9`,
	} {
		c, err := Parse(env(map[string]string{"LOG_FORMAT": format, "LOG_LEVEL": "warn"}))
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		log := c.loggerTo(&b)
		log.Info("not at warn")
		log.Warn("Redis is nearly full", "used_memory", 9)
		line := strings.TrimSpace(b.String())
		if format == "json" {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("json: %q is not one JSON object: %v", line, err)
			}
			delete(m, "time")
			got, _ := json.Marshal(m)
			line = string(got)
		} else {
			_, line, _ = strings.Cut(line, " ") // the time
		}
		if line != want {
			t.Errorf("%s: %q, want %q", format, line, want)
		}
	}
}

// TestBadRedisURLHidesPassword: the error for a REDIS_URL of the wrong
// form, which the processes print as they exit, must not carry its
// password into the logs.
func TestBadRedisURLHidesPassword(t *testing.T) {
	for _, u := range []string{"http://app:s3cret@redis:6379/0", "redis://:s3cret@redis:port/0"} {
		_, err := Parse(env(map[string]string{"REDIS_URL": u}))
		if err == nil {
			t.Fatalf("REDIS_URL=%s was accepted", u)
		}
		if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "REDIS_URL") {
			t.Errorf("REDIS_URL=%s: error %q must name the variable and hide the password", u, err)
		}
	}
}

// TestRedactedHidesPasswords: the Redis URL the processes log at start
// hides both places a password can be given, before the host and, for a
// sentinel URL, the primary's in the query; the rest stays readable.
func TestRedactedHidesPasswords(t *testing.T) {
	for u, want := range map[string]string{
		"redis://app:s3cret@redis:6379/0":                               "redis://app:xxxxx@redis:6379/0",
		"redis-sentinel://:s3cret@s1:26379/mymaster/0?password=s3cret2": "redis-sentinel://:xxxxx@s1:26379/mymaster/0?password=xxxxx",
		"rediss-sentinel://:s3cret@s1:26379/mymaster/0?password=s3":     "rediss-sentinel://:xxxxx@s1:26379/mymaster/0?password=xxxxx",
		"redis://redis:6379/0":                                          "redis://redis:6379/0",
	} {
		if got := (Config{RedisURL: u}).Redacted(); got != want {
			t.Errorf("Redacted(%s) = %s, want %s", u, got, want)
		}
	}
}

// TestRedisPasswordFromItsVariable: REDIS_PASSWORD is the password Redis
// is logged in with, in place of one in REDIS_URL, with the URL's user
// name kept; with Sentinel it is the primary's, where go-redis reads it,
// and the sentinels' stays. Any character goes, and the logs hide it.
// The in-memory Redis, which has none, refuses it.
func TestRedisPasswordFromItsVariable(t *testing.T) {
	const pw = "p@ss:w/rd?#%"
	for _, tc := range []struct{ url, user, primary, sentinels string }{
		{"redis://r:6379/0", "", pw, ""},
		{"redis://app:old@r:6379/0", "app", pw, ""},
		{"rediss://app@r:6380/2", "app", pw, ""},
		{"unix:///run/redis.sock?db=2", "", pw, ""},
		{"redis-sentinel://:spw@s1:26379,s2:26379/mymaster/0?password=old", "", pw, "spw"},
		{"rediss-sentinel://s1:26379/mymaster/0", "", pw, ""},
	} {
		c, u := parseRedisURL(t, map[string]string{"REDIS_URL": tc.url, "REDIS_PASSWORD": pw})
		if u == nil {
			continue
		}
		got := [3]string{u.User.Username(), "", ""}
		if strings.HasSuffix(u.Scheme, "-sentinel") {
			got[1], got[2] = u.Query().Get("password"), func() string { p, _ := u.User.Password(); return p }()
		} else {
			got[1], _ = u.User.Password()
		}
		if want := [3]string{tc.user, tc.primary, tc.sentinels}; got != want {
			t.Errorf("%s with REDIS_PASSWORD: user, password, sentinels' password = %q, want %q", tc.url, got, want)
		}
		if strings.Contains(c.Redacted(), "ss:w") || strings.Contains(c.Redacted(), url.QueryEscape(pw)) {
			t.Errorf("%s: the logged URL %s shows the password", tc.url, c.Redacted())
		}
	}
	if _, err := Parse(env(map[string]string{"REDIS_URL": "memory://", "REDIS_PASSWORD": pw})); err == nil || !strings.Contains(err.Error(), "REDIS_PASSWORD") {
		t.Errorf("the in-memory Redis with a password: %v, want an error naming REDIS_PASSWORD", err)
	}
}

// parseRedisURL parses the configuration of the variables set, and the
// REDIS_URL it ends with. When either fails it reports the error as the
// test's and returns a nil URL.
func parseRedisURL(t *testing.T, set map[string]string) (Config, *url.URL) {
	t.Helper()
	c, err := Parse(env(set))
	if err != nil {
		t.Errorf("%s: %v", set["REDIS_URL"], err)
		return c, nil
	}
	u, err := url.Parse(c.RedisURL)
	if err != nil {
		t.Errorf("%s: %s does not parse: %v", set["REDIS_URL"], c.RedisURL, err)
		return c, nil
	}
	return c, u
}

// TestSentinelPasswordFromItsVariable: REDIS_SENTINEL_PASSWORD is the
// sentinels' password, in place of one before the hosts, with the URL's
// user name kept, beside REDIS_PASSWORD (the primary's); the logs hide
// both. With a URL that has no sentinels it stops the start, named.
func TestSentinelPasswordFromItsVariable(t *testing.T) {
	const spw, pw = "s@nt:w/rd?#%", "pr1mary"
	for _, tc := range []struct {
		url, primaryVar     string
		user, sent, primary string
	}{
		{"redis-sentinel://s1:26379,s2:26379/mymaster/0", "", "", spw, ""},
		{"redis-sentinel://admin:old@s1:26379/mymaster/0?password=kept", "", "admin", spw, "kept"},
		{"rediss-sentinel://s1:26379/mymaster/2", pw, "", spw, pw},
	} {
		c, u := parseRedisURL(t, map[string]string{"REDIS_URL": tc.url, "REDIS_SENTINEL_PASSWORD": spw, "REDIS_PASSWORD": tc.primaryVar})
		if u == nil {
			continue
		}
		sent, _ := u.User.Password()
		if got, want := [3]string{u.User.Username(), sent, u.Query().Get("password")}, [3]string{tc.user, tc.sent, tc.primary}; got != want {
			t.Errorf("%s with REDIS_SENTINEL_PASSWORD: sentinels' user, sentinels' password, primary's password = %q, want %q", tc.url, got, want)
		}
		if r := c.Redacted(); strings.Contains(r, "nt:w") || strings.Contains(r, url.QueryEscape(spw)) || strings.Contains(r, pw) {
			t.Errorf("%s: the logged URL %s shows a password", tc.url, r)
		}
	}
	for _, u := range []string{"redis://r:6379/0", "rediss://r:6380/0", "unix:///run/redis.sock", "memory://"} {
		if _, err := Parse(env(map[string]string{"REDIS_URL": u, "REDIS_SENTINEL_PASSWORD": spw})); err == nil || !strings.Contains(err.Error(), "REDIS_SENTINEL_PASSWORD") {
			t.Errorf("%s with a sentinels' password: %v, want an error naming REDIS_SENTINEL_PASSWORD", u, err)
		} else if strings.Contains(err.Error(), spw) {
			t.Errorf("%s: the error shows the password: %v", u, err)
		}
	}
}

// TestRedisTLSFilesNeedRediss: the REDIS_TLS_ files apply only to a
// rediss:// or rediss-sentinel:// URL, and the client certificate goes with its key; a
// configuration that breaks either is refused with the variables named,
// where it would otherwise be ignored or fail at the first connection.
func TestRedisTLSFilesNeedRediss(t *testing.T) {
	for _, tc := range []map[string]string{
		{"REDIS_URL": "redis://r:6379/0", "REDIS_TLS_CA": "ca.pem"},
		{"REDIS_URL": "redis-sentinel://s1:26379/mymaster/0", "REDIS_TLS_CA": "ca.pem"},
		{"REDIS_URL": "rediss://r:6379/0", "REDIS_TLS_CERT": "c.pem"},
		{"REDIS_URL": "rediss://r:6379/0", "REDIS_TLS_KEY": "c.key"},
	} {
		if _, err := Parse(env(tc)); err == nil || !strings.Contains(err.Error(), "REDIS_TLS_") {
			t.Errorf("%v: error %v, want one naming the REDIS_TLS_ variables", tc, err)
		}
	}
	for _, u := range []string{"rediss://r:6379/0", "rediss-sentinel://s1:26379,s2:26379/mymaster/0"} {
		c, err := Parse(env(map[string]string{"REDIS_URL": u, "REDIS_TLS_CA": "ca.pem", "REDIS_TLS_CERT": "c.pem", "REDIS_TLS_KEY": "c.key"}))
		if err != nil || c.RedisTLSCA != "ca.pem" || c.RedisTLSCert != "c.pem" || c.RedisTLSKey != "c.key" {
			t.Errorf("%s with all three files: %+v, %v", u, c, err)
		}
	}
}
