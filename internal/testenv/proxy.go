package testenv

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Proxy forwards TCP connections from a loopback port to a target, and can
// cut them off as a network partition would: while cut, it moves no byte
// either way and takes no new connection's bytes, so that the peers' reads
// wait and their writes fill the sockets' buffers; once healed, what was
// held goes through, as TCP delivers it after a partition ends.
type Proxy struct {
	Addr   string
	target string
	l      net.Listener

	mu   sync.Mutex
	cut  bool
	heal *sync.Cond
}

// StartProxy forwards a free loopback port to target until the test ends,
// when it stops taking connections and heals; the connections it holds
// end as their peers close them.
func StartProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{Addr: l.Addr().String(), target: target, l: l}
	p.heal = sync.NewCond(&p.mu)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	tb.Cleanup(func() {
		l.Close()
		p.Heal()
	})
	return p
}

// Client returns a Redis client through the proxy whose commands give up
// after timeout and are never retried, so that a cut shows at once as the
// errors a process cut off from Redis meets. It is closed when the test
// ends.
func (p *Proxy) Client(tb testing.TB, timeout time.Duration) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: p.Addr, ReadTimeout: timeout, WriteTimeout: timeout, DialTimeout: timeout, MaxRetries: -1})
	tb.Cleanup(func() { c.Close() })
	return c
}

// Cut stops every byte until Heal.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	p.mu.Unlock()
}

// Heal lets the bytes through again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
	p.heal.Broadcast()
}

// pass waits while the proxy is cut.
func (p *Proxy) pass() {
	p.mu.Lock()
	for p.cut {
		p.heal.Wait()
	}
	p.mu.Unlock()
}

// serve forwards one connection both ways until either side closes it.
func (p *Proxy) serve(c net.Conn) {
	defer c.Close()
	p.pass()
	t, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer t.Close()
	done := make(chan struct{}, 2)
	go func() { p.copy(t, c); done <- struct{}{} }()
	go func() { p.copy(c, t); done <- struct{}{} }()
	<-done
}

// copy moves bytes from src to dst, each read's bytes only while the
// proxy is not cut, and closes both when either ends.
func (p *Proxy) copy(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		p.pass()
		n, err := src.Read(buf)
		if n > 0 {
			p.pass()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
