//! Decoded RGB images: the input of every image preprocessing strategy.
//!
//! Decoding follows what llama.cpp's loader (stb_image, 3 channels) produces where it matters for pixel
//! equality: alpha is dropped (not composited), grey is replicated to RGB, 16-bit samples keep their high
//! byte, only the first frame of an animation is used, and baseline JPEGs go through [`crate::jpeg`], which
//! reproduces stb_image's IDCT, chroma upsampling and color conversion byte for byte. Unlike llama.cpp we apply the EXIF orientation.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

/// Largest accepted width or height, in pixels.
pub const MAX_SIDE: u32 = 16384;

/// Largest allocation the decoder may make for one image (decompression-bomb guard).
const MAX_DECODE_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum BitmapError {
    #[error("cannot read image file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image data is not a supported format (PNG, JPEG, WebP, GIF, BMP)")]
    UnknownFormat,
    #[error("cannot decode image: {0}")]
    Decode(String),
    #[error("image of {width}x{height} is too large (limit {MAX_SIDE} per side)")]
    TooLarge { width: u64, height: u64 },
    #[error("image of {width}x{height} has no pixels")]
    Empty { width: u32, height: u32 },
    #[error("raw RGB buffer holds {actual} bytes, but {width}x{height} needs {expected}")]
    RawSize {
        width: u32,
        height: u32,
        expected: u64,
        actual: usize,
    },
}

/// An 8-bit RGB image, pixels interleaved row-major: `rgb[3 * (y * width + x) + c]`, and the id
/// that names it in chunks, logs and caches (by default the hex content hash; a caller may set
/// a file name). The one image type of the whole pipeline, from decoding to preprocessing.
#[derive(Clone, PartialEq, Eq)]
pub struct Bitmap {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    id: String,
}

impl std::fmt::Debug for Bitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitmap")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("id", &self.id)
            .finish()
    }
}

impl Bitmap {
    /// Wraps interleaved RGB bytes, checking that the buffer matches the dimensions.
    pub fn from_rgb(width: u32, height: u32, rgb: Vec<u8>) -> Result<Bitmap, BitmapError> {
        check_dims(u64::from(width), u64::from(height))?;
        let expected = 3 * u64::from(width) * u64::from(height);
        if rgb.len() as u64 != expected {
            return Err(BitmapError::RawSize {
                width,
                height,
                expected,
                actual: rgb.len(),
            });
        }
        let mut bitmap = Self::derived(width, height, rgb);
        bitmap.id = format!("{:016x}", bitmap.content_hash());
        Ok(bitmap)
    }

    /// An intermediate image made by this crate (a resize, a tile): no id of its own.
    pub(crate) fn derived(width: u32, height: u32, rgb: Vec<u8>) -> Bitmap {
        Bitmap {
            width,
            height,
            rgb,
            id: String::new(),
        }
    }

    /// Names the image (e.g. with the file it came from) instead of its content hash. Caches
    /// use [`Bitmap::content_hash`], never the id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Reads and decodes an image file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Bitmap, BitmapError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| BitmapError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_encoded(&bytes)
    }

    /// Decodes an encoded image held in memory; see [`Bitmap::from_encoded`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Bitmap, BitmapError> {
        Self::from_encoded(bytes)
    }

    /// Decodes an encoded image (PNG, JPEG, WebP, GIF, BMP), format sniffed from the bytes.
    pub fn from_encoded(bytes: &[u8]) -> Result<Bitmap, BitmapError> {
        let mut reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| BitmapError::Decode(e.to_string()))?;
        if reader.format().is_none() {
            return Err(BitmapError::UnknownFormat);
        }
        let reader_format = reader.format();
        let mut limits = Limits::default();
        limits.max_image_width = Some(MAX_SIDE);
        limits.max_image_height = Some(MAX_SIDE);
        limits.max_alloc = Some(MAX_DECODE_BYTES);
        reader.limits(limits);

        let mut decoder = reader.into_decoder().map_err(decode_error)?;
        let (width, height) = decoder.dimensions();
        check_dims(u64::from(width), u64::from(height))?;
        if reader_format == Some(image::ImageFormat::Jpeg) {
            check_jpeg_backed(width, height, bytes.len())?;
        }
        // A missing or unreadable EXIF block means "no rotation", as in every viewer.
        let orientation = decoder
            .orientation()
            .unwrap_or(image::metadata::Orientation::NoTransforms);
        let mut image = match stb_exact_jpeg(reader_format, bytes) {
            Some(image) => image,
            None => DynamicImage::from_decoder(decoder).map_err(decode_error)?,
        };
        image.apply_orientation(orientation);
        let (width, height) = (image.width(), image.height());
        check_dims(u64::from(width), u64::from(height))?;
        Self::from_rgb(width, height, to_rgb8_like_stb(image))
    }

    /// 64-bit FNV-1a over the dimensions and the pixels: a cache key for encoded results.
    pub fn content_hash(&self) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash = OFFSET;
        let dims = self.width.to_le_bytes().into_iter();
        for byte in dims.chain(self.height.to_le_bytes()) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
        }
        for &byte in &self.rgb {
            hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
        }
        hash
    }

    /// The RGB triple at (x, y). Panics when out of range (caller's indexing bug, never data).
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = 3 * (y as usize * self.width as usize + x as usize);
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
}

