//! A response body held in memory, handed to the connection a slice at a time.
//!
//! actix-web copies each chunk of a body into its connection's write buffer before writing it.
//! A body given as one large `Bytes` (a 1 MiB file, a 1,000-file listing) makes that buffer
//! grow to the body's size, a fresh allocation for every response, freed again once written.
//! Given in slices (views of the same bytes, no copy of their own), the buffer stays at its
//! usual size and the bytes go from a cache-warm buffer to the socket.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use bytes::Bytes;

/// How much of the body each poll hands over: twice actix-web's write buffer high-water mark
/// (32 KiB), so that one slice fills a write.
const SLICE: usize = 64 * 1024;

/// `Bytes` as a body of [`SLICE`]-sized slices.
pub struct Sliced(Bytes);

impl Sliced {
    pub fn new(bytes: Bytes) -> Self {
        Self(bytes)
    }
}

impl MessageBody for Sliced {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.0.len() as u64)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let rest = &mut self.get_mut().0;
        if rest.is_empty() {
            return Poll::Ready(None);
        }
        let slice = rest.split_to(rest.len().min(SLICE));
        Poll::Ready(Some(Ok(slice)))
    }

    fn try_into_bytes(self) -> Result<Bytes, Self>
    where
        Self: Sized,
    {
        // A small body is one slice anyway: let actix-web take it whole.
        if self.0.len() <= SLICE {
            Ok(self.0)
        } else {
            Err(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn slices_add_up_to_the_bytes() {
        let bytes = Bytes::from((0..200_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let body = Sliced::new(bytes.clone());
        assert_eq!(body.size(), BodySize::Sized(200_000));
        let whole = actix_web::body::to_bytes(body).await.unwrap_or_default();
        assert_eq!(whole, bytes);
        let small = Bytes::from_static(b"small");
        assert!(matches!(Sliced::new(small.clone()).try_into_bytes(), Ok(b) if b == small));
    }
}
