//! Property-based fuzzing of the admin socket's input: frames (4-byte length, then JSON) read as
//! the server reads them, then the JSON envelope. Valid envelopes of several commands mutated one
//! value at a time, framed with the right length or a lying one, and random bytes: an error or an
//! envelope, never a panic. `PROPTEST_CASES` sets the case count (see fuzz-support).

use std::io::Cursor;

use fuzz_support::proptest::prelude::*;
use fuzz_support::{text, Fuzz};

use super::read_frame;
use crate::commands::{Envelope, Generate, Request};

fn envelopes() -> Vec<serde_json::Value> {
    let requests = vec![
        Request::Issue {
            email: "alice@example.com".into(),
            usage: "signing".into(),
            csr: Some(vec![0x30, 0x03, 0x02, 0x01, 0x00]),
            generate: None,
        },
        Request::Issue {
            email: "bob@example.com".into(),
            usage: "encryption".into(),
            csr: None,
            generate: Some(Generate {
                key_type: Some("p256".into()),
                p12_out: "/tmp/b.p12".into(),
                password: "pw".into(),
            }),
        },
        Request::Revoke { serial: "0A:1B".into(), reason: "keyCompromise".into() },
        Request::CaRekey { which: "ocsp".into() },
        Request::List { email: Some("alice@example.com".into()) },
        Request::Show { serial: "0a1b".into() },
        Request::TsStamp { query: vec![0x30, 0x00], out: "reply.tsr".into() },
        Request::TsVerify {
            token: vec![0x30, 0x00],
            data: None,
            data_digests: None,
            digest: Some("00".repeat(32)),
        },
        Request::TsVerify {
            token: vec![0x30, 0x00],
            data: None,
            data_digests: Some(vec![("2.16.840.1.101.3.4.2.1".into(), "00".repeat(32))]),
            digest: None,
        },
        Request::Init,
    ];
    requests
        .into_iter()
        .map(|request| serde_json::to_value(Envelope { actor: "root".into(), request }).expect("encodes"))
        .collect()
}

/// How a body is framed.
#[derive(Debug, Clone)]
enum Framing {
    Right,
    /// The right length plus this (wrapping).
    Off(i16),
    Any(u32),
    /// No length at all: the body as it is.
    Bare,
}

fn frame(body: &[u8], how: &Framing) -> Vec<u8> {
    let len = body.len() as u32;
    let declared = match how {
        Framing::Right => len,
        Framing::Off(d) => len.wrapping_add_signed(i32::from(*d)),
        Framing::Any(n) => *n,
        Framing::Bare => return body.to_vec(),
    };
    let mut out = declared.to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

#[test]
fn admin_frames_never_panic() {
    let valid = envelopes();
    for v in &valid {
        let framed = frame(v.to_string().as_bytes(), &Framing::Right);
        let body = read_frame(&mut Cursor::new(framed)).expect("frame");
        serde_json::from_slice::<Envelope>(&body).expect("the valid envelopes read back");
    }
    let framing = prop_oneof![
        6 => Just(Framing::Right),
        2 => any::<i16>().prop_map(Framing::Off),
        1 => any::<u32>().prop_map(Framing::Any),
        1 => Just(Framing::Bare),
    ];
    let strategy = (text::json_inputs(valid), framing);
    Fuzz::new(env!("CARGO_MANIFEST_DIR"), "admin-frames", 5000).run(strategy, |(body, how)| {
        let bytes = frame(&body, &how);
        if let Ok(read) = read_frame(&mut Cursor::new(bytes)) {
            let _ = serde_json::from_slice::<Envelope>(&read);
        }
        Ok(())
    });
}
