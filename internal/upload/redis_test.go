package upload

import (
	"bytes"
	"context"
	"testing"
	"time"

	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
)

// TestDiscardFencesHeldSave: an upload's store held up in the network (a
// partition: the command reaches Redis once it heals, its answer never the
// API) is discarded meanwhile on another connection, as the API does in
// the background. Once the held store lands, the upload is not there:
// Load says it is gone, and its key holds only the empty value the
// discard left, which expires as an upload would. A plain delete there
// would have let the held store leave the upload until it expired.
func TestDiscardFencesHeldSave(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartRedis(t)
	rdb := srv.Client()
	proxy := testenv.StartProxy(t, srv.Addr)
	through := proxy.Client(t, 200*time.Millisecond)
	// A connection made before the cut: the store's command is sent on
	// it, not held with a new connection's handshake.
	if err := through.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	held, direct := NewRedis(through, time.Hour), NewRedis(rdb, time.Hour)
	sets := func() int { return testenv.CommandCalls(t, rdb, "set") }

	data := bytes.Repeat([]byte{0xff, 0xd8}, 1000)
	proxy.Cut()
	ref, err := held.Save(ctx, data)
	if err == nil || ref == "" {
		t.Fatalf("Save while cut off: %q, %v; want its name and an error", ref, err)
	}
	if err := direct.Discard(ctx, ref); err != nil {
		t.Fatalf("Discard: %v", err)
	}
	before := sets()
	proxy.Heal()
	testenv.Eventually(t, 10*time.Second, "the held store did not reach Redis", func() bool { return sets() > before })

	if b, err := direct.Load(ctx, ref, nil); detect.ErrorCode(err) != detect.ENOTFOUND {
		t.Errorf("Load of the discarded upload: %d bytes, %v; want ENOTFOUND", len(b), err)
	}
	key := redisPrefix + ref
	if n := rdb.StrLen(ctx, key).Val(); n != 0 {
		t.Errorf("the discarded upload's key holds %d bytes, want none", n)
	}
	if ttl := rdb.TTL(ctx, key).Val(); ttl <= 0 || ttl > time.Hour {
		t.Errorf("the discarded upload's key expires in %v, want within the hour an upload is kept", ttl)
	}
	// A discard before the store landed, or after: either way, nothing.
	if err := direct.Discard(ctx, ref); err != nil {
		t.Errorf("Discard again: %v", err)
	}
	if err := direct.Discard(ctx, "../../etc/passwd"); err != nil {
		t.Errorf("Discard of a name Save could not have made: %v", err)
	}
}

// TestSaveLoadDelete: an upload in Redis reads back as stored and, once
// deleted or discarded, is gone.
func TestSaveLoadDelete(t *testing.T) {
	ctx := context.Background()
	s := NewRedis(testenv.StartRedis(t).Client(), time.Hour)
	data := []byte("\xff\xd8 not much of a JPEG")
	for _, drop := range []struct {
		name string
		f    func(context.Context, string) error
	}{{"Delete", s.Delete}, {"Discard", s.Discard}} {
		ref, err := s.Save(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := s.Load(ctx, ref, nil); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Load: %q, %v; want %q", got, err, data)
		}
		if err := drop.f(ctx, ref); err != nil {
			t.Fatalf("%s: %v", drop.name, err)
		}
		if _, err := s.Load(ctx, ref, nil); detect.ErrorCode(err) != detect.ENOTFOUND {
			t.Errorf("Load after %s: %v, want ENOTFOUND", drop.name, err)
		}
	}
}
