use super::*;

fn call(method: Method, path: &str, query: Option<&str>, body: &str) -> Result<ApiCall, Problem> {
    parse_call(method, path, query, body.as_bytes())
}

fn field_of(result: Result<ApiCall, Problem>) -> (u16, String) {
    let problem = result.expect_err("refused");
    let field = problem
        .errors
        .first()
        .map(|e| e.field.clone())
        .unwrap_or_default();
    (problem.status, field)
}

#[test]
fn a_plain_creation_is_a_plain_create() {
    let Ok(ApiCall::Create(link)) = call(
        Method::Post,
        "/api/v1/links",
        None,
        r#"{"url":"https://e.com/"}"#,
    ) else {
        panic!()
    };
    assert!(link.is_plain());
    assert_eq!(link.url, "https://e.com/");
    let Ok(ApiCall::Create(link)) = call(
        Method::Post,
        "/api/v1/links",
        None,
        r#"{"url":"https://e.com/","slug":"my-link","maxClicks":5,"redirectStatus":308,
            "expiresAt":"2030-01-01T00:00:00Z","title":"t","expiredUrl":"https://x.com/"}"#,
    ) else {
        panic!()
    };
    assert!(!link.is_plain());
    assert_eq!(link.alias.as_deref(), Some("my-link"));
    assert_eq!(link.expires_at_ms, Some(1_893_456_000_000));
    assert_eq!(
        (link.max_clicks, link.redirect_status),
        (Some(5), Some(308))
    );
}

