//! The whole HTTP surface, in process, on the embedded SQLite database.

mod common;

use std::collections::HashSet;

use axum::http::Method;
use common::{Client, Reply, config, wait_for_deploy};
use serde_json::{Value, json};

struct Service {
    app: blueprint::App,
    client: Client,
    _dir: tempfile::TempDir,
}

async fn service() -> Service {
    service_with(&[]).await
}

async fn service_with(extra: &[(&str, &str)]) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blueprints.sqlite3");
    let path = path.to_str().unwrap().to_owned();
    let mut vars = vec![("SQLITE_PATH", path.as_str()), ("DEPLOY_DURATION", "0s")];
    vars.extend_from_slice(extra);
    let app = blueprint::App::start(config(&vars)).await.expect("the service starts");
    let client = Client { router: app.router() };
    Service { app, client, _dir: dir }
}

impl Service {
    fn token(&self, user: i64) -> String {
        self.app.token_of(user).expect("a seeded user")
    }

    async fn create_blueprint(&self, user: i64, name: &str) -> Value {
        let body = json!({ "name": name, "description": "made by a test", "category": "api", "tags": ["rust"] });
        let reply =
            self.client.call(Method::POST, "/api/blueprints", Some(&self.token(user)), Some(&body.to_string())).await;
        assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
        reply.json()
    }

    async fn create_project(&self, user: i64, blueprint: i64, name: &str) -> Value {
        let body = json!({ "name": name, "blueprint_id": blueprint, "region": "eu-west-1" });
        let reply =
            self.client.call(Method::POST, "/api/projects", Some(&self.token(user)), Some(&body.to_string())).await;
        assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
        reply.json()
    }
}

#[tokio::test]
async fn health_probes_answer_and_are_never_cached() {
    let s = service().await;
    let live = s.client.get("/health/live").await;
    assert_eq!(live.status, 200);
    assert_eq!(live.json(), json!({ "status": "ok" }));
    assert_eq!(live.header("cache-control"), Some("no-store"));
    let ready = s.client.get("/health/ready").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.header("cache-control"), Some("no-store"));
    let body = ready.json();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"]["status"], "up");
    assert_eq!(body["checks"]["database"]["engine"], "sqlite");
    assert!(body["checks"]["database"]["pool"]["max_size"].as_u64().unwrap() >= 1);
    assert!(body["checks"].get("redis").is_none(), "no Redis configured, none checked");
}

