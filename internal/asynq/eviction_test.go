package asynq

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"yoloserve/internal/testenv"
)

// TestEvictionRisk: a Redis with a memory limit and an evicting policy is
// named, with the setting to change; one that refuses writes when full,
// or has no limit, is not.
func TestEvictionRisk(t *testing.T) {
	rs := testenv.StartRedis(t)
	rdb := rs.Client()
	ctx := context.Background()
	old, err := rdb.ConfigGet(ctx, "maxmemory*").Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rdb.ConfigSet(ctx, "maxmemory", old["maxmemory"])
		rdb.ConfigSet(ctx, "maxmemory-policy", old["maxmemory-policy"])
	})
	for _, tc := range []struct {
		limit, policy string
		risky         bool
	}{
		{"0", "noeviction", false},
		{"0", "allkeys-lru", false}, // no limit: nothing is evicted
		{"1gb", "noeviction", false},
		{"1gb", "allkeys-lru", true},
		{"1gb", "volatile-lru", true}, // uploads and results carry a TTL
		{"1gb", "allkeys-random", true},
	} {
		if err := rdb.ConfigSet(ctx, "maxmemory", tc.limit).Err(); err != nil {
			t.Fatal(err)
		}
		if err := rdb.ConfigSet(ctx, "maxmemory-policy", tc.policy).Err(); err != nil {
			t.Fatal(err)
		}
		risk, err := EvictionRisk(ctx, rdb)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.limit, tc.policy, err)
		}
		if (risk != "") != tc.risky {
			t.Errorf("maxmemory %s, policy %s: %q, want a warning: %v", tc.limit, tc.policy, risk, tc.risky)
		}
		if tc.risky && !(strings.Contains(risk, tc.policy) && strings.Contains(risk, "maxmemory-policy noeviction")) {
			t.Errorf("the warning names neither the policy nor the fix: %q", risk)
		}
	}
}

// TestPersistenceRisk: a Redis without an append-only file is named, with
// the setting to change; one with it is not.
func TestPersistenceRisk(t *testing.T) {
	rs := testenv.StartRedis(t) // appendonly no
	rdb := rs.Client()
	ctx := context.Background()
	risk, err := PersistenceRisk(ctx, rdb)
	if err != nil || !strings.Contains(risk, "appendonly no") || !strings.Contains(risk, "set appendonly yes") {
		t.Errorf("without an append-only file: %q, %v; want the setting named", risk, err)
	}
	if err := rdb.ConfigSet(ctx, "appendonly", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	if risk, err := PersistenceRisk(ctx, rdb); err != nil || risk != "" {
		t.Errorf("with an append-only file: %q, %v; want no warning", risk, err)
	}
}

// TestWarnOfDataLossWaitsForRedis: a process that starts before Redis
// warns once Redis answers, of its eviction policy and of its missing
// append-only file. A Redis that refuses CONFIG, as some managed services
// do, is still read; one that refuses INFO draws no warning, and the
// check ends.
func TestWarnOfDataLossWaitsForRedis(t *testing.T) {
	rs := testenv.StartRedis(t)
	rs.Stop()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	done := make(chan struct{})
	go func() {
		WarnOfDataLoss(context.Background(), rs.Client(), 20*time.Millisecond, log)
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("the check gave up while Redis was down")
	case <-time.After(100 * time.Millisecond): // a few tries against no Redis
	}
	rs.Start("--maxmemory", "1gb", "--maxmemory-policy", "allkeys-lru")
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("no answer 10s after Redis came up")
	}
	if out := buf.String(); strings.Count(out, "level=WARN") != 2 || !strings.Contains(out, "maxmemory-policy allkeys-lru") || !strings.Contains(out, "appendonly no") {
		t.Errorf("want two warnings, naming the policy and the missing append-only file, got:\n%s", out)
	}

	for _, tc := range []struct {
		refused string
		warns   bool
	}{
		{"CONFIG", true},
		{"INFO", false},
	} {
		rs.Stop()
		rs.Start("--maxmemory", "1gb", "--maxmemory-policy", "allkeys-lru", "--rename-command", tc.refused, "")
		buf.Reset()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		WarnOfDataLoss(ctx, rs.Client(), 20*time.Millisecond, log)
		timedOut := ctx.Err() != nil
		cancel()
		if timedOut {
			t.Fatalf("the check went on against a Redis that refuses %s", tc.refused)
		}
		out := buf.String()
		if tc.warns && (strings.Count(out, "level=WARN") != 2 || !strings.Contains(out, "maxmemory 1073741824 bytes, maxmemory-policy allkeys-lru")) {
			t.Errorf("Redis refusing %s: want two warnings, one naming the limit and policy, got:\n%s", tc.refused, out)
		}
		if !tc.warns && (strings.Contains(out, "level=WARN") || !strings.Contains(out, "cannot read Redis' eviction policy")) {
			t.Errorf("Redis refusing %s: want a debug line only, got:\n%s", tc.refused, out)
		}
	}
}
