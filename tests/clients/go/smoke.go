// The client-library smoke program for go-redis v5 (Debian's golang-gopkg-redis.v5-dev),
// run by tests/it/clients/:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o smoke smoke.go
//	./smoke HOST:PORT PREFIX
//
// It runs the same checks as the other smoke programs against whatever listens at
// HOST:PORT (Redis itself, or redsplit in front of it) and prints one line per check,
// `name: values`, with every key and channel name relative to PREFIX. A check that fails
// prints `name: error <message>` and the program goes on with the next one. go-redis v5
// speaks RESP2 only.
package main

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"gopkg.in/redis.v5"
)

const (
	deadline    = 30 * time.Second
	bigLen      = 5 * 1024 * 1024
	scanKeys    = 5000
	pipelineLen = 1000
	poolTasks   = 50
)

var addr, prefix string

func name(s string) string { return prefix + ":" + s }

func strip(s string) string { return strings.TrimPrefix(s, prefix+":") }

func client(opt redis.Options) *redis.Client {
	opt.Addr = addr
	opt.ReadTimeout = deadline
	opt.WriteTimeout = deadline
	return redis.NewClient(&opt)
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// show writes a reply value as the transcript does: lists as [a,b], nil as nil.
func show(v interface{}) string {
	switch x := v.(type) {
	case nil:
		return "nil"
	case []interface{}:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = show(e)
		}
		return "[" + strings.Join(parts, ",") + "]"
	case []string:
		return "[" + strings.Join(x, ",") + "]"
	default:
		return fmt.Sprint(x)
	}
}

func ryw(r *redis.Client) (string, error) {
	ok := 0
	for i := 0; i < 100; i++ {
		v := fmt.Sprintf("v%d", i)
		if err := r.Set(name("ryw"), v, 0).Err(); err != nil {
			return "", err
		}
		if got, err := r.Get(name("ryw")).Result(); err == nil && got == v {
			ok++
		}
	}
	return fmt.Sprintf("%d of 100 reads saw the write before them", ok), nil
}

func pipeline(r *redis.Client) (string, error) {
	pipe := r.Pipeline()
	defer pipe.Close()
	incrs := []*redis.IntCmd{}
	gets := []*redis.StringCmd{}
	for i := 0; i < pipelineLen; i++ {
		if i%2 == 0 {
			incrs = append(incrs, pipe.Incr(name("pipe")))
		} else {
			gets = append(gets, pipe.Get(name("pipe")))
		}
	}
	cmds, err := pipe.Exec()
	if err != nil {
		return "", err
	}
	ordered := true
	for j := range incrs {
		if incrs[j].Val() != int64(j+1) || gets[j].Val() != fmt.Sprint(j+1) {
			ordered = false
		}
	}
	last := len(incrs) - 1
	return fmt.Sprintf("replies=%d ordered=%s last=[%d,%s]", len(cmds), yes(ordered), incrs[last].Val(), gets[last].Val()), nil
}

func watch(r *redis.Client) (string, error) {
	k := name("watch")
	other := client(redis.Options{})
	defer other.Close()
	if err := r.Set(k, "start", 0).Err(); err != nil {
		return "", err
	}
	var seen string
	err := r.Watch(func(tx *redis.Tx) error {
		seen = tx.Get(k).Val()
		if err := other.Set(k, "theirs", 0).Err(); err != nil {
			return err
		}
		_, err := tx.Pipelined(func(p *redis.Pipeline) error {
			p.Set(k, "mine", 0)
			return nil
		})
		return err
	}, k)
	execReply := "committed"
	if err == redis.TxFailedErr {
		execReply = "nil"
	} else if err != nil {
		return "", err
	}
	afterAbort := r.Get(k).Val()
	var retry []string
	err = r.Watch(func(tx *redis.Tx) error {
		cmds, err := tx.Pipelined(func(p *redis.Pipeline) error {
			p.Set(k, "mine", 0)
			return nil
		})
		for _, c := range cmds {
			retry = append(retry, c.(*redis.StatusCmd).Val())
		}
		return err
	}, k)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("seen=%s exec=%s value=%s retry=%s value=%s", seen, execReply, afterAbort, show(retry), r.Get(k).Val()), nil
}

