//! Client side of `pki ts stamp`: send a query over HTTP, check the reply's status, save it.

use std::path::Path;

use der::Decode;

/// A one-line account of a TimeStampResp; an error when it is not granted or not decodable.
pub fn summary(reply: &[u8]) -> Result<String, String> {
    let resp =
        tsa::asn1::TimeStampResp::from_der(reply).map_err(|e| format!("the reply does not decode: {e}"))?;
    let status = &resp.status;
    let granted =
        matches!(status.status, tsa::asn1::PkiStatus::Granted | tsa::asn1::PkiStatus::GrantedWithMods);
    let text = status.status_string.as_ref().map(|v| v.join("; ")).unwrap_or_default();
    if !granted || resp.time_stamp_token.is_none() {
        return Err(format!("the TSA refused the request: {:?} {text}", status.status));
    }
    Ok(format!("timestamp granted ({} bytes)", reply.len()))
}

/// POSTs `query` to `<server>/tsa` and writes the reply to `out`.
pub fn stamp_over_http(server: &str, query: &[u8], out: &Path) -> anyhow::Result<()> {
    let url = format!("{}/tsa", server.trim_end_matches('/'));
    let mut resp = ureq::post(&url)
        .header("Content-Type", "application/timestamp-query")
        .send(query)
        .map_err(|e| anyhow::anyhow!("cannot reach the TSA at {url}: {e}"))?;
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    anyhow::ensure!(ct.starts_with("application/timestamp-reply"), "{url} answered with content type {ct:?}");
    let body = resp
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_vec()
        .map_err(|e| anyhow::anyhow!("reading the reply from {url}: {e}"))?;
    let line = summary(&body).map_err(|e| anyhow::anyhow!(e))?;
    std::fs::write(out, &body).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    let text = format!("{line}\ntimestamp reply written to {}", out.display());
    println!("{}", crate::cli::escape_controls(&text));
    Ok(())
}
