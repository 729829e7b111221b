//! A request refused before its body is read (a wrong key, a `413`, a `429`) leaves the rest of the body unread on
//! its connection. hyper then closes the connection as it answers, while a client sending more than fits the
//! socket's buffers is still writing: the client gets a reset instead of the answer. So the body of every request
//! is wrapped, and dropped unread it is read to its end and thrown away, within bounds, on a task of its own. hyper
//! keeps reading it meanwhile and the client gets its answer on a connection it can use again.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};

/// Bytes of an unread body thrown away at most: as much as a batch publish may send. A larger rest is left to
/// hyper, which closes the connection.
const MAX_DRAINED: u64 = 16 << 20;
/// How long draining a body may take: a client that stops sending does not hold the task.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Wraps a request's body so that it is drained if dropped unread.
pub fn drained_if_unread(body: Body) -> Body {
    Body::new(DrainOnDrop(Some(body)))
}

struct DrainOnDrop(Option<Body>);

impl HttpBody for DrainOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match self.0.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.0.as_ref().map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        let Some(mut body) = self.0.take().filter(|body| !body.is_end_stream()) else { return };
        // Known to be larger than the bound: nothing is gained by reading part of it.
        if body.size_hint().lower() > MAX_DRAINED {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let drain = async {
                let mut read = 0;
                while read <= MAX_DRAINED {
                    match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                        Some(Ok(frame)) => read += frame.data_ref().map_or(0, |data| data.len() as u64),
                        Some(Err(_)) | None => return,
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
        });
    }
}
