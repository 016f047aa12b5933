//! The image type users hand to the library: decoded RGB (the `clip` crate's [`clip::bitmap::Bitmap`])
//! plus an id naming it in chunks, logs and caches.

use std::path::Path;

pub use clip::bitmap::BitmapError;

use crate::error::{MtmdError, Result};

/// An RGB image, 8 bits per channel, row-major, interleaved (`[y][x][rgb]`).
///
/// `id` names the image in chunks and logs (a file name or a content hash); encoders may use
/// it as a cache key, so two different images should not share one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    image: clip::bitmap::Bitmap,
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
        let image = clip::bitmap::Bitmap::from_rgb(nx, ny, data).map_err(|_| {
            // Only the side limit is left to fail: report it as a size problem.
            MtmdError::BitmapSize {
                nx,
                ny,
                expected,
                got: expected,
            }
        })?;
        Ok(Self::from_clip(image))
    }

    /// Decodes an image file (PNG, JPEG, WebP, GIF, BMP; EXIF orientation applied). The id
    /// is the content hash.
    pub fn from_file(path: impl AsRef<Path>) -> std::result::Result<Self, BitmapError> {
        clip::bitmap::Bitmap::from_file(path).map(Self::from_clip)
    }

    /// Decodes an encoded image held in memory (format sniffed from the bytes).
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, BitmapError> {
        clip::bitmap::Bitmap::from_encoded(bytes).map(Self::from_clip)
    }

    /// Wraps an already decoded clip bitmap; the id is its content hash.
    pub fn from_clip(image: clip::bitmap::Bitmap) -> Self {
        let id = format!("{:016x}", image.content_hash());
        Self { image, id }
    }

    /// Replaces the id (e.g. with the file name the image came from).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    pub fn nx(&self) -> u32 {
        self.image.width
    }

    pub fn ny(&self) -> u32 {
        self.image.height
    }

    /// The RGB bytes, `[y][x][rgb]`.
    pub fn data(&self) -> &[u8] {
        &self.image.rgb
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// 64-bit hash of the dimensions and pixels (independent of the id).
    pub fn content_hash(&self) -> u64 {
        self.image.content_hash()
    }

    /// The decoded image as the `clip` preprocessing takes it.
    pub fn as_clip(&self) -> &clip::bitmap::Bitmap {
        &self.image
    }
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
        assert_eq!(a.content_hash(), a.clone().with_id("x").content_hash());
        assert_eq!(a.clone().with_id("x.png").id(), "x.png");
    }

    #[test]
    fn corrupt_bytes_are_an_error() {
        assert!(Bitmap::from_bytes(b"not an image").is_err());
        assert!(Bitmap::from_file("/nonexistent/x.png").is_err());
    }
}
