//! What a projector type is, in one value: the descriptor every file under `models/` defines
//! and the [`registry`](crate::registry) lists. Everything that differs between projectors and
//! is not the encoder graph itself lives here as data, so that the library (`mtmd`), the server
//! and the CLI never match on a projector's name.

use crate::ClipError;
use crate::bitmap::Bitmap;
use crate::hparams::EncoderHparams;
use crate::models::Encoder;
use crate::preprocess::{ImagePiece, PreprocessError, PreprocessParams, PreprocessedImage};
use crate::vit::WeightLoader;

/// The kind of media a projector consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    /// RGB images.
    Vision,
    /// Mono 16 kHz audio, fed to the encoder as log-mel windows.
    Audio,
}

/// Builds the encoder from the weights and the (defaults-resolved) hyper-parameters.
pub type BuildFn = fn(&WeightLoader, &EncoderHparams) -> Result<Box<dyn Encoder>, ClipError>;

/// Turns a bitmap into the encoder's input pixels and decides its token grid.
pub type PreprocessFn =
    fn(&Bitmap, &PreprocessParams) -> Result<PreprocessedImage, PreprocessError>;

/// Turns a bitmap into several encoder inputs in prompt order: the tiles (row-major, each
/// marked [`Placement::Tile`](crate::preprocess::Placement::Tile)) then the overview
/// ([`Placement::Overview`](crate::preprocess::Placement::Overview)).
pub type TiledPreprocessFn =
    fn(&Bitmap, &PreprocessParams) -> Result<Vec<ImagePiece>, PreprocessError>;

/// What a projector's encoder takes, and how the media become that.
#[derive(Debug, Clone, Copy)]
pub enum Input {
    /// Images, preprocessed by this function into one encoder input.
    Image(PreprocessFn),
    /// Images cut into tiles plus an overview, each its own encoder input and media chunk,
    /// laid out with [`Framing::tiles`].
    TiledImage(TiledPreprocessFn),
    /// Mono 16 kHz audio as Whisper log-mel windows (`n_mel_bins` x frames, made by the
    /// `audio` crate); `tokens` gives the embedding rows a window of `n_frames` becomes.
    AudioMel {
        tokens: fn(&EncoderHparams, usize) -> usize,
    },
}

/// Text the text model expects around a media item's embeddings, as llama.cpp's mtmd writes it.
///
/// A projector whose embeddings carry their own separators (Pixtral's `[IMG_BREAK]` rows) does
/// that inside its encoder; one that splits an image into several chunks (Idefics3 tiles) names
/// the text between the chunks in [`Framing::tiles`].
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    /// Tokenized on its own and appended to the text before the media chunk.
    pub begin: &'static str,
    /// Tokenized on its own; starts the text after the media chunk.
    pub end: &'static str,
    /// For projectors that cut an image into tiles plus an overview: the text between them.
    pub tiles: Option<TileFraming>,
}

impl Framing {
    /// One chunk between `begin` and `end`.
    pub const fn wrap(begin: &'static str, end: &'static str) -> Self {
        Self {
            begin,
            end,
            tiles: None,
        }
    }
}

/// Text around each tile of a tiled image (llama.cpp's slice templates). Each tile is its own
/// media chunk, laid out row-major, and the overview image comes after all tiles, wrapped in
/// the framing's `begin` and `end`:
///
/// `tile_begin(1,1)` tile `tile_end` `tile_begin(1,2)` tile `tile_end` … `row_end`
/// `tile_begin(2,1)` … tile `tile_end` `before_overview` `begin` overview `end`.
#[derive(Debug, Clone, Copy)]
pub struct TileFraming {
    /// Text before the tile at (`row`, `col`), both counted from 1.
    pub tile_begin: fn(row: usize, col: usize) -> String,
    /// Text after every tile.
    pub tile_end: &'static str,
    /// Text after every row of tiles but the last.
    pub row_end: &'static str,
    /// Text between the last tile and the overview's `begin`.
    pub before_overview: &'static str,
}

/// Defaults llama.cpp applies when an mmproj does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// Patches merged (or pooled) per side when `clip.vision.spatial_merge_size` and
    /// `clip.vision.projector.scale_factor` are absent; 1 for no merging.
    pub merge: usize,
    /// Bounds on output tokens for dynamic-resolution projectors (a user's `image_min_tokens` /
    /// `image_max_tokens` override them); `None` for projectors with a fixed token count, which
    /// ignore such bounds as llama.cpp does.
    pub token_limits: Option<TokenLimits>,
}

/// Lower and upper bound on the tokens of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLimits {
    pub min: u32,
    pub max: u32,
}

/// One projector type: how its media are preprocessed and framed, its defaults, how attention
/// treats its tokens in the decoder, and how its encoder is built.
#[derive(Debug, Clone, Copy)]
pub struct Projector {
    /// `clip.projector_type` (or `clip.vision.projector_type`) as llama.cpp's converter writes it.
    pub name: &'static str,
    pub input: Input,
    pub framing: Framing,
    /// The decoder lets this projector's tokens attend to each other regardless of order
    /// (Gemma 3), instead of causally.
    pub non_causal: bool,
    pub defaults: Defaults,
    pub build: BuildFn,
}

impl Projector {
    pub fn modality(&self) -> Modality {
        match self.input {
            Input::Image(_) | Input::TiledImage(_) => Modality::Vision,
            Input::AudioMel { .. } => Modality::Audio,
        }
    }
}

impl PartialEq for Projector {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