fn check_dims(width: u64, height: u64) -> Result<(), BitmapError> {
    if width > u64::from(MAX_SIDE) || height > u64::from(MAX_SIDE) {
        return Err(BitmapError::TooLarge { width, height });
    }
    if width == 0 || height == 0 {
        return Err(BitmapError::Empty {
            width: width as u32,
            height: height as u32,
        });
    }
    Ok(())
}

/// Pixels a JPEG of `len` bytes may declare: every 8x8 block of the first component costs at
/// least one bit (its DC code, baseline or progressive), so a file describes at most 512
/// pixels per byte; the floor keeps tiny valid files of flat colour.
fn jpeg_pixel_budget(len: usize) -> u64 {
    (len as u64).saturating_mul(512).max(1 << 20)
}

/// Refuses a JPEG whose frame is larger than its bytes can describe: decoders (stb_image's
/// way, and ours) fill missing data with grey, so a few hundred bytes could otherwise claim a
/// 16384x16384 frame and make the decoder allocate and fill a gigabyte.
fn check_jpeg_backed(width: u32, height: u32, len: usize) -> Result<(), BitmapError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > jpeg_pixel_budget(len) {
        return Err(BitmapError::Decode(format!(
            "JPEG declares {width}x{height} pixels but holds only {len} bytes \
             (at least one bit per 8x8 block is needed)"
        )));
    }
    Ok(())
}

fn decode_error(e: image::ImageError) -> BitmapError {
    match e {
        image::ImageError::Limits(_) => {
            BitmapError::Decode(format!("image exceeds decode limits: {e}"))
        }
        image::ImageError::Unsupported(_) => BitmapError::UnknownFormat,
        other => BitmapError::Decode(other.to_string()),
    }
}

/// RGB8 the way stb_image gives it: 16-bit samples keep their high byte (the `image` crate would round
/// `v / 257`), alpha is dropped without compositing.
/// Baseline JPEGs go through our stb_image-exact decoder so pixels equal llama.cpp's; anything it
/// refuses (progressive, CMYK, corrupt...) is left to the `image` crate.
fn stb_exact_jpeg(format: Option<image::ImageFormat>, bytes: &[u8]) -> Option<DynamicImage> {
    if format != Some(image::ImageFormat::Jpeg) {
        return None;
    }
    let decoded = crate::jpeg::decode(bytes).ok()?;
    let width = u32::try_from(decoded.width).ok()?;
    let height = u32::try_from(decoded.height).ok()?;
    image::RgbImage::from_raw(width, height, decoded.rgb).map(DynamicImage::ImageRgb8)
}

