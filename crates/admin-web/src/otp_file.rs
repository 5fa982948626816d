//! The channel of a reset's one-time password: a file the server's operator reads, never a page.
//!
//! An administrator who resets an account in the console must not learn its new password, or
//! they could log in as that account. The console writes the one-time password to
//! `console-resets/<account>.txt` in the data directory (directory 0700, file 0600, owned by the
//! user `pki serve` runs as), which the operator of the server hands to the account holder; a
//! console administrator has no access to the server's files. A new reset replaces the file; the
//! account's first successful login with the password deletes it.
//!
//! The file's first line is the one-time password.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cerdb::console_store::UserName;

use crate::Error;

/// The directory's name in the data directory.
pub const DIR_NAME: &str = "console-resets";

/// Where the one-time password of `name` is kept under `dir`.
pub fn path(dir: &Path, name: &UserName) -> PathBuf {
    // A user name is letters, digits, '.', '_' and '-', starting with a letter or digit: never a
    // path of its own.
    dir.join(format!("{name}.txt"))
}

fn io(what: &str, p: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!("cannot {what} {}: {e}", p.display()))
}

/// Writes the one-time password of `name`, replacing an earlier one; the file's path.
pub fn write(dir: &Path, name: &UserName, otp: &str) -> Result<PathBuf, Error> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io("create the directory", dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io("make owner-only", dir, e))?;
    let target = path(dir, name);
    let tmp = dir.join(format!(".{name}.txt.new"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io("write", &tmp, e))?;
    f.write_all(format!("{otp}\n").as_bytes()).map_err(|e| io("write", &tmp, e))?;
    f.sync_all().map_err(|e| io("write", &tmp, e))?;
    std::fs::rename(&tmp, &target).map_err(|e| io("write", &target, e))?;
    Ok(target)
}

/// Deletes the one-time password of `name`, if there is one.
pub fn remove(dir: &Path, name: &UserName) -> Result<(), Error> {
    let p = path(dir, name);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("delete", &p, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_owner_only_replaced_by_a_new_reset_and_removed_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join(DIR_NAME);
        let carol: UserName = "carol".parse().expect("name");
        let p = write(&dir, &carol, "first-otp").expect("write");
        assert_eq!(p, dir.join("carol.txt"));
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!((mode(&dir), mode(&p)), (0o700, 0o600));
        write(&dir, &carol, "second-otp").expect("replace");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "second-otp\n");
        assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 1, "no temporary file left");
        remove(&dir, &carol).expect("remove");
        assert!(!p.exists());
        remove(&dir, &carol).expect("removing nothing is fine");
    }
}
