//! Files an operator names on the command line or in the configuration, read with a bound on
//! their size: a wrong path (a device such as `/dev/zero`, a log, a disk image) is refused with one
//! line once the bound is passed, instead of filling memory. Data that is only hashed (what `pki ts
//! stamp` and `pki ts verify --data` are given) is streamed through its digests, whatever its size.

use std::io::Read;
use std::path::Path;

/// The most bytes of a CSR, a timestamp token or reply, or a certificate read from a file: far
/// above any of them (an RSA-16384 CSR is under 5 KiB; a reply with its chain a few KiB).
pub const MAX_DER_FILE: usize = 1 << 20;
/// The most bytes of the configuration file.
pub const MAX_CONFIG_FILE: usize = 1 << 20;
/// The most bytes of a file holding one secret line (a password, a PIN, a passphrase).
pub const MAX_SECRET_FILE: usize = 64 << 10;

/// The whole of `path`, refused once it passes `max` bytes: "`what` PATH is larger than MAX
/// bytes". Reads at most `max + 1` bytes, whatever the file is.
pub fn read_bounded(path: &Path, what: &str, max: usize) -> anyhow::Result<Vec<u8>> {
    let cannot = |e: std::io::Error| anyhow::anyhow!("cannot read {what} {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1).read_to_end(&mut bytes).map_err(cannot)?;
    anyhow::ensure!(bytes.len() <= max, "{what} {} is larger than {max} bytes", path.display());
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_text_bounded(path: &Path, what: &str, max: usize) -> anyhow::Result<String> {
    String::from_utf8(read_bounded(path, what, max)?)
        .map_err(|_| anyhow::anyhow!("{what} {} is not UTF-8 text", path.display()))
}

/// The first line of a file holding one secret (a password, a PIN, a passphrase): refused when
/// the file is empty, too large or not text. The secret never appears in a message.
pub fn read_secret_line(path: &Path, what: &str) -> anyhow::Result<String> {
    let text = read_text_bounded(path, what, MAX_SECRET_FILE)?;
    let line = text.lines().next().unwrap_or("").to_string();
    anyhow::ensure!(!line.is_empty(), "{what} {} is empty", path.display());
    Ok(line)
}

/// Feeds `path`'s bytes to `feed`, a mebibyte at a time. Only a regular file: a device or a pipe
/// (`/dev/zero` given by mistake) may never end.
fn stream(path: &Path, what: &str, mut feed: impl FnMut(&[u8])) -> anyhow::Result<()> {
    let cannot = |e: std::io::Error| anyhow::anyhow!("cannot read {what} {}: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    anyhow::ensure!(
        file.metadata().map_err(cannot)?.is_file(),
        "{what} {} is not a regular file",
        path.display()
    );
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => feed(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(cannot(e)),
        }
    }
}

/// The digests of `path`'s bytes with every imprint algorithm, read a mebibyte at a time.
pub fn digests_of(path: &Path, what: &str) -> anyhow::Result<tsa::DataDigests> {
    let mut digests = tsa::DataDigests::default();
    stream(path, what, |piece| digests.update(piece))?;
    Ok(digests)
}

/// The SHA-256 digest of `path`'s bytes, read a mebibyte at a time.
pub fn sha256_of(path: &Path, what: &str) -> anyhow::Result<[u8; 32]> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    stream(path, what, |piece| ctx.update(piece))?;
    Ok(ctx.finish().as_ref().try_into().expect("invariant: SHA-256 digests are 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_past_the_bound_is_refused_after_reading_one_byte_more() {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("f");
        std::fs::write(&at, [7u8; 10]).unwrap();
        assert_eq!(read_bounded(&at, "CSR file", 10).unwrap(), [7u8; 10]);
        let e = read_bounded(&at, "CSR file", 9).unwrap_err().to_string();
        assert_eq!(e, format!("CSR file {} is larger than 9 bytes", at.display()));
        // An endless device is refused as soon as the bound is passed.
        let e = read_bounded(Path::new("/dev/zero"), "token file", 1 << 20).unwrap_err().to_string();
        assert_eq!(e, "token file /dev/zero is larger than 1048576 bytes");
        let binary = dir.path().join("b");
        std::fs::write(&binary, [0xffu8; 4]).unwrap();
        let e = read_text_bounded(&binary, "password file", 10).unwrap_err().to_string();
        assert_eq!(e, format!("password file {} is not UTF-8 text", binary.display()));
        let empty = dir.path().join("e");
        std::fs::write(&empty, "\n").unwrap();
        let e = read_secret_line(&empty, "the token PIN file").unwrap_err().to_string();
        assert_eq!(e, format!("the token PIN file {} is empty", empty.display()));
        let e = read_bounded(dir.path(), "CSR file", 10).unwrap_err().to_string();
        assert!(e.starts_with("cannot read CSR file") && e.contains("Is a directory"), "{e}");
    }

    #[test]
    fn streamed_digests_are_the_digests_of_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("doc");
        // More than one read buffer, and not a multiple of it.
        let data: Vec<u8> = (0..(3 << 20) + 12_345).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&at, &data).unwrap();
        let sha256 = ring::digest::digest(&ring::digest::SHA256, &data);
        assert_eq!(sha256_of(&at, "file").unwrap().as_slice(), sha256.as_ref());
        let values = digests_of(&at, "data file").unwrap().values();
        let sha512 = ring::digest::digest(&ring::digest::SHA512, &data);
        assert!(values.iter().any(|(oid, d)| oid == "2.16.840.1.101.3.4.2.1" && d == sha256.as_ref()));
        assert!(values.iter().any(|(oid, d)| oid == "2.16.840.1.101.3.4.2.3" && d == sha512.as_ref()));
        // A device that never ends, and a directory, are refused before anything is read.
        let e = sha256_of(Path::new("/dev/zero"), "file").unwrap_err().to_string();
        assert_eq!(e, "file /dev/zero is not a regular file");
        let e = digests_of(dir.path(), "data file").unwrap_err().to_string();
        assert_eq!(e, format!("data file {} is not a regular file", dir.path().display()));
    }
}
