// SPDX-License-Identifier: BSD-2-Clause
//! The control socket: `balloon-sim daemon` serves a [`Console`] on a Unix
//! socket; `balloon-sim ctl` sends it one command and prints the reply,
//! exiting with the command's status. Tests (the ATF suite among them)
//! drive the simulated domU this way, one process per command, just as
//! they run `sysctl` or `modload` on NetBSD.
//!
//! Wire format, one command per connection:
//! - request, either form; the client then shuts down its writing side:
//!   - the arguments, each followed by a NUL byte (what `ctl` sends: an
//!     argument from a command line cannot hold a NUL);
//!   - `BSIM/2` and a newline, then each argument as its length in
//!     decimal, a newline and its bytes: any bytes, NUL included;
//! - reply: the exit status in decimal and a newline, the length of the
//!   standard output in decimal and a newline, the standard output, then
//!   the standard error up to the end of the stream.
//!
//! A request is at most 64 KiB (arguments are short; xenstore itself
//! takes at most 4 KiB). A longer one, or one that does not decode, is
//! read to its end (up to a bound) and answered with one line on standard
//! error and status 2; nothing runs.
//!
//! Each connection is served on its own thread, so a command that waits
//! (a sysctl behind a stalled worker, a modunload) does not hold up the
//! others; `sim shutdown` stops taking new ones, waits for those under
//! way, and ends the daemon.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::control::{Console, Reply};

/// Longest request accepted.
pub const MAX_REQUEST: usize = 64 * 1024;
/// How much of an over-long request is read (and dropped) before the
/// refusal is sent, so that the client can finish writing and read it.
const DRAIN_LIMIT: u64 = 64 << 20;
/// The first line of a length-prefixed request.
const V2_MAGIC: &[u8] = b"BSIM/2\n";

/// Encodes arguments as a request: NUL-terminated unless one of them
/// holds a NUL, then length-prefixed.
pub fn encode_request(args: &[String]) -> Vec<u8> {
    let mut v = Vec::new();
    if args.iter().any(|a| a.contains('\0')) {
        v.extend_from_slice(V2_MAGIC);
        for a in args {
            v.extend_from_slice(format!("{}\n", a.len()).as_bytes());
            v.extend_from_slice(a.as_bytes());
        }
        return v;
    }
    for a in args {
        v.extend_from_slice(a.as_bytes());
        v.push(0);
    }
    v
}

fn utf8(a: &[u8]) -> Result<String, String> {
    String::from_utf8(a.to_vec()).map_err(|_| "an argument is not UTF-8".to_string())
}

/// Decodes a request into arguments.
pub fn decode_request(bytes: &[u8]) -> Result<Vec<String>, String> {
    if bytes.len() > MAX_REQUEST {
        return Err(format!(
            "request of {} bytes refused: the limit is {MAX_REQUEST}",
            bytes.len()
        ));
    }
    if let Some(mut rest) = bytes.strip_prefix(V2_MAGIC) {
        let mut args = Vec::new();
        while !rest.is_empty() {
            let nl = rest
                .iter()
                .position(|&b| b == b'\n')
                .ok_or("request: an argument length without a newline")?;
            let len: usize = std::str::from_utf8(&rest[..nl])
                .ok()
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|t| t.parse().ok())
                .ok_or("request: a bad argument length")?;
            let body = rest
                .get(nl + 1..nl + 1 + len)
                .ok_or("request: an argument cut short")?;
            args.push(utf8(body)?);
            rest = &rest[nl + 1 + len..];
        }
        return Ok(args);
    }
    let Some(body) = bytes.strip_suffix(&[0]) else {
        return if bytes.is_empty() {
            Ok(Vec::new())
        } else {
            Err("request not NUL-terminated".into())
        };
    };
    body.split(|&b| b == 0).map(utf8).collect()
}

/// Encodes a reply.
pub fn encode_reply(r: &Reply) -> Vec<u8> {
    let mut v = format!("{}\n{}\n", r.status, r.out.len()).into_bytes();
    v.extend_from_slice(r.out.as_bytes());
    v.extend_from_slice(r.err.as_bytes());
    v
}

/// Decodes a reply.
pub fn decode_reply(bytes: &[u8]) -> Result<Reply, String> {
    let mut r = BufReader::new(bytes);
    let mut line = String::new();
    let mut number = |r: &mut BufReader<&[u8]>| -> Result<i64, String> {
        line.clear();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        line.trim_end()
            .parse()
            .map_err(|_| format!("bad reply header {line:?}"))
    };
    let status = number(&mut r)?;
    let out_len = usize::try_from(number(&mut r)?).map_err(|_| "bad length")?;
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).map_err(|e| e.to_string())?;
    if rest.len() < out_len {
        return Err("reply cut short".into());
    }
    let (out, err) = rest.split_at(out_len);
    Ok(Reply {
        status: i32::try_from(status).map_err(|_| "bad status")?,
        out: String::from_utf8_lossy(out).into_owned(),
        err: String::from_utf8_lossy(err).into_owned(),
    })
}

