//! Load generator for ferroloop's network benchmarks: one thread, non-blocking sockets, so that
//! on a 2-core machine the client takes as little CPU as possible from the server it measures.
//!
//! Modes (all print one JSON line on stdout):
//! - `echo HOST:PORT CONNS SIZE SECONDS`: each connection sends SIZE bytes, waits until SIZE
//!   bytes came back, and repeats. Every echoed byte is checked against what was sent.
//! - `http HOST:PORT CONNS SECONDS`: keep-alive `GET /` requests, one in flight per
//!   connection; responses are framed by their Content-Length.
//! - `push HOST:PORT BYTES`: one connection writes BYTES, shuts its write side, and waits for
//!   the server's 8-byte big-endian count of what it received.
//!
//! A warm-up second precedes the measured SECONDS in the echo and http modes. Exit status 1 on
//! any protocol error (short echo, wrong bytes, bad response).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

const WARMUP: Duration = Duration::from_secs(1);

struct Conn {
    stream: TcpStream,
    /// Bytes of the current request still to write.
    to_write: usize,
    written: usize,
    /// What has arrived of the current response.
    received: Vec<u8>,
}

trait Workload {
    /// The bytes of one request.
    fn request(&self) -> &[u8];
    /// The length of the complete response in `received`, once it is known and complete.
    fn response_len(&self, received: &[u8]) -> io::Result<Option<usize>>;
}

struct Echo {
    payload: Vec<u8>,
}

impl Workload for Echo {
    fn request(&self) -> &[u8] {
        &self.payload
    }
    fn response_len(&self, received: &[u8]) -> io::Result<Option<usize>> {
        if received.len() < self.payload.len() {
            return Ok(None);
        }
        if received.len() > self.payload.len() || received != self.payload.as_slice() {
            return Err(io::Error::other("echo does not match what was sent"));
        }
        Ok(Some(received.len()))
    }
}

struct Http {
    request: Vec<u8>,
}

impl Workload for Http {
    fn request(&self) -> &[u8] {
        &self.request
    }
    fn response_len(&self, received: &[u8]) -> io::Result<Option<usize>> {
        let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Ok(None);
        };
        let head = std::str::from_utf8(&received[..end])
            .map_err(|_| io::Error::other("response head is not UTF-8"))?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(io::Error::other(format!("unexpected response: {head}")));
        }
        let length = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())
                    .flatten()
            })
            .ok_or_else(|| io::Error::other("response without Content-Length"))?;
        let total = end + 4 + length;
        Ok((received.len() >= total).then_some(total))
    }
}

fn resolve(addr: &str) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("address did not resolve"))
}

/// Runs `conns` connections for warm-up plus `seconds`; returns (requests, elapsed seconds) of
/// the measured part.
fn drive(addr: SocketAddr, conns: usize, seconds: f64, work: &dyn Workload) -> io::Result<(u64, f64)> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut all = Vec::with_capacity(conns);
    for i in 0..conns {
        let std_stream = std::net::TcpStream::connect(addr)?;
        std_stream.set_nodelay(true)?;
        std_stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(std_stream);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        all.push(Conn {
            stream,
            to_write: work.request().len(),
            written: 0,
            received: Vec::new(),
        });
    }
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let end = measure_from + Duration::from_secs_f64(seconds);
    let mut done: u64 = 0;
    let mut buf = vec![0u8; 256 * 1024];
    while Instant::now() < end {
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        for ev in events.iter() {
            let conn = &mut all[ev.token().0];
            // Edge-triggered: make all the progress possible now.
            loop {
                let mut progressed = false;
                while conn.to_write > 0 {
                    let req = work.request();
                    match conn.stream.write(&req[conn.written..]) {
                        Ok(n) => {
                            conn.written += n;
                            conn.to_write -= n;
                            progressed = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                match conn.stream.read(&mut buf) {
                    Ok(0) => return Err(io::Error::other("server closed the connection")),
                    Ok(n) => {
                        conn.received.extend_from_slice(&buf[..n]);
                        progressed = true;
                        if let Some(len) = work.response_len(&conn.received)? {
                            conn.received.drain(..len);
                            if Instant::now() >= measure_from {
                                done += 1;
                            }
                            conn.written = 0;
                            conn.to_write = work.request().len();
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if !progressed {
                    break;
                }
            }
        }
    }
    let elapsed = Instant::now().duration_since(measure_from).as_secs_f64();
    Ok((done, elapsed))
}

fn push(addr: SocketAddr, total: u64) -> io::Result<(u64, f64)> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    let chunk = vec![0x5au8; 256 * 1024];
    let start = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    stream.shutdown(Shutdown::Write)?;
    let mut count = [0u8; 8];
    stream.read_exact(&mut count)?;
    let received = u64::from_be_bytes(count);
    if received != total {
        return Err(io::Error::other(format!("server counted {received} of {total} bytes")));
    }
    Ok((total, start.elapsed().as_secs_f64()))
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> io::Result<T> {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| io::Error::other(format!("argument {i}: expected {what}")))
}

fn run(args: &[String]) -> io::Result<String> {
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    let addr = resolve(&arg::<String>(args, 2, "HOST:PORT")?)?;
    match mode {
        "echo" => {
            let conns: usize = arg(args, 3, "CONNS")?;
            let size: usize = arg(args, 4, "SIZE")?;
            let seconds: f64 = arg(args, 5, "SECONDS")?;
            let payload = (0..size).map(|i| (i % 251) as u8).collect();
            let (n, t) = drive(addr, conns, seconds, &Echo { payload })?;
            Ok(format!(r#"{{"requests": {n}, "seconds": {t:.4}, "rps": {:.1}}}"#, n as f64 / t))
        }
        "http" => {
            let conns: usize = arg(args, 3, "CONNS")?;
            let seconds: f64 = arg(args, 4, "SECONDS")?;
            let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: loadgen\r\n\r\n");
            let (n, t) = drive(addr, conns, seconds, &Http { request: request.into_bytes() })?;
            Ok(format!(r#"{{"requests": {n}, "seconds": {t:.4}, "rps": {:.1}}}"#, n as f64 / t))
        }
        "push" => {
            let total: u64 = arg(args, 3, "BYTES")?;
            let (n, t) = push(addr, total)?;
            Ok(format!(r#"{{"bytes": {n}, "seconds": {t:.4}, "mib_per_s": {:.1}}}"#, n as f64 / t / 1048576.0))
        }
        _ => Err(io::Error::other(
            "usage: loadgen echo HOST:PORT CONNS SIZE SECONDS | http HOST:PORT CONNS SECONDS | push HOST:PORT BYTES",
        )),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match run(&args) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
}
