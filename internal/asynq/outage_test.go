package asynq

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"yoloserve/internal/testenv"
	"yoloserve/internal/upload"
)

// TestRedisOutageLogsTwoLines: while Redis answers, an error asynq logs
// goes out as it is; once Redis stops, the worker logs one error saying
// so, asynq's own errors (a line a second and more) go to the debug log,
// and a line says when Redis answers again.
func TestRedisOutageLogsTwoLines(t *testing.T) {
	rs := testenv.StartRedis(t)
	if !rs.Restartable() {
		t.Skip("needs a redis-server of its own, not REDIS_URL's")
	}
	var out testenv.SyncBuffer
	log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store, err := upload.NewDir(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(rs.Client(), ServerConfig{Logger: log}, nil, store)
	asynqLogger{l: log, out: srv.outage}.Error("a script failed")
	if got := out.String(); !strings.Contains(got, `level=ERROR msg="a script failed"`) || srv.outage.down() {
		t.Fatalf("an error while Redis answers was logged as %q", got)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	rs.Stop()
	testenv.Eventually(t, 10*time.Second, "no line said Redis stopped answering", func() bool {
		return strings.Contains(out.String(), "Redis fails the worker's PING")
	})
	testenv.Eventually(t, 15*time.Second, "asynq did not keep trying", func() bool {
		return strings.Count(out.String(), "level=DEBUG") >= 5
	})
	if n := strings.Count(out.String(), "level=ERROR"); n != 2 {
		t.Errorf("%d error lines while Redis was down, want the one before and the outage's:\n%s", n, out.String())
	}
	rs.Start()
	testenv.Eventually(t, 10*time.Second, "no line said Redis answers again", func() bool {
		return strings.Contains(out.String(), `level=INFO msg="Redis answers again"`)
	})
}
