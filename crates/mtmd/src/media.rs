//! The media a prompt can carry: images ([`Bitmap`]) and audio clips ([`Audio`]), each with an
//! id for chunks and logs and a content hash for caches.

use std::path::Path;

pub use audio::{AudioError, DecodeOptions, Pcm};
pub use clip::{Bitmap, BitmapError};

/// A decoded audio clip (mono, 16 kHz) and the id that names it.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    pcm: Pcm,
    id: String,
}

impl Audio {
    /// Wraps decoded PCM; the id is the content hash. The encoder takes 16 kHz mono, so other
    /// rates are refused when the clip is tokenized.
    pub fn from_pcm(pcm: Pcm) -> Self {
        let mut clip = Self {
            pcm,
            id: String::new(),
        };
        clip.id = format!("{:016x}", clip.content_hash());
        clip
    }

    /// Decodes a WAV, FLAC or MP3 file (format sniffed from the bytes) to 16 kHz mono.
    pub fn from_file(path: impl AsRef<Path>, options: &DecodeOptions) -> Result<Self, AudioError> {
        audio::decode_file(path, options).map(Self::from_pcm)
    }

    /// Decodes an audio file held in memory.
    pub fn from_bytes(bytes: &[u8], options: &DecodeOptions) -> Result<Self, AudioError> {
        audio::decode_bytes(bytes, options).map(Self::from_pcm)
    }

    /// Names the clip (e.g. with its file name); caches use the content hash, never the id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn pcm(&self) -> &Pcm {
        &self.pcm
    }

    pub fn duration_seconds(&self) -> f64 {
        self.pcm.duration_seconds()
    }

    /// 64-bit FNV-1a over the sample rate and the samples' bits.
    pub fn content_hash(&self) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash = OFFSET;
        let bytes = self.pcm.sample_rate.to_le_bytes().into_iter().chain(
            self.pcm
                .samples
                .iter()
                .flat_map(|s| s.to_bits().to_le_bytes()),
        );
        for byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
        }
        hash
    }
}

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

/// One media item, owned (what callers keep in a conversation or a request).
#[derive(Debug, Clone, PartialEq)]
pub enum MediaItem {
    Image(Bitmap),
    Audio(Audio),
}

impl MediaItem {
    pub fn as_media(&self) -> Media<'_> {
        match self {
            MediaItem::Image(b) => Media::Image(b),
            MediaItem::Audio(a) => Media::Audio(a),
        }
    }

    pub fn kind(&self) -> MediaKind {
        self.as_media().kind()
    }

    pub fn id(&self) -> &str {
        self.as_media().id()
    }

    pub fn content_hash(&self) -> u64 {
        self.as_media().content_hash()
    }

    pub fn is_audio(&self) -> bool {
        self.kind() == MediaKind::Audio
    }
}

impl From<Bitmap> for MediaItem {
    fn from(b: Bitmap) -> Self {
        MediaItem::Image(b)
    }
}

impl From<Audio> for MediaItem {
    fn from(a: Audio) -> Self {
        MediaItem::Audio(a)
    }
}

impl<'a> From<&'a MediaItem> for Media<'a> {
    fn from(m: &'a MediaItem) -> Self {
        m.as_media()
    }
}

/// One media item of a prompt, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Media<'a> {
    Image(&'a Bitmap),
    Audio(&'a Audio),
}

impl<'a> Media<'a> {
    pub fn kind(&self) -> MediaKind {
        match self {
            Media::Image(_) => MediaKind::Image,
            Media::Audio(_) => MediaKind::Audio,
        }
    }

    /// Names the item in chunks and logs (a file name or the hex content hash).
    pub fn id(&self) -> &'a str {
        match self {
            Media::Image(b) => b.id(),
            Media::Audio(a) => a.id(),
        }
    }

    /// Hash of the content alone (not the id): the key of encoder-output caches.
    pub fn content_hash(&self) -> u64 {
        match self {
            Media::Image(b) => b.content_hash(),
            Media::Audio(a) => a.content_hash(),
        }
    }
}

impl<'a> From<&'a Bitmap> for Media<'a> {
    fn from(b: &'a Bitmap) -> Self {
        Media::Image(b)
    }
}

impl<'a> From<&'a Audio> for Media<'a> {
    fn from(a: &'a Audio) -> Self {
        Media::Audio(a)
    }
}

impl<'a> From<&&'a Audio> for Media<'a> {
    fn from(a: &&'a Audio) -> Self {
        Media::Audio(a)
    }
}

impl<'a> From<&Media<'a>> for Media<'a> {
    fn from(m: &Media<'a>) -> Self {
        *m
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
    fn audio_ids_and_hashes() {
        let pcm = |s: Vec<f32>| Pcm {
            samples: s,
            sample_rate: 16_000,
        };
        let a = Audio::from_pcm(pcm(vec![0.0, 0.5]));
        let b = Audio::from_pcm(pcm(vec![0.0, 0.25]));
        assert_ne!(a.id(), b.id());
        assert_eq!(a.clone().with_id("x.wav").content_hash(), a.content_hash());
        assert_eq!(Media::from(&a).kind(), MediaKind::Audio);
        assert!(Audio::from_bytes(b"not audio", &DecodeOptions::default()).is_err());
    }

    #[test]
    fn bad_images_are_errors() {
        assert!(Bitmap::from_rgb(2, 2, vec![0; 11]).is_err());
        assert!(Bitmap::from_rgb(0, 2, vec![]).is_err());
        assert!(Bitmap::from_bytes(b"not an image").is_err());
        assert!(Bitmap::from_file("/nonexistent/x.png").is_err());
    }
}
