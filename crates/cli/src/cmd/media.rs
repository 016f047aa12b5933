//! Images on the command line: `--image` flags, loading the mtmd context and the bitmaps,
//! and putting media markers into the prompt.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use clap::Args as ClapArgs;
use llm::Model;
use llm::chat::{ChatMessage, ContentPart, MessageContent};
use mtmd::{Bitmap, Context, ContextParams, DEFAULT_MEDIA_MARKER};

/// The images of a prompt (the mmproj is in [`ModelArgs`](super::model_args::ModelArgs)).
#[derive(ClapArgs, Clone, Debug, Default)]
pub struct MediaArgs {
    /// An image for the prompt (repeatable, in marker order).
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    /// Fewest tokens per dynamic-resolution image (default 8).
    #[arg(long)]
    pub image_min_tokens: Option<u32>,
    /// Most tokens per dynamic-resolution image (default 4096).
    #[arg(long)]
    pub image_max_tokens: Option<u32>,
}

impl MediaArgs {
    /// Fails early (before any model loads) on images given without an mmproj.
    pub fn check(&self, mmproj: Option<&Path>) -> Result<()> {
        if !self.images.is_empty() && mmproj.is_none() {
            bail!("this model takes no images without --mmproj");
        }
        Ok(())
    }

    /// Decodes every `--image`, naming the file on failure.
    pub fn load_images(&self) -> Result<Vec<Bitmap>> {
        self.images
            .iter()
            .map(|path| {
                Bitmap::from_file(path)
                    .map(|b| b.with_id(path.display().to_string()))
                    .map_err(|e| anyhow!("image {}: {e}", path.display()))
            })
            .collect()
    }

    /// The mtmd context of `mmproj`, if given.
    pub fn context(
        &self,
        mmproj: Option<&Path>,
        model: &Arc<Model>,
        n_threads: Option<usize>,
    ) -> Result<Option<Context>> {
        let Some(mmproj) = mmproj else {
            return Ok(None);
        };
        let params = ContextParams {
            n_threads,
            image_min_tokens: self.image_min_tokens,
            image_max_tokens: self.image_max_tokens,
            ..ContextParams::default()
        };
        let ctx = Context::new(mmproj, model.clone(), params)?;
        Ok(Some(ctx))
    }
}

/// The user message of `-p`: plain text, or, when images come without markers in the
/// prompt, one image part per image before the text (as llama.cpp's CLI does).
pub fn user_message(prompt: &str, n_images: usize) -> ChatMessage {
    if n_images == 0 || prompt.contains(DEFAULT_MEDIA_MARKER) {
        return ChatMessage::user(prompt);
    }
    let mut parts: Vec<ContentPart> = (0..n_images).map(|_| ContentPart::image()).collect();
    parts.push(ContentPart::text(prompt));
    ChatMessage::with_content("user", MessageContent::Parts(parts))
}

/// Checks that the final prompt text holds one marker per image.
pub fn check_marker_count(text: &str, n_images: usize) -> Result<()> {
    let markers = text.matches(DEFAULT_MEDIA_MARKER).count();
    if markers != n_images {
        bail!(
            "the prompt has {markers} image marker(s) {DEFAULT_MEDIA_MARKER} but {n_images} image(s) were given"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_parts_only_when_missing() {
        assert!(matches!(
            user_message("hi", 2).content,
            MessageContent::Parts(ref p) if p.len() == 3
        ));
        assert!(matches!(
            user_message("a <__media__> b", 1).content,
            MessageContent::Text(_)
        ));
        assert!(check_marker_count("<__media__><__media__>", 2).is_ok());
        assert!(check_marker_count("<__media__>", 2).is_err());
    }
}
