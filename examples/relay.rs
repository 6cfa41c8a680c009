//! A bare TCP relay: every client connection gets its own upstream connection and the
//! bytes are copied both ways, unparsed. It understands nothing of Redis; the load
//! benchmark (`benches/load.py`) runs it to show what the extra hop alone costs on the
//! machine (a process in between, two more sockets per request and reply), with no
//! protocol work, next to redsplit, which parses, routes and shares upstream connections.
//!
//! ```text
//! cargo run --release --example relay -- LISTEN UPSTREAM [WORKERS]
//! cargo run --release --example relay -- 127.0.0.1:7000 127.0.0.1:6379 2
//! ```

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};

/// Copy buffer per direction: large, so big replies take few system calls.
const BUF: usize = 64 * 1024;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: relay LISTEN UPSTREAM [WORKERS]");
        std::process::exit(2);
    };
    let parse = |s: &str| -> SocketAddr {
        s.parse().unwrap_or_else(|e| {
            eprintln!("relay: bad address {s:?}: {e}");
            std::process::exit(2)
        })
    };
    let (listen, upstream) = (parse(&listen), parse(&upstream));
    let workers = args
        .next()
        .map(|w| w.parse::<usize>().unwrap_or(0))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if workers == 0 {
        eprintln!("relay: WORKERS must be a positive number");
        std::process::exit(2);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(serve(listen, upstream))
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("relay: {listen} -> {upstream}");
    loop {
        let (client, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = relay(client, upstream).await {
                eprintln!("relay: {e}");
            }
        });
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr) -> std::io::Result<()> {
    let mut server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, BUF, BUF).await?;
    Ok(())
}
