//! The OpenAPI 3.0 document of the directory, served at `/api/v1/openapi.json`.
//!
//! It is kept by hand in `openapi.json` beside this file. The unit tests hold it to the code: the
//! paths and methods are exactly the routes [`super::configure`] mounts, the address pattern is
//! [`super::lookup::EMAIL_PATTERN`], the bulk limit is [`super::MAX_BULK`]; the end-to-end tests
//! run schemathesis against a live server with it.

/// The document (JSON).
pub fn openapi_document() -> &'static str {
    include_str!("openapi.json")
}

/// The `(method, path)` pairs an OpenAPI document describes, sorted: what its tests hold to the
/// routes a scope mounts.
pub fn documented_operations(doc: &serde_json::Value) -> Vec<(String, String)> {
    let mut ops: Vec<(String, String)> = doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            item.as_object().into_iter().flatten().map(move |(method, _)| (method.clone(), path.clone()))
        })
        .collect();
    ops.sort();
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::lookup::EMAIL_PATTERN;
    use crate::directory::MAX_BULK;

    fn doc() -> serde_json::Value {
        serde_json::from_str(openapi_document()).expect("the OpenAPI document is JSON")
    }

    /// Every (method, path) the scope serves (`tests.rs` sends a request to each documented one).
    const OPERATIONS: [(&str, &str); 6] = [
        ("get", "/api/v1/certificates/exists"),
        ("get", "/api/v1/certificates"),
        ("get", "/api/v1/certificates/{fingerprint}"),
        ("get", "/api/v1/certificates/by-serial/{serial}"),
        ("post", "/api/v1/certificates/lookup"),
        ("get", "/api/v1/openapi.json"),
    ];

    #[test]
    fn documents_exactly_the_routes() {
        let d = doc();
        assert!(d["openapi"].as_str().expect("version").starts_with("3.0."));
        let documented = documented_operations(&d);
        let mut routed: Vec<(String, String)> =
            OPERATIONS.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        routed.sort();
        assert_eq!(documented, routed);
    }

    #[test]
    fn limits_and_patterns_are_the_codes() {
        let d = doc();
        let address = &d["components"]["parameters"]["address"];
        assert_eq!(address["in"], "query");
        assert_eq!(address["style"], "form");
        assert_eq!(address["explode"], true);
        assert_eq!(
            address["schema"]["oneOf"],
            serde_json::json!([{"required": ["email"]}, {"required": ["email_sha256"]}]),
            "exactly one of email and email_sha256"
        );
        let p = &address["schema"]["properties"]["email"];
        assert_eq!(p["pattern"], EMAIL_PATTERN);
        assert_eq!(p["maxLength"], 254);
        let bulk = &d["components"]["schemas"]["BulkRequest"]["properties"]["emails"];
        assert_eq!(bulk["maxItems"], MAX_BULK);
        assert_eq!(bulk["items"]["pattern"], EMAIL_PATTERN);
        assert_eq!(d["components"]["schemas"]["Usage"]["enum"], serde_json::json!(["encryption", "signing"]));
    }

    #[test]
    fn every_reference_resolves() {
        fn walk(v: &serde_json::Value, root: &serde_json::Value, n: &mut usize) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(r) = m.get("$ref").and_then(|r| r.as_str()) {
                        let ptr = r.strip_prefix('#').expect("local reference");
                        assert!(root.pointer(ptr).is_some(), "dangling {r}");
                        *n += 1;
                    }
                    m.values().for_each(|x| walk(x, root, n));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, root, n)),
                _ => {}
            }
        }
        let d = doc();
        let mut n = 0;
        walk(&d, &d, &mut n);
        assert!(n > 20, "only {n} references");
    }
}
