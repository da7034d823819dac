use tower_layer::Layer;

use super::RequestLoaders;

/// Inserts fresh loaders, made by a factory, into each request's extensions.
///
/// The factory runs once per request; whatever it returns (a
/// [`DataLoader`](crate::DataLoader), or a `Clone` struct of several) is put
/// in the request's extensions. Clones of this layer share the factory.
#[derive(Clone)]
pub struct RequestLoadersLayer<F> {
    factory: F,
}

impl<F> RequestLoadersLayer<F> {
    /// A layer calling `factory` for every request.
    pub fn new<T>(factory: F) -> Self
    where
        F: Fn() -> T,
        T: Clone + Send + Sync + 'static,
    {
        RequestLoadersLayer { factory }
    }
}

impl<F> std::fmt::Debug for RequestLoadersLayer<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLoadersLayer").finish_non_exhaustive()
    }
}

impl<S, F: Clone> Layer<S> for RequestLoadersLayer<F> {
    type Service = RequestLoaders<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLoaders::new(inner, self.factory.clone())
    }
}
