package detect

import (
	"encoding/json"
	"time"
)

// Status is the state of a task as clients see it.
type Status string

// The task states of the contract.
const (
	StatusPending Status = "PENDING"
	StatusStarted Status = "STARTED"
	StatusRetry   Status = "RETRY"
	StatusSuccess Status = "SUCCESS"
	StatusFailure Status = "FAILURE"
)

// Done reports whether the status is final.
func (s Status) Done() bool { return s == StatusSuccess || s == StatusFailure }

// TaskInfo is what GET /result answers.
type TaskInfo struct {
	ID     string          `json:"task_id"`
	Status Status          `json:"status"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// Job is the payload of a detection task: where the upload waits and the
// parameters. Filename is the client's name for the file, kept as data
// only. StoredAt is when the API stored the upload (zero from APIs before
// it was added), which tells a worker that cannot find the upload whether
// it may have expired.
type Job struct {
	Upload   string    `json:"upload"`
	Filename string    `json:"filename,omitempty"`
	Params   Params    `json:"params"`
	StoredAt time.Time `json:"stored_at,omitzero"`
}
