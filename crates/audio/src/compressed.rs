//! FLAC and MP3 through symphonia (only its `flac` and `mp3` features are enabled).
//!
//! The demuxer is picked from the sniffed format; nothing is probed by extension. Decoded packets are averaged
//! into mono as they arrive, and decoding stops as soon as the audio passes the length limit, so neither the
//! work nor the memory depends on what a header claims.

use std::io::Cursor;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{Decoder, DecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::MediaSourceStream;
use symphonia::default::codecs::{FlacDecoder, MpaDecoder};
use symphonia::default::formats::{FlacReader, MpaReader};

use crate::decode::{AudioFormat, SourceInfo, check_length, push_mono};
use crate::error::AudioError;

/// Decodes a FLAC or MP3 stream into mono samples at its own rate.
pub(crate) fn decode(
    bytes: &[u8],
    format: AudioFormat,
    max_seconds: f64,
) -> Result<(Vec<f32>, SourceInfo), AudioError> {
    let payload = match format {
        AudioFormat::Mp3 => skip_id3v2(bytes)?,
        _ => bytes,
    };
    if format == AudioFormat::Flac {
        check_flac_streaminfo(payload)?;
    }
    let source =
        MediaSourceStream::new(Box::new(Cursor::new(payload.to_vec())), Default::default());
    let options = FormatOptions {
        enable_gapless: true,
        ..Default::default()
    };
    let mut reader: Box<dyn FormatReader> = match format {
        AudioFormat::Flac => {
            Box::new(FlacReader::try_new(source, &options).map_err(|e| demux_error("FLAC", e))?)
        }
        _ => Box::new(MpaReader::try_new(source, &options).map_err(|e| demux_error("MP3", e))?),
    };
    let track = reader
        .default_track()
        .ok_or_else(|| AudioError::Malformed("no audio track".into()))?;
    let (track_id, params) = (track.id, track.codec_params.clone());
    let mut decoder: Box<dyn Decoder> = match format {
        AudioFormat::Flac => Box::new(
            FlacDecoder::try_new(&params, &DecoderOptions::default())
                .map_err(|e| demux_error("FLAC", e))?,
        ),
        _ => Box::new(
            MpaDecoder::try_new(&params, &DecoderOptions::default())
                .map_err(|e| demux_error("MP3", e))?,
        ),
    };

    let mut mono = Vec::new();
    let mut rate = params.sample_rate.unwrap_or(0);
    let mut channels = params.channels.map(|c| c.count()).unwrap_or(0);
    let mut frames: u64 = 0;
    let mut buffer: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match reader.next_packet() {
            Ok(p) => p,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break;
            }
            Err(SymphoniaError::ResetRequired) => break,
            Err(e) => return Err(demux_error(name(format), e)),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // a damaged MP3 frame is skipped, as MP3 players do; a damaged FLAC frame fails the file
            Err(SymphoniaError::DecodeError(_)) if format == AudioFormat::Mp3 => continue,
            Err(e) => return Err(demux_error(name(format), e)),
        };
        let spec = *decoded.spec();
        if spec.rate == 0 {
            return Err(AudioError::ZeroSampleRate);
        }
        let ch = spec.channels.count();
        if ch == 0 {
            return Err(AudioError::ZeroChannels);
        }
        if frames > 0 && (spec.rate != rate || ch != channels) {
            return Err(AudioError::Unsupported(format!(
                "{} stream whose sample rate or channel count changes",
                name(format)
            )));
        }
        (rate, channels) = (spec.rate, ch);
        if decoded.frames() == 0 {
            continue;
        }
        // sized by the decoder's own packet capacity (a FLAC block or an MP3 frame), not by any claimed length
        let buf = match &mut buffer {
            Some(b) if b.capacity() >= decoded.capacity() * ch => b,
            _ => buffer.insert(SampleBuffer::new(decoded.capacity() as u64, spec)),
        };
        buf.copy_interleaved_ref(decoded);
        frames += (buf.samples().len() / ch) as u64;
        check_length(frames, rate, max_seconds)?;
        push_mono(&mut mono, buf.samples(), ch);
    }
    if rate == 0 {
        return Err(AudioError::ZeroSampleRate);
    }
    if channels == 0 {
        return Err(AudioError::ZeroChannels);
    }
    if format == AudioFormat::Flac
        && let Some(claimed) = params.n_frames
        && claimed > frames
    {
        return Err(AudioError::Truncated {
            what: "sample frames".into(),
            claimed,
            available: frames,
        });
    }
    let channels =
        u16::try_from(channels).map_err(|_| AudioError::Unsupported("too many channels".into()))?;
    Ok((
        mono,
        SourceInfo {
            format,
            sample_rate: rate,
            channels,
            frames,
        },
    ))
}

fn name(format: AudioFormat) -> &'static str {
    match format {
        AudioFormat::Flac => "FLAC",
        AudioFormat::Mp3 => "MP3",
        AudioFormat::Wav => "WAV",
    }
}

fn demux_error(what: &str, e: SymphoniaError) -> AudioError {
    match e {
        SymphoniaError::Unsupported(m) => AudioError::Unsupported(format!("{what}: {m}")),
        SymphoniaError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            AudioError::Malformed(format!("{what}: stream ends early"))
        }
        other => AudioError::Malformed(format!("{what}: {other}")),
    }
}

/// Skips a leading ID3v2 tag after checking its claimed size against the bytes present.
fn skip_id3v2(bytes: &[u8]) -> Result<&[u8], AudioError> {
    if !bytes.starts_with(b"ID3") {
        return Ok(bytes);
    }
    if bytes.len() < 10 {
        return Err(AudioError::Truncated {
            what: "bytes of ID3v2 header".into(),
            claimed: 10,
            available: bytes.len() as u64,
        });
    }
    let size_bytes = &bytes[6..10];
    if size_bytes.iter().any(|b| b & 0x80 != 0) {
        return Err(AudioError::Malformed(
            "ID3v2 tag size is not sync-safe".into(),
        ));
    }
    let size = size_bytes
        .iter()
        .fold(0u64, |acc, &b| (acc << 7) | u64::from(b));
    let footer = if bytes[5] & 0x10 != 0 { 10 } else { 0 };
    let total = 10 + size + footer;
    if total > bytes.len() as u64 {
        return Err(AudioError::Truncated {
            what: "bytes of ID3v2 tag".into(),
            claimed: total,
            available: bytes.len() as u64,
        });
    }
    let rest = &bytes[total as usize..];
    if rest.is_empty() {
        return Err(AudioError::Empty);
    }
    Ok(rest)
}

/// Reads the sample rate from FLAC's STREAMINFO block, so that a zero rate is reported as such.
fn check_flac_streaminfo(bytes: &[u8]) -> Result<(), AudioError> {
    // "fLaC", block header (4 bytes: last-flag + type 0, 24-bit length), STREAMINFO (34 bytes)
    if bytes.len() < 8 + 34 {
        return Err(AudioError::Truncated {
            what: "bytes of FLAC STREAMINFO".into(),
            claimed: 42,
            available: bytes.len() as u64,
        });
    }
    if bytes[4] & 0x7F != 0 {
        return Err(AudioError::Malformed(
            "FLAC stream does not start with STREAMINFO".into(),
        ));
    }
    let si = &bytes[8..];
    let rate = (u32::from(si[10]) << 12) | (u32::from(si[11]) << 4) | (u32::from(si[12]) >> 4);
    if rate == 0 {
        return Err(AudioError::ZeroSampleRate);
    }
    Ok(())
}
