package asynq

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
)

// TestTokenWakesOneWaiter: each announced token wakes one waiting dequeue,
// however many wait; the others go on waiting.
func TestTokenWakesOneWaiter(t *testing.T) {
	rs := testenv.StartRedis(t)
	rdb := rs.Client() // the test's own commands
	ctx := context.Background()
	const waiters = 4
	woken := make(chan int, waiters)
	for i := range waiters {
		w := newWakeup(rs.Client(), "q", 10*time.Second, func() <-chan struct{} { return nil }, nil)
		t.Cleanup(w.stop)
		go func() {
			if w.waitToken(nil) {
				woken <- i
			}
		}()
	}
	// Every waiter's BLPOP is in: Redis counts the clients it blocks.
	testenv.Eventually(t, 5*time.Second, "four clients blocked on the token list", func() bool {
		return blockedClients(t, rdb) == waiters
	})
	if err := announce(ctx, rdb, "q"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-woken:
	case <-time.After(5 * time.Second):
		t.Fatal("no waiter woke within 5s of the token")
	}
	select {
	case i := <-woken:
		t.Errorf("one token woke a second waiter (%d)", i)
	case <-time.After(200 * time.Millisecond):
	}
	if n := blockedClients(t, rdb); n != waiters-1 {
		t.Errorf("%d clients still blocked after one token, want %d", n, waiters-1)
	}
}

// TestTokenOutlivesItsWaiter: a token popped after its waiter gave up goes
// back to the list for the next worker, and a token announced while no
// dequeue waits is there for the first that does.
func TestTokenOutlivesItsWaiter(t *testing.T) {
	rs := testenv.StartRedis(t)
	rdb := rs.Client()
	ctx := context.Background()
	w := newWakeup(rdb, "q", time.Second, func() <-chan struct{} { return nil }, nil)
	t.Cleanup(w.stop)
	// The waiter gives up at once; its BLPOP (1 s) is left waiting.
	if w.waitToken(time.After(time.Millisecond)) {
		t.Fatal("a token came from an empty list")
	}
	if err := announce(ctx, rdb, "q"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "the token back in the list", func() bool {
		n, err := rdb.LLen(ctx, tokensKey("q")).Result()
		return err == nil && n == 1 && blockedClients(t, rdb) == 0
	})
	if !w.waitToken(time.After(5 * time.Second)) {
		t.Error("a dequeue that waits after the token was announced did not get it")
	}
}

// TestTokensBounded: tokens nobody takes stop piling up at maxTokens,
// whether an Enqueue pushed them or announce.
func TestTokensBounded(t *testing.T) {
	rs := testenv.StartRedis(t)
	rdb := rs.Client()
	ctx := context.Background()
	q := NewQueue(rdb, QueueConfig{Queue: "enqueued"})
	t.Cleanup(func() { q.Close() })
	for range maxTokens + 10 {
		if err := announce(ctx, rdb, "q"); err != nil {
			t.Fatal(err)
		}
		if _, err := q.Enqueue(ctx, detect.Job{Upload: "u"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, queue := range []string{"q", "enqueued"} {
		if n, err := rdb.LLen(ctx, tokensKey(queue)).Result(); err != nil || n != maxTokens {
			t.Errorf("%s: token list %d (%v) after %d tasks, want %d", queue, n, err, maxTokens+10, maxTokens)
		}
	}
}

// blockedClients returns how many clients Redis holds in a blocking
// command.
func blockedClients(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	v, _ := testenv.InfoField(t, rdb, "clients", "blocked_clients")
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("INFO clients blocked_clients: %q", v)
	}
	return n
}
