// Package config owns every environment variable of the service: it reads
// the environment and a .env file, fills in defaults and validates, naming
// the variable at fault.
package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/joho/godotenv"
)

// Config is the whole configuration of the API and the worker.
type Config struct {
	RedisURL          string // REDIS_URL (alias BROKER_URL), with REDIS_PASSWORD and REDIS_SENTINEL_PASSWORD in it
	RedisWaitReplicas int    // REDIS_WAIT_REPLICAS
	RedisTLSCert      string // REDIS_TLS_CERT: the client's certificate for a rediss:// Redis
	RedisTLSKey       string // REDIS_TLS_KEY: its key
	RedisTLSCA        string // REDIS_TLS_CA: a CA to trust beside the system's
	APIAddr           string // API_ADDR
	WorkerAddr        string // WORKER_ADDR
	UploadDir         string // UPLOAD_DIR
	UploadStore       string // UPLOAD_STORE: dir or redis
	UploadDiskReserve int64  // UPLOAD_DISK_RESERVE
	UploadFsync       string // UPLOAD_FSYNC: everysec, always or no
	ModelPath         string // MODEL_PATH
	ModelSet          bool   // whether MODEL_PATH was given

	ORTLib         string // ORT_LIB; empty: the library `make build` fetched
	ORTProvider    string // ORT_PROVIDER: cpu or cuda
	ORTFallbackCPU bool   // ORT_FALLBACK_CPU
	ORTConvSearch  string // ORT_CUDNN_CONV_ALGO_SEARCH: heuristic, exhaustive or default
	ORTPinned      bool   // ORT_CUDA_PINNED_MEMORY
	ORTTF32        bool   // ORT_CUDA_TF32
	ORTTelemetry   bool   // ORT_TELEMETRY
	ORTThreads     int    // ORT_THREADS; 0: chosen for the machine
	ORTSessions    int    // ORT_SESSIONS
	ORTSoloThreads int    // ORT_SOLO_THREADS; 0: every core
	TurboJPEGLib   string // TURBOJPEG_LIB; empty: libturbojpeg.so.0
	LibPNGLib      string // LIBPNG_LIB; empty: libpng16.so.16
	LibDeflateLib  string // LIBDEFLATE_LIB; empty: libdeflate.so.0

	WorkerConcurrency int           // WORKER_CONCURRENCY; 0: chosen for the machine
	Prefetch          int           // WORKER_PREFETCH
	PollInterval      time.Duration // WORKER_POLL_INTERVAL
	BatchMax          int           // BATCH_MAX
	BatchWait         time.Duration // BATCH_WAIT
	BatchPadding      string        // BATCH_PADDING: none, pow2 or full; empty for auto, the provider's default
	HeadDecode        string        // HEAD_DECODE: go or onnx; empty for auto, the provider's default

	APIKeys          []string      // API_KEYS
	CORSOrigins      []string      // CORS_ORIGINS
	RateLimit        float64       // RATE_LIMIT: requests per second per key or address; 0 off
	RateBurst        int           // RATE_BURST
	MaxUploadBytes   int64         // MAX_UPLOAD_BYTES
	MaxInflight      int           // MAX_INFLIGHT_UPLOADS
	MaxInflightBytes int64         // MAX_INFLIGHT_BYTES (0: the API's default)
	UploadMinRate    int64         // UPLOAD_MIN_RATE: bytes a second; 0 off
	MaxPixels        int           // MAX_PIXELS
	MaxQueue         int           // MAX_QUEUE: pending tasks before 503
	ResultTTL        time.Duration // RESULT_TTL
	TaskTimeout      time.Duration // TASK_TIMEOUT
	TaskRetries      int           // TASK_RETRIES
	UploadMaxAge     time.Duration // UPLOAD_MAX_AGE: orphans older are swept
	Queue            string        // QUEUE: the asynq queue name
	ShutdownGrace    time.Duration // SHUTDOWN_TIMEOUT
	LogLevel         string        // LOG_LEVEL: debug, info, warn, error
	LogFormat        string        // LOG_FORMAT: text or json
}