fn to_rgb8_like_stb(image: DynamicImage) -> Vec<u8> {
    match image {
        DynamicImage::ImageRgb8(rgb) => rgb.into_raw(),
        DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_)
        | DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_) => image
            .to_rgb16()
            .into_raw()
            .into_iter()
            .map(|v| (v >> 8) as u8)
            .collect(),
        other => other.to_rgb8().into_raw(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_size_is_checked() {
        assert!(Bitmap::from_rgb(2, 2, vec![0; 12]).is_ok());
        assert!(matches!(
            Bitmap::from_rgb(2, 2, vec![0; 11]),
            Err(BitmapError::RawSize { expected: 12, .. })
        ));
        assert!(matches!(
            Bitmap::from_rgb(0, 2, vec![]),
            Err(BitmapError::Empty { .. })
        ));
        assert!(matches!(
            Bitmap::from_rgb(MAX_SIDE + 1, 1, vec![]),
            Err(BitmapError::TooLarge { .. })
        ));
    }

    #[test]
    fn hash_depends_on_dims_and_pixels() {
        let a = Bitmap::from_rgb(2, 1, vec![1, 2, 3, 4, 5, 6]).unwrap();
        let b = Bitmap::from_rgb(1, 2, vec![1, 2, 3, 4, 5, 6]).unwrap();
        let c = Bitmap::from_rgb(2, 1, vec![1, 2, 3, 4, 5, 7]).unwrap();
        assert_ne!(a.content_hash(), b.content_hash());
        assert_ne!(a.content_hash(), c.content_hash());
        assert_eq!(a.content_hash(), a.clone().content_hash());
    }

    #[test]
    fn a_jpeg_frame_larger_than_its_bytes_is_refused_before_decoding() {
        let dir = testkit::fixture("");
        let jpg = std::fs::read_dir(&dir)
            .unwrap()
            .flat_map(|d| std::fs::read_dir(d.unwrap().path()).into_iter().flatten())
            .map(|f| f.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "jpg"))
            .expect("a JPEG fixture");
        let mut bytes = std::fs::read(&jpg).unwrap();
        assert!(Bitmap::from_encoded(&bytes).is_ok());
        // Claim 16384x16384 in the baseline frame header (FFC0: length, precision, h, w).
        let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        bytes[sof + 5..sof + 9].copy_from_slice(&[0x40, 0x00, 0x40, 0x00]);
        let started = std::time::Instant::now();
        let err = Bitmap::from_encoded(&bytes).unwrap_err().to_string();
        assert!(
            err.contains("16384x16384") && err.contains("bytes"),
            "{err}"
        );
        assert!(started.elapsed().as_secs() < 2, "refused before decoding");
        assert!(check_jpeg_backed(1000, 1000, 600).is_ok(), "floor: 1 Mpx");
        assert!(check_jpeg_backed(4000, 3000, 600_000).is_ok());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Bitmap::from_encoded(b"").is_err());
        assert!(Bitmap::from_encoded(b"not an image at all").is_err());
        // A PNG signature followed by junk.
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend_from_slice(&[0xff; 64]);
        assert!(Bitmap::from_encoded(&png).is_err());
    }

    #[test]
    fn png_roundtrip_and_bomb_guard() {
        let img = image::RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut bytes = Vec::new();
        img.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
            .unwrap();
        let bmp = Bitmap::from_encoded(&bytes).unwrap();
        assert_eq!((bmp.width, bmp.height), (3, 2));
        assert_eq!(bmp.pixel(2, 1), [2, 1, 7]);

        // A header claiming 20000x1 must be refused before any allocation.
        let wide = image::GrayImage::new(MAX_SIDE + 1, 1);
        let mut bytes = Vec::new();
        wide.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
            .unwrap();
        assert!(Bitmap::from_encoded(&bytes).is_err());
    }

    #[test]
    fn sixteen_bit_keeps_high_byte_and_alpha_is_dropped() {
        let img = image::ImageBuffer::<image::Rgba<u16>, _>::from_pixel(
            1,
            1,
            image::Rgba([0x12ff, 0x8080, 0xff00, 0]),
        );
        let mut bytes = Vec::new();
        DynamicImage::ImageRgba16(img)
            .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
            .unwrap();
        let bmp = Bitmap::from_encoded(&bytes).unwrap();
        assert_eq!(bmp.rgb, vec![0x12, 0x80, 0xff]);
    }

    #[test]
    fn exif_orientation_is_applied() {
        use image::ImageEncoder;
        // Big-endian TIFF header + one IFD entry: Orientation (0x0112), SHORT, 1 value, 6 = rotate 90 CW.
        let exif = [
            b'M', b'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0,
            0,
        ];
        let pixels = [10u8, 20, 30, 40, 50, 60];
        let mut bytes = Vec::new();
        let mut encoder = image::codecs::png::PngEncoder::new(&mut bytes);
        encoder.set_exif_metadata(exif.to_vec()).unwrap();
        encoder
            .write_image(&pixels, 2, 1, image::ExtendedColorType::Rgb8)
            .unwrap();
        let bmp = Bitmap::from_encoded(&bytes).unwrap();
        assert_eq!((bmp.width, bmp.height), (1, 2));
        assert_eq!(bmp.pixel(0, 0), [10, 20, 30]);
        assert_eq!(bmp.pixel(0, 1), [40, 50, 60]);
    }
}
