//! Hostile input, end to end: cache poisoning, rate-limit evasion, the admin
//! routes, malformed and oversized requests. Every attack must end in a 4xx
//! (or be ignored), leave the database and what other clients receive
//! unchanged, and leave the service serving.
//!
//! In process on SQLite, plus one test over a real socket (what hyper refuses
//! before the router) and one on a real Redis (`brisk-testkit`).

mod common;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderValue, Method, Request, header};
use brisk_testkit::require;
use common::{Client, Reply, config};
use serde_json::json;

const ADMIN: &str = "admin-token-for-tests-0123456789";

struct Service {
    app: blueprint::App,
    client: Client,
    db: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn service_with(extra: &[(&str, &str)]) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("blueprints.sqlite3");
    let path = db.to_str().unwrap().to_owned();
    let mut vars = vec![("SQLITE_PATH", path.as_str()), ("DEPLOY_DURATION", "0s"), ("ADMIN_TOKEN", ADMIN)];
    vars.extend_from_slice(extra);
    let app = blueprint::App::start(config(&vars)).await.expect("the service starts");
    let client = Client { router: app.router() };
    Service { app, client, db, _dir: dir }
}

async fn service() -> Service {
    service_with(&[]).await
}

/// What the database holds, read from the file itself (not through the
/// service or its cache): per table, the row count and the largest id, plus
/// the sum of blueprint versions and the latest project update, so an
/// edited row shows too.
#[derive(Debug, PartialEq, Eq)]
struct Rows(Vec<(String, i64, i64)>);

impl Service {
    fn token(&self, user: i64) -> String {
        self.app.token_of(user).expect("a seeded user")
    }

    /// A client whose requests come from `peer`.
    fn from(&self, peer: SocketAddr) -> Client {
        Client { router: self.app.router().layer(MockConnectInfo(peer)) }
    }

    fn rows(&self) -> Rows {
        let db = deadpool_sqlite::rusqlite::Connection::open_with_flags(
            &self.db,
            deadpool_sqlite::rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("the database file opens");
        let one = |sql: &str| -> i64 { db.query_row(sql, [], |row| row.get(0)).expect(sql) };
        let mut rows = Vec::new();
        for table in ["users", "blueprints", "projects", "deploys"] {
            rows.push((
                table.to_owned(),
                one(&format!("SELECT COUNT(*) FROM {table}")),
                one(&format!("SELECT COALESCE(MAX(id), 0) FROM {table}")),
            ));
        }
        rows.push(("blueprint versions".to_owned(), one("SELECT COALESCE(SUM(version), 0) FROM blueprints"), 0));
        rows.push(("project updates".to_owned(), one("SELECT COALESCE(MAX(updated_at), 0) FROM projects"), 0));
        Rows(rows)
    }

    async fn clear_cache(&self) {
        let reply = self.client.call(Method::DELETE, "/cache/clear", Some(ADMIN), None).await;
        assert_eq!(reply.status, 204, "{}", String::from_utf8_lossy(&reply.body));
    }

    /// The service still answers a plain read.
    async fn assert_serving(&self) {
        let reply = self.client.get("/api/blueprints/1?fields=id").await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.json(), json!({ "id": 1 }));
    }
}

fn get_with(path: &str, headers: &[(&str, &[u8])]) -> Request<Body> {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, HeaderValue::from_bytes(value).expect("a header value"));
    }
    request.body(Body::empty()).unwrap()
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// Every header of a reply, as `name: value` text.
fn header_text(reply: &Reply) -> String {
    reply.headers.iter().map(|(n, v)| format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes()))).collect()
}

/// Cached public reads, one per cached route.
const CACHED: &[&str] = &[
    "/api/blueprints/11",
    "/api/blueprints?limit=3",
    "/api/projects/4",
    "/api/projects?limit=2",
    "/api/projects/stats/summary",
];

// ----- cache poisoning --------------------------------------------------------

/// Headers a cache must not key on and an origin must not act on: host and
/// scheme overrides, URL rewrites, method overrides, a body on a GET.
const UNKEYED: &[(&str, &str)] = &[
    ("host", "evil.example"),
    ("x-forwarded-host", "evil.example"),
    ("x-host", "evil.example"),
    ("x-forwarded-server", "evil.example"),
    ("forwarded", "host=evil.example;proto=http"),
    ("x-forwarded-proto", "http"),
    ("x-forwarded-scheme", "nothttps"),
    ("x-forwarded-port", "1337"),
    ("x-forwarded-prefix", "/evil"),
    ("x-original-url", "/api/blueprints/12?evil"),
    ("x-rewrite-url", "/api/blueprints/12?evil"),
    ("x-http-method-override", "DELETE"),
    ("x-http-method", "DELETE"),
    ("x-method-override", "PURGE"),
    ("x-cache-key", "blueprint:12?fields=*"),
    ("x-cache", "HIT"),
];

