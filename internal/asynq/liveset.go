package asynq

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// A live set is a sorted set whose members keep saying they are there:
// each is scored with the time, in Unix milliseconds, past which it is
// stale, and is added again before then. The memory watches of the API
// replicas that store uploads in Redis (memory.go), the models the
// workers serve (models.go) and the marks of the APIs' upload stores
// (uploadmarks.go) are kept so. Scores are the writers' clocks.

// keepLive queues on p the writes that keep member in the live set key
// until stale from now: its score, the removal of the members gone stale,
// and the set's expiry, which follows its last member's.
func keepLive(ctx context.Context, p redis.Pipeliner, key string, member any, now time.Time, stale time.Duration) {
	ms := now.UnixMilli()
	p.ZAdd(ctx, key, redis.Z{Score: float64(ms + stale.Milliseconds()), Member: member})
	p.ZRemRangeByScore(ctx, key, "-inf", strconv.FormatInt(ms, 10))
	p.PExpire(ctx, key, stale)
}

// liveMembers returns the members of the live set key that are not stale
// at now, and Redis's error.
func liveMembers(ctx context.Context, rdb redis.UniversalClient, key string, now time.Time) ([]string, error) {
	return rdb.ZRangeByScore(ctx, key, &redis.ZRangeBy{Min: "(" + strconv.FormatInt(now.UnixMilli(), 10), Max: "+inf"}).Result()
}

// countLive queues on p the count of the members of the live set key that
// are not stale at now.
func countLive(ctx context.Context, p redis.Pipeliner, key string, now time.Time) *redis.IntCmd {
	return p.ZCount(ctx, key, "("+strconv.FormatInt(now.UnixMilli(), 10), "+inf")
}
