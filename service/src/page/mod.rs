//! The web page (issue 22): `/` on the public front, its script and style
//! under [`STATIC_PREFIX`], and QR codes of links
//! (`/api/v1/links/CODE/qr.svg`, see [`qr`]). Sans-IO: this module decides
//! the response; the shard writes it.
//!
//! The assets are embedded in the binary (`include_str!`), with no build
//! step and nothing fetched from elsewhere. At start (`Shared::new`, with
//! `--ui on`) each is gzipped once (`flate2`, best compression) and given
//! an `ETag` (a hash of its bytes; weak, `W/"…"`, because the gzipped and
//! plain bodies are two byte sequences of one representation and a strong
//! tag may name only one), so a request costs a lookup and a copy. The page names its
//! script and style with their hash (`/static/app.js?v=HASH`), so those
//! may be cached for a year (`immutable`), while the page itself is
//! revalidated on every load (`no-cache` + `If-None-Match` → 304) and a
//! new binary is seen at once.
//!
//! Every asset carries a strict `Content-Security-Policy` (scripts, styles
//! and API calls from this origin only: no inline script or style, so an
//! injected `<script>` or `style=` does nothing), `nosniff`,
//! `Referrer-Policy: no-referrer` (the page's URLs never leak to the
//! targets it links to) and `frame-ancestors 'none'` (no clickjacking).

pub mod qr;

use std::io::Write as _;
use std::sync::LazyLock;

use crate::settings::Settings;

/// Where the page's script and style are served; `static` is a
/// [reserved word](crate::codes::RESERVED_WORDS).
pub const STATIC_PREFIX: &str = "/static/";
/// The JSON API's links, under which QR codes are served.
pub const LINKS_PREFIX: &str = "/api/v1/links/";

/// The page's `Content-Security-Policy`: nothing but same-origin script,
/// style, images (the QR codes) and API calls; no inline code, no
/// plugins, no framing, forms post only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       img-src 'self'; connect-src 'self'; form-action 'self'; \
                       base-uri 'none'; frame-ancestors 'none'";

/// Headers every asset (and QR code) carries besides its type and caching.
pub const SECURITY_HEADERS: [(&str, &str); 3] = [
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", CSP),
];

/// The `Cache-Control` of the page itself: revalidated on every load, so a
/// new binary's page (and through it its new script) is seen at once.
pub const PAGE_CACHE: &str = "no-cache";
/// The `Cache-Control` of the script and style: their URLs carry their
/// hash, so a URL's content never changes.
pub const STATIC_CACHE: &str = "public, max-age=31536000, immutable";

/// One embedded file, ready to serve.
#[derive(Debug, PartialEq, Eq)]
pub struct Asset {
    /// The path it is served at.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its `Cache-Control`.
    pub cache_control: &'static str,
    /// The bytes as embedded (the page with its asset URLs versioned).
    pub body: Vec<u8>,
    /// The same, gzipped.
    pub gzip: Vec<u8>,
    /// The hash of `body`: its versioned URL's `?v=`.
    pub hash: String,
    /// A weak `ETag` (`W/"hash"`): the gzipped and plain bodies differ in
    /// bytes, so they share only a weak one (RFC 9110 §8.8.1).
    pub etag: String,
}

const HTML: &str = include_str!("assets/index.html");
const JS: &str = include_str!("assets/app.js");
const CSS: &str = include_str!("assets/app.css");

