//! The redis-rs smoke program, run in this process: the checks of [`EXPECTED`] on one
//! multiplexed tokio connection.

use redis::{AsyncCommands, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{CACHE_RESP3_ONLY, EXPECTED};

/// How long a redis-rs check waits for what another connection causes, and its
/// connections' response timeout (redis-rs's default, 500 ms, is shorter than a BLPOP).
const RS_DEADLINE: Duration = Duration::from_secs(30);

/// A reply as the transcripts write it: lists as `[a,b]`, nil as `nil`.
fn show(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Int(i) => i.to_string(),
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        Value::Array(items) | Value::Set(items) => {
            format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(","))
        }
        other => format!("{other:?}"),
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The redis-rs connections of one run.
struct Rs {
    addr: SocketAddr,
    prefix: String,
    resp3: bool,
}

impl Rs {
    fn name(&self, s: &str) -> String {
        format!("{}:{s}", self.prefix)
    }

    fn strip(&self, s: &str) -> String {
        s.strip_prefix(&format!("{}:", self.prefix))
            .unwrap_or(s)
            .to_owned()
    }

    fn client(&self, db: u32) -> redis::Client {
        let protocol = if self.resp3 { "?protocol=resp3" } else { "" };
        redis::Client::open(format!("redis://{}/{db}{protocol}", self.addr)).expect("client")
    }

    fn config() -> redis::AsyncConnectionConfig {
        redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(RS_DEADLINE))
            .set_connection_timeout(Some(RS_DEADLINE))
    }

    async fn conn(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        self.client(0)
            .get_multiplexed_async_connection_with_config(&Self::config())
            .await
    }
}

/// The smoke program for redis-rs, as the external ones: the transcript lines.
pub(super) async fn redis_rs_smoke(addr: SocketAddr, prefix: &str, resp3: bool) -> Vec<String> {
    let rs = Rs {
        addr,
        prefix: prefix.to_owned(),
        resp3,
    };
    let mut lines = Vec::new();
    let mut c = match rs.conn().await {
        Ok(c) => c,
        Err(e) => return vec![format!("connect: error {e}")],
    };
    for (name, _) in EXPECTED {
        let line = match *name {
            "ryw" => rs_ryw(&rs, &mut c).await,
            "pipeline" => rs_pipeline(&rs, &mut c).await,
            "watch" => rs_watch(&rs, &mut c).await,
            "pubsub" => rs_pubsub(&rs, &mut c).await,
            "blpop" => rs_blpop(&rs, &mut c).await,
            "scripts" => rs_scripts(&rs, &mut c).await,
            "scan" => rs_scan(&rs, &mut c).await,
            "big" => rs_big(&rs, &mut c).await,
            "select" => rs_select(&rs, &mut c).await,
            "client_cache" => rs_client_cache(&rs, &mut c).await,
            "pool" => rs_pool(&rs, &mut c).await,
            other => Ok(format!("no such check {other}")),
        };
        lines.push(format!(
            "{name}: {}",
            line.unwrap_or_else(|e| format!("error {e}"))
        ));
    }
    lines
}

type Conn = redis::aio::MultiplexedConnection;

async fn rs_ryw(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    let mut ok = 0;
    for i in 0..100 {
        let v = format!("v{i}");
        let () = c.set(rs.name("ryw"), &v).await?;
        let got: Option<String> = c.get(rs.name("ryw")).await?;
        ok += usize::from(got.as_deref() == Some(v.as_str()));
    }
    Ok(format!("{ok} of 100 reads saw the write before them"))
}

async fn rs_pipeline(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    let mut p = redis::pipe();
    for i in 0..1000 {
        if i % 2 == 0 {
            p.incr(rs.name("pipe"), 1);
        } else {
            p.get(rs.name("pipe"));
        }
    }
    let replies: Vec<Value> = p.query_async(c).await?;
    let ordered = replies.chunks(2).enumerate().all(|(j, pair)| {
        let n = j as i64 + 1;
        matches!(pair, [Value::Int(a), Value::BulkString(b)] if *a == n && *b == n.to_string().into_bytes())
    });
    let last = replies
        .get(replies.len().saturating_sub(2)..)
        .unwrap_or(&[]);
    Ok(format!(
        "replies={} ordered={} last={}",
        replies.len(),
        yes(ordered),
        show(&Value::Array(last.to_vec()))
    ))
}

