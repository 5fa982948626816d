//! TLS to PostgreSQL, chosen in the database URL as libpq chooses it: `sslmode=verify-full`
//! with `sslrootcert=FILE` (the CA certificates that issued the server's certificate, PEM).
//!
//! The PostgreSQL client parses `sslmode` only as far as `disable`, `prefer` and `require`, and
//! knows no `sslrootcert`; this module takes both out of the URL before it is parsed and makes
//! the rustls connector (`tokio-postgres-rustls`) they ask for. What is accepted:
//!
//! | `sslmode` | connection |
//! |---|---|
//! | absent, `disable`, `prefer` | without TLS (as before; `prefer` never finds TLS offered by this client) |
//! | `verify-full` with `sslrootcert` | TLS required; the server's certificate must chain to `sslrootcert` and name the host of the URL |
//! | `require`, `verify-ca` | refused: TLS without checking who answers (or not checking its name) does not protect a CA's database; use `verify-full` |

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::Error;

/// What the URL asked for, with the two parameters taken out.
pub(super) struct Split {
    /// The URL for the PostgreSQL client.
    pub url: String,
    /// The connector when TLS is required.
    pub tls: Option<MakeRustlsConnect>,
}

/// Takes `sslmode` and `sslrootcert` out of `url` (URL or `key=value` form) and makes the
/// connector they ask for.
pub(super) fn split(url: &str) -> Result<Split, Error> {
    let (rest, mode, root) = take_params(url);
    match mode.as_deref() {
        None | Some("disable") | Some("prefer") => {
            let rest = match mode.as_deref() {
                Some(m) => add_param(&rest, "sslmode", m),
                None => rest,
            };
            Ok(Split { url: rest, tls: None })
        }
        Some("verify-full") => {
            let Some(root) = root else {
                return Err(Error::Db(
                    "sslmode=verify-full needs sslrootcert=FILE in the database URL: the CA certificates \
                     (PEM) that issued the database server's certificate"
                        .into(),
                ));
            };
            Ok(Split { url: add_param(&rest, "sslmode", "require"), tls: Some(connector(&root)?) })
        }
        Some(m @ ("require" | "verify-ca")) => Err(Error::Db(format!(
            "sslmode={m} in the database URL does not check the server's name{}: use \
             sslmode=verify-full with sslrootcert=FILE",
            if m == "require" { " or certificate" } else { "" }
        ))),
        Some(other) => Err(Error::Db(format!(
            "sslmode={other:?} in the database URL: expected disable, prefer or verify-full"
        ))),
    }
}

/// The rustls connector trusting the certificates of the PEM file `path`.
fn connector(path: &str) -> Result<MakeRustlsConnect, Error> {
    let bad = |why: String| Error::Db(format!("sslrootcert {path}: {why}"));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Db(format!("TLS to the database: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// `url` without `sslmode` and `sslrootcert`, and their values.
fn take_params(url: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root) = (None, None);
    let mut take = |key: &str, value: &str| -> bool {
        match key {
            "sslmode" => mode = Some(value.to_string()),
            "sslrootcert" => root = Some(value.to_string()),
            _ => return false,
        }
        true
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else { return (url.to_string(), None, None) };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                !take(k, &percent_decoded(v))
            })
            .collect();
        let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        return (rest, mode, root);
    }
    // key=value pairs separated by spaces (values with spaces are quoted; ours need none).
    let kept: Vec<&str> = url
        .split_whitespace()
        .filter(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            !take(k.trim(), v.trim().trim_matches('\''))
        })
        .collect();
    (kept.join(" "), mode, root)
}

/// `url` with `key=value` added in its form.
fn add_param(url: &str, key: &str, value: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}{key}={value}")
    } else {
        format!("{url} {key}={value}")
    }
}

/// `%XX` escapes of a URL query value decoded (a path with spaces or `&`); malformed escapes kept.
fn percent_decoded(v: &str) -> String {
    percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_parameters_are_taken_out_of_either_form() {
        let (rest, mode, root) = take_params(
            "postgres://pki@db1:5432/ca?sslmode=verify-full&connect_timeout=5&sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(rest, "postgres://pki@db1:5432/ca?connect_timeout=5");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        let (rest, mode, root) =
            take_params("host=db1 user=pki sslmode=verify-full sslrootcert='/etc/ca.pem'");
        assert_eq!(rest, "host=db1 user=pki");
        assert_eq!((mode.as_deref(), root.as_deref()), (Some("verify-full"), Some("/etc/ca.pem")));
        let (rest, mode, _) = take_params("postgres://pki@db1/ca");
        assert_eq!((rest.as_str(), mode), ("postgres://pki@db1/ca", None));
    }

    #[test]
    fn weak_modes_and_a_missing_root_are_refused_naming_what_to_use() {
        for url in ["postgres://pki@db1/ca?sslmode=require", "postgres://pki@db1/ca?sslmode=verify-ca"] {
            let e = split(url).err().expect("refused").to_string();
            assert!(e.contains("verify-full") && e.contains("sslrootcert"), "{e}");
        }
        let e = split("postgres://pki@db1/ca?sslmode=verify-full").err().expect("refused").to_string();
        assert!(e.contains("needs sslrootcert=FILE"), "{e}");
        let e = split("postgres://pki@db1/ca?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("sslrootcert /nonexistent/ca.pem"), "{e}");
        let e = split("postgres://pki@db1/ca?sslmode=maybe").err().expect("refused").to_string();
        assert!(e.contains("\"maybe\""), "{e}");
        // Malformed and non-ASCII escapes are kept as they are, never a panic.
        assert_eq!(percent_decoded("%zz%4%C3%A9%é%"), "%zz%4é%é%");
    }

    #[test]
    fn plain_modes_pass_through() {
        let s = split("postgres://pki@db1/ca?sslmode=disable").unwrap();
        assert!(s.tls.is_none());
        assert_eq!(s.url, "postgres://pki@db1/ca?sslmode=disable");
        assert!(split("postgres://pki@db1/ca").unwrap().tls.is_none());
    }
}
