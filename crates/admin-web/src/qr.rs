//! QR codes as inline SVG, rendered on the server (no script, no image request).

use qrcode::{Color, EcLevel, QrCode};

use crate::Error;

/// An `<svg>` element showing `text` as a QR code (error correction M, 4-module quiet zone).
pub(crate) fn svg(text: &str) -> Result<String, Error> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|e| Error::Internal(format!("QR code: {e}")))?;
    let w = code.width();
    let quiet = 4;
    let size = w + 2 * quiet;
    let mut path = String::new();
    for (i, c) in code.to_colors().iter().enumerate() {
        if *c == Color::Dark {
            let (x, y) = (i % w + quiet, i / w + quiet);
            path.push_str(&format!("M{x} {y}h1v1h-1z"));
        }
    }
    Ok(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"qr\" viewBox=\"0 0 {size} {size}\" width=\"{px}\" \
         height=\"{px}\" shape-rendering=\"crispEdges\" role=\"img\" aria-label=\"QR code of the TOTP key URI\">\
         <rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/><path fill=\"#000\" d=\"{path}\"/></svg>",
        px = size * 5
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_an_svg_with_modules() {
        let s = super::svg("otpauth://totp/PKI:alice?secret=MZXW6YTBOI").expect("qr");
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
        assert!(s.matches('M').count() > 100, "dark modules drawn");
        assert!(!s.contains("style"), "no inline style (CSP)");
    }
}
