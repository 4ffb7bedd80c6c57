//! The web page in a real browser (issue 22): headless Chromium driven
//! through WebDriver (`chromedriver`, with the `fantoccini` client).
//!
//! The harness starts `chromedriver` on a free port in a process group of
//! its own and kills that whole group when done (Chromium's processes
//! included, even when a case panics), and serves the redirect targets
//! itself on another free port. Without `chromium` and `chromedriver`
//! (Debian's packages of those names) a case fails under `CI=true` and is
//! skipped elsewhere.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use crate::cases::{raw_http, tmp};
use crate::harness::{missing_tool, run_to_exit, Server};
use crate::wire::code_of;

/// The alias the full flow shortens with: not spelled like a code, so it
/// lives in the key directory's alias side map, whose links are counted
/// under a statistics id of their own.
const FLOW_ALIAS: &str = "page-test_1";

/// The longest any browser case may take, all steps together.
const CASE_TIMEOUT: Duration = Duration::from_secs(90);

/// Where Debian installs the browser and its driver (`SHORTY_CHROMIUM` and
/// `SHORTY_CHROMEDRIVER` override).
fn tool(var: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    path.exists().then_some(path)
}

/// `chromedriver` on a free port, in its own process group.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start(chromedriver: &Path) -> Driver {
        use std::os::unix::process::CommandExt;
        // chromedriver cannot report a port it picked: take a free one and
        // hand it over (another process could take it meanwhile; the
        // start is retried then).
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            let mut child = Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Driver { child, port };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("chromedriver did not start");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and every Chromium process it
        // started (they inherit the group).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny HTTP server the short links point at: every GET gets a page
/// saying `landed`, and its path and query are recorded.
pub(crate) struct Target {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Target {
    pub(crate) fn start() -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the target");
        let addr = listener.local_addr().expect("its address");
        let hits = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (hits.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head);
                let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                seen.lock().unwrap().push(path);
                let body = "<!doctype html><title>Target</title><h1 id=\"landed\">landed</h1>";
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Target { addr, hits, stop }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Runs `case` with a WebDriver session of headless Chromium (a phone-sized
/// window), closing the session and the driver whatever happens. `None`
/// when the tools are missing outside CI.
fn with_browser<F>(case: F) -> Option<()>
where
    F: AsyncFnOnce(&Client),
{
    let why = "apt-get install -y chromium chromium-driver";
    let Some(chromium) = tool("SHORTY_CHROMIUM", "/usr/bin/chromium") else {
        missing_tool("chromium", why);
        return None;
    };
    let Some(chromedriver) = tool("SHORTY_CHROMEDRIVER", "/usr/bin/chromedriver") else {
        missing_tool("chromedriver", why);
        return None;
    };
    let driver = Driver::start(&chromedriver);
    let profile = tmp();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--no-first-run", "--window-size=412,915",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a WebDriver session");
        let outcome = tokio::time::timeout(
            CASE_TIMEOUT,
            futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(case(&client))),
        )
        .await;
        let _ = client.close().await;
        match outcome {
            Err(_) => panic!("the browser case took over {CASE_TIMEOUT:?}"),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Ok(Ok(())) => {}
        }
    });
    drop(driver);
    Some(())
}

