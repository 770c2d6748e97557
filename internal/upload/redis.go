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
// have been stored all the same, or may still be, should the command be
// held up in the network: Save then returns its name with the error, for
// the caller to Discard it.
//
// The upload is stored only where its name is free (SET NX), so that a
// store that lands after its Discard finds the name taken. A name can
// only be taken already by an earlier attempt of the same store (the
// client sends a command again when its reply is lost), so that is a
// success.
func (s *Redis) Save(ctx context.Context, data []byte) (string, error) {
	ref, err := newRef()
	if err != nil {
		return "", err
	}
	err = s.rdb.SetArgs(ctx, redisPrefix+ref, data, redis.SetArgs{Mode: "NX", TTL: s.maxAge}).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
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
	if errors.Is(err, redis.Nil) || err == nil && len(b) == 0 { // gone, or discarded
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

// Discard removes an upload whose store may not have landed yet: one
// whose Save returned an error with its name, or whose task was not
// enqueued. Where Delete would free the name for a store held up in the
// network (a partition that heals, TCP delivering what it held) to land
// after it, on a connection of its own, Discard puts an empty value in
// the upload's place for as long as an upload is kept, which that store
// cannot overwrite. A missing upload is not an error; the error is
// Redis's.
func (s *Redis) Discard(ctx context.Context, ref string) error {
	if !refPattern.MatchString(ref) {
		return nil
	}
	return s.rdb.Set(ctx, redisPrefix+ref, "", s.maxAge).Err()
}
