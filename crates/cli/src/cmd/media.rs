//! Media on the command line: `--image` and `--audio` flags (in the order given), loading the
//! mtmd context and the media, and putting media markers into the prompt.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use clap::Args as ClapArgs;
use llm::Model;
use llm::chat::{ChatMessage, ContentPart, MessageContent};
use mtmd::{
    Audio, Bitmap, Context, ContextParams, DEFAULT_MEDIA_MARKER, DecodeOptions, MediaItem,
    MediaKind,
};

/// The media of a prompt (the mmproj is in [`ModelArgs`](super::model_args::ModelArgs)).
#[derive(ClapArgs, Clone, Debug, Default)]
pub struct MediaArgs {
    /// An image for the prompt (repeatable; images and audio fill the markers in the order given).
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    /// An audio file (WAV, FLAC, MP3) for the prompt (repeatable, in order with --image).
    #[arg(long = "audio")]
    pub audio: Vec<PathBuf>,
    /// Longest audio clip accepted, in seconds.
    #[arg(long, default_value_t = 600.0)]
    pub max_audio_seconds: f64,
    /// Fewest tokens per dynamic-resolution image (default 8).
    #[arg(long)]
    pub image_min_tokens: Option<u32>,
    /// Most tokens per dynamic-resolution image (default 4096).
    #[arg(long)]
    pub image_max_tokens: Option<u32>,
}

impl MediaArgs {
    /// How many media items the prompt gets.
    pub fn len(&self) -> usize {
        self.images.len() + self.audio.len()
    }

    /// Fails early (before any model loads) on media given without an mmproj.
    pub fn check(&self, mmproj: Option<&Path>) -> Result<()> {
        if self.len() > 0 && mmproj.is_none() {
            let what = if self.audio.is_empty() {
                "images"
            } else {
                "audio"
            };
            bail!("this model takes no {what} without --mmproj");
        }
        if self.max_audio_seconds.is_nan() || self.max_audio_seconds <= 0.0 {
            bail!("--max-audio-seconds must be positive");
        }
        Ok(())
    }

    /// The kinds of the media in command-line order.
    pub fn kinds(&self) -> Vec<MediaKind> {
        kinds_in_order(std::env::args_os(), self.images.len(), self.audio.len())
    }

    /// Decodes every `--image` and `--audio` in command-line order, naming the file on failure.
    pub fn load(&self) -> Result<Vec<MediaItem>> {
        let (mut images, mut audio) = (self.images.iter(), self.audio.iter());
        self.kinds()
            .into_iter()
            .map(|kind| match kind {
                MediaKind::Image => load_image(images.next().expect("counted")),
                MediaKind::Audio => {
                    load_audio(audio.next().expect("counted"), self.max_audio_seconds)
                }
            })
            .collect()
    }

    /// The mtmd context of `mmproj`, if given.
    pub fn context(
        &self,
        mmproj: Option<&Path>,
        model: &Arc<Model>,
        n_threads: Option<usize>,
        device: llm::Device,
    ) -> Result<Option<Context>> {
        let Some(mmproj) = mmproj else {
            return Ok(None);
        };
        let params = ContextParams {
            n_threads,
            image_min_tokens: self.image_min_tokens,
            image_max_tokens: self.image_max_tokens,
            device,
            ..ContextParams::default()
        };
        let mut ctx = Context::new(mmproj, model.clone(), params)?;
        ctx.set_encode_progress(encode_progress());
        Ok(Some(ctx))
    }
}

/// A bar on stderr that follows each media chunk's encoder layers ("encoding image x.png
/// [####   ] 12/27 layers"), cleared when the chunk is done; `None` when stderr is not a
/// terminal (logs and pipes stay clean).
pub fn encode_progress() -> Option<mtmd::ChunkProgress> {
    use std::io::IsTerminal;
    use std::sync::Mutex;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);
    Some(Arc::new(move |chunk: &mtmd::MediaChunk, done, total| {
        let Ok(mut slot) = bar.lock() else { return };
        let pb = slot.get_or_insert_with(|| {
            let pb = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} layers")
            {
                pb.set_style(style.progress_chars("#> "));
            }
            pb.set_message(format!("encoding {} {}", chunk.kind.name(), chunk.id));
            pb
        });
        pb.set_position(done as u64);
        if done >= total {
            pb.finish_and_clear();
            *slot = None;
        }
    }))
}