async fn rs_watch(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    let k = rs.name("watch");
    // A transaction holds connection state: a connection of its own.
    let mut tx = rs.conn().await?;
    let () = c.set(&k, "start").await?;
    let () = redis::cmd("WATCH").arg(&k).query_async(&mut tx).await?;
    let seen: String = tx.get(&k).await?;
    let () = c.set(&k, "theirs").await?;
    let aborted: Value = redis::pipe()
        .atomic()
        .set(&k, "mine")
        .query_async(&mut tx)
        .await?;
    let exec = if aborted == Value::Nil {
        "nil"
    } else {
        "committed"
    };
    let after_abort: String = c.get(&k).await?;
    let () = redis::cmd("WATCH").arg(&k).query_async(&mut tx).await?;
    let retry: Value = redis::pipe()
        .atomic()
        .set(&k, "mine")
        .query_async(&mut tx)
        .await?;
    let now: String = c.get(&k).await?;
    Ok(format!(
        "seen={seen} exec={exec} value={after_abort} retry={} value={now}",
        show(&retry)
    ))
}

async fn rs_pubsub(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    // redis-rs's async subscriber is a `futures` stream, which this crate does not depend
    // on: the subscriber is redis-rs's blocking one, on a thread of its own.
    let client = rs.client(0);
    let (ch, pat) = (rs.name("ch"), rs.name("pat:*"));
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let subscriber = tokio::task::spawn_blocking(move || -> redis::RedisResult<Vec<redis::Msg>> {
        let mut conn = client.get_connection_with_timeout(RS_DEADLINE)?;
        let mut ps = conn.as_pubsub();
        ps.subscribe(&ch)?;
        ps.psubscribe(&pat)?;
        let _ = subscribed_tx.send(2);
        ps.set_read_timeout(Some(RS_DEADLINE))?;
        let mut got = Vec::new();
        while got.len() < 2 {
            got.push(ps.get_message()?);
        }
        Ok(got)
    });
    let confirmed = subscribed_rx.await.unwrap_or(0);
    let a: i64 = c.publish(rs.name("ch"), "m1").await?;
    let b: i64 = c.publish(rs.name("pat:x"), "m2").await?;
    let msgs = subscriber
        .await
        .map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))??;
    let mut got = Vec::new();
    for msg in msgs {
        let payload: String = msg.get_payload()?;
        let channel = rs.strip(msg.get_channel_name());
        let pattern: Option<String> = msg.get_pattern()?;
        got.push(match pattern {
            Some(pattern) => format!("pmessage {} {channel} {payload}", rs.strip(&pattern)),
            None => format!("message {channel} {payload}"),
        });
    }
    Ok(format!(
        "subscribed={confirmed} published=[{a},{b}] got={}",
        got.join("|")
    ))
}

async fn rs_blpop(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    let name = rs.name("blocker").replace(':', "-");
    let mut blocker = rs.conn().await?;
    let () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(&name)
        .query_async(&mut blocker)
        .await?;
    let mut watcher = rs.conn().await?;
    let queue = rs.name("queue");
    let pop = tokio::spawn({
        let queue = queue.clone();
        async move {
            let v: redis::RedisResult<Option<(String, String)>> =
                blocker.blpop(&queue, RS_DEADLINE.as_secs_f64() / 2.0).await;
            v
        }
    });
    let deadline = Instant::now() + RS_DEADLINE;
    let mut blocked = false;
    while !blocked && Instant::now() < deadline {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut watcher)
            .await?;
        blocked = list.lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.contains(&format!("name={name}").as_str())
                && f.iter().any(|x| x.starts_with("flags=") && x.contains('b'))
        });
    }
    let mut answered = 0;
    for i in 0..20 {
        let () = watcher.set(rs.name("third"), i).await?;
        let got: i64 = watcher.get(rs.name("third")).await?;
        answered += usize::from(got == i);
    }
    let pending = !pop.is_finished();
    let _: i64 = c.rpush(&queue, "item").await?;
    let popped = match pop.await {
        Ok(Ok(Some((k, v)))) => format!("[{},{v}]", rs.strip(&k)),
        Ok(Ok(None)) => "nil".into(),
        Ok(Err(e)) => format!("error {e}"),
        Err(e) => format!("error {e}"),
    };
    Ok(format!(
        "blocked={} others_answered={answered} pending={} popped={popped}",
        yes(blocked),
        yes(pending)
    ))
}

