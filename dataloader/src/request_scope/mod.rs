//! A tower layer that gives each request its own loaders.
//!
//! [`RequestLoadersLayer`] calls a factory for every request and inserts what
//! it returns into the request's extensions — a [`DataLoader`](crate::DataLoader)
//! or a struct of several. Each request then has its own cache: nothing one
//! user loaded is served to another, and nothing outlives the request.
//!
//! ```
//! use std::collections::HashMap;
//! use std::convert::Infallible;
//! use std::num::NonZeroUsize;
//! use brisk_dataloader::{DataLoader, LoaderStats, batch_fn};
//! use brisk_dataloader::RequestLoadersLayer;
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! type UserLoader = DataLoader<i64, String, std::io::Error>;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let users = DataLoader::builder(batch_fn(|ids: Vec<i64>| async move {
//!     // SELECT id, name FROM users WHERE id = ANY($1)
//!     Ok::<_, std::io::Error>(ids.iter().map(|&id| (id, format!("user {id}"))).collect::<HashMap<_, _>>())
//! }))
//! .max_batch_size(NonZeroUsize::new(100).unwrap())
//! .stats(LoaderStats::new("users"));
//!
//! let service = ServiceBuilder::new()
//!     .layer(RequestLoadersLayer::new(move || users.build()))
//!     .service(service_fn(|req: Request<()>| async move {
//!         let users = req.extensions().get::<UserLoader>().expect("layer installed").clone();
//!         let name = users.load(7).await.unwrap_or_default();
//!         Ok::<_, Infallible>(Response::new(name))
//!     }));
//! let response = service.oneshot(Request::new(())).await.unwrap();
//! assert_eq!(response.into_body(), "user 7");
//! # }
//! ```
//!
//! With axum, take the loaders with `Extension<UserLoader>`.

mod layer;
mod service;

pub use self::layer::RequestLoadersLayer;
pub use self::service::RequestLoaders;
