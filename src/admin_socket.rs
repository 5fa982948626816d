//! The local admin channel: a Unix socket inside the data directory (mode 0600, so only whoever
//! may read the data directory may use it). While `pki serve` holds the database, every other `pki`
//! command on that directory sends its [`Envelope`] here and gets the [`Outcome`] back.
//!
//! Frame: 4-byte big-endian length, then JSON. Requests over 64 MiB are refused, and so is a
//! request not whole within 30 s of its connection (its thread is then free again).
//!
//! The audit actor of a request is the peer's, from the kernel (SO_PEERCRED: its uid and that
//! user's name, [`crate::actor::of_peer`]); the envelope's `actor` field is kept for
//! compatibility but never trusted (a warning is logged when it differs).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use ca_core::Ca;

use crate::commands::{execute, Envelope, Outcome};

const MAX_FRAME: usize = 64 << 20;

/// How long a connection has to send its whole request, and the server to write its answer to a
/// peer that reads it: a local client sends 64 MiB in well under a second, and a connection that
/// sends nothing holds its thread no longer than this.
const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// A reader of `stream` that fails with `TimedOut` once `deadline` has passed, however slowly
/// the peer drips its bytes (a socket's read timeout alone counts from each read).
struct Deadline<'a> {
    stream: &'a UnixStream,
    deadline: std::time::Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no whole request in time"));
        }
        self.stream.set_read_timeout(Some(left))?;
        match (&mut &*self.stream).read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no whole request in time"))
            }
            r => r,
        }
    }
}

fn write_frame(s: &mut UnixStream, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(&(bytes.len() as u32).to_be_bytes())?;
    s.write_all(bytes)?;
    s.flush()
}

fn read_frame(s: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "admin frame too large"));
    }
    // Grown as the bytes arrive, not allocated at the declared length: a peer that declares 64 MiB
    // and sends three bytes costs three bytes.
    let mut buf = Vec::new();
    s.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("admin frame cut short: {} of {len} bytes", buf.len()),
        ));
    }
    Ok(buf)
}

/// The group id of `[server] admin_group`: a group name, or a number.
pub fn admin_gid(group: &str) -> anyhow::Result<nix::unistd::Gid> {
    if let Ok(n) = group.parse::<u32>() {
        return Ok(nix::unistd::Gid::from_raw(n));
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => anyhow::bail!("[server] admin_group {group:?}: no such group"),
        Err(e) => anyhow::bail!("[server] admin_group {group:?}: cannot look it up: {e}"),
    }
}

/// Binds the socket (replacing a stale one) and serves it on a thread. Only the owner may use it
/// (0600), or with `group` also that group's members: the socket 0660 and the data directory
/// `data` 0710, both of that group.
pub fn serve(path: &Path, data: &Path, group: Option<nix::unistd::Gid>, ca: Arc<Ca>) -> anyhow::Result<()> {
    if path.exists() {
        // Only one process can hold the database, and we hold it: the file is stale.
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("cannot bind the admin socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    if let Some(gid) = group {
        let open_to_group = |p: &Path, mode: u32| -> anyhow::Result<()> {
            std::os::unix::fs::chown(p, None, Some(gid.as_raw()))
                .map_err(|e| anyhow::anyhow!("cannot give {} to group {gid}: {e}", p.display()))?;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
            Ok(())
        };
        open_to_group(path, 0o660)?;
        open_to_group(data, 0o710)?;
    }
    std::thread::Builder::new().name("admin-socket".into()).spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let ca = ca.clone();
            let _ = std::thread::Builder::new()
                .name("admin-conn".into())
                .spawn(move || answer(conn, REQUEST_DEADLINE, |env| execute(&ca, env)));
        }
    })?;
    Ok(())
}

/// Reads one request from `conn` within `deadline`, runs it as the peer's, and writes its outcome
/// (within `deadline` again, to a peer that reads).
fn answer(mut conn: UnixStream, deadline: std::time::Duration, run: impl FnOnce(&Envelope) -> Outcome) {
    let read = read_frame(&mut Deadline { stream: &conn, deadline: std::time::Instant::now() + deadline });
    let outcome: Outcome = match read {
        Ok(bytes) => match serde_json::from_slice::<Envelope>(&bytes) {
            Ok(env) => match crate::actor::of_peer(&conn) {
                Ok(actor) => {
                    if env.actor != actor {
                        tracing::warn!(
                            claimed = %env.actor,
                            peer = %actor,
                            "admin request names another actor than its peer's credentials; recorded as the peer"
                        );
                    }
                    tracing::info!(actor = %actor, "admin request");
                    run(&Envelope { actor, request: env.request })
                }
                Err(e) => Err(format!("cannot read the admin request's peer credentials: {e}")),
            },
            Err(e) => Err(format!("malformed admin request: {e}")),
        },
        Err(e) => Err(format!("cannot read admin request: {e}")),
    };
    if let Ok(bytes) = serde_json::to_vec(&outcome) {
        let _ = conn.set_write_timeout(Some(deadline));
        let _ = write_frame(&mut conn, &bytes);
    }
}

