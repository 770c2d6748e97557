// Package asynq adapts hibiken/asynq and Redis to the service: enqueueing
// detection jobs, reading task states as the contract names them, waiting
// for a task to end, and the worker's server.
package asynq

import (
	"context"
	"crypto/tls"
	"fmt"
	neturl "net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Redis timeouts: short, so that a Redis outage turns into a quick 503
// instead of a hung request.
const (
	dialTimeout  = time.Second
	readTimeout  = 2 * time.Second
	writeTimeout = 2 * time.Second
)

// ConnOpt parses a Redis URL (redis://, rediss://, redis-socket://,
// unix://, redis-sentinel://host:port,host:port/master/db, or
// rediss-sentinel:// for sentinels, primary and replicas over TLS) into
// asynq's connection options with the service's timeouts. A URL's user
// and password authenticate as that Redis ACL user
// (redis://user:pw@host/0; a password alone, as the default user). A
// sentinel URL's user and password are the sentinels', and its query's
// username and password the primary's, as go-redis reads them. A
// rediss:// or rediss-sentinel:// URL's connections use tf's files (the
// config checks that tf is empty for other URLs). It returns an error
// saying what is wrong with the URL or a file.
func ConnOpt(url string, tf TLSFiles) (asynq.RedisConnOpt, error) {
	url, sentinelTLS := strings.CutPrefix(url, "rediss-sentinel://")
	if sentinelTLS {
		url = "redis-sentinel://" + url
	}
	url = sentinelURL(url)
	opt, err := asynq.ParseRedisURI(url)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	u, err := neturl.Parse(url)
	if err != nil { // asynq parsed it
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	switch o := opt.(type) {
	case asynq.RedisClientOpt:
		// asynq passes the password on and drops the user name.
		o.Username = u.User.Username()
		if o.TLSConfig != nil {
			if o.TLSConfig, err = tf.config(o.TLSConfig); err != nil {
				return nil, err
			}
		}
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout = dialTimeout, readTimeout, writeTimeout
		return o, nil
	case asynq.RedisFailoverClientOpt:
		if o.MasterName == "" {
			return nil, fmt.Errorf("REDIS_URL: a sentinel URL needs the master name: redis-sentinel://host:26379,host2:26379/mymaster/0")
		}
		q := u.Query()
		if q.Get("db") != "" {
			if o.DB, err = strconv.Atoi(q.Get("db")); err != nil {
				return nil, fmt.Errorf("REDIS_URL: the database must be a number")
			}
		}
		o.SentinelUsername = u.User.Username()
		o.Username, o.Password = q.Get("username"), q.Get("password")
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout = dialTimeout, readTimeout, writeTimeout
		if !sentinelTLS {
			return o, nil
		}
		t, err := tf.load(&tls.Config{MinVersion: tls.VersionTLS12})
		if err != nil {
			return nil, err
		}
		return failoverTLS{o, t.dialer(dialTimeout)}, nil
	}
	return opt, nil
}

// NewClient opens a go-redis client for url, with tf's files for a
// rediss:// URL, which asynq's client, inspector and server share. The
// caller closes it. It returns ConnOpt's errors.
func NewClient(url string, tf TLSFiles) (redis.UniversalClient, error) {
	opt, err := ConnOpt(url, tf)
	if err != nil {
		return nil, err
	}
	return opt.MakeRedisClient().(redis.UniversalClient), nil
}

// scriptClient is a Redis client for asynq: rdb, with every script asynq
// runs on it passed to run, which returns the script's result, its own or
// next's (the script as asynq sent it). asynq runs its scripts with
// EvalSha, and with Eval when Redis lacks the script; both come to run.
// The worker's server waits in its empty dequeues (wakeup.go), and the
// API's client folds the enqueue's steps into one script (enqueue.go).
type scriptClient struct {
	redis.UniversalClient
	run func(ctx context.Context, keys []string, args []any, next func() *redis.Cmd) *redis.Cmd
}

func (c scriptClient) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	return c.run(ctx, keys, args, func() *redis.Cmd { return c.UniversalClient.EvalSha(ctx, sha, keys, args...) })
}

func (c scriptClient) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return c.run(ctx, keys, args, func() *redis.Cmd { return c.UniversalClient.Eval(ctx, script, keys, args...) })
}
