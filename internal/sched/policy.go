package sched

// BatchOrNormal puts the process's threads under SCHED_BATCH with Batch
// and names the policy they then run under, as the worker logs it and the
// bench reports it: "batch", or "normal" with Batch's error where the
// kernel refused (or the system is not Linux). Threads Batch changed
// before an error keep SCHED_BATCH.
func BatchOrNormal() (string, error) {
	if _, err := Batch(); err != nil {
		return "normal", err
	}
	return "batch", nil
}
