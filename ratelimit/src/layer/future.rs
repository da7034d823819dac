use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::RateLimitBody;
use super::layer::{Config, HeaderStyle, MissingKey};
use super::response;
use crate::{Decision, Error};

/// The limiter's answer: decided when the layer was called, or on its way.
pub(crate) enum Check {
    Decided(Result<Decision, Error>),
    Waiting(Pin<Box<dyn Future<Output = Result<Decision, Error>> + Send>>),
}

pin_project! {
    /// The response future of [`RateLimit`](super::RateLimit): the limiter's
    /// check, then the inner service, then the header fields.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S::Future>,
        check: Option<Check>,
        service: Option<S>,
        request: Option<Request<B>>,
        decision: Option<Decision>,
        config: Config,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Checking,
        Calling { #[pin] future: F },
    }
}

impl<S: Service<Request<B>>, B> ResponseFuture<S, B> {
    pub(crate) fn new(check: Option<Check>, service: S, request: Request<B>, config: Config) -> Self {
        ResponseFuture {
            state: State::Checking,
            check,
            service: Some(service),
            request: Some(request),
            decision: None,
            config,
        }
    }
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").field("decision", &self.decision).finish_non_exhaustive()
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<RateLimitBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Checking => {
                    let checked = match this.check.take() {
                        Some(Check::Waiting(mut check)) => match check.as_mut().poll(cx) {
                            Poll::Ready(result) => Some(result),
                            Poll::Pending => {
                                *this.check = Some(Check::Waiting(check));
                                return Poll::Pending;
                            }
                        },
                        Some(Check::Decided(result)) => Some(result),
                        None => None,
                    };
                    match checked {
                        Some(result) => match result {
                            Ok(decision) if decision.is_allowed() => *this.decision = Some(decision),
                            Ok(decision) => {
                                return Poll::Ready(Ok(response::too_many_requests(&decision, this.config.headers)));
                            }
                            Err(error) if error.is_unavailable() => {
                                return Poll::Ready(Ok(response::unavailable()));
                            }
                            Err(error) => {
                                tracing::error!(%error, "rate limit check failed");
                                return Poll::Ready(Ok(response::missing_key()));
                            }
                        },
                        None if this.config.missing_key == MissingKey::Reject => {
                            tracing::error!("rate limit key not found in the request; answering 500");
                            return Poll::Ready(Ok(response::missing_key()));
                        }
                        None => {}
                    }
                    let (Some(mut service), Some(request)) = (this.service.take(), this.request.take()) else {
                        panic!("ResponseFuture polled after completion");
                    };
                    let future = service.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    let mut response = ready!(future.poll(cx))?;
                    if let Some(decision) = this.decision.take()
                        && this.config.headers != HeaderStyle::OnlyOnRefusal
                    {
                        response::add_fields(response.headers_mut(), &decision, this.config.headers);
                    }
                    return Poll::Ready(Ok(response.map(RateLimitBody::inner)));
                }
            }
        }
    }
}
