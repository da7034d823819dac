//! `/api/projects`: public, cached reads; owner-only writes that invalidate;
//! the stats summary.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::Authenticated;
use super::extract::{Id, JsonBody, QueryParams, Shareable};
use super::listing::{Fields, ListQuery, encode_cursor};
use super::problem::Problem;
use super::validate::{ProjectBody, ProjectPatchBody};
use super::{AppState, views};
use crate::response_cache::{Fresh, PROJECT_TTL, STATS_TTL, tags};

const LISTING: &str = "projects";

fn field_key(fields: &Fields, explicit: bool) -> String {
    if explicit { fields.names().join(",") } else { "*".to_owned() }
}

pub(super) async fn list(
    State(state): State<AppState>,
    shared: Shareable,
    QueryParams(params): QueryParams,
) -> Response {
    let query = match ListQuery::parse(&params, LISTING, views::PROJECT_FIELDS) {
        Ok(query) => query,
        Err(problem) => return problem.into_response(),
    };
    let keep_fields = params.contains_key("fields");
    let key = format!(
        "projects?after={}&limit={}&fields={}",
        query.after,
        query.limit,
        field_key(&query.fields, keep_fields)
    );
    let loader_state = state.clone();
    state
        .cache()
        .respond(shared, key, PROJECT_TTL, vec![tags::PROJECT_PAGES.to_owned()], move || async move {
            let page = loader_state.store().list_projects(query.after, query.limit).await?;
            let data: Vec<_> = page.items.iter().map(|p| query.fields.select(views::project(p))).collect();
            let next = page.has_more.then(|| page.items.last().map(|p| encode_cursor(LISTING, p.id))).flatten();
            Ok(super::page(LISTING, data, next, &query, keep_fields))
        })
        .await
}

pub(super) async fn get(
    State(state): State<AppState>,
    shared: Shareable,
    Id(id): Id,
    QueryParams(params): QueryParams,
) -> Response {
    let fields = match Fields::parse(params.get("fields").map(String::as_str), views::PROJECT_FIELDS) {
        Ok(fields) => fields,
        Err(problem) => return problem.into_response(),
    };
    let key = format!("project:{id}?fields={}", field_key(&fields, params.contains_key("fields")));
    let loader_state = state.clone();
    state
        .cache()
        .respond(shared, key, PROJECT_TTL, vec![tags::project(id)], move || async move {
            let project = loader_state
                .store()
                .get_project(id)
                .await?
                .ok_or_else(|| Problem::not_found(format!("no project with id {id}")))?;
            let body = serde_json::to_vec(&fields.select(views::project(&project))).expect("JSON values serialize");
            Ok(Fresh { body, link: None })
        })
        .await
}

pub(super) async fn create(
    State(state): State<AppState>,
    user: Authenticated,
    JsonBody(body): JsonBody<ProjectBody>,
) -> Result<Response, Problem> {
    let input = body.validate()?;
    let project = state.store().create_project(user.user_id, input, crate::unix_now()).await?;
    state.cache().invalidate(&[tags::PROJECT_PAGES.to_owned(), tags::STATS.to_owned()]).await;
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
    state.cache().invalidate(&[tags::project(id), tags::PROJECT_PAGES.to_owned(), tags::STATS.to_owned()]).await;
    Ok(Json(views::project(&project)).into_response())
}

pub(super) async fn stats(State(state): State<AppState>, shared: Shareable) -> Response {
    let loader_state = state.clone();
    state
        .cache()
        .respond(shared, "stats:summary".to_owned(), STATS_TTL, vec![tags::STATS.to_owned()], move || async move {
            let stats = loader_state.store().stats().await?;
            Ok(Fresh { body: serde_json::to_vec(&stats).expect("stats serialize"), link: None })
        })
        .await
}