#[tokio::test]
async fn readiness_is_503_with_details_when_redis_is_down() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let s = service_with(&[("REDIS_URL", "redis://127.0.0.1:1")]).await;
    let ready = s.client.get("/health/ready").await;
    assert_eq!(ready.status, 503);
    let body = ready.json();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["database"]["status"], "up");
    assert_eq!(body["checks"]["redis"]["status"], "down");
    assert!(body["checks"]["redis"]["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    // Liveness does not depend on Redis.
    assert_eq!(s.client.get("/health/live").await.status, 200);
}

#[tokio::test]
async fn the_seed_has_users_blueprints_and_projects() {
    let s = service().await;
    let stats = s.client.get("/api/projects/stats/summary").await;
    assert_eq!(stats.status, 200);
    let stats = stats.json();
    assert_eq!(stats["blueprints_total"], 1200);
    assert_eq!(stats["projects_total"], 300);
    let by_status = stats["projects_by_status"].as_object().unwrap();
    assert_eq!(by_status.values().map(|v| v.as_i64().unwrap()).sum::<i64>(), 300);
    assert!(stats["deploys_by_status"]["succeeded"].as_i64().unwrap() > 0);
    assert!(s.app.demo_token().starts_with("bp_1_"));
    assert!(s.app.token_of(24).is_some() && s.app.token_of(25).is_none());
}

#[tokio::test]
async fn blueprint_pages_follow_cursors_through_every_row_exactly_once() {
    let s = service().await;
    let first = s.client.get("/api/blueprints").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-type"), Some("application/json"));
    let body = first.json();
    assert_eq!(body["data"].as_array().unwrap().len(), 20, "default limit");
    assert_eq!(body["page"]["limit"], 20);
    let owner = &body["data"][0]["owner"];
    assert!(owner["id"].is_i64() && owner["name"].is_string(), "owners are embedded: {owner}");

    let mut seen = HashSet::new();
    let mut path = "/api/blueprints?limit=100".to_owned();
    let mut pages = 0;
    loop {
        let reply = s.client.get(&path).await;
        assert_eq!(reply.status, 200);
        let body = reply.json();
        pages += 1;
        for item in body["data"].as_array().unwrap() {
            assert!(seen.insert(item["id"].as_i64().unwrap()), "no row twice");
        }
        match body["page"]["next_cursor"].as_str() {
            Some(cursor) => {
                let link = reply.header("link").expect("a Link header while more rows follow");
                assert_eq!(link, format!("</api/blueprints?limit=100&cursor={cursor}>; rel=\"next\""));
                path = format!("/api/blueprints?limit=100&cursor={cursor}");
            }
            None => {
                assert!(reply.header("link").is_none(), "no Link on the last page");
                break;
            }
        }
    }
    assert_eq!(pages, 12);
    assert_eq!(seen.len(), 1200);
}

#[tokio::test]
async fn bad_list_parameters_are_400_problems() {
    let s = service().await;
    let page = s.client.get("/api/blueprints?limit=5").await.json();
    let cursor = page["page"]["next_cursor"].as_str().unwrap().to_owned();
    let mut tampered = cursor.clone().into_bytes();
    tampered[3] = if tampered[3] == b'B' { b'C' } else { b'B' };
    let tampered = String::from_utf8(tampered).unwrap();
    let projects = s.client.get("/api/projects?limit=5").await.json();
    let project_cursor = projects["page"]["next_cursor"].as_str().unwrap().to_owned();
    for path in [
        "/api/blueprints?cursor=garbage".to_owned(),
        "/api/blueprints?cursor=".to_owned(),
        format!("/api/blueprints?cursor={tampered}"),
        format!("/api/blueprints?cursor={project_cursor}"),
        "/api/blueprints?limit=0".to_owned(),
        "/api/blueprints?limit=101".to_owned(),
        "/api/blueprints?limit=many".to_owned(),
        "/api/blueprints?fields=id,password".to_owned(),
        "/api/blueprints?fields=".to_owned(),
        "/api/projects?fields=owner".to_owned(),
        "/api/blueprints/1?fields=secret".to_owned(),
        "/api/blueprints?limit=%zz".to_owned(),
    ] {
        s.client.get(&path).await.problem(400);
    }
    let unknown = s.client.get("/api/blueprints?fields=id,password").await.problem(400);
    assert!(unknown["errors"][0]["detail"].as_str().unwrap().contains("password"), "{unknown}");
}

#[tokio::test]
async fn fields_select_members_and_skip_the_owner_query_when_unasked() {
    let s = service().await;
    let page = s.client.get("/api/blueprints?limit=3&fields=id,name").await;
    assert_eq!(page.status, 200);
    let body = page.json();
    for item in body["data"].as_array().unwrap() {
        let keys: Vec<_> = item.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["id", "name"]);
    }
    let cursor = body["page"]["next_cursor"].as_str().unwrap();
    assert_eq!(
        page.header("link").unwrap(),
        format!("</api/blueprints?limit=3&cursor={cursor}&fields=id,name>; rel=\"next\"")
    );
    let one = s.client.get("/api/blueprints/7?fields=owner,id").await.json();
    assert_eq!(one.as_object().unwrap().len(), 2);
    assert!(one["owner"]["name"].is_string());
    let project = s.client.get("/api/projects/3?fields=status").await.json();
    assert_eq!(project.as_object().unwrap().keys().collect::<Vec<_>>(), ["status"]);
}

#[tokio::test]
async fn single_reads_answer_200_404_or_400() {
    let s = service().await;
    let reply = s.client.get("/api/blueprints/42").await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["id"], 42);
    for key in ["name", "description", "category", "tags", "version", "owner_id", "owner", "created_at", "updated_at"] {
        assert!(body.get(key).is_some(), "{key} missing from {body}");
    }
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
    s.client.get("/api/blueprints/999999").await.problem(404);
    s.client.get("/api/projects/999999").await.problem(404);
    for bad in ["abc", "0", "-1", "01", "1.5", "99999999999999999999"] {
        s.client.get(&format!("/api/blueprints/{bad}")).await.problem(400);
        s.client.get(&format!("/api/projects/{bad}")).await.problem(400);
    }
    assert_eq!(s.client.get("/api/projects/1").await.status, 200);
}

