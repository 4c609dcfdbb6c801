//! The sync protocol on the wire: each message is a 4-byte little-endian length and the
//! postcard bytes, with an explicit bound checked before anything is allocated. Every byte
//! read and written is counted (for `status` and the benchmark).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use passerelle_core::limits::SYNC_MESSAGE_MAX_BYTES;
use passerelle_core::sync::{self, Request, Response};

/// The protocol name of Passerelle's sync.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/passerelle/sync/1");

/// Bytes moved by the sync protocol, both ways.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

/// The request-response codec.
#[derive(Debug, Clone, Default)]
pub struct SyncCodec {
    pub counters: Arc<Counters>,
}

async fn read_message<T, M>(io: &mut T, counters: &Counters) -> io::Result<M>
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
    let mut bytes = vec![0u8; len];
    io.read_exact(&mut bytes).await?;
    counters
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
        read_message(io, &self.counters).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io, &self.counters).await
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