#[tokio::test]
async fn unkeyed_headers_cannot_change_the_cached_response_others_get() {
    let s = service().await;
    // What a clean request gets from a cold cache.
    let mut clean = Vec::new();
    for path in CACHED {
        let reply = s.client.get(path).await;
        assert_eq!(reply.status, 200, "{path}");
        clean.push((reply.body, reply.headers.get(header::LINK).cloned()));
    }
    let mut cases = 0;
    for (name, value) in UNKEYED {
        s.clear_cache().await;
        for (path, (clean_body, clean_link)) in CACHED.iter().zip(&clean) {
            let poisoned = s.client.send(get_with(path, &[(name, value.as_bytes())])).await;
            assert_eq!(poisoned.status, 200, "{name}: {value} on {path}: {}", text(&poisoned));
            assert_eq!(poisoned.header("x-cache"), Some("MISS"), "{name} on {path}: the attacker fills the entry");
            let other = s.client.get(path).await;
            assert_eq!(other.header("x-cache"), Some("HIT"), "{name} on {path}");
            for reply in [&poisoned, &other] {
                assert_eq!(&reply.body, clean_body, "{name}: {value} changed {path}");
                assert_eq!(reply.headers.get(header::LINK), clean_link.as_ref(), "{name} changed {path}'s Link");
                let all = format!("{}{}", text(reply), header_text(reply));
                assert!(!all.contains("evil") && !all.contains("1337"), "{name} reflected on {path}: {all}");
            }
            cases += 1;
        }
    }
    // A GET with a body: the body is ignored, the entry is the plain one.
    s.clear_cache().await;
    for (path, (clean_body, _)) in CACHED.iter().zip(&clean) {
        let request = Request::get(*path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"limit":100,"fields":"id"}"#))
            .unwrap();
        assert_eq!(&s.client.send(request).await.body, clean_body, "a GET body changed {path}");
        assert_eq!(&s.client.get(path).await.body, clean_body, "a GET body changed {path} for others");
        cases += 1;
    }
    assert_eq!(cases, (UNKEYED.len() + 1) * CACHED.len());
}

#[tokio::test]
async fn method_override_headers_do_not_change_the_method() {
    let s = service().await;
    let owner = s.client.get("/api/blueprints/13").await.json()["owner_id"].as_i64().unwrap();
    let token = s.token(owner);
    let before = s.rows();
    for name in ["x-http-method-override", "x-http-method", "x-method-override"] {
        for method in ["DELETE", "PUT", "PATCH"] {
            let auth = format!("Bearer {token}");
            let read = s
                .client
                .send(get_with("/api/blueprints/13", &[(name, method.as_bytes()), ("authorization", auth.as_bytes())]))
                .await;
            assert_eq!(read.status, 200, "GET with {name}: {method}");
            let post = Request::post("/api/blueprints/13")
                .header(name, method)
                .header(header::AUTHORIZATION, &auth)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"name":"overridden","category":"api"}"#))
                .unwrap();
            let post = s.client.send(post).await;
            post.problem(405);
        }
    }
    assert_eq!(s.rows(), before, "no override wrote anything");
    assert_eq!(s.client.get("/api/blueprints/13").await.status, 200);
}

