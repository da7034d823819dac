//! The blueprint owners' loader against a real PostgreSQL: one
//! `WHERE id = ANY($1)` query per batch of at most 100 owners.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use brisk_dataloader::{BatchFn, DataLoader};
use brisk_testkit::require;
use futures_util::future::join_all;

#[derive(Debug, Clone, PartialEq)]
struct User {
    id: i64,
    name: String,
}

/// Owners by id, counting the queries it sends.
struct UsersById {
    client: Arc<tokio_postgres::Client>,
    queries: Arc<AtomicUsize>,
    largest: Arc<AtomicUsize>,
}

impl BatchFn<i64, User> for UsersById {
    type Error = tokio_postgres::Error;
    type Output = HashMap<i64, User>;

    async fn load(&self, ids: &[i64]) -> Result<HashMap<i64, User>, tokio_postgres::Error> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        self.largest.fetch_max(ids.len(), Ordering::SeqCst);
        let rows = self.client.query("SELECT id, name FROM users WHERE id = ANY($1)", &[&ids]).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let id: i64 = row.get(0);
                (id, User { id, name: row.get(1) })
            })
            .collect())
    }
}

async fn seeded(pg: &brisk_testkit::Postgres, owners: i64) -> tokio_postgres::Client {
    let client = pg.connect().await.expect("connect");
    client
        .batch_execute(&format!(
            "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);
             CREATE TABLE blueprints (id bigint PRIMARY KEY, owner_id bigint NOT NULL REFERENCES users (id), title text NOT NULL);
             INSERT INTO users SELECT i, 'user ' || i FROM generate_series(1, {owners}) AS i;
             INSERT INTO blueprints SELECT i, 1 + (i - 1) % {owners}, 'blueprint ' || i FROM generate_series(1, 500) AS i;"
        ))
        .await
        .expect("seed");
    client
}

async fn owners_of_the_page(owners: i64) -> Option<(usize, usize)> {
    let pg = brisk_testkit::postgres().await;
    let pg = match pg {
        Ok(pg) => pg,
        Err(err) => {
            brisk_testkit::skip_or_fail(&err);
            return None;
        }
    };
    let client = Arc::new(seeded(&pg, owners).await);
    let queries = Arc::new(AtomicUsize::new(0));
    let largest = Arc::new(AtomicUsize::new(0));
    let users = DataLoader::builder(UsersById {
        client: Arc::clone(&client),
        queries: Arc::clone(&queries),
        largest: Arc::clone(&largest),
    })
    .max_batch_size(NonZeroUsize::new(100).unwrap())
    .build();

    let page = client.query("SELECT id, owner_id FROM blueprints ORDER BY id LIMIT 500", &[]).await.expect("page");
    assert_eq!(page.len(), 500);
    // One load per blueprint, as a resolver per row would do.
    let owners_found = tokio::time::timeout(
        Duration::from_secs(30),
        join_all(page.iter().map(|row| {
            let users = users.clone();
            let owner_id: i64 = row.get(1);
            async move { (owner_id, users.load(owner_id).await) }
        })),
    )
    .await
    .expect("no hang");
    for (owner_id, user) in owners_found {
        let user = user.expect("every owner exists");
        assert_eq!(user, User { id: owner_id, name: format!("user {owner_id}") });
    }
    // A missing owner is a typed not-found, not an error.
    assert_eq!(users.try_load(owners + 1).await.expect("query"), None);
    Some((queries.load(Ordering::SeqCst) - 1, largest.load(Ordering::SeqCst)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_of_500_blueprints_take_five_queries() {
    let Some((queries, largest)) = owners_of_the_page(500).await else { return };
    assert_eq!(queries, 500usize.div_ceil(100));
    assert_eq!(largest, 100);
}

#[tokio::test]
async fn shared_owners_are_queried_once_each() {
    // 500 blueprints, 250 owners: each owned twice.
    let Some((queries, largest)) = owners_of_the_page(250).await else { return };
    assert_eq!(queries, 250usize.div_ceil(100));
    assert_eq!(largest, 100);
}

#[tokio::test]
async fn a_failing_query_fails_every_key_of_its_batch() {
    let pg = require!(brisk_testkit::postgres().await);
    // No users table: the query itself fails.
    let client = Arc::new(pg.connect().await.expect("connect"));
    let queries = Arc::new(AtomicUsize::new(0));
    let users = DataLoader::new(UsersById { client, queries: Arc::clone(&queries), largest: Arc::default() });
    let answers = tokio::time::timeout(Duration::from_secs(30), users.load_many([1, 2, 3])).await.expect("no hang");
    for answer in answers {
        let err = answer.unwrap_err();
        assert!(matches!(err, brisk_dataloader::LoadError::Batch(_)), "{err:?}");
        let db = err.inner().and_then(|e| e.as_db_error()).expect("a database error");
        assert!(db.message().contains("users"), "{db}");
    }
    assert_eq!(queries.load(Ordering::SeqCst), 1);
}
