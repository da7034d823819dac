//! The tower layer: fresh loaders per request, nothing shared between requests.
#![cfg(feature = "tower")]

use std::collections::HashMap;
use std::convert::Infallible;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use brisk_dataloader::{DataLoader, LoaderStats, RequestLoadersLayer, batch_fn};
use futures_util::future::join_all;
use http::{Request, Response};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

type Users = DataLoader<u64, String, Infallible>;

/// Two loaders in one struct, as a service with several would insert them.
#[derive(Clone)]
struct Loaders {
    users: Users,
    projects: DataLoader<u64, String, Infallible>,
}

#[tokio::test]
async fn each_request_gets_fresh_loaders_that_batch_within_it() {
    let calls: Arc<Mutex<Vec<Vec<u64>>>> = Arc::default();
    let recorded = Arc::clone(&calls);
    let stats = LoaderStats::new("users");
    let users = DataLoader::builder(batch_fn(move |ids: Vec<u64>| {
        recorded.lock().unwrap().push(ids.clone());
        async move { Ok::<_, Infallible>(ids.iter().map(|&id| (id, format!("user {id}"))).collect::<HashMap<_, _>>()) }
    }))
    .max_batch_size(NonZeroUsize::new(100).unwrap())
    .stats(stats.clone());
    let projects = DataLoader::builder(batch_fn(|ids: Vec<u64>| async move {
        Ok::<_, Infallible>(ids.iter().map(|&id| Some(format!("project {id}"))).collect::<Vec<_>>())
    }));

    let mut service = ServiceBuilder::new()
        .layer(RequestLoadersLayer::new(move || Loaders { users: users.build(), projects: projects.build() }))
        .service(service_fn(|req: Request<Vec<u64>>| async move {
            let loaders = req.extensions().get::<Loaders>().expect("layer installed").clone();
            // A page of rows, each with an owner: one batch for all owners.
            let owners = join_all(req.body().iter().map(|&id| loaders.users.load(id))).await;
            let project = loaders.projects.load(1).await.expect("found");
            let names: Vec<String> = owners.into_iter().map(|o| o.expect("found")).collect();
            Ok::<_, Infallible>(Response::new((names, project)))
        }));

    let first = service.ready().await.unwrap().call(Request::new(vec![1, 2, 1, 3])).await.unwrap();
    assert_eq!(first.body().0, ["user 1", "user 2", "user 1", "user 3"]);
    assert_eq!(first.body().1, "project 1");
    let second = service.oneshot(Request::new(vec![1, 2])).await.unwrap();
    assert_eq!(second.body().0, ["user 1", "user 2"]);

    // The second request did not see the first one's cache: it asked again.
    assert_eq!(*calls.lock().unwrap(), vec![vec![1, 2, 3], vec![1, 2]]);
    let snapshot = stats.snapshot();
    assert_eq!((snapshot.loads, snapshot.dedups, snapshot.batches), (6, 1, 2));
}