#[tokio::test]
async fn responses_to_requests_with_credentials_are_never_shared() {
    let s = service().await;
    let token = format!("Bearer {}", s.token(3));
    let credentials: [(&str, &[u8]); 4] = [
        ("authorization", token.as_bytes()),
        ("authorization", b"Bearer not-a-valid-token"),
        ("cookie", b"session=0123456789abcdef"),
        ("cookie", b"session=a; theme=dark"),
    ];
    let mut cases = 0;
    for (name, value) in credentials {
        for path in CACHED {
            s.clear_cache().await;
            // Asked with credentials first: neither stored for others ...
            let private = s.client.send(get_with(path, &[(name, value)])).await;
            assert_eq!(private.status, 200, "{name} on {path}: {}", text(&private));
            assert_ne!(private.header("x-cache"), Some("HIT"), "{name} on {path}");
            let anonymous = s.client.get(path).await;
            assert_eq!(anonymous.header("x-cache"), Some("MISS"), "{name} on {path}: stored for others");
            // ... nor answered from what others stored,
            assert_eq!(s.client.get(path).await.header("x-cache"), Some("HIT"));
            let again = s.client.send(get_with(path, &[(name, value)])).await;
            assert_ne!(again.header("x-cache"), Some("HIT"), "{name} on {path}: served from the shared entry");
            // ... nor marked storable by a shared cache downstream (RFC 9111 §3.5).
            for reply in [&private, &again] {
                let cache_control = reply.header("cache-control").unwrap_or("").to_ascii_lowercase();
                assert!(
                    !["public", "s-maxage", "must-revalidate"].iter().any(|d| cache_control.contains(d)),
                    "{name} on {path}: Cache-Control: {cache_control}"
                );
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 20);
}

#[tokio::test]
async fn vary_is_honoured_and_stored_responses_carry_no_set_cookie() {
    let s = service().await;
    let negotiated: [(&str, &str); 6] = [
        ("accept", "text/html"),
        ("accept-encoding", "gzip, br"),
        ("accept-language", "fr-CH"),
        ("origin", "https://evil.example"),
        ("user-agent", "curl/8.0"),
        ("accept-charset", "iso-8859-1"),
    ];
    for (name, value) in negotiated {
        for path in CACHED {
            s.clear_cache().await;
            let first = s.client.send(get_with(path, &[(name, value.as_bytes())])).await;
            assert_eq!(first.status, 200, "{name} on {path}");
            let plain = s.client.get(path).await;
            let vary = first.header("vary").unwrap_or("").to_ascii_lowercase();
            let varies = vary.split(',').any(|v| v.trim() == name || v.trim() == "*");
            if varies {
                assert_ne!(plain.header("x-cache"), Some("HIT"), "{path} varies on {name} but was shared");
            } else {
                // The response does not vary on it: sharing it is right, and
                // the representation must then be the same.
                assert_eq!(plain.body, first.body, "{path} changed with {name} without Vary");
                for h in ["content-type", "content-encoding", "content-language"] {
                    assert_eq!(plain.header(h), first.header(h), "{path}: {h} changed with {name} without Vary");
                }
            }
            if first.header("content-encoding").is_some() {
                assert!(vary.contains("accept-encoding"), "{path}: encoded without Vary: Accept-Encoding");
            }
            for reply in [&first, &plain] {
                if reply.header("x-cache") == Some("HIT") {
                    assert!(reply.headers.get(header::SET_COOKIE).is_none(), "{path}: a stored Set-Cookie");
                }
            }
            // A response that sets a cookie is not stored: the next read is not a hit from it.
            if first.headers.get(header::SET_COOKIE).is_some() {
                assert_ne!(plain.header("x-cache"), Some("HIT"), "{path}: a response with Set-Cookie was stored");
            }
        }
    }
}

#[tokio::test]
async fn query_order_and_repetition_neither_split_nor_merge_entries() {
    let s = service().await;
    // Same parameters in any order, spelling or encoding: one entry.
    let same = [
        ["/api/blueprints?limit=5&fields=id", "/api/blueprints?fields=id&limit=5"],
        ["/api/blueprints?fields=name,id&limit=4", "/api/blueprints?limit=4&fields=id,name"],
        ["/api/blueprints?limit=6", "/api/blueprints?%6Cimit=6"],
        ["/api/blueprints?limit=7&fields=id", "/api/blueprints?limit=07&fields=id,id"],
        ["/api/projects/6?fields=id,name", "/api/projects/6?fields=name%2Cid"],
        ["/api/projects?limit=3&fields=id", "/api/projects?fields=id&limit=3&"],
    ];
    for [first, second] in same {
        let a = s.client.get(first).await;
        assert_eq!(a.status, 200, "{first}: {}", text(&a));
        assert_eq!(a.header("x-cache"), Some("MISS"), "{first}");
        let b = s.client.get(second).await;
        assert_eq!(b.header("x-cache"), Some("HIT"), "{second} should share {first}'s entry");
        assert_eq!(a.body, b.body);
    }
    // A page after a cursor, with the parameters in either order.
    let page = s.client.get("/api/blueprints?limit=2&fields=id").await.json();
    let cursor = page["page"]["next_cursor"].as_str().unwrap().to_owned();
    let a = s.client.get(&format!("/api/blueprints?limit=2&cursor={cursor}&fields=id")).await;
    let b = s.client.get(&format!("/api/blueprints?cursor={cursor}&fields=id&limit=2")).await;
    assert_eq!((a.header("x-cache"), b.header("x-cache")), (Some("MISS"), Some("HIT")));
    assert_eq!(a.json()["data"], json!([{ "id": 3 }, { "id": 4 }]));

    // Different parameters: different entries.
    let five = s.client.get("/api/blueprints?limit=5").await;
    assert_eq!(five.json()["data"].as_array().unwrap().len(), 5);
    let four = s.client.get("/api/blueprints?limit=4").await;
    assert_eq!(four.header("x-cache"), Some("MISS"));
    assert_eq!(four.json()["data"].as_array().unwrap().len(), 4);

    // A repeated parameter is ambiguous (a proxy may read the first, the
    // service the last): refused, never answered from either entry, never a 5xx.
    assert_eq!(s.client.get("/api/blueprints?limit=5").await.header("x-cache"), Some("HIT"));
    let repeated = [
        "/api/blueprints?limit=5&limit=50",
        "/api/blueprints?limit=50&limit=5",
        "/api/blueprints?limit=5&limit=5",
        "/api/blueprints?fields=id&fields=name",
        "/api/blueprints?limit=5&%6Cimit=50",
        "/api/blueprints/11?fields=id&fields=owner",
        "/api/projects?limit=2&limit=3",
        "/api/projects/4?fields=id&fields=name",
    ];
    for path in repeated {
        let reply = s.client.get(path).await;
        let body = reply.problem(400);
        assert!(body["detail"].as_str().unwrap().contains("more than once"), "{path}: {body}");
        assert!(reply.header("x-cache").is_none(), "{path}");
    }
    let five_again = s.client.get("/api/blueprints?limit=5").await;
    assert_eq!(five_again.header("x-cache"), Some("HIT"));
    assert_eq!(five_again.body, five.body, "?limit=5's entry is untouched");
}

// ----- rate-limit evasion -----------------------------------------------------

#[tokio::test]
async fn spoofed_forwarding_headers_do_not_change_the_client_key() {
    let s = service_with(&[("API_RATE_LIMIT", "3/15m")]).await;
    let attacker = s.from(SocketAddr::from(([203, 0, 113, 5], 40000)));
    let spoofs: [(&str, &str); 8] = [
        ("x-forwarded-for", "198.51.100.1"),
        ("x-forwarded-for", "198.51.100.2, 10.0.0.1"),
        ("forwarded", "for=198.51.100.3"),
        ("forwarded", "for=\"[2001:db8::1]:80\";proto=https"),
        ("x-real-ip", "198.51.100.4"),
        ("true-client-ip", "198.51.100.5"),
        ("cf-connecting-ip", "198.51.100.6"),
        ("x-client-ip", "198.51.100.7"),
    ];
    let mut admitted = 0;
    for (name, value) in spoofs {
        let reply = attacker.send(get_with("/api/blueprints/1", &[(name, value.as_bytes())])).await;
        if reply.status == 200 {
            admitted += 1;
        } else {
            assert_eq!(reply.status, 429, "{name}: {value}");
        }
    }
    assert_eq!(admitted, 3, "every spoofed request counted against the peer's address");
    // The addresses they named were not charged.
    let named = s.from(SocketAddr::from(([198, 51, 100, 1], 40000)));
    assert_eq!(named.get("/api/blueprints/1").await.status, 200);
}

#[tokio::test]
async fn ipv6_addresses_of_one_slash_64_share_a_limit() {
    let s = service_with(&[("API_RATE_LIMIT", "4/15m")]).await;
    let mut statuses = Vec::new();
    for host in 1..=8_u16 {
        let ip = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x1, 0x2, host, 0xabcd, host, 0x1);
        statuses.push(s.from(SocketAddr::from((ip, 40000))).get("/api/blueprints/1").await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429, 429, 429], "rotating inside one /64");
    let other = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x1, 0x3, 0, 0, 0, 1);
    assert_eq!(s.from(SocketAddr::from((other, 40000))).get("/api/blueprints/1").await.status, 200, "another /64");
    // An IPv4 client seen through an IPv4-mapped IPv6 socket is the same client.
    let v4 = s.from(SocketAddr::from(([192, 0, 2, 44], 40000)));
    let mapped = s.from(SocketAddr::from((std::net::Ipv4Addr::new(192, 0, 2, 44).to_ipv6_mapped(), 40000)));
    for _ in 0..2 {
        assert_eq!(v4.get("/api/blueprints/1").await.status, 200);
        assert_eq!(mapped.get("/api/blueprints/1").await.status, 200);
    }
    assert_eq!(v4.get("/api/blueprints/1").await.status, 429);
    assert_eq!(mapped.get("/api/blueprints/1").await.status, 429);
}

