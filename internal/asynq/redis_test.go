package asynq

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"yoloserve/internal/testenv"
)

// TestURLLogsInAsACLUser: a REDIS_URL's user name and password log in as
// that Redis ACL user, over TCP and over a Unix socket, on the URL's
// database; a wrong password is refused with Redis's own word for it.
// asynq's parser passes the password alone, which logs in as the
// default user, and a Redis that allows only named users refuses it.
func TestURLLogsInAsACLUser(t *testing.T) {
	rs := testenv.StartRedis(t)
	if !rs.Restartable() {
		t.Skip("needs a redis-server of its own, not REDIS_URL's")
	}
	sock := filepath.Join(rs.Dir(), "redis.sock")
	rs.Stop()
	rs.Start("--unixsocket", sock)
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer admin.Close()
	for _, cmd := range [][]any{
		{"ACL", "SETUSER", "yolo", "on", ">s3cret", "~*", "&*", "+@all"},
		{"ACL", "SETUSER", "default", "off"}, // new connections must log in by name
	} {
		if err := admin.Do(ctx, cmd...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, url := range []string{
		"redis://yolo:s3cret@" + rs.Addr + "/3",
		"unix://yolo:s3cret@" + sock + "?db=3",
	} {
		rdb, err := NewClient(url, TLSFiles{})
		if err != nil {
			t.Fatal(err)
		}
		who, err := rdb.Do(ctx, "ACL", "WHOAMI").Text()
		if err != nil || who != "yolo" {
			t.Errorf("%s: logged in as %q (%v), want yolo", url, who, err)
		}
		if info, err := rdb.Do(ctx, "CLIENT", "INFO").Text(); err != nil || !strings.Contains(info, " db=3 ") {
			t.Errorf("%s: CLIENT INFO %q (%v), want db=3", url, info, err)
		}
		rdb.Close()
	}
	rdb, err := NewClient("redis://yolo:wrong@"+rs.Addr+"/0", TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Errorf("a wrong password: %v, want WRONGPASS", err)
	}
}

func TestSentinelURL(t *testing.T) {
	for in, want := range map[string]string{
		"redis-sentinel://h1:26379,h2:26379/mymaster/2": "redis-sentinel://h1:26379,h2:26379?db=2&master=mymaster",
		"redis-sentinel://h1:26379?master=m":            "redis-sentinel://h1:26379?master=m",
		"redis://localhost:6379/0":                      "redis://localhost:6379/0",
		"unix:///run/redis.sock":                        "redis-socket:///run/redis.sock",
	} {
		if got := sentinelURL(in); got != want {
			t.Errorf("sentinelURL(%q) = %q, want %q", in, got, want)
		}
	}
	opt, err := ConnOpt("redis-sentinel://h1:26379,h2:26379/mymaster/2", TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	f := opt.(asynq.RedisFailoverClientOpt)
	if f.MasterName != "mymaster" || f.DB != 2 || len(f.SentinelAddrs) != 2 {
		t.Errorf("%+v", f)
	}
	opt, err = ConnOpt("redis-sentinel://sen:pw1@h1:26379/mymaster/0?username=app&password=pw2", TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	f = opt.(asynq.RedisFailoverClientOpt)
	got := [4]string{f.SentinelUsername, f.SentinelPassword, f.Username, f.Password}
	if want := [4]string{"sen", "pw1", "app", "pw2"}; got != want {
		t.Errorf("sentinel URL's credentials: sentinels' user and password, primary's = %q, want %q", got, want)
	}
	if _, err := ConnOpt("redis-sentinel://h1:26379", TLSFiles{}); err == nil {
		t.Error("a sentinel URL without a master must be refused")
	}

	// rediss-sentinel:// is the same over TLS, with the files read at start.
	opt, err = ConnOpt("rediss-sentinel://sen:pw1@h1:26379,h2:26379/mymaster/3?password=pw2", TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	ft := opt.(failoverTLS)
	if ft.MasterName != "mymaster" || ft.DB != 3 || len(ft.SentinelAddrs) != 2 || ft.SentinelPassword != "pw1" || ft.Password != "pw2" || ft.dial == nil {
		t.Errorf("rediss-sentinel://: %+v, want the sentinel URL's options and a TLS dialer", ft)
	}
	if _, err := ConnOpt("rediss-sentinel://h1:26379/mymaster/0", TLSFiles{CA: filepath.Join(t.TempDir(), "none.pem")}); err == nil || !strings.HasPrefix(err.Error(), "REDIS_TLS_CA: ") {
		t.Errorf("rediss-sentinel:// with a CA file that is not there: %v, want an error naming REDIS_TLS_CA", err)
	}
}