/// Decodes the one QR code in a PNG (a screenshot or a served PNG).
pub(crate) fn decode_qr_png(bytes: &[u8]) -> Result<String, String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let mut buf = vec![0; reader.output_buffer_size().ok_or("image too large")?];
    let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    let channels = info.color_type.samples();
    let (w, h) = (info.width as usize, info.height as usize);
    // Luma of the first three channels (or the grey one).
    let grey: Vec<u8> = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|px| {
            if channels >= 3 {
                ((u32::from(px[0]) * 3 + u32::from(px[1]) * 6 + u32::from(px[2])) / 10) as u8
            } else {
                px[0]
            }
        })
        .collect();
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| grey[y * w + x]);
    let grids = image.detect_grids();
    let grid = grids.first().ok_or("no QR code in the image")?;
    grid.decode()
        .map(|(_, text)| text)
        .map_err(|e| e.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The page's headers on the wire: gzip, ETag and 304, CSP, nosniff,
/// caching; its script and style likewise; `--ui off` turns it off.
fn check_page_headers(server: &Server) {
    let get = |path: &str, extra: &str| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\n{extra}\r\n");
        raw_http(server, request.as_bytes(), 1).0.remove(0)
    };
    let (status, headers, body) = get("/", "Accept-Encoding: gzip, br\r\n");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-encoding"), Some("gzip"));
    assert_eq!(&body[..2], b"\x1f\x8b", "a gzip body");
    assert_eq!(header(&headers, "vary"), Some("Accept-Encoding"));
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&headers, "cache-control"), Some("no-cache"));
    let csp = header(&headers, "content-security-policy").expect("a CSP");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(header(&headers, "referrer-policy").is_some());
    let etag = header(&headers, "etag").expect("an ETag").to_owned();
    let (status, again, body) = get("/", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!((status, body.len()), (304, 0));
    assert_eq!(header(&again, "etag"), Some(etag.as_str()));
    let (status, plain, body) = get("/", "");
    assert_eq!(status, 200);
    assert_eq!(header(&plain, "content-encoding"), None);
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("<label for=\"url\">"), "a labelled URL field");
    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a script");
    let (status, js, _) = get(script, "");
    assert_eq!(status, 200);
    assert!(header(&js, "content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert!(header(&js, "cache-control").unwrap().contains("immutable"));
}

/// The page in a browser, with what exists before the JSON API: it loads
/// with its headers and its script runs under its CSP; the form is
/// labelled; the QR code of a link made over the wire decodes, served
/// and as the browser draws it, to its short URL; the short URL, opened
/// in the browser, lands on the target.
pub fn browser_page_loads_and_a_links_qr_code_leads_to_its_target(bin: &Path) {
    let dir = tmp();
    let server = Server::start(bin, dir.path(), &[]);
    check_page_headers(&server);
    let target = Target::start();
    let long = target.url("/landing?from=qr");
    let short = server.connect().shorten(&long);
    let code = code_of(&short).to_owned();
    // The served PNG decodes to the short URL; an unknown code is 404.
    let png = format!("/api/v1/links/{code}/qr.svg?format=png");
    let (status, headers, body) = raw_http(
        &server,
        format!("GET {png} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
        1,
    )
    .0
    .remove(0);
    assert_eq!(
        (status, header(&headers, "content-type")),
        (200, Some("image/png"))
    );
    assert_eq!(decode_qr_png(&body).unwrap(), short);
    let (status, _, _) = raw_http(
        &server,
        b"GET /api/v1/links/0000000/qr.svg HTTP/1.1\r\nHost: a\r\n\r\n",
        1,
    )
    .0
    .remove(0);
    assert_eq!(status, 404, "no link under that code");

    let ran = with_browser(async |client: &Client| {
        client.goto(&server.http_url("/")).await.unwrap();
        assert_eq!(client.title().await.unwrap(), "Shorty");
        for (id, label) in [
            ("url", "Long URL"),
            ("alias", "Alias"),
            ("expires", "Expires"),
        ] {
            let field = client.find(Locator::Id(id)).await.unwrap();
            assert!(field.is_displayed().await.unwrap(), "#{id} shown");
            let css = format!("label[for=\"{id}\"]");
            let text = client
                .find(Locator::Css(&css))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(text.starts_with(label), "#{id} is labelled: {text:?}");
        }
        client
            .find(Locator::Css("#shorten-form button[type=submit]"))
            .await
            .unwrap();
        // The script ran (it opens the key box when no key is kept):
        // the CSP let the page's own script in.
        client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("details#key-box[open]"))
            .await
            .expect("the page's script ran");
        // The QR code as the browser draws it.
        client
            .goto(&server.http_url(&format!("/api/v1/links/{code}/qr.svg")))
            .await
            .unwrap();
        let shot = client.screenshot().await.unwrap();
        assert_eq!(decode_qr_png(&shot).unwrap(), short, "the drawn QR code");
        // A visit of the short URL lands on the target.
        client.goto(&short).await.unwrap();
        let landed = client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Id("landed"))
            .await
            .unwrap();
        assert_eq!(landed.text().await.unwrap(), "landed");
        assert_eq!(client.current_url().await.unwrap().as_str(), long);
    });
    if ran.is_some() {
        assert!(target.hits().contains(&"/landing?from=qr".to_owned()));
    }
}

/// `--ui off`: no page, no assets; QR codes (part of the API) stay.
pub fn the_page_is_off_with_ui_off(bin: &Path) {
    let dir = tmp();
    let server = Server::start(bin, dir.path(), &["--ui", "off"]);
    let short = server.connect().shorten("https://example.com/x");
    for (path, want) in [
        ("/".to_owned(), 404),
        ("/static/app.js".to_owned(), 404),
        (format!("/api/v1/links/{}/qr.svg", code_of(&short)), 200),
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            raw_http(&server, request.as_bytes(), 1).0[0].0,
            want,
            "{path}"
        );
    }
}

