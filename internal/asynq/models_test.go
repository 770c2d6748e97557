package asynq

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/redis/go-redis/v9"

	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
)

// TestServedModels: what workers announce is what the API reads: one
// entry per model, with the number of workers that serve it, sorted by
// name; a worker that stops leaves at once, stale entries are left out,
// other queues' models apart, and a reading is kept for the age asked.
// Entries of workers from before announcements carried an id count too.
func TestServedModels(t *testing.T) {
	rdb := testenv.StartRedis(t).Client()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	const queue = "models"
	coco := detect.Model{Name: "yolov8n", Classes: []string{"person", "bicycle"}, Input: detect.Size{Width: 640, Height: 640}}
	ships := detect.Model{Name: "ships", Classes: []string{"ship"}, Input: detect.Size{Width: 1024, Height: 768}}
	served := NewServedModels(rdb, queue)
	read := func(maxAge time.Duration, want ...detect.ServedModel) {
		t.Helper()
		got, err := served.Models(ctx, maxAge)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("models (-want +got):\n%s", diff)
		}
	}
	stale := func(member any) {
		t.Helper()
		if err := rdb.ZAdd(ctx, modelsKey(queue), redis.Z{Score: float64(time.Now().Add(-time.Millisecond).UnixMilli()), Member: member}).Err(); err != nil {
			t.Fatal(err)
		}
	}

	read(0) // no worker yet
	a := startAnnouncer(rdb, queue, coco, time.Hour, log)
	t.Cleanup(a.stop)
	read(time.Hour) // the reading before is kept
	read(0, detect.ServedModel{Model: coco, Workers: 1})
	b := startAnnouncer(rdb, queue, coco, time.Hour, log)
	t.Cleanup(b.stop)
	c := startAnnouncer(rdb, queue, ships, time.Hour, log)
	t.Cleanup(c.stop)
	read(0, detect.ServedModel{Model: ships, Workers: 1}, detect.ServedModel{Model: coco, Workers: 2})
	if got, err := NewServedModels(rdb, "other").Models(ctx, 0); err != nil || len(got) != 0 {
		t.Errorf("another queue's models: %v, %v", got, err)
	}

	// A worker that stops takes its entry away; the others serving the
	// same model stay.
	c.stop()
	c.stop()
	b.stop()
	read(0, detect.ServedModel{Model: coco, Workers: 1})

	// A worker from before announcements had an id wrote the model
	// alone: it counts, and goes stale like any other.
	old, _ := json.Marshal(ships)
	if err := rdb.ZAdd(ctx, modelsKey(queue), redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMilli()), Member: old}).Err(); err != nil {
		t.Fatal(err)
	}
	read(0, detect.ServedModel{Model: ships, Workers: 1}, detect.ServedModel{Model: coco, Workers: 1})
	stale(old)
	read(0, detect.ServedModel{Model: coco, Workers: 1})
	// The next announcement drops the stale entry.
	d := startAnnouncer(rdb, queue, coco, time.Hour, log)
	t.Cleanup(d.stop)
	if n := rdb.ZCard(ctx, modelsKey(queue)).Val(); n != 2 {
		t.Errorf("%d entries after an announcement, want the two live workers'", n)
	}
	// The set itself expires three intervals after the last announcement.
	if ttl := rdb.PTTL(ctx, modelsKey(queue)).Val(); ttl < 2*time.Hour || ttl > 3*time.Hour {
		t.Errorf("the set's time to live is %v, want 3h", ttl)
	}

	// A worker announces again every interval: its entry gone stale comes
	// back.
	e := startAnnouncer(rdb, queue, ships, 20*time.Millisecond, log)
	t.Cleanup(e.stop)
	stale(e.member)
	deadline := time.Now().Add(5 * time.Second)
	for got, _ := served.Models(ctx, 0); len(got) != 2; got, _ = served.Models(ctx, 0) {
		if time.Now().After(deadline) {
			t.Fatalf("ships was not announced again: %v", got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestServedModelsRedisDown: a Redis that refuses connections, or takes
// them and never answers, is an EUNAVAILABLE error (GET /models answers
// 503; POST /predict lets the worker check the classes). Requests that
// ask at once wait for one read, not each for the one before: each holds
// an upload meanwhile.
func TestServedModelsRedisDown(t *testing.T) {
	refused, err := NewClient(fmt.Sprintf("redis://127.0.0.1:%d", testenv.FreePort(t)), TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	defer refused.Close()
	if _, err := NewServedModels(refused, "").Models(context.Background(), 0); detect.ErrorCode(err) != detect.EUNAVAILABLE {
		t.Errorf("connection refused: got %v, want an EUNAVAILABLE error", err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	silent, err := NewClient("redis://"+l.Addr().String(), TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	served := NewServedModels(silent, "")
	start := time.Now()
	if _, err := served.Models(context.Background(), 0); detect.ErrorCode(err) != detect.EUNAVAILABLE {
		t.Errorf("no answer: got %v, want an EUNAVAILABLE error", err)
	}
	one := time.Since(start)
	start = time.Now()
	errs := make(chan error, 20)
	for range cap(errs) {
		go func() {
			_, err := served.Models(context.Background(), 0)
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; detect.ErrorCode(err) != detect.EUNAVAILABLE {
			t.Errorf("no answer, 20 at once: got %v, want an EUNAVAILABLE error", err)
		}
	}
	if all := time.Since(start); all > 3*one {
		t.Errorf("20 requests at once waited %v for a Redis that does not answer, where one waited %v", all, one)
	}
	// A request that gives up does not wait for the read.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := served.Models(ctx, 0); detect.ErrorCode(err) != detect.EUNAVAILABLE || time.Since(start) > one/2 {
		t.Errorf("a request whose context ends: %v after %v, want an EUNAVAILABLE error at once", err, time.Since(start))
	}
}
