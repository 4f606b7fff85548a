//! Reading a request body under kube-apiserver's limit ([`MAX_BODY`]).
//!
//! A body over the limit is answered with 413, as kube-apiserver does. The
//! rest of it is read and dropped first, up to [`DRAIN_LIMIT`]: a client
//! still sending a body a little too large (a 4 MiB ConfigMap) then reads
//! the 413 and its connection stays usable, instead of writing into a socket
//! the server closed and seeing only a broken pipe. A body larger than that
//! is not drained: the connection is closed after the answer.

use bytes::Bytes;
use http_body_util::BodyExt;

pub use super::codec::MAX_BODY;

/// How much of an over-limit body is read and dropped before answering.
pub const DRAIN_LIMIT: usize = 4 * MAX_BODY;

/// What reading a body gave.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyRead {
    /// The whole body, within the limit.
    Complete(Bytes),
    /// Over the limit; `drained` when it was read to its end, so the
    /// connection can carry another request.
    TooLarge { drained: bool },
    /// The client stopped sending (or the body failed to arrive).
    Failed,
}

/// Reads `body` whole if it fits in [`MAX_BODY`], else drains it (bounded).
pub async fn read(mut body: axum::body::Body) -> BodyRead {
    let mut kept: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return BodyRead::Failed };
        let Ok(data) = frame.into_data() else { continue };
        seen += data.len();
        if seen > DRAIN_LIMIT {
            return BodyRead::TooLarge { drained: false };
        }
        if seen <= MAX_BODY {
            kept.extend_from_slice(&data);
        } else if !kept.is_empty() {
            kept = Vec::new();
        }
    }
    if seen > MAX_BODY {
        BodyRead::TooLarge { drained: true }
    } else {
        BodyRead::Complete(Bytes::from(kept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body arriving in chunks of `chunk` bytes, `total` in all.
    fn chunked(total: usize, chunk: usize) -> axum::body::Body {
        let chunks: Vec<Result<Bytes, std::io::Error>> = (0..total)
            .step_by(chunk)
            .map(|at| Ok(Bytes::from(vec![b'x'; chunk.min(total - at)])))
            .collect();
        axum::body::Body::from_stream(futures::stream::iter(chunks))
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_kept_whole() {
        assert_eq!(read(chunked(10, 3)).await, BodyRead::Complete(Bytes::from(vec![b'x'; 10])));
        match read(chunked(MAX_BODY, 64 * 1024)).await {
            BodyRead::Complete(b) => assert_eq!(b.len(), MAX_BODY),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_oversized_body_is_drained_to_its_end() {
        assert_eq!(read(chunked(MAX_BODY + 1, 64 * 1024)).await, BodyRead::TooLarge { drained: true });
        assert_eq!(read(chunked(4 << 20, 64 * 1024)).await, BodyRead::TooLarge { drained: true });
    }

    #[tokio::test]
    async fn a_huge_body_is_not_drained() {
        assert_eq!(read(chunked(DRAIN_LIMIT + 1, 1 << 20)).await, BodyRead::TooLarge { drained: false });
    }

    #[tokio::test]
    async fn a_failing_body_is_a_failure() {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            vec![Ok(Bytes::from_static(b"{")), Err(std::io::Error::other("reset"))];
        let body = axum::body::Body::from_stream(futures::stream::iter(chunks));
        assert_eq!(read(body).await, BodyRead::Failed);
    }
}
