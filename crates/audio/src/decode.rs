//! Audio file → 16 kHz mono f32 PCM, as llama.cpp's loader produces it.
//!
//! The container is sniffed from the bytes (never from a file name). WAV is read with `hound` after a RIFF
//! walk of our own that checks every size the header claims against the bytes present; FLAC and MP3 go through
//! `symphonia` (see [`crate::compressed`]). Channels are averaged into mono, then the signal is resampled with
//! [`crate::resample::resample_linear`].

use std::io::Cursor;
use std::path::Path;

use crate::error::AudioError;
use crate::resample::resample_linear;
use crate::{Pcm, WHISPER_SAMPLE_RATE};

/// A container this crate decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AudioFormat {
    /// RIFF/WAVE with integer PCM (8/16/24/32-bit) or 32-bit IEEE float samples.
    Wav,
    /// FLAC (native `fLaC` stream).
    Flac,
    /// MPEG-1/2 audio layer III, optionally behind an ID3v2 tag.
    Mp3,
}

/// Options of [`decode_bytes`] and [`decode_file`].
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeOptions {
    /// Longest accepted audio, in seconds; longer audio is refused with [`AudioError::TooLong`] (it is not
    /// truncated). Decoding stops as soon as the limit is passed, so this also bounds the work done.
    pub max_seconds: f64,
    /// Sample rate of the returned PCM (Whisper-family encoders: 16 kHz).
    pub sample_rate: u32,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            max_seconds: 600.0,
            sample_rate: WHISPER_SAMPLE_RATE,
        }
    }
}

/// What the decoded file was, before downmixing and resampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    /// The container.
    pub format: AudioFormat,
    /// Its sample rate in Hz.
    pub sample_rate: u32,
    /// Its channel count.
    pub channels: u16,
    /// Sample frames decoded (per channel).
    pub frames: u64,
}

/// Which container `bytes` hold, from their first bytes; `None` when it is none of WAV, FLAC and MP3.
pub fn sniff(bytes: &[u8]) -> Option<AudioFormat> {
    if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE" {
        Some(AudioFormat::Wav)
    } else if bytes.starts_with(b"fLaC") {
        Some(AudioFormat::Flac)
    } else if bytes.starts_with(b"ID3") || is_mpeg_audio_sync(bytes) {
        Some(AudioFormat::Mp3)
    } else {
        None
    }
}

/// An MPEG audio frame header: 11 sync bits, then a layer field that is not the reserved 00 (which is what
/// ADTS AAC uses).
fn is_mpeg_audio_sync(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && bytes[0] == 0xFF && bytes[1] & 0xE0 == 0xE0 && (bytes[1] >> 1) & 0x3 != 0
}

/// Names a few containers we recognise but do not decode, for a better error than "not audio".
fn unsupported_container(bytes: &[u8]) -> Option<&'static str> {
    let starts = |m: &[u8]| bytes.starts_with(m);
    if starts(b"OggS") {
        Some("Ogg (Vorbis/Opus)")
    } else if starts(b"RIFX") {
        Some("big-endian RIFX WAV")
    } else if starts(b"RF64") || starts(b"BW64") {
        Some("RF64/BW64 WAV")
    } else if starts(b"FORM") {
        Some("AIFF")
    } else if bytes.len() >= 8 && &bytes[4..8] == b"ftyp" {
        Some("MP4/M4A")
    } else if starts(&[0x1A, 0x45, 0xDF, 0xA3]) {
        Some("Matroska/WebM")
    } else if bytes.len() >= 2 && bytes[0] == 0xFF && bytes[1] & 0xF6 == 0xF0 {
        Some("ADTS AAC")
    } else if bytes.len() >= 12 && starts(b"RIFF") {
        Some("RIFF file that is not WAVE")
    } else {
        None
    }
}

/// Decodes `bytes` with the default options (600 s limit, 16 kHz mono out).
pub fn decode(bytes: &[u8]) -> Result<Pcm, AudioError> {
    decode_bytes(bytes, &DecodeOptions::default())
}

/// Decodes an audio file held in memory into mono PCM at `opts.sample_rate`.
pub fn decode_bytes(bytes: &[u8], opts: &DecodeOptions) -> Result<Pcm, AudioError> {
    decode_bytes_with_info(bytes, opts).map(|(pcm, _)| pcm)
}

