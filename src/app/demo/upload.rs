//! The `upload` demo app: owns reading a request body to its end, streamed
//! (a gateway service with `stream_request_body`) or whole, and answering
//! with what arrived, as JSON: `{"bytes", "chunks", "streamed", "sip13"}`.
//! `sip13` is SipHash-1-3 with zero keys (std's `DefaultHasher::new()`)
//! over the body bytes, as 16 hex digits: independent of how the body was
//! cut into chunks, so a test can compare it with its own.

use std::hash::Hasher;

use bytes::Bytes;

use super::{HttpRequest, HttpResponse, header, with_version};
use crate::proto::{ErrorCode, RemoteError};

/// Answers with the body's length, chunk count and checksum.
pub(super) async fn upload(
    mut req: HttpRequest,
    res: HttpResponse,
    tag: Option<Bytes>,
) -> super::super::HandlerResult {
    let mut summary = Summary::default();
    summary.add(&req.body);
    let streamed = req.is_body_streamed();
    // A body that is not streamed is all in the 5-tuple: a gateway sends
    // no more chunks, and closes only once the reply has ended.
    while let Some(chunk) = next_chunk(&mut req, streamed).await {
        match chunk {
            Ok(chunk) => summary.add(&chunk),
            // Cut short (the client went away or passed a limit): nobody
            // is there to answer.
            Err(e) => {
                tracing::debug!(reason = %e, "upload stopped early");
                return Ok(());
            }
        }
    }
    let body = serde_json::json!({
        "bytes": summary.bytes,
        "chunks": summary.chunks,
        "streamed": streamed,
        "sip13": format!("{:016x}", summary.hasher.finish()),
    });
    let body = serde_json::to_vec(&body).map_err(|e| {
        RemoteError::new(
            ErrorCode::new(crate::proto::category::WORKER_USER, 500),
            e.to_string(),
        )
    })?;
    let headers = with_version(
        vec![
            header("Content-Type", "application/json"),
            header("Content-Length", body.len().to_string()),
        ],
        &tag,
    );
    res.respond(200, headers, body).await.ok();
    Ok(())
}

/// The next streamed body chunk; `None` at the end, or at once for a body
/// that is not streamed.
async fn next_chunk(
    req: &mut HttpRequest,
    streamed: bool,
) -> Option<Result<Bytes, super::super::RequestError>> {
    if streamed {
        req.next_body_chunk().await
    } else {
        None
    }
}

/// What arrived so far.
#[derive(Default)]
struct Summary {
    bytes: u64,
    chunks: u64,
    hasher: std::collections::hash_map::DefaultHasher,
}

impl Summary {
    fn add(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        self.bytes += chunk.len() as u64;
        self.chunks += 1;
        // `write`, not `Hash::hash`: no length prefix, so the result does
        // not depend on where the chunks were cut.
        self.hasher.write(chunk);
    }
}
