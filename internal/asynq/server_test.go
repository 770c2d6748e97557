package asynq

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
)

// TestLogFailure: an attempt that asynq cut short because its worker lost
// the lease (the worker was frozen or cut off from Redis) says so, not
// that the task will be retried: another worker may have finished it.
func TestLogFailure(t *testing.T) {
	for _, tc := range []struct {
		err       error
		want, not string
	}{
		{asynq.ErrLeaseExpired, "lost the task's lease", "will be retried"},
		{errors.New("Redis refused the result"), "will be retried", "lease"},
	} {
		var b bytes.Buffer
		logFailure(context.Background(), slog.New(slog.NewTextHandler(&b, nil)), tc.err)
		if got := b.String(); !strings.Contains(got, tc.want) || strings.Contains(got, tc.not) || strings.Count(got, "\n") != 1 {
			t.Errorf("%v: logged %q, want one line with %q", tc.err, got, tc.want)
		}
	}
}
