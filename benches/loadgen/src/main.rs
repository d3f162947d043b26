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
    response: Response,
}

/// The part of a response received so far, as a workload keeps it.
#[derive(Default)]
struct Response {
    /// Bytes kept for parsing (HTTP).
    buffered: Vec<u8>,
    /// Bytes already checked and dropped (echo).
    checked: usize,
}

trait Workload {
    /// The bytes of one request.
    fn request(&self) -> &[u8];
    /// Takes `chunk`, the next bytes of the response in `response`; true once it is complete
    /// (and `response` is ready for the next one).
    fn receive(&self, response: &mut Response, chunk: &[u8]) -> io::Result<bool>;
}

/// Echoed bytes are compared with the payload where they arrive, without being copied: at
/// 100 KiB per message, copying each response into a buffer first took a fifth of the client's
/// time.
struct Echo {
    payload: Vec<u8>,
}

impl Workload for Echo {
    fn request(&self) -> &[u8] {
        &self.payload
    }
    fn receive(&self, response: &mut Response, chunk: &[u8]) -> io::Result<bool> {
        let start = response.checked;
        if self.payload.get(start..start + chunk.len()) != Some(chunk) {
            return Err(io::Error::other("echo does not match what was sent"));
        }
        response.checked += chunk.len();
        if response.checked < self.payload.len() {
            return Ok(false);
        }
        response.checked = 0;
        Ok(true)
    }
}

struct Http {
    request: Vec<u8>,
}

impl Workload for Http {
    fn request(&self) -> &[u8] {
        &self.request
    }
    fn receive(&self, response: &mut Response, chunk: &[u8]) -> io::Result<bool> {
        response.buffered.extend_from_slice(chunk);
        let Some(len) = Http::response_len(&response.buffered)? else {
            return Ok(false);
        };
        response.buffered.drain(..len);
        Ok(true)
    }
}

impl Http {
    /// The length of the complete response at the start of `received`, once it is complete.
    fn response_len(received: &[u8]) -> io::Result<Option<usize>> {
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

/// A receive buffer that starts at a page boundary.
///
/// Why: the kernel copies received data from pages it filled from their start, and a copy whose
/// destination lies just past the source's offset within a page (1 to 31 bytes) stalls on every
/// load (the CPU takes it for a read of the store just made: 4 KiB aliasing). A `Vec` this large
/// comes from `mmap` with glibc's 16-byte header in front, exactly that distance: measured on a
/// server echoing 100 KiB messages to 32 connections, the client spent half its time in the
/// kernel's copy and became the bottleneck (8.5k requests per second against 21.8k with the
/// buffer on a page boundary).
struct PageAlignedBuffer {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl PageAlignedBuffer {
    const PAGE: usize = 4096;

    fn new(len: usize) -> Self {
        let storage = vec![0u8; len + Self::PAGE];
        let start = storage.as_ptr().align_offset(Self::PAGE);
        PageAlignedBuffer {
            storage,
            start,
            len,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

fn resolve(addr: &str) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("address did not resolve"))
}

/// Runs `conns` connections for warm-up plus `seconds`; returns (requests, elapsed seconds) of
/// the measured part.
fn drive(
    addr: SocketAddr,
    conns: usize,
    seconds: f64,
    work: &dyn Workload,
) -> io::Result<(u64, f64)> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut all = Vec::with_capacity(conns);
    for i in 0..conns {
        let std_stream = std::net::TcpStream::connect(addr)?;
        std_stream.set_nodelay(true)?;
        std_stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(std_stream);
        poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        all.push(Conn {
            stream,
            to_write: work.request().len(),
            written: 0,
            response: Response::default(),
        });
    }
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let end = measure_from + Duration::from_secs_f64(seconds);
    let mut done: u64 = 0;
    let mut storage = PageAlignedBuffer::new(256 * 1024);
    let buf = storage.as_mut_slice();
    while Instant::now() < end {
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        for ev in events.iter() {
            let conn = &mut all[ev.token().0];
            // Edge-triggered: make all the progress possible now, without a read that can only
            // fail. A read that did not fill the buffer emptied the socket (TCP hands over all
            // that is queued, up to the buffer's size), and bytes that arrive later bring a new
            // event. So after a complete response and the next request, the connection waits
            // for its next event: reading on until `WouldBlock`, as before, took two failing
            // reads per request (three `recvfrom` per request in all), and made the client the
            // bottleneck of the echo rows at 32 connections.
            let mut unread = ev.is_readable();
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
                if unread {
                    match conn.stream.read(buf) {
                        Ok(0) => return Err(io::Error::other("server closed the connection")),
                        Ok(n) => {
                            progressed = true;
                            unread = n == buf.len();
                            if work.receive(&mut conn.response, &buf[..n])? {
                                if Instant::now() >= measure_from {
                                    done += 1;
                                }
                                conn.written = 0;
                                conn.to_write = work.request().len();
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => unread = false,
                        Err(e) => return Err(e),
                    }
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
        return Err(io::Error::other(format!(
            "server counted {received} of {total} bytes"
        )));
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
