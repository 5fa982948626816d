//! The OpenAPI 3.0 document of sealed mail, served at `/api/v1/mail/openapi.json`.
//!
//! It is kept by hand in `openapi.json` beside this file. The unit tests hold it to the code: the
//! paths and methods are exactly the routes [`crate::configure`] mounts, and each limit and
//! pattern is the one the request's reader checks; the end-to-end tests run schemathesis against
//! a live server with it.

/// The document (JSON).
pub fn openapi_document() -> &'static str {
    include_str!("openapi.json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{MAX_ATTACHMENTS, MAX_BULK};
    use crate::mime::{MAX_FILENAME_CHARS, MAX_SUBJECT_CHARS};

    fn doc() -> serde_json::Value {
        serde_json::from_str(openapi_document()).expect("the OpenAPI document is JSON")
    }

    #[test]
    fn documents_exactly_the_routes() {
        let d = doc();
        assert!(d["openapi"].as_str().expect("version").starts_with("3.0."));
        let documented = cerdb::directory::documented_operations(&d);
        let routed = [
            ("get", "/api/v1/mail/openapi.json"),
            ("post", "/api/v1/mail/seal"),
            ("post", "/api/v1/mail/seal/bulk"),
        ];
        assert_eq!(documented, routed.map(|(m, p)| (m.to_string(), p.to_string())));
    }

    #[test]
    fn limits_and_patterns_are_the_readers() {
        let d = doc();
        let s = &d["components"]["schemas"];
        let m = &s["SealRequest"]["properties"];
        assert_eq!(m["to"]["pattern"], cerdb::directory::EMAIL_PATTERN);
        assert_eq!(m["to"]["maxLength"], 254);
        assert_eq!(m["subject"]["maxLength"], MAX_SUBJECT_CHARS);
        assert_eq!(m["attachments"]["maxItems"], MAX_ATTACHMENTS);
        assert_eq!(s["Attachment"]["properties"]["filename"]["maxLength"], MAX_FILENAME_CHARS);
        assert_eq!(s["BulkRequest"]["properties"]["messages"]["maxItems"], MAX_BULK);
        assert_eq!(m["encryption"]["enum"], serde_json::json!(["aes-256-cbc", "aes-256-gcm", null]));
        assert_eq!(s["SealRequest"]["additionalProperties"], false);
        assert_eq!(s["Attachment"]["additionalProperties"], false);
    }

    /// The documented patterns agree with the readers on what they accept and refuse (the
    /// schemathesis run sends strings generated from the patterns and strings that break them).
    #[test]
    fn the_patterns_accept_and_refuse_as_the_readers_do() {
        let d = doc();
        let s = &d["components"]["schemas"];
        let pattern =
            |v: &serde_json::Value| regex_lite::Regex::new(v.as_str().expect("a pattern")).expect("a regex");
        let sender = pattern(&s["SealRequest"]["properties"]["sender"]["pattern"]);
        let media = pattern(&s["Attachment"]["properties"]["content_type"]["pattern"]);
        let base64 = pattern(&s["Attachment"]["properties"]["base64"]["pattern"]);
        let text = pattern(&s["SealRequest"]["properties"]["subject"]["pattern"]);
        for name in ["statements", "otp", "a", "x.y_z-1", "", "Statements", "-x", "a b", "é", "x\0"] {
            let read = name.parse::<cerdb::mail_senders::SenderName>().is_ok();
            assert_eq!(sender.is_match(name), read, "sender {name:?}");
        }
        for t in
            ["application/pdf", "text/plain", "a/b", "a/b/c", "a", "/b", "a/", "a/b; x=y", "a/b\n", "é/b"]
        {
            let read = crate::mime::MediaType::parse(t).is_ok();
            assert_eq!(media.is_match(t), read, "content_type {t:?}");
        }
        for b in [
            "", "QQ==", "QUE=", "QUFB", "QR==", "QUF=", "QQ", "QQ=", "Q===", "QUFB\n", "QU FB", "_-==",
            "QUFBQQ==",
        ] {
            let name = crate::mime::HeaderText::parse("filename", "f", 255).expect("name");
            let media = crate::mime::MediaType::parse("a/b").expect("media");
            let read = crate::mime::Attachment::from_base64(name, media, b).is_ok();
            assert_eq!(base64.is_match(b), read, "base64 {b:?}");
        }
        for t in ["Your statement", "März", "", "a\tb", "a\rb", "a\nb", "\u{7f}", "\u{85}", "\u{a0}"] {
            let read = crate::mime::HeaderText::parse("subject", t, 998).is_ok();
            assert_eq!(text.is_match(t), read, "subject {t:?}");
        }
    }
}