/// Reads and decodes an audio file; the format comes from its content, not its extension.
pub fn decode_file(path: impl AsRef<Path>, opts: &DecodeOptions) -> Result<Pcm, AudioError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_bytes(&bytes, opts)
}

/// [`decode_bytes`], also telling what the source was.
pub fn decode_bytes_with_info(
    bytes: &[u8],
    opts: &DecodeOptions,
) -> Result<(Pcm, SourceInfo), AudioError> {
    if !(opts.max_seconds.is_finite() && opts.max_seconds > 0.0) {
        return Err(AudioError::InvalidInput(format!(
            "max_seconds must be a positive number, not {}",
            opts.max_seconds
        )));
    }
    if opts.sample_rate == 0 {
        return Err(AudioError::InvalidInput(
            "the target sample rate must not be 0".into(),
        ));
    }
    let (mono, info) = match sniff(bytes) {
        Some(AudioFormat::Wav) => decode_wav(bytes, opts.max_seconds)?,
        Some(format) => crate::compressed::decode(bytes, format, opts.max_seconds)?,
        None => {
            return Err(match unsupported_container(bytes) {
                Some(name) => AudioError::Unsupported(name.to_string()),
                None => AudioError::NotAudio,
            });
        }
    };
    if mono.is_empty() {
        return Err(AudioError::Empty);
    }
    let samples = resample_linear(&mono, info.sample_rate, opts.sample_rate);
    Ok((
        Pcm {
            samples,
            sample_rate: opts.sample_rate,
        },
        info,
    ))
}

/// Refuses audio of `frames` frames at `rate` when it is longer than `max_seconds`.
pub(crate) fn check_length(frames: u64, rate: u32, max_seconds: f64) -> Result<(), AudioError> {
    let seconds = frames as f64 / f64::from(rate);
    if seconds > max_seconds {
        Err(AudioError::TooLong {
            seconds,
            max_seconds,
        })
    } else {
        Ok(())
    }
}

/// Averages interleaved frames into mono: `(c0 + c1 + ...) / n`, summed left to right in f32.
pub(crate) fn push_mono(out: &mut Vec<f32>, interleaved: &[f32], channels: usize) {
    if channels == 1 {
        out.extend_from_slice(interleaved);
        return;
    }
    let n = channels as f32;
    out.extend(
        interleaved
            .chunks_exact(channels)
            .map(|f| f.iter().fold(0.0f32, |t, &x| t + x) / n),
    );
}