/// The hash an `ETag` and a versioned URL carry: 64 bits of SipHash (not
/// a security boundary: only a change detector).
fn hash(bytes: &[u8]) -> String {
    use std::hash::Hasher as _;
    let mut hasher = siphasher::sip::SipHasher13::new();
    hasher.write(bytes);
    format!("{:016x}", hasher.finish())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

fn asset(
    path: &'static str,
    content_type: &'static str,
    cache_control: &'static str,
    body: Vec<u8>,
) -> Asset {
    let tag = hash(&body);
    Asset {
        path,
        content_type,
        cache_control,
        gzip: gzip(&body),
        etag: format!("W/\"{tag}\""),
        hash: tag,
        body,
    }
}

/// The page, its script and its style, built once (at start).
pub static ASSETS: LazyLock<[Asset; 3]> = LazyLock::new(|| {
    let js = asset(
        "/static/app.js",
        "text/javascript; charset=utf-8",
        STATIC_CACHE,
        JS.as_bytes().to_vec(),
    );
    let css = asset(
        "/static/app.css",
        "text/css; charset=utf-8",
        STATIC_CACHE,
        CSS.as_bytes().to_vec(),
    );
    // The page names each asset with its hash, so a cached copy of an old
    // script is never used with a new page.
    let html = HTML
        .replace(
            "\"/static/app.js\"",
            &format!("\"/static/app.js?v={}\"", js.hash),
        )
        .replace(
            "\"/static/app.css\"",
            &format!("\"/static/app.css?v={}\"", css.hash),
        );
    let html = asset(
        "/",
        "text/html; charset=utf-8",
        PAGE_CACHE,
        html.into_bytes(),
    );
    [html, js, css]
});

/// What a path on the public front asks of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageRoute<'a> {
    /// An embedded file.
    Asset(&'static Asset),
    /// The QR code of the link under a code.
    Qr {
        /// The code, as in the path.
        code: &'a str,
        /// SVG or PNG.
        format: qr::Format,
    },
}

/// Routes `path` (with its `query`) on the public front; `None` when it is
/// not the page's (the caller routes it as before). The page and its assets
/// only with `--ui on`; QR codes are part of the API and always served.
pub fn route<'a>(settings: &Settings, path: &'a str, query: Option<&str>) -> Option<PageRoute<'a>> {
    if let Some(rest) = path.strip_prefix(LINKS_PREFIX) {
        let code = rest.strip_suffix("/qr.svg")?;
        if code.is_empty() || code.contains('/') {
            return None;
        }
        let png = query.is_some_and(|q| q.split('&').any(|p| p == "format=png"));
        let format = if png {
            qr::Format::Png
        } else {
            qr::Format::Svg
        };
        return Some(PageRoute::Qr { code, format });
    }
    if !settings.ui {
        return None;
    }
    ASSETS.iter().find(|a| a.path == path).map(PageRoute::Asset)
}

/// `true` when an `Accept-Encoding` value accepts gzip (RFC 9110 §12.5.3:
/// `gzip` or `*` with a non-zero weight).
pub fn accepts_gzip(accept_encoding: &[u8]) -> bool {
    let Ok(value) = std::str::from_utf8(accept_encoding) else {
        return false;
    };
    value.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or_default();
        let zero = parts.any(|p| {
            p.strip_prefix("q=")
                .or_else(|| p.strip_prefix("Q="))
                .is_some_and(|q| q.parse::<f32>().map_or(true, |q| q <= 0.0))
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !zero
    })
}

/// `true` when an `If-None-Match` value matches `etag` (weak comparison,
/// RFC 9110 §13.1.2: a `W/` prefix is ignored; `*` matches).
pub fn etag_matches(if_none_match: &[u8], etag: &str) -> bool {
    let Ok(value) = std::str::from_utf8(if_none_match) else {
        return false;
    };
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || opaque(tag) == opaque(etag))
}

/// An entity tag without its weakness indicator.
fn opaque(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// A response for the shard to write.
#[derive(Debug)]
pub struct AssetResponse<'a> {
    /// 200 or 304.
    pub status: u16,
    /// Every header but `Date`, `Content-Length` and `Connection`.
    pub headers: Vec<(&'static str, &'a str)>,
    /// The body (empty for 304).
    pub body: &'a [u8],
}

