// SPDX-License-Identifier: BSD-2-Clause
//! The control socket: `balloon-sim daemon` serves a [`Console`] on a Unix
//! socket; `balloon-sim ctl` sends it one command and prints the reply,
//! exiting with the command's status. Tests (the ATF suite among them)
//! drive the simulated domU this way, one process per command, just as
//! they run `sysctl` or `modload` on NetBSD.
//!
//! Wire format, one command per connection:
//! - request: the arguments, each followed by a NUL byte; the client then
//!   shuts down its writing side;
//! - reply: the exit status in decimal and a newline, the length of the
//!   standard output in decimal and a newline, the standard output, then
//!   the standard error up to the end of the stream.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::control::{Console, Reply};

/// Longest request accepted (arguments are short).
const MAX_REQUEST: u64 = 64 * 1024;

/// Encodes arguments as a request.
pub fn encode_request(args: &[String]) -> Vec<u8> {
    let mut v = Vec::new();
    for a in args {
        v.extend_from_slice(a.as_bytes());
        v.push(0);
    }
    v
}

/// Decodes a request into arguments.
pub fn decode_request(bytes: &[u8]) -> Result<Vec<String>, String> {
    let Some(body) = bytes.strip_suffix(&[0]) else {
        return if bytes.is_empty() {
            Ok(Vec::new())
        } else {
            Err("request not NUL-terminated".into())
        };
    };
    body.split(|&b| b == 0)
        .map(|a| String::from_utf8(a.to_vec()).map_err(|_| "argument is not UTF-8".to_string()))
        .collect()
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

/// Serves `console` on `path` until a client sends `sim shutdown`. A stale
/// socket file (nobody listening) is replaced; a live one is an error.
pub fn serve(console: &mut Console, path: &Path) -> io::Result<()> {
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
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(s) => s,
            Err(_) => continue,
        };
        let mut req = Vec::new();
        if (&mut stream)
            .take(MAX_REQUEST)
            .read_to_end(&mut req)
            .is_err()
        {
            continue;
        }
        let (reply, stop) = match decode_request(&req) {
            Ok(args) if args == ["sim", "shutdown"] => (Reply::default(), true),
            Ok(args) => (console.run(&args), false),
            Err(e) => (
                Reply {
                    status: 2,
                    out: String::new(),
                    err: format!("balloon-sim: {e}\n"),
                },
                false,
            ),
        };
        // A client that went away loses its reply; the daemon goes on.
        let _ = stream.write_all(&encode_reply(&reply));
        if stop {
            break;
        }
    }
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
    stream.write_all(&encode_request(args))?;
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