async fn rs_scripts(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    let p = &rs.prefix;
    let counted = format!("-- {p}\nreturn {{ARGV[1], redis.call('INCRBY', KEYS[1], ARGV[2])}}");
    let read = format!("-- {p} eval\nreturn redis.call('GET', KEYS[1])");
    let helper = format!("-- {p} helper\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])");
    let sha = redis::Script::new(&counted).get_hash().to_owned();
    let k = rs.name("script");
    let evalsha = |c: &mut Conn| {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&sha).arg(1).arg(&k).arg("a").arg(10);
        let mut c = c.clone();
        async move { cmd.query_async::<Value>(&mut c).await }
    };
    let before = match evalsha(c).await {
        Ok(_) => "ran".to_owned(),
        Err(e) => e.code().unwrap_or("?").to_owned(),
    };
    let loaded: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(&counted)
        .query_async(c)
        .await?;
    let loaded = if loaded == sha { "sha1".into() } else { loaded };
    let after = evalsha(c).await?;
    let plain: Value = redis::cmd("EVAL")
        .arg(&read)
        .arg(1)
        .arg(&k)
        .query_async(c)
        .await?;
    let helped: Value = redis::Script::new(&helper)
        .key(&k)
        .arg(5)
        .invoke_async(c)
        .await?;
    Ok(format!(
        "evalsha={before} load={loaded} evalsha={} eval={} helper={}",
        show(&after),
        show(&plain),
        show(&helped)
    ))
}

async fn rs_scan(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    let mut p = redis::pipe();
    for i in 0..5000 {
        p.set(rs.name(&format!("scan:{i}")), i).ignore();
    }
    let () = p.query_async(c).await?;
    let mut seen = std::collections::HashSet::new();
    {
        let opts = redis::ScanOptions::default()
            .with_pattern(rs.name("scan:*"))
            .with_count(1000);
        let mut iter = c.scan_options::<String>(opts).await?;
        while let Some(key) = iter.next_item().await {
            seen.insert(key?);
        }
    }
    let complete =
        seen.len() == 5000 && (0..5000).all(|i| seen.contains(&rs.name(&format!("scan:{i}"))));
    Ok(format!("keys={} complete={}", seen.len(), yes(complete)))
}

async fn rs_big(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    let value: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 256) as u8).collect();
    let () = c.set(rs.name("big"), &value).await?;
    let back: Vec<u8> = c.get(rs.name("big")).await?;
    Ok(format!("bytes={} same={}", back.len(), yes(back == value)))
}

async fn rs_select(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    let mut one = rs
        .client(1)
        .get_multiplexed_async_connection_with_config(&Rs::config())
        .await?;
    let () = one.set(rs.name("db"), "one").await?;
    let in1: String = one.get(rs.name("db")).await?;
    let in0: Value = c.get(rs.name("db")).await?;
    Ok(format!("db1={in1} db0={}", show(&in0)))
}

async fn rs_client_cache(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    if !rs.resp3 {
        return Ok(CACHE_RESP3_ONLY.into());
    }
    let k = rs.name("cached");
    let () = c.set(&k, "v1").await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut t = rs
        .client(0)
        .get_multiplexed_async_connection_with_config(&Rs::config().set_push_sender(tx))
        .await?;
    let () = redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .query_async(&mut t)
        .await?;
    let first: String = t.get(&k).await?;
    let () = c.set(&k, "v2").await?;
    let mut invalidated = Vec::new();
    let deadline = tokio::time::Instant::now() + RS_DEADLINE;
    while invalidated.is_empty() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(push)) if push.kind == redis::PushKind::Invalidate => {
                for v in &push.data {
                    if let Value::Array(keys) = v {
                        invalidated.extend(keys.iter().map(|k| rs.strip(&show(k))));
                    }
                }
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let after: String = t.get(&k).await?;
    Ok(format!(
        "first={first} invalidated={} after={after}",
        invalidated.join(",")
    ))
}

async fn rs_pool(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let mut c = c.clone();
            let k = rs.name(&format!("pool:{i}"));
            let count = rs.name("pool:count");
            tokio::spawn(async move {
                let v = format!("v{i}");
                let () = c.set(&k, &v).await?;
                let got: String = c.get(&k).await?;
                let _: i64 = c.incr(&count, 1).await?;
                redis::RedisResult::Ok(got == v)
            })
        })
        .collect();
    let mut own = 0;
    for t in tasks {
        if matches!(t.await, Ok(Ok(true))) {
            own += 1;
        }
    }
    let count: String = c.get(rs.name("pool:count")).await?;
    Ok(format!("tasks=50 own_reads={own} count={count}"))
}