#[test]
fn invalid_bodies_name_the_field() {
    let post = |body| field_of(call(Method::Post, "/api/v1/links", None, body));
    assert_eq!(
        post(r#"{"url":"https://e.com/","colour":1}"#),
        (400, "colour".into())
    );
    assert_eq!(
        post(r#"{"url":"https://e.com/","maxClicks":"x"}"#),
        (400, "maxClicks".into())
    );
    assert_eq!(post(r#"{"slug":"abc"}"#), (400, "url".into()));
    assert_eq!(
        post(r#"{"url":"https://e.com/","slug":"a b"}"#),
        (400, "slug".into())
    );
    assert_eq!(
        post(r#"{"url":"https://e.com/","slug":"healthz"}"#),
        (400, "slug".into())
    );
    assert_eq!(
        post(r#"{"url":"https://e.com/","redirectStatus":303}"#),
        (400, "redirectStatus".into())
    );
    assert_eq!(
        post(r#"{"url":"https://e.com/","maxClicks":0}"#),
        (400, "maxClicks".into())
    );
    assert_eq!(
        post(r#"{"url":"https://e.com/","expiresAt":"tomorrow"}"#),
        (400, "expiresAt".into())
    );
    assert_eq!(post(r#"{"url":"#), (400, "body".into()));
    assert_eq!(post(r#"{"url":"https://e.com/"} x"#), (400, "body".into()));
    assert_eq!(post(""), (400, "body".into()));
    assert_eq!(post("[1]"), (400, "body".into()));
    // Several faults: each named.
    let problem = call(
        Method::Post,
        "/api/v1/links",
        None,
        r#"{"url":"","maxClicks":0,"slug":"!"}"#,
    )
    .unwrap_err();
    let fields: Vec<_> = problem.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["url", "slug", "maxClicks"]);
    let json: serde_json::Value = serde_json::from_slice(&problem.body()).unwrap();
    assert_eq!(json["status"], 400);
    assert_eq!(json["type"], problem::INVALID_REQUEST);
    assert_eq!(json["errors"][1]["field"], "slug");
}

#[test]
fn bulk_items_are_checked_one_by_one() {
    let Ok(ApiCall::Bulk(items)) = call(
        Method::Post,
        "/api/v1/links/bulk",
        None,
        r#"{"links":[{"url":"https://a.com/"},{"url":"https://b.com/","nope":1},{"url":"x","maxClicks":-1}]}"#,
    ) else {
        panic!()
    };
    assert!(items[0].is_ok());
    assert_eq!(
        items[1].as_ref().unwrap_err().errors[0].field,
        "links[1].nope"
    );
    assert_eq!(
        items[2].as_ref().unwrap_err().errors[0].field,
        "links[2].maxClicks"
    );
    let many = format!(
        r#"{{"links":[{}]}}"#,
        vec![r#"{"url":"https://a.com/"}"#; 101].join(",")
    );
    assert_eq!(
        field_of(call(Method::Post, "/api/v1/links/bulk", None, &many)),
        (400, "links".into())
    );
}

#[test]
fn a_patch_keeps_clears_or_sets_each_field() {
    let Ok(ApiCall::Update { code, patch }) = call(
        Method::Patch,
        "/api/v1/links/abc",
        None,
        r#"{"title":null,"maxClicks":3,"disabled":true}"#,
    ) else {
        panic!()
    };
    assert_eq!(code, "abc");
    assert_eq!(patch.title, Patch::Clear);
    assert_eq!(patch.max_clicks, Patch::Set(3));
    assert_eq!(patch.expires_at_ms, Patch::Keep);
    assert_eq!(patch.disabled, Some(true));
    let patch_field = |body| field_of(call(Method::Patch, "/api/v1/links/abc", None, body));
    assert_eq!(patch_field(r#"{"url":null}"#), (400, "url".into()));
    assert_eq!(
        patch_field(r#"{"disabled":null}"#),
        (400, "disabled".into())
    );
    assert_eq!(patch_field("{}"), (400, "body".into()));
}

#[test]
fn queries_are_checked() {
    assert_eq!(
        call(Method::Get, "/api/v1/links", Some("limit=5&cursor=x"), ""),
        Ok(ApiCall::List {
            cursor: Some("x".into()),
            limit: 5
        })
    );
    let get = |q| field_of(call(Method::Get, "/api/v1/links", Some(q), ""));
    assert_eq!(get("limit=0"), (400, "limit".into()));
    assert_eq!(get("limit=101"), (400, "limit".into()));
    assert_eq!(get("page=2"), (400, "page".into()));
    assert_eq!(get("limit=1&limit=2"), (400, "limit".into()));
    let stats = |q| call(Method::Get, "/api/v1/links/abc/stats", Some(q), "");
    assert!(matches!(
        stats("granularity=hour&from=2026-01-01T00:00:00Z"),
        Ok(ApiCall::Stats {
            granularity: Granularity::Hour,
            from_ms: Some(_),
            to_ms: None,
            ..
        })
    ));
    assert_eq!(
        field_of(stats("granularity=week")),
        (400, "granularity".into())
    );
}

#[test]
fn wrong_methods_and_paths() {
    let p = call(Method::Delete, "/api/v1/links", None, "").unwrap_err();
    assert_eq!(p.status, 405);
    assert!(p
        .headers
        .iter()
        .any(|(n, v)| *n == "Allow" && v.contains("POST")));
    assert_eq!(
        call(Method::Get, "/api/v2/links", None, "")
            .unwrap_err()
            .status,
        404
    );
    assert_eq!(
        call(Method::Get, "/api/v1/links/a.b", None, "")
            .unwrap_err()
            .status,
        404
    );
    assert_eq!(
        call(Method::Get, "/api/v1/links/", None, "")
            .unwrap_err()
            .status,
        404
    );
    assert_eq!(
        field_of(call(Method::Get, "/api/v1/links/abc", None, "x")),
        (400, "body".into())
    );
    assert_eq!(
        call(Method::Head, "/api/v1/openapi.json", None, ""),
        Ok(ApiCall::OpenApi)
    );
}

/// A request that reaches each route with valid input.
fn sample(method: &str, template: &str) -> (Method, String, &'static str) {
    let path = template.replace("{code}", "abc");
    let (m, body) = match method {
        "get" => (Method::Get, ""),
        "delete" => (Method::Delete, ""),
        "patch" => (Method::Patch, r#"{"title":"x"}"#),
        "post" if template.ends_with("bulk") => {
            (Method::Post, r#"{"links":[{"url":"https://a.com/"}]}"#)
        }
        "post" => (Method::Post, r#"{"url":"https://a.com/"}"#),
        other => panic!("{other}"),
    };
    (m, path, body)
}

#[test]
fn the_openapi_document_is_valid_and_lists_exactly_the_routes() {
    let spec = oas3::from_json(OPENAPI).expect("a valid OpenAPI 3.1 document");
    assert!(spec.openapi.starts_with("3.1"));
    let mut listed = Vec::new();
    for (path, item) in spec.paths.iter().flatten() {
        for (method, op) in item.methods() {
            listed.push((method.as_str().to_ascii_lowercase(), path.clone()));
            assert!(op.responses.is_some(), "{method} {path} has responses");
        }
    }
    listed.sort();
    let mut routes: Vec<_> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    routes.sort();
    assert_eq!(
        listed, routes,
        "the document lists exactly the routes served"
    );
    // Every listed route answers (not 404 or 405) ...
    for (method, template) in ROUTES {
        let (m, path, body) = sample(method, template);
        assert!(call(m, &path, None, body).is_ok(), "{method} {template}");
    }
    // ... and nothing else under /api/v1 does.
    for (m, path) in [
        (Method::Other, "/api/v1/links"),
        (Method::Get, "/api/v1/links/bulk/x"),
        (Method::Delete, "/api/v1/openapi.json"),
        (Method::Get, "/api/v1/keys"),
        (Method::Get, "/api/v1"),
    ] {
        let status = call(m, path, None, "").unwrap_err().status;
        assert!(matches!(status, 404 | 405), "{path}");
    }
}

// ----- engineer MEASURE: per-link query forwarding (issue 24) -----

#[test]
fn forward_query_is_a_link_option_set_cleared_and_shown() {
    let create = |body: &str| match call(Method::Post, "/api/v1/links", None, body) {
        Ok(ApiCall::Create(link)) => link,
        other => panic!("{other:?}"),
    };
    let off = create(r#"{"url":"https://e.com/","forwardQuery":false}"#);
    assert_eq!(off.forward_query, Some(false));
    assert!(!off.is_plain(), "an option: not a plain SHORTEN");
    let on = create(r#"{"url":"https://e.com/","forwardQuery":true}"#);
    assert_eq!(on.forward_query, Some(true));
    assert_eq!(create(r#"{"url":"https://e.com/"}"#).forward_query, None);
    assert_eq!(
        field_of(call(
            Method::Post,
            "/api/v1/links",
            None,
            r#"{"url":"https://e.com/","forwardQuery":"yes"}"#
        )),
        (400, "forwardQuery".into())
    );
    let patch = |body: &str| match call(Method::Patch, "/api/v1/links/abc", None, body) {
        Ok(ApiCall::Update { patch, .. }) => patch.forward_query,
        other => panic!("{other:?}"),
    };
    assert_eq!(patch(r#"{"forwardQuery":false}"#), Patch::Set(false));
    assert_eq!(patch(r#"{"forwardQuery":null}"#), Patch::Clear);
    assert_eq!(patch(r#"{"title":"t"}"#), Patch::Keep);
    let mut view = LinkView::plain("abc", "http://s/", "https://e.com/");
    view.forward_query = Some(false);
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(json["forwardQuery"], serde_json::Value::Bool(false));
    let json = serde_json::to_value(LinkView::plain("abc", "http://s/", "https://e.com/")).unwrap();
    assert!(json["forwardQuery"].is_null(), "present, null by default");
}
