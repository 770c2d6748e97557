// Command devredis is an in-memory Redis-compatible server (miniredis) for
// `make run` on a machine without redis-server. Nothing persists.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/alicebob/miniredis/v2"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6390", "listen address")
	flag.Parse()
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr(*addr); err != nil {
		fmt.Fprintln(os.Stderr, "devredis:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "devredis: in-memory Redis on %s; nothing persists\n", m.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	m.Close()
}
