//! `/api/projects`: public reads, owner-only writes, and the stats summary.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::Authenticated;
use super::extract::{Id, JsonBody, QueryParams};
use super::listing::{Fields, ListQuery, encode_cursor};
use super::problem::Problem;
use super::validate::{ProjectBody, ProjectPatchBody};
use super::{AppState, views};

const LISTING: &str = "projects";

pub(super) async fn list(State(state): State<AppState>, QueryParams(params): QueryParams) -> Result<Response, Problem> {
    let query = ListQuery::parse(&params, LISTING, views::PROJECT_FIELDS)?;
    let page = state.store().list_projects(query.after, query.limit).await?;
    let data: Vec<_> = page.items.iter().map(|p| query.fields.select(views::project(p))).collect();
    let next = page.has_more.then(|| page.items.last().map(|p| encode_cursor(LISTING, p.id))).flatten();
    Ok(super::page_response("/api/projects", data, next, &query, params.contains_key("fields")))
}

pub(super) async fn get(
    State(state): State<AppState>,
    Id(id): Id,
    QueryParams(params): QueryParams,
) -> Result<Response, Problem> {
    let fields = Fields::parse(params.get("fields").map(String::as_str), views::PROJECT_FIELDS)?;
    let project =
        state.store().get_project(id).await?.ok_or_else(|| Problem::not_found(format!("no project with id {id}")))?;
    Ok(Json(fields.select(views::project(&project))).into_response())
}

pub(super) async fn create(
    State(state): State<AppState>,
    user: Authenticated,
    JsonBody(body): JsonBody<ProjectBody>,
) -> Result<Response, Problem> {
    let input = body.validate()?;
    let project = state.store().create_project(user.user_id, input, crate::unix_now()).await?;
    let location = HeaderValue::from_str(&format!("/api/projects/{}", project.id)).expect("ASCII path");
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(views::project(&project))).into_response())
}

pub(super) async fn update(
    State(state): State<AppState>,
    user: Authenticated,
    Id(id): Id,
    JsonBody(body): JsonBody<ProjectPatchBody>,
) -> Result<Response, Problem> {
    let patch = body.validate()?;
    let project = state.store().update_project(id, user.user_id, patch, crate::unix_now()).await?;
    Ok(Json(views::project(&project)).into_response())
}

pub(super) async fn stats(State(state): State<AppState>) -> Result<Response, Problem> {
    let stats = state.store().stats().await?;
    Ok(Json(stats).into_response())
}
