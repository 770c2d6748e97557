package testenv

import (
	"context"
	"testing"
	"time"
)

// TestProxyCuts: through the proxy Redis answers; cut, a command waits
// past its timeout; healed, Redis answers again on the same client.
func TestProxyCuts(t *testing.T) {
	r := StartRedis(t)
	if !r.Restartable() {
		t.Skip("needs a redis-server of its own")
	}
	p := StartProxy(t, r.Addr)
	c := p.Client(t, 300*time.Millisecond)
	ping := func() error { return c.Ping(context.Background()).Err() }
	if err := ping(); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	p.Cut()
	start := time.Now()
	if err := ping(); err == nil {
		t.Fatal("PING answered while cut")
	}
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Errorf("PING failed after %v while cut, want it to wait for its timeout", took)
	}
	p.Heal()
	Eventually(t, 5*time.Second, "no answer after healing", func() bool { return ping() == nil })
}