/// Spellings of `path` a router might treat as another route.
fn variants(path: &str) -> Vec<String> {
    let rest = path.strip_prefix("/api/").expect("an /api/ path");
    vec![
        path.to_ascii_uppercase(),
        format!("/API/{rest}"),
        format!("/api/%{:02X}{}", rest.as_bytes()[0], &rest[1..]),
        format!("{path}/"),
        format!("/{path}"),
        format!("/api//{rest}"),
        format!("/api/./{rest}"),
        format!("/api/x/../{rest}"),
        format!("{path}%2F"),
        format!("{path};"),
        format!("{path}%00"),
    ]
}

#[tokio::test]
async fn route_spellings_neither_bypass_the_api_limit_nor_reach_a_route_uncounted() {
    let s = service_with(&[("API_RATE_LIMIT", "3/15m")]).await;
    assert_eq!(variants("/api/deploy")[2], "/api/%64eploy");
    let client = s.from(SocketAddr::from(([203, 0, 113, 9], 40000)));
    for _ in 0..3 {
        assert_eq!(client.get("/api/blueprints/1").await.status, 200);
    }
    for path in variants("/api/blueprints/1") {
        let reply = client.get(&path).await;
        assert!(!reply.status.is_success(), "{path} reached a route past the limit: {}", reply.status);
        assert!(!reply.status.is_server_error(), "{path}: {}", text(&reply));
    }
    // A spelling that does reach the route counts like the plain one.
    let fresh = s.from(SocketAddr::from(([203, 0, 113, 10], 40000)));
    let mut admitted = 0;
    for path in ["/api/blueprints/%31", "/api/blueprints/1?x=1", "/api/blueprints/1", "/api/blueprints/%31"] {
        if fresh.get(path).await.status == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3);
}

#[tokio::test]
async fn route_spellings_do_not_bypass_the_deploy_limit() {
    let s = service_with(&[("API_RATE_LIMIT", "off"), ("DEPLOY_RATE_LIMIT", "2/1h")]).await;
    let token = s.token(12);
    let project = s
        .client
        .call(
            Method::POST,
            "/api/projects",
            Some(&token),
            Some(r#"{"name":"evasion","blueprint_id":3,"region":"eu-west-1"}"#),
        )
        .await;
    assert_eq!(project.status, 201);
    let body = json!({ "project_id": project.json()["id"] }).to_string();
    for _ in 0..2 {
        assert_eq!(s.client.call(Method::POST, "/api/deploy", Some(&token), Some(&body)).await.status, 202);
    }
    assert_eq!(s.client.call(Method::POST, "/api/deploy", Some(&token), Some(&body)).await.status, 429);
    let before = s.rows();
    let mut cases = 0;
    for path in variants("/api/deploy") {
        let reply = s.client.call(Method::POST, &path, Some(&token), Some(&body)).await;
        assert!(!reply.status.is_success() && !reply.status.is_server_error(), "{path}: {}", reply.status);
        cases += 1;
    }
    // The same user with other spellings of their credentials.
    for auth in [format!("bearer {token}"), format!("BEARER  {token} "), format!("Bearer {token}\t")] {
        let request = Request::post("/api/deploy")
            .header(header::AUTHORIZATION, auth.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.clone()))
            .unwrap();
        let status = s.client.send(request).await.status;
        assert!(status == 429 || status == 401, "{auth:?}: {status}");
        cases += 1;
    }
    assert_eq!(s.rows(), before, "no deploy was queued past the limit");
    assert_eq!(cases, 14);
}

// ----- admin routes -----------------------------------------------------------

