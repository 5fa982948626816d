//! Who asks: the audit actor of a command, from the operating system — the uid of the process
//! (commands run on the data directory itself) or of the admin socket's peer (SO_PEERCRED) —
//! never from what a client says about itself.

use std::os::unix::net::UnixStream;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{Uid, User};

/// `uid:1000(alice)`; `uid:1000` when the uid has no user name.
fn describe(uid: Uid) -> String {
    match User::from_uid(uid) {
        Ok(Some(user)) => format!("uid:{uid}({})", user.name),
        _ => format!("uid:{uid}"),
    }
}

/// The actor of this process: its real uid and that user's name.
pub fn local() -> String {
    describe(nix::unistd::getuid())
}

/// The actor of the process at the other end of an admin socket connection, from the kernel.
pub fn of_peer(conn: &UnixStream) -> std::io::Result<String> {
    let cred = getsockopt(conn, PeerCredentials).map_err(std::io::Error::from)?;
    Ok(describe(Uid::from_raw(cred.uid())))
}