/// The response to a GET (or HEAD) of `asset`, given the request's
/// `If-None-Match` and `Accept-Encoding`.
pub fn serve_asset<'a>(
    asset: &'a Asset,
    if_none_match: Option<&[u8]>,
    accept_encoding: Option<&[u8]>,
) -> AssetResponse<'a> {
    let mut headers = vec![
        ("ETag", asset.etag.as_str()),
        ("Cache-Control", asset.cache_control),
        // A cache must keep the gzipped and plain bodies apart.
        ("Vary", "Accept-Encoding"),
    ];
    headers.extend(SECURITY_HEADERS);
    if if_none_match.is_some_and(|v| etag_matches(v, &asset.etag)) {
        return AssetResponse {
            status: 304,
            headers,
            body: b"",
        };
    }
    headers.push(("Content-Type", asset.content_type));
    let body = if accept_encoding.is_some_and(accepts_gzip) {
        headers.push(("Content-Encoding", "gzip"));
        &asset.gzip
    } else {
        &asset.body
    };
    AssetResponse {
        status: 200,
        headers,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Most bytes the page may cost a first visit (HTML + JS + CSS, as
    /// sent gzipped): issue 22's budget.
    const TRANSFER_BUDGET: usize = 30 * 1024;

    #[test]
    fn the_page_transfers_under_its_budget() {
        let sizes: Vec<(usize, usize)> = ASSETS
            .iter()
            .map(|a| (a.body.len(), a.gzip.len()))
            .collect();
        let total: usize = sizes.iter().map(|s| s.1).sum();
        let raw: usize = sizes.iter().map(|s| s.0).sum();
        println!("page transfer: {total} bytes gzipped ({raw} raw): {sizes:?}");
        assert!(total < TRANSFER_BUDGET, "{total} bytes gzipped");
        for a in ASSETS.iter() {
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&a.gzip[..]), &mut plain)
                .unwrap();
            assert_eq!(plain, a.body, "{}: gzip round-trips", a.path);
        }
    }

    #[test]
    fn the_page_names_its_assets_with_their_hash_and_has_no_inline_code() {
        let [html, js, css] = &*ASSETS;
        let html = std::str::from_utf8(&html.body).unwrap();
        for asset in [js, css] {
            let url = format!("\"{}?v={}\"", asset.path, asset.hash);
            assert!(html.contains(&url), "{url} in the page");
        }
        // The CSP forbids inline code; the page must not need any.
        let lower = html.to_ascii_lowercase();
        assert!(
            !lower.contains("<script>") && !lower.contains("<style"),
            "inline script or style"
        );
        assert!(
            !lower.contains(" style=") && !lower.contains(" onclick="),
            "inline attributes"
        );
        for attr in ["src=\"", "href=\""] {
            for at in lower.split(attr).skip(1) {
                assert!(
                    at.starts_with('/') || at.starts_with('#'),
                    "nothing from elsewhere: {attr}{}",
                    &at[..at.len().min(40)]
                );
            }
        }
    }

    #[test]
    fn assets_revalidate_compress_and_carry_the_security_headers() {
        let page = &ASSETS[0];
        let header = |r: &AssetResponse<'_>, name: &str| {
            r.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|h| h.1.to_owned())
        };
        let plain = serve_asset(page, None, None);
        assert_eq!((plain.status, plain.body), (200, &page.body[..]));
        assert_eq!(header(&plain, "Content-Encoding"), None);
        assert_eq!(
            header(&plain, "Content-Security-Policy").as_deref(),
            Some(CSP)
        );
        assert_eq!(
            header(&plain, "X-Content-Type-Options").as_deref(),
            Some("nosniff")
        );
        assert_eq!(header(&plain, "Vary").as_deref(), Some("Accept-Encoding"));
        let zipped = serve_asset(page, None, Some(b"br, gzip;q=0.8"));
        assert_eq!(zipped.body, &page.gzip[..]);
        assert_eq!(header(&zipped, "Content-Encoding").as_deref(), Some("gzip"));
        assert_eq!(
            serve_asset(page, None, Some(b"gzip;q=0")).body,
            &page.body[..]
        );
        assert_eq!(
            serve_asset(page, None, Some(b"identity")).body,
            &page.body[..]
        );
        let etag = header(&plain, "ETag").unwrap();
        let again = serve_asset(
            page,
            Some(format!("\"x\", {etag}").as_bytes()),
            Some(b"gzip"),
        );
        assert_eq!((again.status, again.body.len()), (304, 0));
        assert_eq!(header(&again, "ETag"), Some(etag));
        assert_eq!(serve_asset(page, Some(b"\"other\""), None).status, 200);
        // Different assets, different tags.
        assert_ne!(ASSETS[0].etag, ASSETS[1].etag);
        // Review: the gzipped and plain bodies are different bytes, so a
        // tag they share must be weak (a strong one names one body).
        let zipped_tag = header(&zipped, "ETag").unwrap();
        assert_ne!(zipped.body, plain.body);
        assert!(
            header(&plain, "ETag").unwrap() != zipped_tag || zipped_tag.starts_with("W/\""),
            "{zipped_tag} names two different bodies"
        );
        // Either form of the tag revalidates.
        let bare = zipped_tag.trim_start_matches("W/");
        assert_eq!(serve_asset(page, Some(bare.as_bytes()), None).status, 304);
    }

    #[test]
    fn a_304_has_no_content_length_and_assets_keep_their_own_cache_control() {
        let page = &ASSETS[0];
        let write = |r: &AssetResponse<'_>| {
            let mut out = bytes::BytesMut::new();
            crate::http::write(
                &mut out,
                "Wed, 25 Nov 2026 12:00:00 GMT",
                &crate::http::Response {
                    status: r.status,
                    headers: &r.headers,
                    body: r.body,
                    head_only: false,
                    keep_alive: true,
                },
            );
            String::from_utf8_lossy(&out).into_owned()
        };
        let fresh = write(&serve_asset(page, Some(page.etag.as_bytes()), None));
        assert!(
            fresh.starts_with("HTTP/1.1 304 Not Modified\r\n"),
            "{fresh}"
        );
        assert!(
            !fresh.to_ascii_lowercase().contains("content-length"),
            "{fresh}"
        );
        assert!(fresh.ends_with("\r\n\r\n"), "no body: {fresh}");
        let full = write(&serve_asset(page, None, None));
        assert_eq!(full.matches("Cache-Control:").count(), 1, "{full}");
        assert!(full.contains(&format!("Cache-Control: {PAGE_CACHE}\r\n")));
        assert!(full.contains(&format!("Content-Length: {}\r\n", page.body.len())));
    }

    #[test]
    fn routes_serve_the_page_only_with_ui_on_and_qr_codes_always() {
        let mut s = Settings::for_tests("https://sho.rt/");
        assert!(matches!(route(&s, "/", None), Some(PageRoute::Asset(a)) if a.path == "/"));
        assert!(matches!(
            route(&s, "/static/app.js", Some("v=1")),
            Some(PageRoute::Asset(_))
        ));
        assert_eq!(route(&s, "/static/nope.js", None), None);
        assert_eq!(
            route(&s, "/abcdefg", None),
            None,
            "codes are not the page's"
        );
        assert_eq!(
            route(&s, "/api/v1/links/abc/qr.svg", Some("format=png")),
            Some(PageRoute::Qr {
                code: "abc",
                format: qr::Format::Png
            })
        );
        assert_eq!(
            route(&s, "/api/v1/links/abc/qr.svg", None),
            Some(PageRoute::Qr {
                code: "abc",
                format: qr::Format::Svg
            })
        );
        assert_eq!(
            route(&s, "/api/v1/links/abc", None),
            None,
            "the API's, not ours"
        );
        assert_eq!(route(&s, "/api/v1/links//qr.svg", None), None);
        s.ui = false;
        assert_eq!(route(&s, "/", None), None);
        assert_eq!(route(&s, "/static/app.js", None), None);
        assert!(route(&s, "/api/v1/links/abc/qr.svg", None).is_some());
        assert!(crate::codes::RESERVED_WORDS.contains(&"static"));
    }
}
