package asynq

import (
	"context"
	"net"
	"net/url"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// sentinelURL rewrites the path form redis-sentinel://hosts/master/db,
// which the contract documents, into the query form asynq parses,
// redis-sentinel://hosts?master=master&db=db. Other URLs pass unchanged;
// so does the unix:// scheme, renamed to asynq's redis-socket://.
func sentinelURL(raw string) string {
	if strings.HasPrefix(raw, "unix://") {
		return "redis-socket://" + strings.TrimPrefix(raw, "unix://")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "redis-sentinel" {
		return raw
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	q := u.Query()
	if len(parts) > 0 && parts[0] != "" && q.Get("master") == "" {
		q.Set("master", parts[0])
	}
	if len(parts) > 1 && q.Get("db") == "" {
		q.Set("db", parts[1])
	}
	u.Path, u.RawQuery = "", q.Encode()
	return u.String()
}

// failoverTLS is a sentinel URL's options over TLS (rediss-sentinel://):
// the sentinels, the primary and the replicas are each dialled by dial,
// which checks each one's certificate for its own address. asynq's
// options carry one TLS config, with one server name for them all.
type failoverTLS struct {
	asynq.RedisFailoverClientOpt
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// MakeRedisClient returns a *redis.Client of the primary, as asynq's
// RedisFailoverClientOpt does, with the TLS dialer.
func (o failoverTLS) MakeRedisClient() any {
	return redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:       o.MasterName,
		SentinelAddrs:    o.SentinelAddrs,
		SentinelUsername: o.SentinelUsername,
		SentinelPassword: o.SentinelPassword,
		Username:         o.Username,
		Password:         o.Password,
		DB:               o.DB,
		DialTimeout:      o.DialTimeout,
		ReadTimeout:      o.ReadTimeout,
		WriteTimeout:     o.WriteTimeout,
		PoolSize:         o.PoolSize,
		Dialer:           o.dial,
	})
}