#[tokio::test]
async fn admin_routes_refuse_missing_and_wrong_tokens() {
    let s = service().await;
    let wrong_same_length = format!("{}X", &ADMIN[..ADMIN.len() - 1]);
    let user = format!("Bearer {}", s.token(1));
    let refusals: Vec<(&str, Vec<u8>)> = vec![
        ("missing", Vec::new()),
        ("empty", b"Bearer ".to_vec()),
        ("wrong, same length", format!("Bearer {wrong_same_length}").into_bytes()),
        ("wrong, shorter", format!("Bearer {}", &ADMIN[..8]).into_bytes()),
        ("wrong, longer", format!("Bearer {ADMIN}0").into_bytes()),
        ("right with a prefix", format!("Bearer x{ADMIN}").into_bytes()),
        ("a user's token", user.into_bytes()),
        ("another scheme", format!("Basic {ADMIN}").into_bytes()),
        ("no scheme", ADMIN.as_bytes().to_vec()),
        ("invalid UTF-8", [b"Bearer ".as_slice(), ADMIN.as_bytes(), b"\xff"].concat()),
        ("in a cookie", Vec::new()),
    ];
    // An entry the refused requests must leave in place.
    s.client.get("/api/blueprints/3").await;
    for (route, method) in [("/cache/clear", Method::DELETE), ("/cache/invalidate?tag=blueprint:3", Method::DELETE)] {
        for (case, value) in &refusals {
            let mut request = Request::builder().method(method.clone()).uri(route);
            if !value.is_empty() {
                request = request.header(header::AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
            }
            if *case == "in a cookie" {
                request = request.header(header::COOKIE, format!("admin_token={ADMIN}"));
            }
            let reply = s.client.send(request.body(Body::empty()).unwrap()).await;
            reply.problem(401);
            assert!(reply.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{case}");
            assert_eq!(s.client.get("/api/blueprints/3").await.header("x-cache"), Some("HIT"), "{case} on {route}");
        }
    }
    let right = s.client.call(Method::DELETE, "/cache/invalidate?tag=blueprint:3", Some(ADMIN), None).await;
    assert_eq!(right.status, 200, "{}", text(&right));
    assert_eq!(s.client.get("/api/blueprints/3").await.header("x-cache"), Some("MISS"));
    assert_eq!(s.client.call(Method::DELETE, "/cache/clear", Some(ADMIN), None).await.status, 204);
    // The admin routes answer only DELETE.
    s.client.call(Method::GET, "/cache/clear", Some(ADMIN), None).await.problem(405);
}

#[tokio::test]
async fn pattern_invalidation_stays_inside_the_response_cache() {
    let s = service().await;
    let refused = [
        "*",
        "**",
        "?*",
        "*blueprint*",
        "rl:*",
        "rl:api:*",
        "rl:deploy:*",
        "{blueprint-api}:*",
        "../*",
        "bus",
        "b*",
        "users*",
        &format!("blueprint:{}", "?".repeat(2000)),
    ];
    for pattern in refused {
        let path = format!("/cache/invalidate?pattern={}", pattern.replace('{', "%7B").replace('}', "%7D"));
        let reply = s.client.call(Method::DELETE, &path, Some(ADMIN), None).await;
        let body = reply.problem(400);
        assert!(body["detail"].as_str().unwrap().contains("pattern"), "{pattern}: {body}");
    }
    for pattern in ["blueprint:*", "blueprint:3?*", "blueprints?*", "project:*", "projects*", "stats:*", "blueprint*"] {
        s.client.get("/api/blueprints/3").await;
        let reply =
            s.client.call(Method::DELETE, &format!("/cache/invalidate?pattern={pattern}"), Some(ADMIN), None).await;
        assert_eq!(reply.status, 200, "{pattern}: {}", text(&reply));
    }
    // The pattern reached the cache: an entry it names is gone.
    s.client.get("/api/blueprints/3").await;
    assert_eq!(s.client.get("/api/blueprints/3").await.header("x-cache"), Some("HIT"));
    s.client.call(Method::DELETE, "/cache/invalidate?pattern=blueprint:3?*", Some(ADMIN), None).await;
    assert_eq!(s.client.get("/api/blueprints/3").await.header("x-cache"), Some("MISS"));
}

/// On a shared Redis, the cache's clear and pattern invalidation remove
/// cache entries only: every client's rate-limit state survives them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_the_cache_on_redis_does_not_reset_rate_limits() {
    let redis = require!(brisk_testkit::redis().await);
    let url = redis.url().to_owned();
    let s = service_with(&[("REDIS_URL", url.as_str()), ("API_RATE_LIMIT", "3/15m")]).await;
    let client = s.from(SocketAddr::from(([203, 0, 113, 77], 40000)));
    for _ in 0..3 {
        assert_eq!(client.get("/api/blueprints/2").await.status, 200);
    }
    assert_eq!(client.get("/api/blueprints/2").await.status, 429);
    let mut conn = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let keys = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            // SCAN, never KEYS; sorted and de-duplicated (SCAN may repeat a key).
            let (mut keys, mut cursor) = (Vec::new(), 0u64);
            loop {
                let (next, batch): (u64, Vec<String>) =
                    redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000).query_async(&mut conn).await.unwrap();
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            keys.sort_unstable();
            keys.dedup();
            keys
        }
    };
    let limits_before: Vec<String> = keys(&mut conn).await.into_iter().filter(|k| k.contains("rl")).collect();
    assert!(!limits_before.is_empty(), "the limiter keeps its state on Redis");
    assert!(keys(&mut conn).await.iter().any(|k| k.starts_with("blueprint-api:blueprint:2")), "a cached entry");

    assert_eq!(s.client.call(Method::DELETE, "/cache/clear", Some(ADMIN), None).await.status, 204);
    // The clean-up runs in the background: wait (bounded) until the cached entry is gone.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while keys(&mut conn).await.iter().any(|k| k.starts_with("blueprint-api:blueprint:2")) {
        assert!(tokio::time::Instant::now() < deadline, "the clear's clean-up did not run");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let limits_after: Vec<String> = keys(&mut conn).await.into_iter().filter(|k| k.contains("rl")).collect();
    assert_eq!(limits_after, limits_before, "clearing the cache removed rate-limit state");
    assert_eq!(client.get("/api/blueprints/2").await.status, 429, "the client's limit survived the clear");
}

// ----- malformed, oversized and injected input --------------------------------

/// A request with a raw body and content type, and the status it must get.
struct Bad {
    case: &'static str,
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
}

fn nested(depth: usize) -> Vec<u8> {
    let mut body = br#"{"name":"deep","category":"api","tags":"#.to_vec();
    body.extend(std::iter::repeat_n(b'[', depth));
    body.extend(std::iter::repeat_n(b']', depth));
    body.push(b'}');
    body
}