/// Reads one request: up to MAX_REQUEST + 1 bytes, and when there is more,
/// the rest up to DRAIN_LIMIT, counted but dropped.
fn read_request(stream: &mut UnixStream) -> io::Result<(Vec<u8>, u64)> {
    let mut req = Vec::new();
    (&mut *stream)
        .take(MAX_REQUEST as u64 + 1)
        .read_to_end(&mut req)?;
    let mut more = 0;
    if req.len() > MAX_REQUEST {
        more = io::copy(&mut (&mut *stream).take(DRAIN_LIMIT), &mut io::sink())?;
    }
    Ok((req, more))
}

fn serve_one(console: &Console, mut stream: UnixStream, stop: &AtomicBool, path: &Path) {
    let Ok((req, more)) = read_request(&mut stream) else {
        return;
    };
    let decoded = if more > 0 {
        Err(format!(
            "request of more than {} bytes refused: the limit is {MAX_REQUEST}",
            req.len() as u64 + more - 1
        ))
    } else {
        decode_request(&req)
    };
    let reply = match decoded {
        Ok(args) if args == ["sim", "shutdown"] => {
            stop.store(true, Ordering::SeqCst);
            // Nothing may stay held at a stall point: the daemon waits
            // for every client before it ends.
            crate::stall::release();
            // Wake the accept loop.
            let _ = UnixStream::connect(path);
            Reply::default()
        }
        Ok(args) => console.run(&args),
        Err(e) => Reply {
            status: 2,
            out: String::new(),
            err: format!("balloon-sim: {e}\n"),
        },
    };
    // A client that went away loses its reply; the daemon goes on.
    let _ = stream.write_all(&encode_reply(&reply));
}

/// Serves `console` on `path` until a client sends `sim shutdown`. A stale
/// socket file (nobody listening) is replaced; a live one is an error.
pub fn serve(console: &Console, path: &Path) -> io::Result<()> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by another balloon-sim", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for stream in listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(stream) = stream else { continue };
            let stop = &stop;
            let spawned = std::thread::Builder::new()
                .name("balloon-sim client".into())
                .spawn_scoped(scope, move || serve_one(console, stream, stop, path));
            if spawned.is_err() {
                // No thread to be had: the client sees its connection close.
                continue;
            }
        }
        // The scope waits for the clients under way.
    });
    std::fs::remove_file(path)
}

/// Sends one command to the daemon at `path`, connecting for at most
/// `wait` (the daemon may still be starting).
pub fn request(path: &Path, args: &[String], wait: Duration) -> io::Result<Reply> {
    let deadline = Instant::now() + wait;
    let mut stream = loop {
        match UnixStream::connect(path) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let req = encode_request(args);
    if req.len() > MAX_REQUEST {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "request of {} bytes refused: the limit is {MAX_REQUEST}",
                req.len()
            ),
        ));
    }
    stream.write_all(&req)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes)?;
    decode_reply(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip() {
        let args: Vec<String> = ["xenstore-write", "memory/target", "", "a b\nc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(decode_request(&encode_request(&args)).unwrap(), args);
        assert_eq!(decode_request(b"").unwrap(), Vec::<String>::new());
        assert!(decode_request(b"abc").is_err());
        // Arguments holding NUL bytes go length-prefixed.
        let nul: Vec<String> = ["xenstore-write", "memory/target", "300000\0junk", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let enc = encode_request(&nul);
        assert!(enc.starts_with(V2_MAGIC));
        assert_eq!(decode_request(&enc).unwrap(), nul);
        for bad in [
            &b"BSIM/2\n5\nabc"[..],
            b"BSIM/2\nx\nabc",
            b"BSIM/2\n3abc",
            b"\xff\0",
        ] {
            assert!(decode_request(bad).is_err(), "{bad:?}");
        }
        assert!(decode_request(&vec![b'a'; MAX_REQUEST + 1]).is_err());
        let r = Reply {
            status: 1,
            out: "a\n12\n".into(),
            err: "sysctl: x: Invalid argument\n".into(),
        };
        assert_eq!(decode_reply(&encode_reply(&r)).unwrap(), r);
        assert!(decode_reply(b"0\n10\nabc").is_err());
        assert!(decode_reply(b"zero\n").is_err());
    }
}