/// The parts of a WAV header that decoding depends on, all checked against the bytes present.
#[derive(Debug)]
struct WavHeader {
    format_tag: u16,
    channels: u16,
    sample_rate: u32,
    block_align: u16,
    bits: u16,
    data_len: u64,
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Walks the RIFF chunks up to `data`, validating every claimed size.
fn parse_wav_header(bytes: &[u8]) -> Result<WavHeader, AudioError> {
    let mut pos = 12usize;
    let mut fmt: Option<(u16, u16, u32, u16, u16)> = None;
    loop {
        if pos + 8 > bytes.len() {
            return Err(if fmt.is_none() {
                AudioError::Malformed("WAV has no `fmt ` chunk".into())
            } else {
                AudioError::Malformed("WAV has no `data` chunk".into())
            });
        }
        let id = &bytes[pos..pos + 4];
        let size = u64::from(le_u32(bytes, pos + 4));
        let body = pos + 8;
        let available = (bytes.len() - body) as u64;
        if id == b"data" {
            let Some((format_tag, channels, sample_rate, block_align, bits)) = fmt else {
                return Err(AudioError::Malformed(
                    "WAV `data` chunk comes before the `fmt ` chunk".into(),
                ));
            };
            if size > available {
                return Err(AudioError::Truncated {
                    what: "bytes of sample data".into(),
                    claimed: size,
                    available,
                });
            }
            return Ok(WavHeader {
                format_tag,
                channels,
                sample_rate,
                block_align,
                bits,
                data_len: size,
            });
        }
        if size > available {
            let name = String::from_utf8_lossy(id).into_owned();
            return Err(AudioError::Truncated {
                what: format!("bytes in chunk `{name}`"),
                claimed: size,
                available,
            });
        }
        if id == b"fmt " {
            if size < 16 {
                return Err(AudioError::Malformed(format!(
                    "WAV `fmt ` chunk of {size} bytes (at least 16 needed)"
                )));
            }
            let mut tag = le_u16(bytes, body);
            // WAVE_FORMAT_EXTENSIBLE: the real format is the first two bytes of the sub-format GUID
            if tag == 0xFFFE && size >= 40 {
                tag = le_u16(bytes, body + 24);
            }
            fmt = Some((
                tag,
                le_u16(bytes, body + 2),
                le_u32(bytes, body + 4),
                le_u16(bytes, body + 12),
                le_u16(bytes, body + 14),
            ));
        }
        // chunks are word-aligned: an odd size is followed by a pad byte
        pos = body + size as usize + (size as usize & 1);
    }
}

fn decode_wav(bytes: &[u8], max_seconds: f64) -> Result<(Vec<f32>, SourceInfo), AudioError> {
    let h = parse_wav_header(bytes)?;
    if h.channels == 0 {
        return Err(AudioError::ZeroChannels);
    }
    if h.sample_rate == 0 {
        return Err(AudioError::ZeroSampleRate);
    }
    match (h.format_tag, h.bits) {
        (1, 8 | 16 | 24 | 32) | (3, 32) => {}
        (3, bits) => return Err(AudioError::Unsupported(format!("{bits}-bit float WAV"))),
        (1, bits) => return Err(AudioError::Unsupported(format!("{bits}-bit integer WAV"))),
        (6, _) => return Err(AudioError::Unsupported("A-law WAV".into())),
        (7, _) => return Err(AudioError::Unsupported("µ-law WAV".into())),
        (2 | 0x11, _) => return Err(AudioError::Unsupported("ADPCM WAV".into())),
        (tag, _) => {
            return Err(AudioError::Unsupported(format!(
                "WAV format tag {tag:#06x}"
            )));
        }
    }
    let frame_bytes = usize::from(h.channels) * usize::from(h.bits / 8);
    if usize::from(h.block_align) != frame_bytes {
        return Err(AudioError::Malformed(format!(
            "WAV block align {} does not match {} channels of {} bits",
            h.block_align, h.channels, h.bits
        )));
    }
    let frames = h.data_len / frame_bytes as u64;
    check_length(frames, h.sample_rate, max_seconds)?;

    let reader = hound::WavReader::new(Cursor::new(bytes)).map_err(hound_error)?;
    let spec = reader.spec();
    if spec.channels != h.channels
        || spec.sample_rate != h.sample_rate
        || spec.bits_per_sample != h.bits
    {
        return Err(AudioError::Malformed(
            "WAV header is ambiguous (two readings disagree)".into(),
        ));
    }
    let channels = usize::from(h.channels);
    // `frames` was checked against the bytes present, so this allocation is bounded by the input size
    let n = usize::try_from(frames).map_err(|_| AudioError::Malformed("WAV too large".into()))?;
    let mut interleaved = Vec::with_capacity(n * channels);
    match spec.sample_format {
        hound::SampleFormat::Float => {
            for s in reader.into_samples::<f32>().take(n * channels) {
                interleaved.push(s.map_err(hound_error)?);
            }
        }
        hound::SampleFormat::Int => {
            let convert = int_to_f32(h.bits);
            for s in reader.into_samples::<i32>().take(n * channels) {
                interleaved.push(convert(s.map_err(hound_error)?));
            }
        }
    }
    let mut mono = Vec::with_capacity(n);
    push_mono(&mut mono, &interleaved, channels);
    let info = SourceInfo {
        format: AudioFormat::Wav,
        sample_rate: h.sample_rate,
        channels: h.channels,
        frames,
    };
    Ok((mono, info))
}

/// Integer sample → f32, the way miniaudio's WAV reader scales each width.
fn int_to_f32(bits: u16) -> fn(i32) -> f32 {
    match bits {
        // unsigned 8-bit, which hound hands over re-centred on 0
        8 => |s| (s + 128) as f32 * 0.007_843_137_f32 - 1.0,
        16 => |s| s as f32 * (1.0 / 32_768.0),
        24 => |s| (f64::from(s) * (1.0 / 8_388_608.0)) as f32,
        _ => |s| (f64::from(s) / 2_147_483_648.0) as f32,
    }
}

fn hound_error(e: hound::Error) -> AudioError {
    match e {
        hound::Error::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            AudioError::Malformed("WAV sample data ends early".into())
        }
        hound::Error::Unsupported => {
            AudioError::Unsupported("WAV variant not supported by the reader".into())
        }
        other => AudioError::Malformed(format!("WAV: {other}")),
    }
}