// Vars lists every variable with its default and meaning, in the order of
// .env.example and the README.
var Vars = []struct{ Name, Default, Meaning string }{
	{"REDIS_URL", "redis://127.0.0.1:6379/0", "Redis for the queue and the results (BROKER_URL is an alias)"},
	{"REDIS_PASSWORD", "", "the password of Redis (with Sentinel, the primary's), in place of one in REDIS_URL, so that it can come from a secret"},
	{"REDIS_SENTINEL_PASSWORD", "", "with redis-sentinel:// or rediss-sentinel://: the sentinels' own password, in place of one before the hosts in REDIS_URL"},
	{"REDIS_WAIT_REPLICAS", "0", "replicas that must hold an enqueued task before the API answers 202 (1 with Sentinel: a failover loses no accepted task)"},
	{"REDIS_TLS_CA", "", "with rediss:// or rediss-sentinel://: a PEM file of the CA (or a bundle of CAs) that signed Redis's certificate, trusted beside the system's; read again at each new connection"},
	{"REDIS_TLS_CERT", "", "with rediss:// or rediss-sentinel://: a PEM file of the client certificate, for a Redis that asks for one (tls-auth-clients)"},
	{"REDIS_TLS_KEY", "", "the key of REDIS_TLS_CERT, a PEM file"},
	{"API_ADDR", ":5000", "where the API listens"},
	{"WORKER_ADDR", ":9091", "where a worker serves /healthz, /readyz, /metrics"},
	{"UPLOAD_DIR", "uploads", "where uploads wait for a worker (shared by API and workers)"},
	{"UPLOAD_STORE", "dir", "dir: uploads in UPLOAD_DIR (one host); redis: in Redis beside the task (no shared disk)"},
	{"UPLOAD_DISK_RESERVE", "1073741824", "bytes the API leaves free on UPLOAD_DIR's disk, for Redis's append-only file and the rest of the host: an upload that would leave less is answered 503 until workers free room (0: none)"},
	{"UPLOAD_FSYNC", "everysec", "when the API makes the uploads it writes to UPLOAD_DIR reach the disk, as Redis's appendfsync: everysec (within a second: a host crash loses at most the last second's, and a backlog is written steadily instead of in bursts that stall intake), always (before answering 202), no (when the kernel does, after up to 30 s)"},
	{"MODEL_PATH", "models/yolov8n.onnx", "the YOLO ONNX model"},
	{"ORT_LIB", "", "path of libonnxruntime.so (default: the one `make build` fetched)"},
	{"ORT_PROVIDER", "cpu", "cpu or cuda"},
	{"ORT_FALLBACK_CPU", "false", "with cuda: run on CPU when the CUDA provider cannot load"},
	{"ORT_CUDA_PINNED_MEMORY", "true", "with cuda: the tensors a worker's images are copied to the GPU from, and their detections back to, are page-locked (the CUDA runtime's cudaHostAlloc), which the GPU copies directly; false: ordinary memory, which the driver copies through staging buffers. A worker whose CUDA runtime (libcudart.so.13) cannot be loaded uses ordinary memory and logs why (host_memory)"},
	{"ORT_CUDNN_CONV_ALGO_SEARCH", "heuristic", "with cuda: how cuDNN picks each convolution's algorithm for a batch size not run before: heuristic (its heuristics), exhaustive (times every algorithm on the size's first run, ONNX Runtime's own default: that run takes far longer) or default (one fixed algorithm); a batching worker runs each size of run it has (BATCH_PADDING) once before it is ready"},
	{"ORT_CUDA_TF32", "false", "with cuda: true lets convolutions and matrix products round their inputs to TF32 on the tensor cores of Ampere and later GPUs, ONNX Runtime's own default: on an H200 the bare session ran batches of 32 in 14 ms against 21 ms in float32, and batches of 1 no faster, but its outputs moved up to 0.76 from the CPU's (float32: 0.0007) and differed from one batch size to another, so that detections shift in their last digits; false: float32, the same detections as on the CPU"},
	{"ORT_TELEMETRY", "false", "ONNX Runtime's own telemetry: true leaves it as the library has it (1.30 and 1.31 on Linux look up Microsoft's collector and send usage events, and keep a device ID and an event cache under ~/.cache/Microsoft and files of each process in TMPDIR); false turns it all off (ORT_DISABLE_TELEMETRY=1 for the library)"},
	{"ORT_THREADS", "0", "ONNX Runtime intra-op threads per session (0: cores / WORKER_CONCURRENCY; all cores when batching)"},
	{"ORT_SESSIONS", "0", "ONNX Runtime sessions a worker's tasks share (0: one per task slot)"},
	{"ORT_SOLO_THREADS", "0", "threads of one more session, which runs an image alone in the worker so that a lone request gets every core, and which rests while other processes hold the cores (0: all cores; 1 or at most ORT_THREADS: no such session)"},
	{"TURBOJPEG_LIB", "", "path of libturbojpeg (default: libturbojpeg.so.0 from the system)"},
	{"LIBPNG_LIB", "", "path of libpng 1.6 (default: libpng16.so.16 from the system)"},
	{"LIBDEFLATE_LIB", "", "path of libdeflate, which inflates 8-bit PNGs without a palette in front of libpng (default: libdeflate.so.0 from the system)"},
	{"WORKER_CONCURRENCY", "0", "tasks a worker runs at once (0: one per two cores, at least two; on cuda twice BATCH_MAX, at least 16)"},
	{"WORKER_PREFETCH", "1", "tasks a worker whose slots are all busy takes ahead from a backlog, each waiting with its upload read, so that a slot never waits for Redis between tasks (0: none)"},
	{"WORKER_POLL_INTERVAL", "1s", "how often an idle worker looks for tasks that no API announced (retries, tasks of a dead worker); announced tasks are taken at once; at most 10s"},
	{"BATCH_MAX", "1", "images per inference run for dynamic-batch models (1: off)"},
	{"BATCH_WAIT", "2ms", "how long a batch waits to fill"},
	{"BATCH_PADDING", "auto", "the size a batch of n images runs at: none (n), pow2 (the smallest power of two that holds n, BATCH_MAX at most, each size on a session of its own), full (always BATCH_MAX); auto: pow2 on cuda, where a session whose input shape changes sets its convolutions up again (about 110 ms a batch on an H200), none on cpu"},
	{"HEAD_DECODE", "auto", "where the model's head turns its raw outputs into boxes and scores: go (the worker runs the model up to them and decodes, in Go, only the anchors that can pass conf: the same detections for a tenth less CPU an image on yolov8n), onnx (the whole model in ONNX Runtime); auto: go on cpu, onnx on cuda. A model whose head does not decode in Go as the whole model does at start (a quantized head) runs whole, and the worker's start log says why"},
	{"API_KEYS", "", "comma-separated keys; when set, every request but health checks needs Authorization: Bearer KEY"},
	{"CORS_ORIGINS", "", "comma-separated origins whose web pages may call the API from a browser (https://app.example, https://*.example, or *); unset: none"},
	{"RATE_LIMIT", "0", "requests per second per API key or client address (0: no limit)"},
	{"RATE_BURST", "20", "requests a client may send at once above RATE_LIMIT"},
	{"MAX_UPLOAD_BYTES", "20971520", "largest accepted request body"},
	{"MAX_PIXELS", "40000000", "largest accepted image, width × height"},
	{"MAX_INFLIGHT_UPLOADS", "64", "uploads the API reads at once; past it, 503"},
	{"MAX_INFLIGHT_BYTES", "0", "bytes of upload bodies the API holds at once, each counted at its Content-Length (twice MAX_UPLOAD_BYTES without one); past it, 503 (0: 256 MiB, or twice MAX_UPLOAD_BYTES if more)"},
	{"UPLOAD_MIN_RATE", "8192", "bytes a second an upload's body must keep arriving at, on average, after its first 5 s, with no pause over 10 s; slower, the API answers 408 and frees its slot, so that clients that stall or trickle cannot hold MAX_INFLIGHT_UPLOADS (0: no minimum; a body may take 2 minutes)"},
	{"MAX_QUEUE", "10000", "tasks waiting before POST /predict answers 503"},
	{"RESULT_TTL", "1h", "how long a result stays readable"},
	{"TASK_TIMEOUT", "60s", "longest a task may run"},
	{"TASK_RETRIES", "3", "retries of a task that failed for a transient reason"},
	{"UPLOAD_MAX_AGE", "2h", "uploads older than this with no task are removed"},
	{"QUEUE", "detect", "asynq queue name"},
	{"SHUTDOWN_TIMEOUT", "30s", "how long a stopping process waits for running work"},
	{"LOG_LEVEL", "info", "debug, info, warn or error"},
	{"LOG_FORMAT", "text", "text (key=value lines) or json (one object a line, for log collectors)"},
}