/// Sends a request to a running server. `Ok(None)` when no server listens on `path`.
pub fn call(path: &Path, env: &Envelope) -> anyhow::Result<Option<Outcome>> {
    let mut conn = match UnixStream::connect(path) {
        Ok(c) => c,
        Err(e)
            if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
        {
            return Ok(None)
        }
        Err(e) => anyhow::bail!("cannot reach the running server at {}: {e}", path.display()),
    };
    let request = serde_json::to_vec(env)?;
    // The server would refuse it after reading its length and close the socket under the write
    // ("Broken pipe"): said here instead, in the operator's terms.
    anyhow::ensure!(
        request.len() <= MAX_FRAME,
        "the request is {} bytes, more than the {} MiB the running server's admin socket takes",
        request.len(),
        MAX_FRAME >> 20
    );
    write_frame(&mut conn, &request).map_err(|e| {
        anyhow::anyhow!("cannot send the request to the running server at {}: {e}", path.display())
    })?;
    let bytes = read_frame(&mut conn)
        .map_err(|e| anyhow::anyhow!("the running server did not answer on {}: {e}", path.display()))?;
    Ok(Some(serde_json::from_slice(&bytes)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_group_is_a_name_or_a_number_and_an_unknown_one_is_refused() {
        assert_eq!(admin_gid("4242").expect("number").as_raw(), 4242);
        assert_eq!(admin_gid("root").expect("a group every system has").as_raw(), 0);
        let e = admin_gid("no-such-group-for-pki").unwrap_err().to_string();
        assert!(e.contains("admin_group") && e.contains("no such group"), "{e}");
    }

    #[test]
    fn a_frame_cut_short_is_an_error_and_a_whole_one_reads_back() {
        let mut cut = (MAX_FRAME as u32).to_be_bytes().to_vec();
        cut.extend_from_slice(b"abc");
        let e = read_frame(&mut std::io::Cursor::new(cut)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("3 of 67108864 bytes"), "{e}");
        let mut whole = 3u32.to_be_bytes().to_vec();
        whole.extend_from_slice(b"abcdef");
        assert_eq!(read_frame(&mut std::io::Cursor::new(whole)).expect("a frame"), b"abc");
        let too_big = (MAX_FRAME as u32 + 1).to_be_bytes().to_vec();
        let e = read_frame(&mut std::io::Cursor::new(too_big)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_connection_that_drips_or_stalls_is_answered_and_closed_at_the_deadline() {
        let deadline = std::time::Duration::from_millis(300);
        let envelope = Envelope { actor: "root".into(), request: crate::commands::Request::ValidationsList };
        let frame = serde_json::to_vec(&envelope).unwrap();
        let run = |_: &Envelope| -> Outcome { Ok(crate::commands::Reply::default()) };
        // Silent after two bytes of the length; then dripping a byte every 100 ms, each read in
        // time, the whole never.
        for drip in [false, true] {
            let (server, mut client) = UnixStream::pair().unwrap();
            let handler = std::thread::spawn(move || {
                let started = std::time::Instant::now();
                answer(server, deadline, run);
                started.elapsed()
            });
            client.write_all(&(frame.len() as u32).to_be_bytes()[..2]).unwrap();
            if drip {
                client.write_all(&(frame.len() as u32).to_be_bytes()[2..]).unwrap();
                for b in frame.iter().take(8) {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    let _ = client.write_all(&[*b]);
                }
            }
            let took = handler.join().unwrap();
            assert!(took >= deadline && took < deadline * 3, "drip {drip}: the connection was held {took:?}");
            let outcome: Outcome = serde_json::from_slice(&read_frame(&mut client).unwrap()).unwrap();
            let e = outcome.unwrap_err();
            assert!(e.contains("cannot read admin request: no whole request in time"), "drip {drip}: {e}");
        }
        // A whole request in time is run.
        let (server, mut client) = UnixStream::pair().unwrap();
        write_frame(&mut client, &frame).unwrap();
        answer(server, deadline, run);
        let outcome: Outcome = serde_json::from_slice(&read_frame(&mut client).unwrap()).unwrap();
        assert!(outcome.is_ok(), "{outcome:?}");
    }

    #[test]
    fn a_request_over_the_frame_limit_is_refused_by_the_client_before_it_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let listener = UnixListener::bind(&path).unwrap();
        // Each zero byte is "0," in JSON: 34 million of them make more than 64 MiB.
        let query = vec![0u8; 34 << 20];
        let env = Envelope {
            actor: "root".into(),
            request: crate::commands::Request::TsStamp { query, out: "reply.tsr".into() },
        };
        let e = call(&path, &env).unwrap_err().to_string();
        assert!(e.contains("more than the 64 MiB the running server's admin socket takes"), "{e}");
        drop(listener);
    }
}

#[cfg(test)]
mod fuzz;
