//! Drives the service in-process: requests go through the router with
//! `tower::ServiceExt::oneshot`, no socket involved.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ASCII header"))
    }

    /// Asserts an RFC 9457 problem with this status and returns its body.
    #[track_caller]
    pub fn problem(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.header("content-type"), Some("application/problem+json"));
        let body = self.json();
        assert_eq!(body["status"], status);
        assert_eq!(body["type"], "about:blank");
        assert!(body["title"].is_string() && body["detail"].is_string(), "{body}");
        body
    }
}

/// A request builder bound to a router.
pub struct Client {
    pub router: Router,
}

impl Client {
    pub async fn send(&self, request: Request<Body>) -> Reply {
        // A request answered from memory never waits: without this, a task
        // sending them in a loop would not yield its worker thread between
        // requests as a network client does (on every socket read), and would
        // starve the runtime's other tasks — a load's wake-ups from blocking
        // threads, timers — for as long as its hits last.
        tokio::task::yield_now().await;
        let response = self.router.clone().oneshot(request).await.expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.expect("body").to_bytes().to_vec();
        Reply { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Request::get(path).body(Body::empty()).unwrap()).await
    }

    pub async fn get_as(&self, path: &str, token: &str) -> Reply {
        self.send(
            Request::get(path).header(header::AUTHORIZATION, format!("Bearer {token}")).body(Body::empty()).unwrap(),
        )
        .await
    }

    /// `method path` with a JSON body (raw text, so malformed JSON can be sent) and a token.
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, json: Option<&str>) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match json {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_owned())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }
}

/// A configuration from `vars`, as the environment would give it.
pub fn config(vars: &[(&str, &str)]) -> blueprint::Config {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    blueprint::Config::from_lookup(|name| map.get(name).cloned()).expect("valid test configuration")
}

/// Waits (bounded) for deploy `id` to reach a final state on `events`.
pub async fn wait_for_deploy(
    events: &mut tokio::sync::broadcast::Receiver<blueprint::store::Deploy>,
    id: i64,
) -> blueprint::store::Deploy {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match events.recv().await {
                Ok(deploy) if deploy.id == id && deploy.status.is_final() => return deploy,
                Ok(_) => {}
                Err(err) => panic!("deploy events ended: {err}"),
            }
        }
    })
    .await
    .expect("the deploy ends within 30 s")
}