// Load reads the .env file in the working directory, if any, without
// overriding the real environment, then calls Parse on the environment.
func Load() (Config, error) {
	if err := godotenv.Load(); err != nil && !errors.Is(err, os.ErrNotExist) {
		return Config{}, fmt.Errorf(".env: %w", err)
	}
	return Parse(os.Getenv)
}

// Parse builds a Config from getenv, defaults filled in. It returns an
// error naming the first variable with a bad value.
func Parse(getenv func(string) string) (Config, error) {
	p := parser{get: getenv}
	c := Config{
		RedisURL:          p.str("REDIS_URL"),
		APIAddr:           p.str("API_ADDR"),
		RedisWaitReplicas: p.int("REDIS_WAIT_REPLICAS", 0, 100),
		RedisTLSCert:      p.str("REDIS_TLS_CERT"),
		RedisTLSKey:       p.str("REDIS_TLS_KEY"),
		RedisTLSCA:        p.str("REDIS_TLS_CA"),
		WorkerAddr:        p.str("WORKER_ADDR"),
		UploadDir:         p.str("UPLOAD_DIR"),
		UploadStore:       strings.ToLower(p.str("UPLOAD_STORE")),
		UploadDiskReserve: int64(p.int("UPLOAD_DISK_RESERVE", 0, 1<<50)),
		UploadFsync:       strings.ToLower(p.str("UPLOAD_FSYNC")),
		ModelPath:         p.str("MODEL_PATH"),
		ModelSet:          getenv("MODEL_PATH") != "",
		ORTLib:            p.str("ORT_LIB"),
		ORTProvider:       strings.ToLower(p.str("ORT_PROVIDER")),
		ORTFallbackCPU:    p.bool("ORT_FALLBACK_CPU"),
		ORTConvSearch:     strings.ToLower(p.str("ORT_CUDNN_CONV_ALGO_SEARCH")),
		ORTPinned:         p.bool("ORT_CUDA_PINNED_MEMORY"),
		ORTTF32:           p.bool("ORT_CUDA_TF32"),
		ORTTelemetry:      p.bool("ORT_TELEMETRY"),
		ORTThreads:        p.int("ORT_THREADS", 0, 1024),
		ORTSessions:       p.int("ORT_SESSIONS", 0, 1024),
		ORTSoloThreads:    p.int("ORT_SOLO_THREADS", 0, 1024),
		TurboJPEGLib:      p.str("TURBOJPEG_LIB"),
		LibPNGLib:         p.str("LIBPNG_LIB"),
		LibDeflateLib:     p.str("LIBDEFLATE_LIB"),

		WorkerConcurrency: p.int("WORKER_CONCURRENCY", 0, 1024),
		Prefetch:          p.int("WORKER_PREFETCH", 0, 1024),
		PollInterval:      p.duration("WORKER_POLL_INTERVAL", time.Millisecond, 10*time.Second),
		BatchMax:          p.int("BATCH_MAX", 1, 1024),
		BatchWait:         p.duration("BATCH_WAIT", 0, time.Second),
		BatchPadding:      strings.ToLower(p.str("BATCH_PADDING")),
		HeadDecode:        strings.ToLower(p.str("HEAD_DECODE")),

		RateLimit:        p.float("RATE_LIMIT", 0, 1e6),
		RateBurst:        p.int("RATE_BURST", 1, 1e6),
		MaxUploadBytes:   int64(p.int("MAX_UPLOAD_BYTES", 1024, 1<<40)),
		MaxPixels:        p.int("MAX_PIXELS", 1, 1<<40),
		MaxInflight:      p.int("MAX_INFLIGHT_UPLOADS", 1, 1e6),
		MaxInflightBytes: int64(p.int("MAX_INFLIGHT_BYTES", 0, 1<<50)),
		UploadMinRate:    int64(p.int("UPLOAD_MIN_RATE", 0, 1<<40)),
		MaxQueue:         p.int("MAX_QUEUE", 1, 1e9),
		ResultTTL:        p.duration("RESULT_TTL", time.Second, 365*24*time.Hour),
		TaskTimeout:      p.duration("TASK_TIMEOUT", time.Second, 24*time.Hour),
		TaskRetries:      p.int("TASK_RETRIES", 0, 100),
		UploadMaxAge:     p.duration("UPLOAD_MAX_AGE", time.Minute, 365*24*time.Hour),
		Queue:            p.str("QUEUE"),
		ShutdownGrace:    p.duration("SHUTDOWN_TIMEOUT", 0, time.Hour),
		LogLevel:         strings.ToLower(p.str("LOG_LEVEL")),
		LogFormat:        strings.ToLower(p.str("LOG_FORMAT")),
	}
	if v := getenv("REDIS_URL"); v == "" && getenv("BROKER_URL") != "" {
		c.RedisURL = getenv("BROKER_URL")
	}
	c.APIKeys = list(getenv("API_KEYS"))
	c.CORSOrigins = list(getenv("CORS_ORIGINS"))
	for _, o := range c.CORSOrigins {
		if o != "*" && !strings.HasPrefix(o, "http://") && !strings.HasPrefix(o, "https://") {
			return c, fmt.Errorf("CORS_ORIGINS: %q: want origins such as https://app.example or https://*.example, or *", o)
		}
	}
	if p.err != nil {
		return c, p.err
	}
	scheme, err := checkRedisURL(c.RedisURL)
	if err != nil {
		return c, err
	}
	if pw := getenv("REDIS_PASSWORD"); pw != "" {
		if c.RedisURL, err = withPassword(c.RedisURL, scheme, pw); err != nil {
			return c, err
		}
	}
	if pw := getenv("REDIS_SENTINEL_PASSWORD"); pw != "" {
		if c.RedisURL, err = withSentinelPassword(c.RedisURL, scheme, pw); err != nil {
			return c, err
		}
	}
	if err := checkRedisTLS(c, scheme); err != nil {
		return c, err
	}
	for _, a := range []struct{ name, addr string }{{"API_ADDR", c.APIAddr}, {"WORKER_ADDR", c.WorkerAddr}} {
		if _, port, err := net.SplitHostPort(a.addr); err != nil || port == "" {
			return c, fmt.Errorf("%s=%q: want host:port or :port", a.name, a.addr)
		}
	}
	if c.UploadStore != "dir" && c.UploadStore != "redis" {
		return c, fmt.Errorf("UPLOAD_STORE=%q: want dir or redis", c.UploadStore)
	}
	switch c.UploadFsync {
	case "everysec", "always", "no":
	default:
		return c, fmt.Errorf("UPLOAD_FSYNC=%q: want everysec, always or no", c.UploadFsync)
	}
	if c.ORTProvider != "cpu" && c.ORTProvider != "cuda" {
		return c, fmt.Errorf("ORT_PROVIDER=%q: want cpu or cuda", c.ORTProvider)
	}
	switch c.ORTConvSearch {
	case "heuristic", "exhaustive", "default":
	default:
		return c, fmt.Errorf("ORT_CUDNN_CONV_ALGO_SEARCH=%q: want heuristic, exhaustive or default", c.ORTConvSearch)
	}
	switch c.BatchPadding {
	case "auto":
		c.BatchPadding = ""
	case "none", "pow2", "full":
	default:
		return c, fmt.Errorf("BATCH_PADDING=%q: want auto, none, pow2 or full", c.BatchPadding)
	}
	switch c.HeadDecode {
	case "auto":
		c.HeadDecode = ""
	case "go", "onnx":
	default:
		return c, fmt.Errorf("HEAD_DECODE=%q: want auto, go or onnx", c.HeadDecode)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return c, fmt.Errorf("LOG_LEVEL=%q: want debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return c, fmt.Errorf("LOG_FORMAT=%q: want text or json", c.LogFormat)
	}
	// 0 is left for the API to resolve (apihttp.Config.MaxInflightBytes).
	if c.MaxInflightBytes != 0 && c.MaxInflightBytes < 2*c.MaxUploadBytes {
		return c, fmt.Errorf("MAX_INFLIGHT_BYTES=%d: want at least twice MAX_UPLOAD_BYTES (%d), or 0 for the default", c.MaxInflightBytes, 2*c.MaxUploadBytes)
	}
	if c.UploadDir == "" {
		return c, errors.New("UPLOAD_DIR must not be empty")
	}
	if c.Queue == "" || strings.ContainsAny(c.Queue, " :{}") {
		return c, fmt.Errorf("QUEUE=%q: want a plain name", c.Queue)
	}
	return c, nil
}

// list returns the non-empty, trimmed items of a comma-separated value.
func list(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// checkRedisURL returns u's scheme, or an error naming what is wrong with
// u's form. The error never carries u's password: a URL is echoed
// redacted, and one that does not parse not at all.
func checkRedisURL(u string) (string, error) {
	pu, err := url.Parse(u)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("REDIS_URL is not a URL: %v", err)
	}
	switch pu.Scheme {
	case "redis", "rediss", "unix", "redis-sentinel", "rediss-sentinel", "memory":
	default:
		return "", fmt.Errorf("REDIS_URL=%q: want redis://, rediss://, unix://, redis-sentinel:// or rediss-sentinel://", pu.Redacted())
	}
	return pu.Scheme, nil
}

// withPassword returns the Redis URL u, of scheme, with pw as the
// password of Redis: before the host, with the URL's user name if any,
// or for a sentinel URL in its query, where go-redis reads the primary's
// (the one before the hosts is the sentinels'). It returns an error for
// the in-memory Redis, which has none.
func withPassword(u, scheme, pw string) (string, error) {
	pu, err := url.Parse(u) // checkRedisURL parsed it
	if err != nil {
		return "", err
	}
	switch scheme {
	case "memory":
		return "", errors.New("REDIS_PASSWORD: the in-memory Redis takes no password")
	case "redis-sentinel", "rediss-sentinel":
		q := pu.Query()
		q.Set("password", pw)
		pu.RawQuery = q.Encode()
	default:
		pu.User = url.UserPassword(pu.User.Username(), pw)
	}
	return pu.String(), nil
}

// withSentinelPassword returns the sentinel URL u, of scheme, with pw as
// the sentinels' password: before the hosts, with the URL's user name if
// any, where go-redis reads the sentinels' (the primary's is in the
// query). It returns an error naming REDIS_SENTINEL_PASSWORD for a URL
// of another scheme, which has no sentinels.
func withSentinelPassword(u, scheme, pw string) (string, error) {
	if scheme != "redis-sentinel" && scheme != "rediss-sentinel" {
		return "", fmt.Errorf("REDIS_SENTINEL_PASSWORD applies to a redis-sentinel:// or rediss-sentinel:// REDIS_URL, not %s://", scheme)
	}
	pu, err := url.Parse(u) // checkRedisURL parsed it
	if err != nil {
		return "", err
	}
	pu.User = url.UserPassword(pu.User.Username(), pw)
	return pu.String(), nil
}

// checkRedisTLS returns an error when the REDIS_TLS_ files are given
// with a REDIS_URL of another scheme than rediss:// or
// rediss-sentinel://, which they would not apply to, or a certificate
// without its key or a key without its certificate.
func checkRedisTLS(c Config, scheme string) error {
	if c.RedisTLSCert == "" && c.RedisTLSKey == "" && c.RedisTLSCA == "" {
		return nil
	}
	if scheme != "rediss" && scheme != "rediss-sentinel" {
		return fmt.Errorf("REDIS_TLS_CA, REDIS_TLS_CERT and REDIS_TLS_KEY apply to a rediss:// or rediss-sentinel:// REDIS_URL, not %s://", scheme)
	}
	if (c.RedisTLSCert == "") != (c.RedisTLSKey == "") {
		return fmt.Errorf("REDIS_TLS_CERT and REDIS_TLS_KEY go together: the client certificate and its key")
	}
	return nil
}

// Concurrency returns WORKER_CONCURRENCY; or on CUDA twice BATCH_MAX, at
// least sixteen, so that a batch fills while another runs (with as many
// slots as BATCH_MAX, batches split into two halves that take turns); or
// 0 on CPU: the detector's default for the machine.
func (c Config) Concurrency() int {
	if c.WorkerConcurrency > 0 {
		return c.WorkerConcurrency
	}
	if c.ORTProvider == "cuda" {
		return max(16, 2*c.BatchMax)
	}
	return 0
}

// ResolveModel returns the model to load: MODEL_PATH when set; else the
// default models/yolov8n.onnx; else, in a development checkout, the shared
// test model ../shared/models/yolov8n.onnx when the default is missing.
func (c Config) ResolveModel() string {
	if c.ModelSet {
		return c.ModelPath
	}
	if _, err := os.Stat(c.ModelPath); err == nil {
		return c.ModelPath
	}
	dev := filepath.Join("..", "shared", "models", "yolov8n.onnx")
	if _, err := os.Stat(dev); err == nil {
		return dev
	}
	return c.ModelPath
}

// Logger returns a logger on stderr at LOG_LEVEL, in LOG_FORMAT.
func (c Config) Logger() *slog.Logger {
	return c.loggerTo(os.Stderr)
}

// loggerTo returns the logger Logger returns, writing to w.
func (c Config) loggerTo(w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

type parser struct {
	get func(string) string
	err error
}

func (p *parser) raw(name string) string {
	if v := strings.TrimSpace(p.get(name)); v != "" {
		return v
	}
	for _, v := range Vars {
		if v.Name == name {
			return v.Default
		}
	}
	return ""
}

func (p *parser) str(name string) string { return p.raw(name) }

func (p *parser) fail(name, v, want string) {
	if p.err == nil {
		p.err = fmt.Errorf("%s=%q: want %s", name, v, want)
	}
}

func (p *parser) int(name string, lo, hi int) int {
	v := p.raw(name)
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		p.fail(name, v, fmt.Sprintf("an integer from %d to %d", lo, hi))
	}
	return n
}

func (p *parser) float(name string, lo, hi float64) float64 {
	v := p.raw(name)
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < lo || f > hi {
		p.fail(name, v, fmt.Sprintf("a number from %g to %g", lo, hi))
	}
	return f
}

func (p *parser) bool(name string) bool {
	v := p.raw(name)
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.fail(name, v, "true or false")
	}
	return b
}

func (p *parser) duration(name string, lo, hi time.Duration) time.Duration {
	v := p.raw(name)
	d, err := time.ParseDuration(v)
	if err != nil {
		if n, nerr := strconv.Atoi(v); nerr == nil { // plain seconds
			d, err = time.Duration(n)*time.Second, nil
		}
	}
	if err != nil || d < lo || d > hi {
		p.fail(name, v, fmt.Sprintf("a duration from %v to %v (e.g. 30s, 1h)", lo, hi))
	}
	return d
}

// Redacted returns the Redis URL with any password hidden, for logs: the
// one before the host and a sentinel URL's primary's, in its query.
func (c Config) Redacted() string {
	u, err := url.Parse(c.RedisURL)
	if err != nil {
		return "(unparsable)"
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