/// A QR code holds `--public-url` + the code, whatever path the public URL
/// has; HEAD gives the headers alone; the page stays at `/`.
pub fn qr_codes_hold_the_public_url(bin: &Path) {
    let dir = tmp();
    let server = Server::start(bin, dir.path(), &["--public-url", "https://sho.rt/s/"]);
    let short = server.connect().shorten("https://example.com/y");
    assert!(short.starts_with("https://sho.rt/s/"), "{short}");
    let qr = format!("/api/v1/links/{}/qr.svg", code_of(&short));
    let get = format!("GET {qr}?format=png HTTP/1.1\r\nHost: a\r\n\r\n");
    let (status, _, body) = raw_http(&server, get.as_bytes(), 1).0.remove(0);
    assert_eq!(status, 200);
    assert_eq!(decode_qr_png(&body).unwrap(), short);
    // HEAD: a head that announces the SVG's length, and no body (the
    // connection closes right after the head).
    let mut stream = TcpStream::connect(server.http_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "HEAD {qr} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(head.contains("Content-Type: image/svg+xml\r\n"), "{head}");
    assert!(
        head.contains("X-Content-Type-Options: nosniff\r\n"),
        "{head}"
    );
    assert!(!head.contains("Content-Length: 0\r\n"), "{head}");
    assert_eq!(body, "", "HEAD has no body");
    let page = raw_http(&server, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1).0;
    assert_eq!(page[0].0, 200);
}

/// The whole flow of issue 22 through the page and the JSON API: paste a
/// key, shorten with an alias, read the short URL and its QR code from the
/// page, visit it, and see the click on the link's chart.
pub fn browser_full_flow_through_the_api(bin: &Path) {
    let dir = tmp();
    // An operator makes a key (issue 21's tool) before the server starts;
    // it prints the key on its first line.
    let (status, out) = run_to_exit(
        bin,
        &[
            "keys",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "create",
            "--name",
            "page",
            "--scopes",
            "links:write,links:read,stats:read",
        ],
        Duration::from_secs(20),
    );
    assert!(status.success(), "keys create: {out}");
    let key = out.lines().next().expect("a key").trim().to_owned();
    // Flushed often, so the click reaches the chart within the case.
    let server = Server::start(bin, dir.path(), &["--stats-flush", "100ms"]);
    let target = Target::start();
    let long = target.url("/full-flow");
    let alias = FLOW_ALIAS;
    with_browser(async |client: &Client| {
        client.goto(&server.http_url("/")).await.unwrap();
        client
            .find(Locator::Id("key"))
            .await
            .unwrap()
            .send_keys(&key)
            .await
            .unwrap();
        client
            .find(Locator::Css("#key-form button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        client
            .find(Locator::Id("url"))
            .await
            .unwrap()
            .send_keys(&long)
            .await
            .unwrap();
        client
            .find(Locator::Id("alias"))
            .await
            .unwrap()
            .send_keys(alias)
            .await
            .unwrap();
        client
            .find(Locator::Id("shorten-button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("#result:not([hidden])"))
            .await
            .expect("a result (see #error)");
        let short = client
            .find(Locator::Id("short-url"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .expect("the short URL");
        assert_eq!(short, format!("{}{alias}", server.public_base()));
        // The QR code on the page holds the short URL (wait for it to load).
        client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::XPath("//img[@id='qr' and @src]"))
            .await
            .unwrap();
        let loaded = async || {
            client
                .execute(
                    "return document.getElementById('qr').naturalWidth > 0",
                    vec![],
                )
                .await
                .unwrap()
                == serde_json::Value::Bool(true)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !loaded().await && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let qr = client.find(Locator::Id("qr")).await.unwrap();
        assert_eq!(
            decode_qr_png(&qr.screenshot().await.unwrap()).unwrap(),
            short
        );
        // The link appears under "My links".
        let mine = client
            .find(Locator::Id("links"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(mine.contains(alias), "My links: {mine}");
        // A visit lands on the target.
        client.goto(&short).await.unwrap();
        client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Id("landed"))
            .await
            .unwrap();
        // The click shows on the link's page once the statistics flush
        // (every second): reload until the hourly chart counts it.
        // Each load fetches the series once: watch it for a few seconds
        // (the fetch can take a while on a loaded CI machine), then
        // reload. A reload, not a `goto` of the same URL: a URL that
        // differs from the current one at most in its fragment is a
        // fragment navigation, so the browser scrolls instead of loading,
        // and a chart drawn before the click was flushed stayed at 0 (a CI
        // failure).
        let page = server.http_url(&format!("/#/links/{alias}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        client.goto(&page).await.unwrap();
        'reload: loop {
            let watched = Instant::now();
            let mut total = None;
            while watched.elapsed() < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                total = match client.find(Locator::Id("chart-hour")).await {
                    Ok(chart) => chart.attr("data-total").await.unwrap(),
                    Err(_) => None,
                };
                if total.as_deref() == Some("1") {
                    break 'reload;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no click on the chart: {total:?}"
            );
            client.refresh().await.unwrap();
        }
        let target_text = client
            .find(Locator::Id("d-url"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(target_text, long);
    })
    .unwrap_or(());
}
