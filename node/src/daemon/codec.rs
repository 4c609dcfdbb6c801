//! The sync protocol on the wire: each message is a 4-byte little-endian length and the
//! postcard bytes, with an explicit bound checked before anything is allocated. Every byte
//! read and written is counted (for `status` and the benchmark).
//!
//! Bytes in flight are bounded per connection and for the whole node, not only per message:
//! a message's length is reserved from both budgets before its bytes are read, and the buffer
//! grows only as bytes arrive. A member that opens many streams and leaves each message
//! half-sent holds at most its connection's budget; the streams past it wait unread (their
//! Yamux window, 256 KiB each, is all the peer can push), and every stream ends at the request
//! timeout.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use passerelle_core::limits::SYNC_MESSAGE_MAX_BYTES;
use passerelle_core::sync::{self, Request, Response};
use tokio::sync::Semaphore;

/// Bytes of inbound sync messages one connection may have being read at once: two of the
/// largest messages, so an honest peer's largest answer never waits for its own push.
pub const INBOUND_PER_CONNECTION_MAX_BYTES: usize = 2 * SYNC_MESSAGE_MAX_BYTES;
/// Bytes of inbound sync messages the whole node may have being read at once.
pub const INBOUND_TOTAL_MAX_BYTES: usize = 12 * SYNC_MESSAGE_MAX_BYTES;
/// The first allocation for a message's bytes; the buffer grows as bytes arrive.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The protocol name of Passerelle's sync.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/passerelle/sync/1");

/// Bytes moved by the sync protocol, both ways.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

/// The request-response codec.
///
/// libp2p's request-response behaviour clones its codec once per connection, and each
/// connection's handler clones that one once per stream. So the behaviour's own codec has no
/// connection budget (`connection: None`), its clone makes a fresh one, and the clones of a
/// connection's codec share that connection's.
#[derive(Debug)]
pub struct SyncCodec {
    pub counters: Arc<Counters>,
    /// Shared by every connection: the node's bound.
    total: Arc<Semaphore>,
    /// This connection's bound (`None` only in the behaviour's own codec).
    connection: Option<Arc<Semaphore>>,
}

impl SyncCodec {
    pub fn new(counters: Arc<Counters>) -> Self {
        Self {
            counters,
            total: Arc::new(Semaphore::new(INBOUND_TOTAL_MAX_BYTES)),
            connection: None,
        }
    }
}

impl Clone for SyncCodec {
    fn clone(&self) -> Self {
        Self {
            counters: self.counters.clone(),
            total: self.total.clone(),
            connection: Some(
                self.connection
                    .clone()
                    .unwrap_or_else(|| Arc::new(Semaphore::new(INBOUND_PER_CONNECTION_MAX_BYTES))),
            ),
        }
    }
}

async fn read_message<T, M>(io: &mut T, codec: &SyncCodec) -> io::Result<M>
where
    T: AsyncRead + Unpin + Send,
    M: for<'de> serde::Deserialize<'de>,
{
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > SYNC_MESSAGE_MAX_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a sync message of {len} bytes is over the {SYNC_MESSAGE_MAX_BYTES}-byte bound"
            ),
        ));
    }
    // Reserve the message's bytes from this connection's budget, then the node's (always in
    // this order, so no two readers wait on each other), before reading any of them. The
    // permits are released when this message has been decoded or has failed.
    let permits = u32::try_from(len).map_err(|_| io::Error::other("message too large"))?;
    let closed = |_| io::Error::other("the sync budget is closed");
    let _connection = match &codec.connection {
        Some(budget) => Some(budget.acquire_many(permits).await.map_err(closed)?),
        None => None,
    };
    let _total = codec.total.acquire_many(permits).await.map_err(closed)?;
    let mut bytes = Vec::with_capacity(len.min(READ_CHUNK_BYTES));
    io.take(len as u64).read_to_end(&mut bytes).await?;
    if bytes.len() != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    codec
        .counters
        .received
        .fetch_add(len as u64 + 4, Ordering::Relaxed);
    sync::decode(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

async fn write_message<T, M>(io: &mut T, message: &M, counters: &Counters) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
    M: serde::Serialize,
{
    let bytes = sync::encode(message)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "message too large"))?;
    io.write_all(&len.to_le_bytes()).await?;
    io.write_all(&bytes).await?;
    io.flush().await?;
    counters
        .sent
        .fetch_add(bytes.len() as u64 + 4, Ordering::Relaxed);
    Ok(())
}

impl libp2p::request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io, self).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io, self).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &req, &self.counters).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &res, &self.counters).await
    }
}