#[tokio::test]
async fn writes_need_a_valid_bearer_token() {
    let s = service().await;
    let body = r#"{"name":"x","category":"api"}"#;
    let missing = s.client.call(Method::POST, "/api/blueprints", None, Some(body)).await;
    missing.problem(401);
    assert_eq!(missing.header("www-authenticate"), Some("Bearer realm=\"blueprint-api\""));
    let forged = format!("{}0", s.app.demo_token());
    let wrong = s.client.call(Method::POST, "/api/blueprints", Some(&forged), Some(body)).await;
    wrong.problem(401);
    assert_eq!(wrong.header("www-authenticate"), Some("Bearer realm=\"blueprint-api\", error=\"invalid_token\""));
    for path in ["/api/projects", "/api/deploy"] {
        s.client.call(Method::POST, path, None, Some("{}")).await.problem(401);
    }
    s.client.call(Method::PUT, "/api/blueprints/1", None, Some(body)).await.problem(401);
    s.client.call(Method::DELETE, "/api/blueprints/1", None, None).await.problem(401);
    s.client.call(Method::PATCH, "/api/projects/1", None, Some(r#"{"status":"paused"}"#)).await.problem(401);
    s.client.get("/api/deploy/1").await.problem(401);
    // A scheme other than Bearer.
    let basic = s
        .client
        .send(
            axum::http::Request::post("/api/blueprints")
                .header("authorization", "Basic dXNlcjpwYXNz")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .unwrap(),
        )
        .await;
    basic.problem(401);
    // Nothing was written by any of these.
    assert_eq!(s.client.get("/api/projects/stats/summary").await.json()["blueprints_total"], 1200);
}

#[tokio::test]
async fn malformed_bodies_are_4xx_problems_and_write_nothing() {
    let s = service().await;
    let token = s.token(1);
    let post = |json: &'static str| s.client.call(Method::POST, "/api/blueprints", Some(&token), Some(json));
    post(r#"{"name": "x", "category": "api""#).await.problem(400);
    post("not json").await.problem(400);
    post(r#"{"name":"x","category":"api","owner_id":2}"#).await.problem(422);
    post(r#"{"name":"x"}"#).await.problem(422);
    post(r#"{"name":7,"category":"api"}"#).await.problem(422);
    let invalid = post(r#"{"name":"","category":"games","tags":["Not A Tag"]}"#).await.problem(422);
    let pointers: Vec<&str> =
        invalid["errors"].as_array().unwrap().iter().map(|e| e["pointer"].as_str().unwrap()).collect();
    assert_eq!(pointers, ["/name", "/category", "/tags/0"]);

    let no_type = s
        .client
        .send(
            axum::http::Request::post("/api/blueprints")
                .header("authorization", format!("Bearer {token}"))
                .body(axum::body::Body::from(r#"{"name":"x","category":"api"}"#))
                .unwrap(),
        )
        .await;
    no_type.problem(415);

    let huge = format!(r#"{{"name":"x","category":"api","description":"{}"}}"#, "a".repeat(70 * 1024));
    s.client.call(Method::POST, "/api/blueprints", Some(&token), Some(&huge)).await.problem(413);

    let projects = |json: &'static str| s.client.call(Method::POST, "/api/projects", Some(&token), Some(json));
    projects(r#"{"name":"Bad Name","blueprint_id":1,"region":"mars-1"}"#).await.problem(422);
    let missing = projects(r#"{"name":"ghost-town","blueprint_id":987654,"region":"eu-west-1"}"#).await.problem(422);
    assert_eq!(missing["errors"][0]["pointer"], "/blueprint_id");

    let stats = s.client.get("/api/projects/stats/summary").await.json();
    assert_eq!(stats["blueprints_total"], 1200);
    assert_eq!(stats["projects_total"], 300);
}

#[tokio::test]
async fn blueprints_are_created_replaced_and_deleted_by_their_owner_only() {
    let s = service().await;
    let created = s.create_blueprint(1, "Test API").await;
    let id = created["id"].as_i64().unwrap();
    assert!(id > 1200);
    assert_eq!(created["version"], 1);
    assert_eq!(created["owner"], json!({ "id": 1, "name": created["owner"]["name"] }));
    let fetched = s.client.get(&format!("/api/blueprints/{id}")).await;
    assert_eq!(fetched.json()["name"], "Test API");

    let replacement = r#"{"name":"Test API v2","category":"worker","tags":["tokio"]}"#;
    let path = format!("/api/blueprints/{id}");
    s.client.call(Method::PUT, &path, Some(&s.token(2)), Some(replacement)).await.problem(403);
    s.client.call(Method::PUT, "/api/blueprints/999999", Some(&s.token(1)), Some(replacement)).await.problem(404);
    // A refused replacement changes nothing.
    s.client.call(Method::PUT, &path, Some(&s.token(1)), Some(r#"{"name":"","category":"api"}"#)).await.problem(422);
    assert_eq!(s.client.get(&path).await.json()["version"], 1);

    let replaced = s.client.call(Method::PUT, &path, Some(&s.token(1)), Some(replacement)).await;
    assert_eq!(replaced.status, 200);
    let replaced = replaced.json();
    assert_eq!(replaced["version"], 2);
    assert_eq!(replaced["category"], "worker");
    assert_eq!(replaced["description"], "", "PUT replaces the whole resource");
    assert_eq!(s.client.get(&path).await.json()["name"], "Test API v2");

    s.client.call(Method::DELETE, &path, Some(&s.token(2)), None).await.problem(403);
    let deleted = s.client.call(Method::DELETE, &path, Some(&s.token(1)), None).await;
    assert_eq!(deleted.status, 204);
    assert!(deleted.body.is_empty());
    s.client.get(&path).await.problem(404);
    s.client.call(Method::DELETE, &path, Some(&s.token(1)), None).await.problem(404);
}

#[tokio::test]
async fn a_blueprint_in_use_cannot_be_deleted() {
    let s = service().await;
    let blueprint = s.create_blueprint(3, "Busy API").await;
    let id = blueprint["id"].as_i64().unwrap();
    s.create_project(3, id, "busy-project").await;
    let refused = s.client.call(Method::DELETE, &format!("/api/blueprints/{id}"), Some(&s.token(3)), None).await;
    let problem = refused.problem(409);
    assert!(problem["detail"].as_str().unwrap().contains("used by 1 project"), "{problem}");
    assert_eq!(s.client.get(&format!("/api/blueprints/{id}")).await.status, 200);
}

#[tokio::test]
async fn projects_are_created_and_patched_by_their_owner_only() {
    let s = service().await;
    let created = s.create_project(2, 10, "atlas-test").await;
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["status"], "active");
    assert_eq!(created["blueprint_id"], 10);
    let path = format!("/api/projects/{id}");
    let reply = s
        .client
        .call(
            Method::POST,
            "/api/projects",
            Some(&s.token(2)),
            Some(r#"{"name":"atlas-two","blueprint_id":10,"region":"eu-west-1"}"#),
        )
        .await;
    assert_eq!(reply.header("location"), Some(format!("/api/projects/{}", id + 1).as_str()));

    s.client.call(Method::PATCH, &path, Some(&s.token(3)), Some(r#"{"status":"paused"}"#)).await.problem(403);
    s.client.call(Method::PATCH, &path, Some(&s.token(2)), Some("{}")).await.problem(422);
    s.client.call(Method::PATCH, &path, Some(&s.token(2)), Some(r#"{"status":"sleeping"}"#)).await.problem(422);
    s.client.call(Method::PATCH, &path, Some(&s.token(2)), Some(r#"{"colour":"red"}"#)).await.problem(422);
    s.client
        .call(Method::PATCH, "/api/projects/999999", Some(&s.token(2)), Some(r#"{"status":"paused"}"#))
        .await
        .problem(404);
    let patched = s.client.call(Method::PATCH, &path, Some(&s.token(2)), Some(r#"{"status":"paused"}"#)).await;
    assert_eq!(patched.status, 200);
    let patched = patched.json();
    assert_eq!(patched["status"], "paused");
    assert_eq!(patched["name"], "atlas-test", "PATCH leaves other fields alone");
    assert_eq!(patched["region"], "eu-west-1");

    let stats = s.client.get("/api/projects/stats/summary").await.json();
    assert_eq!(stats["projects_total"], 302);
}

#[tokio::test]
async fn deploys_are_queued_run_and_visible_to_their_requester_only() {
    let s = service().await;
    let project = s.create_project(4, 11, "deploy-me").await;
    let project_id = project["id"].as_i64().unwrap();
    let mut events = s.app.deploy_events();
    let body = json!({ "project_id": project_id, "environment": "production" }).to_string();
    let queued = s.client.call(Method::POST, "/api/deploy", Some(&s.token(4)), Some(&body)).await;
    assert_eq!(queued.status, 202, "{}", String::from_utf8_lossy(&queued.body));
    let job = queued.json();
    let id = job["id"].as_i64().unwrap();
    assert_eq!(queued.header("location"), Some(format!("/api/deploy/{id}").as_str()));
    assert_eq!(job["status"], "queued");
    assert_eq!(job["environment"], "production");

    let done = wait_for_deploy(&mut events, id).await;
    assert_eq!(done.status, blueprint::store::DeployStatus::Succeeded);
    let status = s.client.get_as(&format!("/api/deploy/{id}"), &s.token(4)).await;
    assert_eq!(status.status, 200);
    assert_eq!(status.header("cache-control"), Some("no-store"));
    let status = status.json();
    assert_eq!(status["status"], "succeeded");
    assert!(status["finished_at"].is_string());

    s.client.get_as(&format!("/api/deploy/{id}"), &s.token(5)).await.problem(404);
    s.client.get_as("/api/deploy/999999", &s.token(4)).await.problem(404);
    s.client.get_as("/api/deploy/nope", &s.token(4)).await.problem(400);
    // Someone else's project, a missing one, a bad environment, an archived one.
    s.client.call(Method::POST, "/api/deploy", Some(&s.token(5)), Some(&body)).await.problem(403);
    s.client.call(Method::POST, "/api/deploy", Some(&s.token(4)), Some(r#"{"project_id":999999}"#)).await.problem(422);
    let bad_env = format!(r#"{{"project_id":{project_id},"environment":"moon"}}"#);
    s.client.call(Method::POST, "/api/deploy", Some(&s.token(4)), Some(&bad_env)).await.problem(422);
    s.client
        .call(
            Method::PATCH,
            &format!("/api/projects/{project_id}"),
            Some(&s.token(4)),
            Some(r#"{"status":"archived"}"#),
        )
        .await;
    s.client.call(Method::POST, "/api/deploy", Some(&s.token(4)), Some(&body)).await.problem(409);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let s = service().await;
    s.client.get("/api/nothing-here").await.problem(404);
    let reply = s.client.call(Method::DELETE, "/api/projects", Some(&s.token(1)), None).await;
    reply.problem(405);
    let allow = reply.header("allow").unwrap();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
}

#[tokio::test]
async fn the_dashboard_page_and_its_data_are_served() {
    let s = service().await;
    let page = s.client.get("/").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let html = String::from_utf8(page.body.clone()).unwrap();
    assert!(html.contains("<canvas id=\"hit-chart\"") && html.contains("fetch(\"/dashboard/stats\""));
    let stats: Reply = s.client.get("/dashboard/stats").await;
    assert_eq!(stats.status, 200);
    let stats = stats.json();
    assert_eq!(stats["database"]["engine"], "sqlite");
    assert!(stats["database"]["pool"]["max_size"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn a_restart_keeps_the_data_and_does_not_seed_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    let vars = [("SQLITE_PATH", path.to_str().unwrap()), ("DEPLOY_DURATION", "0s")];
    let first = blueprint::App::start(config(&vars)).await.unwrap();
    let token = first.demo_token().to_owned();
    let client = Client { router: first.router() };
    let created = client
        .call(Method::POST, "/api/blueprints", Some(&token), Some(r#"{"name":"Survivor","category":"web"}"#))
        .await;
    assert_eq!(created.status, 201);
    first.shutdown().await;
    drop(first);

    let second = blueprint::App::start(config(&vars)).await.unwrap();
    assert_eq!(second.demo_token(), token, "tokens persist with the users");
    let client = Client { router: second.router() };
    let stats = client.get("/api/projects/stats/summary").await.json();
    assert_eq!(stats["blueprints_total"], 1201);
}

#[tokio::test]
async fn start_up_fails_with_a_clear_error_when_the_database_cannot_be_opened() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the database file should be.
    let path = dir.path().join("taken");
    std::fs::create_dir(&path).unwrap();
    let err = blueprint::App::start(config(&[("SQLITE_PATH", path.to_str().unwrap())])).await.unwrap_err();
    assert!(err.to_string().contains("SQLite"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_all_succeed_and_every_write_lands() {
    let s = service().await;
    let s = std::sync::Arc::new(s);
    let mut tasks = Vec::new();
    for n in 0..40_i64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let user = n % 24 + 1;
            let body = json!({ "name": format!("Concurrent {n}"), "category": "worker" }).to_string();
            let reply = s.client.call(Method::POST, "/api/blueprints", Some(&s.token(user)), Some(&body)).await;
            (reply.status.as_u16(), String::from_utf8_lossy(&reply.body).into_owned())
        }));
    }
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 201, "{body}");
    }
    let stats = s.client.get("/api/projects/stats/summary").await.json();
    assert_eq!(stats["blueprints_total"], 1240);
}