/// Decodes an image file; its id is the file name.
pub fn load_image(path: &Path) -> Result<MediaItem> {
    Bitmap::from_file(path)
        .map(|b| MediaItem::Image(b.with_id(path.display().to_string())))
        .map_err(|e| anyhow!("image {}: {e}", path.display()))
}

/// Decodes an audio file to 16 kHz mono; its id is the file name.
pub fn load_audio(path: &Path, max_seconds: f64) -> Result<MediaItem> {
    let options = DecodeOptions {
        max_seconds,
        ..DecodeOptions::default()
    };
    Audio::from_file(path, &options)
        .map(|a| MediaItem::Audio(a.with_id(path.display().to_string())))
        .map_err(|e| anyhow!("audio {}: {e}", path.display()))
}

/// The order of `--image` and `--audio` occurrences in `argv`; when the count does not
/// match what clap parsed (an unusual spelling), images first, then audio.
fn kinds_in_order(
    argv: impl Iterator<Item = OsString>,
    n_images: usize,
    n_audio: usize,
) -> Vec<MediaKind> {
    let mut kinds = Vec::new();
    for arg in argv {
        let arg = arg.to_string_lossy();
        if arg == "--" {
            break;
        }
        if arg == "--image" || arg.starts_with("--image=") {
            kinds.push(MediaKind::Image);
        } else if arg == "--audio" || arg.starts_with("--audio=") {
            kinds.push(MediaKind::Audio);
        }
    }
    let count = |k| kinds.iter().filter(|&&x| x == k).count();
    if count(MediaKind::Image) != n_images || count(MediaKind::Audio) != n_audio {
        kinds = std::iter::repeat_n(MediaKind::Image, n_images)
            .chain(std::iter::repeat_n(MediaKind::Audio, n_audio))
            .collect();
    }
    kinds
}

/// A chat-template part standing for one media item.
pub fn media_part(kind: MediaKind) -> ContentPart {
    match kind {
        MediaKind::Image => ContentPart::image(),
        // The template only needs the part's type; the clip itself goes to the encoder.
        MediaKind::Audio => ContentPart::input_audio("", "wav"),
    }
}

/// The user message of `-p`: plain text, or, when media come without markers in the prompt,
/// one part per item before the text (as llama.cpp's CLI does).
pub fn user_message(prompt: &str, kinds: &[MediaKind]) -> ChatMessage {
    if kinds.is_empty() || prompt.contains(DEFAULT_MEDIA_MARKER) {
        return ChatMessage::user(prompt);
    }
    let mut parts: Vec<ContentPart> = kinds.iter().map(|&k| media_part(k)).collect();
    parts.push(ContentPart::text(prompt));
    ChatMessage::with_content("user", MessageContent::Parts(parts))
}

/// Checks that the final prompt text holds one marker per media item.
pub fn check_marker_count(text: &str, n_media: usize) -> Result<()> {
    let markers = text.matches(DEFAULT_MEDIA_MARKER).count();
    if markers != n_media {
        bail!(
            "the prompt has {markers} media marker(s) {DEFAULT_MEDIA_MARKER} but {n_media} image/audio file(s) were given"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_parts_only_when_missing() {
        let two = [MediaKind::Image, MediaKind::Audio];
        assert!(matches!(
            user_message("hi", &two).content,
            MessageContent::Parts(ref p) if p.len() == 3
        ));
        assert!(matches!(
            user_message("a <__media__> b", &two[..1]).content,
            MessageContent::Text(_)
        ));
        assert!(check_marker_count("<__media__><__media__>", 2).is_ok());
        assert!(check_marker_count("<__media__>", 2).is_err());
    }

    #[test]
    fn media_keep_command_line_order() {
        let argv = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>().into_iter();
        let (i, a) = (MediaKind::Image, MediaKind::Audio);
        assert_eq!(
            kinds_in_order(
                argv(&["mtmd", "run", "--audio", "x.wav", "--image=y.png"]),
                1,
                1
            ),
            [a, i]
        );
        // A count clap disagrees with (e.g. after `--`): images first.
        assert_eq!(
            kinds_in_order(argv(&["mtmd", "--", "--audio", "x"]), 1, 1),
            [i, a]
        );
    }
}
