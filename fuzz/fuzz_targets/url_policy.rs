//! Arbitrary bytes as a URL to shorten, judged by the URL policy with its
//! shortcut for plain URLs and by the full parse alone, under a few public
//! base URLs: both must give the same answer. The shortcut is hand-written
//! (`plain_host` in `service/src/url.rs`); this holds it to the url crate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shorty_service::url::UrlPolicy;
use url::Url;

fuzz_target!(|data: &[u8]| {
    // The input's first byte picks a policy, so that a plain URL on the
    // public host itself (which the shortcut leaves to the parse) comes up.
    let Some((&pick, url)) = data.split_first() else {
        return;
    };
    let base = match pick % 4 {
        0 => "http://127.0.0.1:5000/",
        1 => "https://s.example/go/",
        2 => "http://a:8080/",
        _ => "https://xn--bcher-kva.example./",
    };
    let policy = UrlPolicy::new(2048, Url::parse(base).unwrap())
        .refuse_self_links(pick & 4 != 0)
        .allow_userinfo(pick & 8 != 0);
    let is_code = |code: &str| code.len() == 3;
    assert_eq!(
        policy.check(url, is_code),
        policy.check_by_parse(url, is_code),
        "{:?} under {base}",
        String::from_utf8_lossy(url)
    );
});