func pubsub(r *redis.Client) (string, error) {
	ps, err := r.Subscribe(name("ch"))
	if err != nil {
		return "", err
	}
	defer ps.Close()
	if err := ps.PSubscribe(name("pat:*")); err != nil {
		return "", err
	}
	confirmed := 0
	end := time.Now().Add(deadline)
	for confirmed < 2 && time.Now().Before(end) {
		m, err := ps.ReceiveTimeout(time.Until(end))
		if err != nil {
			return "", err
		}
		if _, ok := m.(*redis.Subscription); ok {
			confirmed++
		}
	}
	published := []interface{}{r.Publish(name("ch"), "m1").Val(), r.Publish(name("pat:x"), "m2").Val()}
	var got []string
	for len(got) < 2 && time.Now().Before(end) {
		m, err := ps.ReceiveTimeout(time.Until(end))
		if err != nil {
			return "", err
		}
		if msg, ok := m.(*redis.Message); ok {
			if msg.Pattern != "" {
				got = append(got, fmt.Sprintf("pmessage %s %s %s", strip(msg.Pattern), strip(msg.Channel), msg.Payload))
			} else {
				got = append(got, fmt.Sprintf("message %s %s", strip(msg.Channel), msg.Payload))
			}
		}
	}
	return fmt.Sprintf("subscribed=%d published=%s got=%s", confirmed, show(published), strings.Join(got, "|")), nil
}

func isBlocked(list, clientName string) bool {
	for _, line := range strings.Split(list, "\n") {
		fields := strings.Fields(line)
		named, flagged := false, false
		for _, f := range fields {
			if f == "name="+clientName {
				named = true
			}
			if strings.HasPrefix(f, "flags=") && strings.Contains(f, "b") {
				flagged = true
			}
		}
		if named && flagged {
			return true
		}
	}
	return false
}

func blpop(r *redis.Client) (string, error) {
	clientName := strings.ReplaceAll(name("blocker"), ":", "-")
	// One connection, so the name set on it is the name of the connection that blocks.
	blocker := client(redis.Options{PoolSize: 1})
	defer blocker.Close()
	if err := blocker.Process(redis.NewStatusCmd("CLIENT", "SETNAME", clientName)); err != nil {
		return "", err
	}
	watcher := client(redis.Options{PoolSize: 1})
	defer watcher.Close()
	popped := make(chan []string, 1)
	go func() {
		v, _ := blocker.BLPop(2*deadline, name("queue")).Result()
		popped <- v
	}()
	end := time.Now().Add(deadline)
	blocked := false
	for !blocked && time.Now().Before(end) {
		blocked = isBlocked(watcher.ClientList().Val(), clientName)
	}
	answered := 0
	for i := 0; i < 20; i++ {
		watcher.Set(name("third"), i, 0)
		if watcher.Get(name("third")).Val() == fmt.Sprint(i) {
			answered++
		}
	}
	pending := len(popped) == 0
	if err := r.RPush(name("queue"), "item").Err(); err != nil {
		return "", err
	}
	var shown string
	select {
	case v := <-popped:
		if len(v) == 2 {
			shown = show([]string{strip(v[0]), v[1]})
		} else {
			shown = "nil"
		}
	case <-time.After(deadline):
		shown = "nothing"
	}
	return fmt.Sprintf("blocked=%s others_answered=%d pending=%s popped=%s", yes(blocked), answered, yes(pending), shown), nil
}

