package config

import (
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
	want := []any{"redis://127.0.0.1:6379/0", ":5000", ":9091", "uploads", "models/yolov8n.onnx", "cpu", []string(nil), int64(20 << 20), time.Hour, 10000, 10 * time.Millisecond}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
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
		"REDIS_URL": "http://x", "API_ADDR": "5000", "WORKER_ADDR": "nope", "ORT_PROVIDER": "tpu",
		"WORKER_CONCURRENCY": "-1", "MAX_UPLOAD_BYTES": "lots", "RESULT_TTL": "forever", "ORT_FALLBACK_CPU": "perhaps",
		"MAX_QUEUE": "0", "LOG_LEVEL": "loud", "RATE_LIMIT": "-3", "QUEUE": "a b", "WORKER_POLL_INTERVAL": "0s",
	} {
		_, err := Parse(env(map[string]string{name: val}))
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%s: error %v should name the variable", name, val, err)
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
