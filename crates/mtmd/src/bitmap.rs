//! Decoded media handed to the library: an RGB image (audio comes later).

use crate::error::{MtmdError, Result};

/// An RGB image, 8 bits per channel, row-major, interleaved (`[y][x][rgb]`).
///
/// `id` names the image in chunks and logs (a file name or a content hash); encoders may use
/// it as a cache key, so two different images should not share one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    nx: u32,
    ny: u32,
    data: Vec<u8>,
    id: String,
}

impl Bitmap {
    /// Wraps `nx * ny * 3` RGB bytes. The id defaults to a hash of the pixels.
    pub fn from_rgb(nx: u32, ny: u32, data: Vec<u8>) -> Result<Self> {
        if nx == 0 || ny == 0 {
            return Err(MtmdError::EmptyBitmap { nx, ny });
        }
        let expected = nx as usize * ny as usize * 3;
        if data.len() != expected {
            return Err(MtmdError::BitmapSize {
                nx,
                ny,
                expected,
                got: data.len(),
            });
        }
        let id = format!("{:016x}", fnv1a(&data));
        Ok(Self { nx, ny, data, id })
    }

    /// Replaces the id (e.g. with the file name the image came from).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    pub fn nx(&self) -> u32 {
        self.nx
    }

    pub fn ny(&self) -> u32 {
        self.ny
    }

    /// The RGB bytes, `[y][x][rgb]`.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// 64-bit FNV-1a: a cheap, stable content hash for default ids.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_size_and_hashes_content() {
        assert!(matches!(
            Bitmap::from_rgb(2, 2, vec![0; 11]),
            Err(MtmdError::BitmapSize { expected: 12, .. })
        ));
        assert!(matches!(
            Bitmap::from_rgb(0, 2, vec![]),
            Err(MtmdError::EmptyBitmap { .. })
        ));
        let a = Bitmap::from_rgb(1, 1, vec![1, 2, 3]).unwrap();
        let b = Bitmap::from_rgb(1, 1, vec![1, 2, 4]).unwrap();
        assert_ne!(a.id(), b.id());
        assert_eq!(a.clone().with_id("x.png").id(), "x.png");
    }
}
