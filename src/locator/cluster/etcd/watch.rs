//! A watch stream, decoded batch by batch.

use super::*;

/// A watch stream: decoded events, batch by batch.
#[derive(Debug)]
pub struct Watch {
    pub(super) body: Incoming,
    /// The HTTP/1.1 connection, polled beside the body; `None` once it
    /// has ended (what it had received is still in the body).
    pub(super) connection: Option<Pin<Box<Connection>>>,
    pub(super) buf: BytesMut,
    pub(super) pending: Vec<serde_json::Value>,
}

impl Watch {
    /// The next batch of events and the store revision they bring the view
    /// to (the first answer, "created", is an empty batch). An error when the stream ends or etcd cancels the watch
    /// (for instance because the start revision was compacted).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: bytes read are kept in the buffer.
    pub async fn next(&mut self) -> Result<(i64, Vec<WatchEvent>), EtcdError> {
        let object = self.next_object(MAX_WATCH_MESSAGE).await?;
        watch_batch(&object)
    }

    /// Reads until one whole JSON object is buffered; objects may be split
    /// across chunks or share one.
    pub(super) async fn next_object(
        &mut self,
        limit: usize,
    ) -> Result<serde_json::Value, EtcdError> {
        loop {
            if !self.pending.is_empty() {
                let object = self.pending.remove(0);
                if object.get("error").is_some() {
                    return Err(classify(&object));
                }
                return Ok(object);
            }
            take_objects(&mut self.buf, &mut self.pending)?;
            if !self.pending.is_empty() {
                continue;
            }
            if self.buf.len() > limit {
                return Err(EtcdError::Refused(format!(
                    "a message from etcd is larger than {limit} bytes"
                )));
            }
            match self.next_frame().await? {
                Some(data) => self.buf.extend_from_slice(&data),
                None => return Err(EtcdError::Unreachable("etcd closed the stream".into())),
            }
        }
    }

    /// The next data of the body, driving the connection meanwhile;
    /// `None` at the end of the body.
    async fn next_frame(&mut self) -> Result<Option<Bytes>, EtcdError> {
        loop {
            let frame = match self.connection.as_mut() {
                Some(connection) => tokio::select! {
                    biased;
                    frame = self.body.frame() => Some(frame),
                    ended = connection => {
                        if let Err(e) = ended {
                            return Err(EtcdError::Unreachable(e.to_string()));
                        }
                        None
                    }
                },
                None => Some(self.body.frame().await),
            };
            match frame {
                // The connection ended cleanly: read what the body holds.
                None => self.connection = None,
                Some(None) => return Ok(None),
                Some(Some(Err(e))) => return Err(EtcdError::Unreachable(e.to_string())),
                Some(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// Reads the body to its end, at most `limit` bytes kept.
    pub(super) async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, EtcdError> {
        let mut out = Vec::new();
        while let Some(data) = self.next_frame().await? {
            let room = limit.saturating_sub(out.len());
            out.extend_from_slice(&data[..data.len().min(room)]);
        }
        Ok(out)
    }
}
