//! `/api/blueprints`: public reads, owner-only writes.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::Authenticated;
use super::extract::{Id, JsonBody, QueryParams};
use super::listing::{Fields, ListQuery, encode_cursor};
use super::problem::Problem;
use super::validate::BlueprintBody;
use super::{AppState, views};
use crate::store::{Blueprint, Owner};

const LISTING: &str = "blueprints";

/// The owners of `blueprints`, in one batch (one query for the whole page),
/// only when the response shows them.
async fn owners_of(
    state: &AppState,
    blueprints: &[Blueprint],
    fields: &Fields,
) -> Result<HashMap<i64, Owner>, Problem> {
    if !fields.has("owner") {
        return Ok(HashMap::new());
    }
    let mut ids: Vec<i64> = blueprints.iter().map(|b| b.owner_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let owners = state.store().owners(ids).await?;
    Ok(owners.into_iter().map(|o| (o.id, o)).collect())
}

pub(super) async fn list(State(state): State<AppState>, QueryParams(params): QueryParams) -> Result<Response, Problem> {
    let query = ListQuery::parse(&params, LISTING, views::BLUEPRINT_FIELDS)?;
    let page = state.store().list_blueprints(query.after, query.limit).await?;
    let owners = owners_of(&state, &page.items, &query.fields).await?;
    let data: Vec<_> = page.items.iter().map(|b| query.fields.select(views::blueprint(b, &owners))).collect();
    let next = page.has_more.then(|| page.items.last().map(|b| encode_cursor(LISTING, b.id))).flatten();
    Ok(super::page_response("/api/blueprints", data, next, &query, params.contains_key("fields")))
}

pub(super) async fn get(
    State(state): State<AppState>,
    Id(id): Id,
    QueryParams(params): QueryParams,
) -> Result<Response, Problem> {
    let fields = Fields::parse(params.get("fields").map(String::as_str), views::BLUEPRINT_FIELDS)?;
    let blueprint = state
        .store()
        .get_blueprint(id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no blueprint with id {id}")))?;
    let owners = owners_of(&state, std::slice::from_ref(&blueprint), &fields).await?;
    Ok(Json(fields.select(views::blueprint(&blueprint, &owners))).into_response())
}

pub(super) async fn create(
    State(state): State<AppState>,
    user: Authenticated,
    JsonBody(body): JsonBody<BlueprintBody>,
) -> Result<Response, Problem> {
    let input = body.validate()?;
    let blueprint = state.store().create_blueprint(user.user_id, input, crate::unix_now()).await?;
    let owners = HashMap::from([(user.user_id, Owner { id: user.user_id, name: user.name })]);
    let location = HeaderValue::from_str(&format!("/api/blueprints/{}", blueprint.id)).expect("ASCII path");
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(views::blueprint(&blueprint, &owners)))
        .into_response())
}

pub(super) async fn replace(
    State(state): State<AppState>,
    user: Authenticated,
    Id(id): Id,
    JsonBody(body): JsonBody<BlueprintBody>,
) -> Result<Response, Problem> {
    let input = body.validate()?;
    let blueprint = state.store().update_blueprint(id, user.user_id, input, crate::unix_now()).await?;
    let owners = HashMap::from([(user.user_id, Owner { id: user.user_id, name: user.name })]);
    Ok(Json(views::blueprint(&blueprint, &owners)).into_response())
}

pub(super) async fn delete(
    State(state): State<AppState>,
    user: Authenticated,
    Id(id): Id,
) -> Result<Response, Problem> {
    state.store().delete_blueprint(id, user.user_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