func scripts(r *redis.Client) (string, error) {
	counted := fmt.Sprintf("-- %s\nreturn {ARGV[1], redis.call('INCRBY', KEYS[1], ARGV[2])}", prefix)
	read := fmt.Sprintf("-- %s eval\nreturn redis.call('GET', KEYS[1])", prefix)
	helperBody := fmt.Sprintf("-- %s helper\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])", prefix)
	sum := sha1.Sum([]byte(counted))
	sha := hex.EncodeToString(sum[:])
	k := name("script")
	before := "ran"
	if err := r.EvalSha(sha, []string{k}, "a", 10).Err(); err != nil {
		before = strings.Fields(err.Error())[0]
	}
	loaded, err := r.ScriptLoad(counted).Result()
	if err != nil {
		return "", err
	}
	if loaded == sha {
		loaded = "sha1"
	}
	after, err := r.EvalSha(sha, []string{k}, "a", 10).Result()
	if err != nil {
		return "", err
	}
	plain, err := r.Eval(read, []string{k}).Result()
	if err != nil {
		return "", err
	}
	helper, err := redis.NewScript(helperBody).Run(r, []string{k}, 5).Result()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("evalsha=%s load=%s evalsha=%s eval=%s helper=%s", before, loaded, show(after), show(plain), show(helper)), nil
}

func scan(r *redis.Client) (string, error) {
	pipe := r.Pipeline()
	defer pipe.Close()
	for i := 0; i < scanKeys; i++ {
		pipe.Set(name(fmt.Sprintf("scan:%d", i)), i, 0)
	}
	if _, err := pipe.Exec(); err != nil {
		return "", err
	}
	seen := map[string]bool{}
	it := r.Scan(0, name("scan:*"), 1000).Iterator()
	for it.Next() {
		seen[it.Val()] = true
	}
	if err := it.Err(); err != nil {
		return "", err
	}
	complete := len(seen) == scanKeys
	for i := 0; i < scanKeys; i++ {
		complete = complete && seen[name(fmt.Sprintf("scan:%d", i))]
	}
	return fmt.Sprintf("keys=%d complete=%s", len(seen), yes(complete)), nil
}

func big(r *redis.Client) (string, error) {
	value := make([]byte, bigLen)
	for i := range value {
		value[i] = byte(i % 256)
	}
	if err := r.Set(name("big"), value, 0).Err(); err != nil {
		return "", err
	}
	back, err := r.Get(name("big")).Bytes()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("bytes=%d same=%s", len(back), yes(bytes.Equal(back, value))), nil
}

func selectDb(r *redis.Client) (string, error) {
	one := client(redis.Options{DB: 1})
	defer one.Close()
	if err := one.Set(name("db"), "one", 0).Err(); err != nil {
		return "", err
	}
	db0, err := r.Get(name("db")).Result()
	if err == redis.Nil {
		db0 = "nil"
	} else if err != nil {
		return "", err
	}
	return fmt.Sprintf("db1=%s db0=%s", one.Get(name("db")).Val(), db0), nil
}

func pool(r *redis.Client) (string, error) {
	var wg sync.WaitGroup
	own := make([]bool, poolTasks)
	for i := 0; i < poolTasks; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			k, v := name(fmt.Sprintf("pool:%d", i)), fmt.Sprintf("v%d", i)
			r.Set(k, v, 0)
			own[i] = r.Get(k).Val() == v
			r.Incr(name("pool:count"))
		}(i)
	}
	wg.Wait()
	n := 0
	for _, o := range own {
		if o {
			n++
		}
	}
	return fmt.Sprintf("tasks=%d own_reads=%d count=%s", poolTasks, n, r.Get(name("pool:count")).Val()), nil
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: smoke HOST:PORT PREFIX")
		os.Exit(2)
	}
	addr, prefix = os.Args[1], os.Args[2]
	r := client(redis.Options{PoolSize: poolTasks})
	defer r.Close()
	checks := []struct {
		name string
		run  func(*redis.Client) (string, error)
	}{
		{"ryw", ryw},
		{"pipeline", pipeline},
		{"watch", watch},
		{"pubsub", pubsub},
		{"blpop", blpop},
		{"scripts", scripts},
		{"scan", scan},
		{"big", big},
		{"select", selectDb},
		{"client_cache", func(*redis.Client) (string, error) { return "not supported by the client", nil }},
		{"pool", pool},
	}
	for _, c := range checks {
		line, err := c.run(r)
		if err != nil {
			line = "error " + err.Error()
		}
		fmt.Printf("%s: %s\n", c.name, line)
	}
}
