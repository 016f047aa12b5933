//! The media a prompt can carry. Images today; audio is the next variant (decoded PCM from the
//! `audio` crate), with the same id and content hash for chunks and caches.

pub use clip::{Bitmap, BitmapError};

/// The kind of a media item, of an encoder's input, and of a media chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Image,
    Audio,
}

impl MediaKind {
    pub fn name(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Audio => "audio",
        }
    }
}

impl From<clip::Modality> for MediaKind {
    fn from(m: clip::Modality) -> Self {
        match m {
            clip::Modality::Vision => MediaKind::Image,
            clip::Modality::Audio => MediaKind::Audio,
        }
    }
}

/// One media item of a prompt, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Media<'a> {
    Image(&'a Bitmap),
}

impl<'a> Media<'a> {
    pub fn kind(&self) -> MediaKind {
        match self {
            Media::Image(_) => MediaKind::Image,
        }
    }

    /// Names the item in chunks and logs (a file name or the hex content hash).
    pub fn id(&self) -> &'a str {
        match self {
            Media::Image(b) => b.id(),
        }
    }

    /// Hash of the content alone (not the id): the key of encoder-output caches.
    pub fn content_hash(&self) -> u64 {
        match self {
            Media::Image(b) => b.content_hash(),
        }
    }
}

impl<'a> From<&'a Bitmap> for Media<'a> {
    fn from(b: &'a Bitmap) -> Self {
        Media::Image(b)
    }
}

impl<'a> From<&&'a Bitmap> for Media<'a> {
    fn from(b: &&'a Bitmap) -> Self {
        Media::Image(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_defaults_to_content_hash_and_can_be_replaced() {
        let a = Bitmap::from_rgb(1, 1, vec![1, 2, 3]).unwrap();
        let b = Bitmap::from_rgb(1, 1, vec![1, 2, 4]).unwrap();
        assert_ne!(Media::from(&a).id(), Media::from(&b).id());
        assert_eq!(a.id(), format!("{:016x}", a.content_hash()));
        let named = a.clone().with_id("x.png");
        assert_eq!(Media::from(&named).id(), "x.png");
        assert_eq!(Media::from(&named).content_hash(), a.content_hash());
        assert_eq!(Media::from(&a).kind(), MediaKind::Image);
    }

    #[test]
    fn bad_images_are_errors() {
        assert!(Bitmap::from_rgb(2, 2, vec![0; 11]).is_err());
        assert!(Bitmap::from_rgb(0, 2, vec![]).is_err());
        assert!(Bitmap::from_bytes(b"not an image").is_err());
        assert!(Bitmap::from_file("/nonexistent/x.png").is_err());
    }
}
