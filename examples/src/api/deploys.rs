//! `/api/deploy`: queued deploy jobs.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::Authenticated;
use super::extract::{Id, JsonBody};
use super::problem::Problem;
use super::validate::DeployBody;
use super::{AppState, views};

/// Queues a deploy: `202 Accepted`, `Location` of the job to poll.
pub(super) async fn create(
    State(state): State<AppState>,
    user: Authenticated,
    JsonBody(body): JsonBody<DeployBody>,
) -> Result<Response, Problem> {
    let input = body.validate()?;
    let deploy = state.store().create_deploy(user.user_id, input, crate::unix_now()).await?;
    state.deploys().wake();
    state.cache().invalidate(&[crate::response_cache::tags::STATS.to_owned()]).await;
    let location = HeaderValue::from_str(&format!("/api/deploy/{}", deploy.id)).expect("ASCII path");
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(views::deploy(&deploy))).into_response())
}

/// A deploy job, for the user who asked for it; other users get 404 (a job's
/// existence is not theirs to learn).
pub(super) async fn get(State(state): State<AppState>, user: Authenticated, Id(id): Id) -> Result<Response, Problem> {
    match state.store().get_deploy(id).await? {
        Some(deploy) if deploy.user_id == user.user_id => {
            let mut response = Json(views::deploy(&deploy)).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        _ => Err(Problem::not_found(format!("no deploy job {id}"))),
    }
}
