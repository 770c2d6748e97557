package asynq

import (
	"net/url"
	"strings"
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