fn bad_bodies() -> Vec<Bad> {
    let json = Some("application/json");
    let bad = |case, method: Method, path, content_type, body: &[u8], status| Bad {
        case,
        method,
        path,
        content_type,
        body: body.to_vec(),
        status,
    };
    let huge_string = format!(r#"{{"name":"{}","category":"api"}}"#, "a".repeat(80 * 1024));
    let big_name = format!(r#"{{"name":"{}","category":"api"}}"#, "a".repeat(60 * 1024));
    let many_tags = format!(r#"{{"name":"n","category":"api","tags":[{}"x"]}}"#, "\"x\",".repeat(12_000));
    let huge_array = format!(r#"{{"name":"n","category":"api","tags":[{}0]}}"#, "0,".repeat(40_000));
    let mut cases = vec![
        bad("syntax error", Method::POST, "/api/blueprints", json, br#"{"name":"#, 400),
        bad("empty body", Method::POST, "/api/blueprints", json, b"", 400),
        bad("trailing garbage", Method::POST, "/api/blueprints", json, br#"{"name":"a","category":"api"} x"#, 400),
        bad(
            "two documents",
            Method::POST,
            "/api/blueprints",
            json,
            br#"{"name":"a","category":"api"}{"name":"b"}"#,
            400,
        ),
        bad(
            "byte order mark",
            Method::POST,
            "/api/blueprints",
            json,
            b"\xef\xbb\xbf{\"name\":\"a\",\"category\":\"api\"}",
            400,
        ),
        bad(
            "invalid UTF-8 in a string",
            Method::POST,
            "/api/blueprints",
            json,
            b"{\"name\":\"\xff\xfe\",\"category\":\"api\"}",
            400,
        ),
        bad("NUL in a string", Method::POST, "/api/blueprints", json, br#"{"name":"a\u0000b","category":"api"}"#, 422),
        bad("lone surrogate", Method::POST, "/api/blueprints", json, br#"{"name":"\ud800","category":"api"}"#, 400),
        bad("no content type", Method::POST, "/api/blueprints", None, br#"{"name":"a","category":"api"}"#, 415),
        bad(
            "text/plain",
            Method::POST,
            "/api/blueprints",
            Some("text/plain"),
            br#"{"name":"a","category":"api"}"#,
            415,
        ),
        bad(
            "form",
            Method::POST,
            "/api/blueprints",
            Some("application/x-www-form-urlencoded"),
            b"name=a&category=api",
            415,
        ),
        bad("not an object", Method::POST, "/api/blueprints", json, b"[1,2,3]", 422),
        bad("null", Method::POST, "/api/blueprints", json, b"null", 422),
        bad(
            "duplicate member",
            Method::POST,
            "/api/blueprints",
            json,
            br#"{"name":"a","name":"b","category":"api"}"#,
            422,
        ),
        bad(
            "unknown member",
            Method::POST,
            "/api/blueprints",
            json,
            br#"{"name":"a","category":"api","owner_id":2}"#,
            422,
        ),
        bad("wrong type", Method::POST, "/api/blueprints", json, br#"{"name":1,"category":"api"}"#, 422),
        bad("deep nesting", Method::POST, "/api/blueprints", json, &nested(10_000), 422),
        bad(
            "deep nesting at the top",
            Method::POST,
            "/api/blueprints",
            json,
            &[vec![b'['; 10_000], vec![b']'; 10_000]].concat(),
            422,
        ),
        bad(
            "deep nesting in an unknown member",
            Method::POST,
            "/api/blueprints",
            json,
            &[br#"{"x":"#.as_slice(), &[b'['; 5000], &[b']'; 5000], b"}"].concat(),
            422,
        ),
        bad("string over the body limit", Method::POST, "/api/blueprints", json, huge_string.as_bytes(), 413),
        bad("string under the body limit", Method::POST, "/api/blueprints", json, big_name.as_bytes(), 422),
        bad("12,000 tags", Method::POST, "/api/blueprints", json, many_tags.as_bytes(), 422),
        bad("40,000-element array", Method::POST, "/api/blueprints", json, huge_array.as_bytes(), 413),
        bad(
            "control characters",
            Method::POST,
            "/api/blueprints",
            json,
            br#"{"name":"a\u001b[31m","category":"api"}"#,
            422,
        ),
        bad(
            "huge number",
            Method::POST,
            "/api/projects",
            json,
            br#"{"name":"huge","blueprint_id":1e999,"region":"eu-west-1"}"#,
            400,
        ),
        bad(
            "id past i64",
            Method::POST,
            "/api/projects",
            json,
            br#"{"name":"huge","blueprint_id":99999999999999999999,"region":"eu-west-1"}"#,
            422,
        ),
        bad(
            "negative id",
            Method::POST,
            "/api/projects",
            json,
            br#"{"name":"neg","blueprint_id":-1,"region":"eu-west-1"}"#,
            422,
        ),
        bad(
            "float id",
            Method::POST,
            "/api/projects",
            json,
            br#"{"name":"flt","blueprint_id":1.5,"region":"eu-west-1"}"#,
            422,
        ),
        bad("PUT, syntax error", Method::PUT, "/api/blueprints/1", json, b"{", 400),
        bad("PUT, over the limit", Method::PUT, "/api/blueprints/1", json, huge_string.as_bytes(), 413),
        bad("PATCH, empty object", Method::PATCH, "/api/projects/1", json, b"{}", 422),
        bad("PATCH, deep nesting", Method::PATCH, "/api/projects/1", json, &nested(10_000), 422),
        bad("deploy, wrong type", Method::POST, "/api/deploy", json, br#"{"project_id":"1; DROP TABLE deploys"}"#, 422),
        bad("deploy, deep nesting", Method::POST, "/api/deploy", json, &nested(10_000), 422),
    ];
    // Bodies sent with the right `Content-Type` plus parameters or a `+json` suffix still parse.
    cases.push(bad(
        "JSON with charset, invalid",
        Method::POST,
        "/api/blueprints",
        Some("application/json; charset=utf-8"),
        b"{",
        400,
    ));
    cases
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_4xx_and_write_nothing() {
    let s = service().await;
    // Blueprint 1 and project 1 belong to their owners: write as them, so
    // only the body decides.
    let blueprint_owner = s.client.get("/api/blueprints/1").await.json()["owner_id"].as_i64().unwrap();
    let project_owner = s.client.get("/api/projects/1").await.json()["owner_id"].as_i64().unwrap();
    let before = s.rows();
    let cases = bad_bodies();
    for bad in &cases {
        let owner = if bad.path.starts_with("/api/projects/") { project_owner } else { blueprint_owner };
        let mut request = Request::builder()
            .method(bad.method.clone())
            .uri(bad.path)
            .header(header::AUTHORIZATION, format!("Bearer {}", s.token(owner)));
        if let Some(content_type) = bad.content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let reply = s.client.send(request.body(Body::from(bad.body.clone())).unwrap()).await;
        assert_eq!(reply.status.as_u16(), bad.status, "{}: {}", bad.case, text(&reply));
        reply.problem(bad.status);
    }
    assert_eq!(s.rows(), before, "a refused body wrote something");
    s.assert_serving().await;
    assert_eq!(cases.len(), 35);
}

#[tokio::test]
async fn streamed_bodies_over_the_limit_are_413() {
    let s = service().await;
    let token = s.token(1);
    let before = s.rows();
    // No Content-Length: the limit holds while reading the stream.
    let chunks = (0..200).map(|i| {
        let chunk = if i == 0 { br#"{"name":""#.to_vec() } else { vec![b'a'; 1024] };
        Ok::<_, std::io::Error>(bytes::Bytes::from(chunk))
    });
    let request = Request::post("/api/blueprints")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    s.client.send(request).await.problem(413);
    assert_eq!(s.rows(), before);
    s.assert_serving().await;
}

#[tokio::test]
async fn invalid_utf8_in_headers_is_refused_or_ignored() {
    let s = service().await;
    let token = s.token(1);
    let before = s.rows();
    // Credentials that are not text: 401, never 5xx.
    for value in [
        b"Bearer \xff\xfe".as_slice(),
        b"\xc3\x28 token",
        [b"Bearer ".as_slice(), token.as_bytes(), b"\x80"].concat().as_slice(),
    ] {
        let request = Request::post("/api/blueprints")
            .header(header::AUTHORIZATION, HeaderValue::from_bytes(value).unwrap())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"name":"utf8","category":"api"}"#))
            .unwrap();
        s.client.send(request).await.problem(401);
    }
    // A Content-Type that is not text: 415.
    let request = Request::post("/api/blueprints")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, HeaderValue::from_bytes(b"application/json\xff").unwrap())
        .body(Body::from(r#"{"name":"utf8","category":"api"}"#))
        .unwrap();
    s.client.send(request).await.problem(415);
    // Headers the service does not need are ignored on reads.
    for name in ["x-forwarded-for", "forwarded", "cookie", "accept", "accept-language", "if-none-match", "user-agent"] {
        let reply = s.client.send(get_with("/api/blueprints/1?fields=id", &[(name, b"\xff\xfe\xfd")])).await;
        assert_eq!(reply.status, 200, "{name}: {}", text(&reply));
    }
    assert_eq!(s.rows(), before);
    s.assert_serving().await;
}

#[tokio::test]
async fn huge_paths_and_queries_are_4xx_and_cache_nothing() {
    let s = service().await;
    s.assert_serving().await;
    let stats = |body: serde_json::Value| (body["entries"].as_u64().unwrap(), body["bytes"].as_u64().unwrap());
    let before = stats(s.client.get("/cache/stats").await.json());
    let long = "9".repeat(60_000);
    let cases: Vec<(String, u16)> = vec![
        (format!("/api/blueprints/{long}"), 400),
        (format!("/api/projects/{long}"), 400),
        (format!("/api/blueprints/1{}", "/x".repeat(20_000)), 404),
        (format!("/api/{}", "a".repeat(60_000)), 404),
        (format!("/api/blueprints?cursor={}", "A".repeat(60_000)), 400),
        (format!("/api/blueprints?limit={long}"), 400),
        (format!("/api/blueprints?fields={}", "name,".repeat(10_000) + "nope"), 400),
        (format!("/api/blueprints/1?fields={}", "x".repeat(60_000)), 400),
        (format!("/api/blueprints?{}", "limit=5&".repeat(6_000)), 400),
    ];
    for (path, status) in &cases {
        let reply = s.client.get(path).await;
        let body = reply.problem(*status);
        assert!(reply.body.len() < 4096, "a {}-byte problem for a {}-byte path", reply.body.len(), path.len());
        assert!(body["detail"].as_str().unwrap().len() < 1024);
    }
    // Parameters the service ignores do not reach the cache key: one entry, of bounded size.
    let padded = format!("/api/blueprints/1?fields=id&{}=1", "p".repeat(60_000));
    assert_eq!(s.client.get(&padded).await.status, 200);
    assert_eq!(s.client.get("/api/blueprints/1?fields=id").await.header("x-cache"), Some("HIT"));
    let after = stats(s.client.get("/cache/stats").await.json());
    assert_eq!(after.0, before.0, "no new entry: the padded read shared the plain one's ({before:?} → {after:?})");
    assert!(after.1 < before.1 + 4096, "{before:?} → {after:?}");
    s.assert_serving().await;
}

#[tokio::test]
async fn sql_looking_values_are_refused_and_stored_verbatim() {
    let s = service().await;
    let before = s.rows();
    let injections = [
        "id;DROP TABLE blueprints",
        "id FROM users--",
        "id' OR '1'='1",
        "*",
        "id,(SELECT token_secret FROM users)",
        "id UNION SELECT token_secret FROM users",
        "1=1",
        "id\u{0}name",
    ];
    let secrets: Vec<String> = (1..=24).map(|user| s.token(user).rsplit('_').next().unwrap().to_owned()).collect();
    let enc = |v: &str| v.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
    let mut cases = 0;
    for value in injections {
        for path in ["/api/blueprints", "/api/blueprints/1", "/api/projects", "/api/projects/1"] {
            let reply = s.client.get(&format!("{path}?fields={}", enc(value))).await;
            reply.problem(400);
            assert!(!secrets.iter().any(|secret| text(&reply).contains(secret.as_str())), "{value}: a secret leaked");
            cases += 1;
        }
        for path in ["/api/blueprints", "/api/projects"] {
            s.client.get(&format!("{path}?cursor={}", enc(value))).await.problem(400);
            s.client.get(&format!("{path}?limit={}", enc(&format!("5 {value}")))).await.problem(400);
            cases += 2;
        }
        s.client.get(&format!("/api/blueprints/{}", enc(&format!("1 {value}")))).await.problem(400);
        s.client.get(&format!("/api/projects/{}", enc(&format!("1;{value}")))).await.problem(400);
        cases += 2;
    }
    assert_eq!(cases, injections.len() * 10);
    assert_eq!(s.rows(), before, "nothing written");

    // A valid body that looks like SQL is data: stored and returned verbatim, and the tables stay.
    let name = "Robert'); DROP TABLE blueprints;--";
    let description = "\" OR 1=1; DELETE FROM users WHERE ''='";
    let body = json!({ "name": name, "description": description, "category": "api" }).to_string();
    let created = s.client.call(Method::POST, "/api/blueprints", Some(&s.token(2)), Some(&body)).await;
    assert_eq!(created.status, 201, "{}", text(&created));
    let id = created.json()["id"].as_i64().unwrap();
    let read = s.client.get(&format!("/api/blueprints/{id}")).await.json();
    assert_eq!((read["name"].as_str(), read["description"].as_str()), (Some(name), Some(description)));
    let after = s.rows();
    assert_eq!(after.0[0], before.0[0], "users untouched");
    assert_eq!(after.0[1].1, before.0[1].1 + 1, "exactly one blueprint more");
    assert_eq!(after.0[2..4], before.0[2..4], "projects and deploys untouched");
    s.assert_serving().await;
}

/// Garbage hyper refuses before the router, over a real socket: the
/// connection is answered or closed, and the next client is served.
#[tokio::test]
async fn protocol_garbage_is_refused_and_the_server_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let s = service().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, s.app.router().into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .into_future(),
    );
    async fn exchange(addr: SocketAddr, case: &str, request: &[u8]) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The server may close before reading it all: a write error is an answer too.
        let _ = stream.write_all(request).await;
        let mut response = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut response)).await;
        assert!(read.is_ok(), "{case}: the server neither answered nor closed the connection");
        String::from_utf8_lossy(&response).into_owned()
    }
    let status = |response: &str| -> Option<u16> { response.get(9..12).and_then(|s| s.parse().ok()) };
    let long_uri = format!("GET /api/blueprints?x={} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(70_000));
    let big_header = format!("GET /api/blueprints/1 HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "a".repeat(500_000));
    let many_headers = format!("GET /api/blueprints/1 HTTP/1.1\r\nHost: a\r\n{}\r\n", "X-A: b\r\n".repeat(200));
    let token = s.token(1);
    let declared_too_long = format!(
        "POST /api/blueprints HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{{\"name\":\"a\",\"category\":\"api\"}}"
    );
    // Authenticated, so the body is read.
    let bad_chunk = format!(
        "POST /api/blueprints HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\
         Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
    );
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("declared length over the limit", declared_too_long.into_bytes()),
        ("not HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec()),
        ("bad request line", b"GET\r\n\r\n".to_vec()),
        ("bad method", b"G\xffT / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("URI too long", long_uri.into_bytes()),
        ("header too large", big_header.into_bytes()),
        ("too many headers", many_headers.into_bytes()),
        ("bad header name", b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n".to_vec()),
        ("header without colon", b"GET / HTTP/1.1\r\nHost a\r\n\r\n".to_vec()),
        ("conflicting lengths", b"POST /api/blueprints HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n12345".to_vec()),
        ("bad chunk size", bad_chunk.into_bytes()),
        ("invalid UTF-8 header value", b"GET /api/blueprints/1?fields=id HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: \xff\xfe\r\nConnection: close\r\n\r\n".to_vec()),
    ];
    let before = s.rows();
    let mut answers = Vec::new();
    for (case, request) in &garbage {
        let response = exchange(addr, case, request).await;
        if let Some(code) = status(&response) {
            assert!(
                (400..500).contains(&code) || (*case == "invalid UTF-8 header value" && code == 200),
                "{case}: {response}"
            );
        }
        answers.push(format!("{case}: {}", status(&response).map_or("closed".to_owned(), |c| c.to_string())));
        // The next client is served.
        let next = exchange(
            addr,
            "the next request",
            b"GET /api/blueprints/1?fields=id HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status(&next), Some(200), "after {case}: {next}");
        assert!(next.ends_with("{\"id\":1}"), "after {case}: {next}");
    }
    // What each case got, for the record (`--nocapture`).
    eprintln!("{}", answers.join("\n"));
    assert_eq!(s.rows(), before);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
