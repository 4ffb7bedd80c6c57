//! `GET /api/v1/links` (each key's links, newest first, cursor pages) and
//! `POST /api/v1/links/bulk` (a result per item), issue 21, through a real
//! HTTP client and the server binaries.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::api::{call, keys};
use crate::cases::tmp;
use crate::harness::{run_to_exit, Server};

/// A key with `scopes`, made with `keys create` before the server starts.
fn key(bin: &Path, dir: &Path, name: &str, scopes: &str) -> String {
    let out = keys(bin, dir, &["create", "--name", name, "--scopes", scopes]);
    out.lines().next().unwrap().trim().to_owned()
}

/// Creates a link to `url` with `key`; its code. A millisecond apart
/// from the previous one, so creation order is the listing's order (links
/// made in one millisecond are ordered by code).
fn create(server: &Server, key: &str, url: &str) -> String {
    std::thread::sleep(std::time::Duration::from_millis(2));
    let body = format!(r#"{{"url":"{url}"}}"#);
    let made = call(server, "POST", "/api/v1/links", Some(&body), Some(key));
    assert_eq!(made.status, 201, "{}", made.body);
    made.json()["code"].as_str().unwrap().to_owned()
}

/// One page: its codes and next cursor.
fn page(server: &Server, key: &str, query: &str) -> (Vec<String>, Option<String>) {
    let answer = call(
        server,
        "GET",
        &format!("/api/v1/links?{query}"),
        None,
        Some(key),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let json = answer.json();
    let codes = json["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["code"].as_str().unwrap().to_owned())
        .collect();
    (codes, json["nextCursor"].as_str().map(str::to_owned))
}

/// Every page of `key`'s links with `limit`: their codes and sizes.
fn all_pages(server: &Server, key: &str, limit: u32) -> (Vec<String>, Vec<usize>) {
    let (mut codes, mut sizes) = (Vec::new(), Vec::new());
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("limit={limit}&cursor={c}"),
            None => format!("limit={limit}"),
        };
        let (page, next) = page(server, key, &query);
        sizes.push(page.len());
        codes.extend(page);
        match next {
            Some(next) => cursor = Some(next),
            None => return (codes, sizes),
        }
    }
}

/// 45 links of one key page as 20/20/5 newest first, with no repeat and
/// no gap while the same key makes more links; another key's links are
/// never listed (its own listing shows only its links, and one key's
/// cursor does not reach the other's); a deleted link vanishes; a restart
/// lists the same links; no key → 401, a cursor this server did not make
/// → 400 naming it.
pub fn api_lists_each_keys_links_newest_first_while_links_are_made(bin: &Path) {
    let dir = tmp();
    let scopes = "links:write,links:read";
    let (mine, theirs) = (
        key(bin, dir.path(), "mine", scopes),
        key(bin, dir.path(), "theirs", scopes),
    );
    let server = Server::start(bin, dir.path(), &["--threads", "2"]);
    let made: Vec<String> = (0..45)
        .map(|i| create(&server, &mine, &format!("https://example.com/mine/{i}")))
        .collect();
    let their: Vec<String> = (0..3)
        .map(|i| create(&server, &theirs, &format!("https://example.com/theirs/{i}")))
        .collect();
    // Anonymous links are not anyone's.
    let anonymous = call(
        &server,
        "POST",
        "/api/v1/links",
        Some(r#"{"url":"https://example.com/anonymous"}"#),
        None,
    );
    assert_eq!(anonymous.status, 201, "{}", anonymous.body);

    // The first page, then links made while the rest is read.
    let (first, cursor) = page(&server, &mine, "limit=20");
    let stop = Arc::new(AtomicBool::new(false));
    let maker = {
        let (stop, key) = (stop.clone(), mine.clone());
        let server_addr = server.http_url("/api/v1/links");
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 500 {
                let response = agent
                    .post(&server_addr)
                    .header("Authorization", format!("Bearer {key}"))
                    .header("Content-Type", "application/json")
                    .send(format!(r#"{{"url":"https://example.com/meanwhile/{n}"}}"#));
                assert_eq!(response.unwrap().status().as_u16(), 201);
                n += 1;
            }
            n
        })
    };
    let mut codes = first.clone();
    let mut sizes = vec![first.len()];
    let mut cursor = cursor;
    while let Some(c) = cursor {
        let (next, after) = page(&server, &mine, &format!("limit=20&cursor={c}"));
        sizes.push(next.len());
        codes.extend(next);
        cursor = after;
    }
    stop.store(true, Ordering::Relaxed);
    let meanwhile = maker.join().unwrap();
    assert_eq!(sizes, [20, 20, 5], "made meanwhile: {meanwhile}");
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();
    assert_eq!(codes, newest_first, "no repeat, no gap, newest first");

    // Only a key's own links, whatever the cursor.
    let (theirs_listed, _) = all_pages(&server, &theirs, 100);
    let their_newest: Vec<String> = their.iter().rev().cloned().collect();
    assert_eq!(theirs_listed, their_newest);
    let (_, my_cursor) = page(&server, &mine, "limit=1");
    let (crossed, _) = page(
        &server,
        &theirs,
        &format!("limit=100&cursor={}", my_cursor.unwrap()),
    );
    assert!(
        crossed.iter().all(|c| their.contains(c)),
        "another key's cursor lists only the caller's links: {crossed:?}"
    );

    // A deleted link leaves the listing at once.
    let gone = &made[10];
    let deleted = call(
        &server,
        "DELETE",
        &format!("/api/v1/links/{gone}"),
        None,
        Some(&mine),
    );
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let (before_restart, _) = all_pages(&server, &mine, 100);
    assert!(!before_restart.contains(gone));
    assert_eq!(before_restart.len(), 45 - 1 + meanwhile);
    let unique: HashSet<_> = before_restart.iter().collect();
    assert_eq!(unique.len(), before_restart.len(), "no repeats");

    // Refusals.
    let anonymous = call(&server, "GET", "/api/v1/links", None, None);
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let bad = call(
        &server,
        "GET",
        "/api/v1/links?cursor=xyz",
        None,
        Some(&mine),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("cursor"), "{}", bad.body);

    // The index is rebuilt at start from what recovery reads.
    assert!(server.stop().success());
    let server = Server::start(bin, dir.path(), &["--threads", "2"]);
    let (after_restart, _) = all_pages(&server, &mine, 100);
    assert_eq!(after_restart, before_restart);
}

/// A bulk creation answers one result per item, in order: created links,
/// a problem naming the invalid item's field, 409 for a taken alias; more
/// than 100 items → 400 naming `links`; the links made are the key's; each
/// item counts against the creation rate limit (429 per item past it).
pub fn api_bulk_creates_answer_per_item(bin: &Path) {
    let dir = tmp();
    let mine = key(bin, dir.path(), "bulk", "links:write,links:read");
    let server = Server::start(bin, dir.path(), &[]);
    let taken = call(
        &server,
        "POST",
        "/api/v1/links",
        Some(r#"{"url":"https://example.com/first","slug":"bulk-taken"}"#),
        Some(&mine),
    );
    assert_eq!(taken.status, 201, "{}", taken.body);
    let body = r#"{"links":[
        {"url":"https://example.com/one"},
        {"url":"https://example.com/two","slug":"bulk-two","title":"Two"},
        {"url":"https://example.com/three","maxClicks":0},
        {"url":"https://example.com/four","slug":"bulk-taken"},
        {"url":"ftp://example.com/five"}
    ]}"#;
    let answer = call(
        &server,
        "POST",
        "/api/v1/links/bulk",
        Some(body),
        Some(&mine),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let json = answer.json();
    let results = json["results"].as_array().unwrap();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses[..4], [201, 201, 400, 409], "{}", answer.body);
    assert!(
        matches!(statuses[4], 400 | 422),
        "a URL the policy refuses: {}",
        answer.body
    );
    // Whichever check refused it, the field is named within the request.
    assert_eq!(
        results[4]["problem"]["errors"][0]["field"], "links[4].url",
        "{}",
        results[4]
    );
    assert_eq!(results[1]["link"]["code"], "bulk-two");
    assert_eq!(results[1]["link"]["title"], "Two");
    assert!(
        results[2]["problem"].to_string().contains("maxClicks"),
        "{}",
        results[2]
    );
    // The links made resolve and are listed for their key, newest first.
    let one = results[0]["link"]["code"].as_str().unwrap();
    let (status, _, _) = crate::cases::http("GET", &server.http_url(&format!("/{one}")));
    assert_eq!(status, 302);
    let (listed, _) = page(&server, &mine, "limit=10");
    let listed: HashSet<_> = listed.into_iter().collect();
    for code in [one, "bulk-two", "bulk-taken"] {
        assert!(listed.contains(code), "{code} in {listed:?}");
    }
    assert_eq!(listed.len(), 3);

    // Over 100 items: refused as a whole, naming the field.
    let items = vec![r#"{"url":"https://example.com/x"}"#; 101].join(",");
    let many = call(
        &server,
        "POST",
        "/api/v1/links/bulk",
        Some(&format!(r#"{{"links":[{items}]}}"#)),
        Some(&mine),
    );
    assert!(matches!(many.status, 400 | 413), "{}", many.body);
    assert!(many.body.contains("links"), "{}", many.body);
    drop(server);

    // Each item is one creation for the rate limit: 2 per minute lets the
    // first two of five through.
    let dir = tmp();
    let args = ["--rate-create", "2/min", "--rate-limit-loopback", "true"];
    let server = Server::start(bin, dir.path(), &args);
    let items = [r#"{"url":"https://example.com/limited"}"#; 5].join(",");
    let limited = call(
        &server,
        "POST",
        "/api/v1/links/bulk",
        Some(&format!(r#"{{"links":[{items}]}}"#)),
        None,
    );
    assert_eq!(limited.status, 200, "{}", limited.body);
    let statuses: Vec<u64> = limited.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 201, 429, 429, 429], "{}", limited.body);
}

/// The listing with the Redis Cluster store: two nodes share the keys
/// (made once in the store, `keys --store`) and one 3-primary cluster; 45
/// links made on either node page as 20/20/5 newest first on one node
/// while the other makes more, with no repeat or gap; another key's links
/// are absent; a deleted link vanishes; a cursor this server did not make
/// is refused.
pub fn redis_cluster_lists_each_keys_links(bin: &Path) {
    let Some(cluster) = crate::cluster::or_skip(crate::cluster::RedisCluster::start(3)) else {
        return;
    };
    let (d1, d2) = (tmp(), tmp());
    let seeds = cluster.seeds();
    let store_key = |name: &str, scopes: &str| {
        let args = [
            "keys",
            "--store",
            seeds.as_str(),
            "create",
            "--name",
            name,
            "--scopes",
            scopes,
        ];
        let (status, out) = run_to_exit(bin, &args, std::time::Duration::from_secs(30));
        assert!(status.success(), "keys create {name}: {out}");
        out.lines().next().unwrap().trim().to_owned()
    };
    let scopes = "links:write,links:read";
    let (mine, theirs) = (store_key("mine", scopes), store_key("theirs", scopes));
    let stats_only = store_key("stats-only", "stats:read");
    let args = ["--store", seeds.as_str(), "--store-replicas", "0"];
    let one = Server::start(bin, d1.path(), &args);
    let two = Server::start(bin, d2.path(), &args);
    let made: Vec<String> = (0..45)
        .map(|i| {
            let node = if i % 2 == 0 { &one } else { &two };
            create(node, &mine, &format!("https://example.com/mine/{i}"))
        })
        .collect();
    let their: Vec<String> = (0..3)
        .map(|i| create(&two, &theirs, &format!("https://example.com/theirs/{i}")))
        .collect();

    let (first, cursor) = page(&one, &mine, "limit=20");
    let mut codes = first.clone();
    let mut sizes = vec![first.len()];
    let mut cursor = cursor;
    let mut meanwhile = 0;
    while let Some(c) = cursor {
        // Made on the other node while this one pages.
        create(
            &two,
            &mine,
            &format!("https://example.com/meanwhile/{meanwhile}"),
        );
        meanwhile += 1;
        let (next, after) = page(&one, &mine, &format!("limit=20&cursor={c}"));
        sizes.push(next.len());
        codes.extend(next);
        cursor = after;
    }
    assert_eq!(sizes, [20, 20, 5]);
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();
    assert_eq!(codes, newest_first, "no repeat, no gap, newest first");

    let (theirs_listed, _) = all_pages(&one, &theirs, 100);
    let their_newest: Vec<String> = their.iter().rev().cloned().collect();
    assert_eq!(theirs_listed, their_newest);

    let gone = &made[7];
    let deleted = call(
        &two,
        "DELETE",
        &format!("/api/v1/links/{gone}"),
        None,
        Some(&mine),
    );
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let (listed, _) = all_pages(&one, &mine, 100);
    assert!(!listed.contains(gone));
    assert_eq!(listed.len(), 45 - 1 + meanwhile);
    let unique: HashSet<_> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "no repeats");

    let bad = call(&one, "GET", "/api/v1/links?cursor=xyz", None, Some(&mine));
    assert_eq!(bad.status, 400, "{}", bad.body);
    let anonymous = call(&one, "GET", "/api/v1/links", None, None);
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);

    // One link read as the local store reads it: its owner sees every
    // field and may change it, on either node; a key without `links:read`
    // may not read it (review of 4647e0a: the Redis store's GET was a
    // redirect lookup that skipped the scope check and showed no options).
    let link = format!("/api/v1/links/{}", made[0]);
    for node in [&one, &two] {
        let read = call(node, "GET", &link, None, Some(&mine));
        assert_eq!(read.status, 200, "{}", read.body);
        let json = read.json();
        assert_eq!(json["url"], "https://example.com/mine/0", "{}", read.body);
        assert!(json["createdAt"].is_string(), "{}", read.body);
        let other = call(node, "GET", &link, None, Some(&stats_only));
        assert_eq!(other.status, 403, "{}", other.body);
    }
    let patched = call(
        &two,
        "PATCH",
        &link,
        Some(r#"{"title":"mine"}"#),
        Some(&mine),
    );
    assert_eq!(patched.status, 200, "{}", patched.body);
    let stolen = call(
        &one,
        "PATCH",
        &link,
        Some(r#"{"title":"x"}"#),
        Some(&theirs),
    );
    assert_eq!(stolen.status, 403, "{}", stolen.body);
}

/// A listing after many deletes is served in bounded steps: at most 1,000
/// dead entries are dropped per request, so the first page after 1,100
/// deletes of the newest links is empty but carries a cursor, and paging
/// on reaches every live link (review of f02450a: one listing walked the
/// whole backlog on its core).
pub fn a_listing_after_many_deletes_is_served_in_bounded_steps(bin: &Path) {
    let dir = tmp();
    let mine = key(bin, dir.path(), "many", "links:write,links:read");
    // 1,200 links in a moment: more than the default per-key rate.
    let server = Server::start(bin, dir.path(), &["--rate-create-key", "off"]);
    let bulk = |from: usize| {
        let items: Vec<String> = (from..from + 100)
            .map(|i| format!(r#"{{"url":"https://example.com/many/{i}"}}"#))
            .collect();
        let body = format!(r#"{{"links":[{}]}}"#, items.join(","));
        let made = call(
            &server,
            "POST",
            "/api/v1/links/bulk",
            Some(&body),
            Some(&mine),
        );
        assert_eq!(made.status, 200, "{}", made.body);
        made.json()["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let code = r["link"]["code"].as_str();
                code.unwrap_or_else(|| panic!("{r}")).to_owned()
            })
            .collect::<Vec<String>>()
    };
    // The oldest 100 stay; the newest 1,100 are deleted.
    let mut kept = bulk(0);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let doomed: Vec<String> = (1..12).flat_map(|b| bulk(b * 100)).collect();
    for code in &doomed {
        let gone = call(
            &server,
            "DELETE",
            &format!("/api/v1/links/{code}"),
            None,
            Some(&mine),
        );
        assert_eq!(gone.status, 204, "{}", gone.body);
    }
    let (first_page, cursor) = page(&server, &mine, "limit=20");
    assert!(
        first_page.is_empty(),
        "the first page stops at its pruning budget before any live link: {first_page:?}"
    );
    let mut listed = first_page;
    let mut cursor = Some(cursor.expect("a cursor after a step of pruning"));
    while let Some(c) = cursor {
        let (next, after) = page(&server, &mine, &format!("limit=20&cursor={c}"));
        listed.extend(next);
        cursor = after;
    }
    kept.sort();
    listed.sort();
    assert_eq!(listed, kept, "every live link, and only those");
}
