//! What is left of a request's body when the router lets go of it is read and thrown away, up
//! to [`DRAIN_MAX`], so that a rejection (413, 415, 404, 405) reaches every client.
//!
//! A rejection is answered before the body is read. Left at that, hyper ends the request as
//! the protocols allow, and clients lose the answer: over HTTP/2 the stream is reset with
//! NO_ERROR once the answer is sent (RFC 9113 §8.1), which curl 7.88 reports as "(92) Stream
//! error in the HTTP/2 framing layer", and httpx, which sends the whole body before it reads,
//! waits for flow-control window that never comes; over HTTP/1.1 the connection is closed with
//! the body unread, and the kernel's reset can overtake the answer. Read to its end, the
//! request ends normally and the connection serves the next one. A longer body is cut off
//! after [`DRAIN_MAX`]: on HTTP/2 by that reset, which tells the client to stop sending; on
//! HTTP/1.1 by closing the connection, announced with `Connection: close` when the body's
//! Content-Length shows it in advance.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// The most of a body left unread that is read and thrown away (twice the largest body
/// accepted).
pub const DRAIN_MAX: usize = 2 * super::MAX_BODY;

/// The middleware: each request's body is [`Drained`] if dropped unread.
pub async fn unread_bodies(request: Request, next: Next) -> Response {
    let cut_off =
        request.version() < Version::HTTP_2 && super::declared_length(request.headers()).is_some_and(|n| n > DRAIN_MAX);
    let request = request.map(|body| Body::new(Drained { body: Some(body), ended: false }));
    let mut response = next.run(request).await;
    if cut_off {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that, dropped before its end, has its remainder read on a task of its own.
struct Drained {
    body: Option<Body>,
    /// The body has given its last frame (or an error).
    ended: bool,
}

impl HttpBody for Drained {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body.as_ref().map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        let Some(body) = self.body.take() else {
            return;
        };
        if self.ended || body.is_end_stream() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(body));
        }
    }
}

/// Reads `body` to its end, at most [`DRAIN_MAX`] bytes of it; then drops it (on HTTP/2 a
/// reset with NO_ERROR if the client was still sending, on HTTP/1.1 the connection closed).
async fn drain(mut body: Body) {
    let mut left = DRAIN_MAX;
    while let Some(Ok(frame)) = body.frame().await {
        match left.checked_sub(frame.data_ref().map_or(0, Bytes::len)) {
            Some(rest) => left = rest,
            None => return,
        }
    }
}
