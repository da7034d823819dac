//! `/api/blueprints`: public, cached reads; owner-only writes that invalidate.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use brisk_dataloader::{BatchFn, DataLoader};

use super::auth::Authenticated;
use super::extract::{Id, JsonBody, QueryParams, Shareable};
use super::listing::{Fields, ListQuery, encode_cursor};
use super::problem::Problem;
use super::validate::BlueprintBody;
use super::{AppState, views};
use crate::response_cache::{BLUEPRINT_TTL, Fresh, tags};
use crate::store::{Blueprint, Owner, Store, StoreError};

const LISTING: &str = "blueprints";

/// Users by id, for a brisk DataLoader: the owners of a page arrive in one
/// query, however many rows the page has.
struct OwnersById(Arc<dyn Store>);

impl BatchFn<i64, Owner> for OwnersById {
    type Error = StoreError;
    type Output = HashMap<i64, Owner>;

    async fn load(&self, ids: &[i64]) -> Result<Self::Output, Self::Error> {
        let owners = self.0.owners(ids.to_vec()).await?;
        Ok(owners.into_iter().map(|o| (o.id, o)).collect())
    }
}

/// The owners of `blueprints`, through a DataLoader made for this request
/// (so nothing is shared between users), only when the response shows them.
async fn owners_of(
    state: &AppState,
    blueprints: &[Blueprint],
    fields: &Fields,
) -> Result<HashMap<i64, Owner>, Problem> {
    if !fields.has("owner") {
        return Ok(HashMap::new());
    }
    let loader = DataLoader::new(OwnersById(state.store_arc()));
    let loads = blueprints.iter().map(|b| loader.try_load(b.owner_id));
    let mut owners = HashMap::new();
    for owner in futures_util::future::join_all(loads).await {
        match owner {
            Ok(Some(owner)) => {
                owners.insert(owner.id, owner);
            }
            // An owner row missing is shown as `"owner": null`.
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(error = %err, "loading blueprint owners failed");
                return Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable; try again shortly",
                )
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
        }
    }
    Ok(owners)
}

pub(super) async fn list(
    State(state): State<AppState>,
    shared: Shareable,
    QueryParams(params): QueryParams,
) -> Response {
    let query = match ListQuery::parse(&params, LISTING, views::BLUEPRINT_FIELDS) {
        Ok(query) => query,
        Err(problem) => return problem.into_response(),
    };
    let keep_fields = params.contains_key("fields");
    let key = format!(
        "blueprints?after={}&limit={}&fields={}",
        query.after,
        query.limit,
        field_key(&query.fields, keep_fields)
    );
    let loader_state = state.clone();
    state
        .cache()
        .respond(shared, key, BLUEPRINT_TTL, vec![tags::BLUEPRINT_PAGES.to_owned()], move || async move {
            let state = loader_state;
            let page = state.store().list_blueprints(query.after, query.limit).await?;
            let owners = owners_of(&state, &page.items, &query.fields).await?;
            let data: Vec<_> = page.items.iter().map(|b| query.fields.select(views::blueprint(b, &owners))).collect();
            let next = page.has_more.then(|| page.items.last().map(|b| encode_cursor(LISTING, b.id))).flatten();
            Ok(super::page(LISTING, data, next, &query, keep_fields))
        })
        .await
}

/// The `fields` part of a cache key: the normalised selection, or `*`.
fn field_key(fields: &Fields, explicit: bool) -> String {
    if explicit { fields.names().join(",") } else { "*".to_owned() }
}

pub(super) async fn get(
    State(state): State<AppState>,
    shared: Shareable,
    Id(id): Id,
    QueryParams(params): QueryParams,
) -> Response {
    let fields = match Fields::parse(params.get("fields").map(String::as_str), views::BLUEPRINT_FIELDS) {
        Ok(fields) => fields,
        Err(problem) => return problem.into_response(),
    };
    let key = format!("blueprint:{id}?fields={}", field_key(&fields, params.contains_key("fields")));
    let loader_state = state.clone();
    state
        .cache()
        .respond(shared, key, BLUEPRINT_TTL, vec![tags::blueprint(id)], move || async move {
            let state = loader_state;
            let blueprint = state
                .store()
                .get_blueprint(id)
                .await?
                .ok_or_else(|| Problem::not_found(format!("no blueprint with id {id}")))?;
            let owners = owners_of(&state, std::slice::from_ref(&blueprint), &fields).await?;
            let body = serde_json::to_vec(&fields.select(views::blueprint(&blueprint, &owners)))
                .expect("JSON values serialize");
            Ok(Fresh { body, link: None })
        })
        .await
}

/// The longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// The request's `Idempotency-Key` (a bare token or a quoted string, as the
/// IETF draft writes it): 1–128 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let text = value.to_str().unwrap_or("");
    let key = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::bad_request(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        )));
    }
    Ok(Some(key.to_owned()))
}

/// `POST /api/blueprints`. With an `Idempotency-Key`, a repeat of a create
/// that committed (its reply lost, say, to a dropped connection) answers
/// with the blueprint made the first time instead of making another.
pub(super) async fn create(
    State(state): State<AppState>,
    user: Authenticated,
    headers: HeaderMap,
    JsonBody(body): JsonBody<BlueprintBody>,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    let input = body.validate()?;
    let blueprint = state.store().create_blueprint(user.user_id, input, key, crate::unix_now()).await?;
    state.cache().invalidate(&[tags::BLUEPRINT_PAGES.to_owned(), tags::STATS.to_owned()]).await;
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
    state.cache().invalidate(&[tags::blueprint(id), tags::BLUEPRINT_PAGES.to_owned(), tags::STATS.to_owned()]).await;
    let owners = HashMap::from([(user.user_id, Owner { id: user.user_id, name: user.name })]);
    Ok(Json(views::blueprint(&blueprint, &owners)).into_response())
}

pub(super) async fn delete(
    State(state): State<AppState>,
    user: Authenticated,
    Id(id): Id,
) -> Result<Response, Problem> {
    state.store().delete_blueprint(id, user.user_id).await?;
    state.cache().invalidate(&[tags::blueprint(id), tags::BLUEPRINT_PAGES.to_owned(), tags::STATS.to_owned()]).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
