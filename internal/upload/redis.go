package upload

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis stores uploads in Redis beside the tasks, so that an API and
// workers on different machines share nothing but Redis. Each upload
// expires after its maximum age, as the folder's sweeper would remove it.
type Redis struct {
	rdb    redis.UniversalClient
	maxAge time.Duration
}

// redisPrefix namespaces the upload keys.
const redisPrefix = "yoloserve:upload:"

// NewRedis returns a store on rdb whose uploads expire after maxAge.
func NewRedis(rdb redis.UniversalClient, maxAge time.Duration) *Redis {
	return &Redis{rdb: rdb, maxAge: maxAge}
}

// Save stores data under a new random name and returns the name. It
// returns an EUNAVAILABLE *Error when Redis does not take it. When Redis
// did not answer (its connection broke or timed out), the upload may
// have been stored all the same: Save then returns its name with the
// error, for the caller to delete it.
func (s *Redis) Save(ctx context.Context, data []byte) (string, error) {
	ref, err := newRef()
	if err != nil {
		return "", err
	}
	if err := s.rdb.Set(ctx, redisPrefix+ref, data, s.maxAge).Err(); err != nil {
		var refused redis.Error
		if errors.As(err, &refused) {
			ref = ""
		}
		return ref, fmt.Errorf("%w (%v)", errStore, err)
	}
	return ref, nil
}

// Load returns an upload's bytes, or an ENOTFOUND *Error when it is gone.
// The reply is read into memory of the client's, not into buf.
func (s *Redis) Load(ctx context.Context, ref string, _ []byte) ([]byte, error) {
	if !refPattern.MatchString(ref) {
		return nil, errNoUpload
	}
	b, err := s.rdb.Get(ctx, redisPrefix+ref).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, errNoUpload
	}
	return b, err
}

// Delete removes an upload; a missing one is not an error.
func (s *Redis) Delete(ctx context.Context, ref string) error {
	if !refPattern.MatchString(ref) {
		return nil
	}
	return s.rdb.Del(ctx, redisPrefix+ref).Err()
}
