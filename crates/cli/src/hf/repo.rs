//! A repository's file listing and the choice of the text model and mmproj in it.

use serde::Deserialize;
use thiserror::Error;

/// Quantization picked when `-hf USER/REPO` names none (what llama.cpp picks too).
pub const DEFAULT_QUANT: &str = "Q4_K_M";

/// mmproj quantizations in order of preference: the projector is small, so precision wins.
const MMPROJ_PREFERENCE: [&str; 3] = ["f16", "bf16", "q8_0"];

/// `USER/REPO[:QUANT]` as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSpec {
    pub user: String,
    pub repo: String,
    /// `None`: the default quantization (with a fallback to the only model file).
    pub quant: Option<String>,
}

impl RepoSpec {
    pub fn parse(spec: &str) -> Result<Self, ChoiceError> {
        let bad = || ChoiceError::BadSpec(spec.to_string());
        let (name, quant) = match spec.split_once(':') {
            Some((name, quant)) if !quant.is_empty() => (name, Some(quant.to_string())),
            Some(_) => return Err(bad()),
            None => (spec, None),
        };
        let (user, repo) = name.split_once('/').ok_or_else(bad)?;
        // The names become directories of the cache: only what the Hub allows in names.
        let valid = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !valid(user) || !valid(repo) {
            return Err(bad());
        }
        if let Some(q) = &quant
            && !q
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(bad());
        }
        Ok(Self {
            user: user.to_string(),
            repo: repo.to_string(),
            quant,
        })
    }

    pub fn name(&self) -> String {
        format!("{}/{}", self.user, self.repo)
    }
}

/// One file of the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFile {
    pub path: String,
    pub size: u64,
}

#[derive(Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    lfs: Option<LfsInfo>,
}

#[derive(Deserialize)]
struct LfsInfo {
    size: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChoiceError {
    #[error("'{0}' is not USER/REPO[:QUANT]")]
    BadSpec(String),
    #[error("the repository listing is not valid JSON: {0}")]
    BadListing(String),
    #[error("the repository has an unsafe file path '{0}'")]
    UnsafePath(String),
    #[error("{repo} has no GGUF model files")]
    NoGguf { repo: String },
    #[error("{repo} has no {quant} GGUF file; available: {available}")]
    NoQuant {
        repo: String,
        quant: String,
        available: String,
    },
    #[error("{repo}: {path} is a split GGUF file; split GGUF files are not supported yet")]
    Split { repo: String, path: String },
}

/// The GGUF files of a `tree?recursive=true` answer (directories and other files dropped),
/// sorted by path so that the choice does not depend on the server's order.
pub fn parse_listing(json: &str) -> Result<Vec<RepoFile>, ChoiceError> {
    let entries: Vec<TreeEntry> =
        serde_json::from_str(json).map_err(|e| ChoiceError::BadListing(e.to_string()))?;
    let mut files = Vec::new();
    for e in entries {
        if e.kind != "file" || !e.path.to_ascii_lowercase().ends_with(".gguf") {
            continue;
        }
        check_path(&e.path)?;
        // The LFS size is the real file's; `size` may be the pointer's on some mirrors.
        let size = e.lfs.map(|l| l.size).or(e.size).unwrap_or(0);
        files.push(RepoFile { path: e.path, size });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// A repository path must stay inside the repository's cache directory once joined to it.
pub fn check_path(path: &str) -> Result<(), ChoiceError> {
    let unsafe_path = || ChoiceError::UnsafePath(path.to_string());
    if path.is_empty() || path.starts_with('/') || path.contains(['\\', ':', '\0']) {
        return Err(unsafe_path());
    }
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(unsafe_path());
    }
    Ok(())
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn is_mmproj(path: &str) -> bool {
    file_name(path).to_ascii_lowercase().contains("mmproj")
}

/// `-00001-of-00003.gguf` style shards.
fn is_split(path: &str) -> bool {
    let name = file_name(path).to_ascii_lowercase();
    let Some(stem) = name.strip_suffix(".gguf") else {
        return false;
    };
    let parts: Vec<&str> = stem.rsplitn(3, '-').collect();
    let five_digits = |s: &[u8]| s.len() == 5 && s.iter().all(u8::is_ascii_digit);
    match parts.as_slice() {
        [total, "of", rest] => {
            let rest = rest.as_bytes();
            five_digits(total.as_bytes())
                && rest.len() > 6
                && five_digits(&rest[rest.len() - 5..])
                && rest[rest.len() - 6] == b'-'
        }
        _ => false,
    }
}

/// Whether `tag` occurs in the file name as a whole quantization name: `Q4_K` must not
/// match `Q4_K_M`, hence `_` counts as part of the name after the tag; before it, `_`
/// separates (`model_Q8_0.gguf`).
pub fn has_tag(path: &str, tag: &str) -> bool {
    let name = file_name(path).to_ascii_lowercase();
    let tag = tag.to_ascii_lowercase();
    if tag.is_empty() {
        return false;
    }
    let bytes = name.as_bytes();
    let mut from = 0;
    while let Some(pos) = name[from..].find(&tag) {
        let start = from + pos;
        let end = start + tag.len();
        let before_ok = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        let after_ok =
            end == bytes.len() || !(bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_');
        if before_ok && after_ok {
            return true;
        }
        from = start + 1;
    }
    false
}

/// The quantization a file name shows: its last `-`/`.` separated part before `.gguf`.
fn quant_of(path: &str) -> String {
    let name = file_name(path);
    let stem = name
        .len()
        .checked_sub(5)
        .and_then(|n| name.get(..n))
        .unwrap_or(name);
    stem.rsplit(['-', '.'])
        .next()
        .unwrap_or(stem)
        .to_ascii_uppercase()
}

/// The text model file for `quant` (None: [`DEFAULT_QUANT`], or the only model file).
pub fn choose_model<'a>(
    files: &'a [RepoFile],
    repo: &str,
    quant: Option<&str>,
) -> Result<&'a RepoFile, ChoiceError> {
    let models: Vec<&RepoFile> = files.iter().filter(|f| !is_mmproj(&f.path)).collect();
    if models.is_empty() {
        return Err(ChoiceError::NoGguf {
            repo: repo.to_string(),
        });
    }
    let tag = quant.unwrap_or(DEFAULT_QUANT);
    let matching: Vec<&RepoFile> = models
        .iter()
        .copied()
        .filter(|f| has_tag(&f.path, tag))
        .collect();
    let chosen = match (matching.first(), quant, models.as_slice()) {
        (Some(first), _, _) => matching
            .iter()
            .find(|f| !is_split(&f.path))
            .copied()
            .unwrap_or(first),
        (None, None, [only]) => only,
        (None, _, _) => {
            let mut available: Vec<String> = models.iter().map(|f| quant_of(&f.path)).collect();
            available.sort();
            available.dedup();
            return Err(ChoiceError::NoQuant {
                repo: repo.to_string(),
                quant: tag.to_string(),
                available: available.join(", "),
            });
        }
    };
    if is_split(&chosen.path) {
        return Err(ChoiceError::Split {
            repo: repo.to_string(),
            path: chosen.path.clone(),
        });
    }
    Ok(chosen)
}

/// The repository's mmproj: f16, else bf16, else q8_0, else whichever comes first.
pub fn choose_mmproj(files: &[RepoFile]) -> Option<&RepoFile> {
    let mmprojs: Vec<&RepoFile> = files
        .iter()
        .filter(|f| is_mmproj(&f.path) && !is_split(&f.path))
        .collect();
    MMPROJ_PREFERENCE
        .iter()
        .find_map(|tag| mmprojs.iter().find(|f| has_tag(&f.path, tag)))
        .or(mmprojs.first())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<RepoFile> {
        names
            .iter()
            .map(|n| RepoFile {
                path: n.to_string(),
                size: 1,
            })
            .collect()
    }

    #[test]
    fn spec_parsing() {
        let s = RepoSpec::parse("ggml-org/gemma-3-4b-it-GGUF:Q8_0").unwrap();
        assert_eq!(
            (s.user.as_str(), s.repo.as_str()),
            ("ggml-org", "gemma-3-4b-it-GGUF")
        );
        assert_eq!(s.quant.as_deref(), Some("Q8_0"));
        assert_eq!(RepoSpec::parse("a/b").unwrap().quant, None);
        for bad in [
            "a", "a/", "/b", "a/b:", "../b", "a/..", "a/b/c", "a b/c", "a/b:x/y",
        ] {
            assert!(RepoSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_match_whole_quant_names() {
        assert!(has_tag("m-Q4_K_M.gguf", "q4_k_m"));
        assert!(!has_tag("m-Q4_K_M.gguf", "Q4_K"));
        assert!(has_tag("m-Q4_K.gguf", "Q4_K"));
        assert!(has_tag("m_Q8_0.gguf", "Q8_0"));
        assert!(!has_tag("m-Q8_0.gguf", "Q8"));
        assert!(!has_tag("m-BF16.gguf", "F16"));
        assert!(has_tag("dir/m-F16.gguf", "f16"));
        assert!(has_tag("m-UD-Q4_K_XL.gguf", "Q4_K_XL"));
    }

    #[test]
    fn model_choice() {
        let list = files(&[
            "m-BF16.gguf",
            "m-F16.gguf",
            "m-Q4_K.gguf",
            "m-Q4_K_M.gguf",
            "m-Q8_0.gguf",
            "mmproj-m-f16.gguf",
        ]);
        assert_eq!(
            choose_model(&list, "r", None).unwrap().path,
            "m-Q4_K_M.gguf"
        );
        assert_eq!(
            choose_model(&list, "r", Some("q4_k")).unwrap().path,
            "m-Q4_K.gguf"
        );
        assert_eq!(
            choose_model(&list, "r", Some("F16")).unwrap().path,
            "m-F16.gguf"
        );
        let err = choose_model(&list, "r", Some("Q2_K"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("BF16, F16, Q4_K, Q4_K_M, Q8_0"), "{err}");
        assert!(!err.contains("MMPROJ"), "{err}");

        // No Q4_K_M but only one model file: take it. Asked explicitly: no fallback.
        let single = files(&["m-Q8_0.gguf", "mmproj-f16.gguf"]);
        assert_eq!(
            choose_model(&single, "r", None).unwrap().path,
            "m-Q8_0.gguf"
        );
        assert!(choose_model(&single, "r", Some("Q4_0")).is_err());
        assert!(matches!(
            choose_model(&files(&["mmproj.gguf"]), "r", None),
            Err(ChoiceError::NoGguf { .. })
        ));
    }

    #[test]
    fn split_files_are_refused() {
        let list = files(&[
            "m-Q4_K_M-00001-of-00002.gguf",
            "m-Q4_K_M-00002-of-00002.gguf",
        ]);
        assert!(matches!(
            choose_model(&list, "r", None),
            Err(ChoiceError::Split { .. })
        ));
        assert!(is_split("Q8_0/m-Q8_0-00001-of-00003.gguf"));
        assert!(!is_split("m-Q8_0.gguf"));
    }

    #[test]
    fn mmproj_preference() {
        let all = files(&[
            "mmproj-Q8_0.gguf",
            "mmproj-BF16.gguf",
            "mmproj-F16.gguf",
            "mmproj-F32.gguf",
        ]);
        assert_eq!(choose_mmproj(&all).unwrap().path, "mmproj-F16.gguf");
        let no_f16 = files(&["mmproj-Q8_0.gguf", "mmproj-bf16.gguf"]);
        assert_eq!(choose_mmproj(&no_f16).unwrap().path, "mmproj-bf16.gguf");
        let other = files(&["mmproj-F32.gguf", "m.gguf"]);
        assert_eq!(choose_mmproj(&other).unwrap().path, "mmproj-F32.gguf");
        assert!(choose_mmproj(&files(&["m.gguf"])).is_none());
    }

    #[test]
    fn unsafe_paths_are_rejected() {
        for bad in [
            "../x.gguf",
            "a/../../x.gguf",
            "/etc/x.gguf",
            "a//b.gguf",
            "C:x.gguf",
            "a\\..\\b.gguf",
            "./a.gguf",
            "",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_path("sub/dir/m.gguf").is_ok());
        let listing = r#"[{"type":"file","path":"../evil.gguf","size":3}]"#;
        assert!(matches!(
            parse_listing(listing),
            Err(ChoiceError::UnsafePath(_))
        ));
    }

    #[test]
    fn listing_uses_lfs_size_and_skips_other_files() {
        let listing = r#"[
            {"type":"directory","path":"sub","size":0},
            {"type":"file","path":"README.md","size":10},
            {"type":"file","path":"m-Q8_0.gguf","size":134,"lfs":{"size":5000,"oid":"x"}},
            {"type":"file","path":"a-F16.gguf","size":7}
        ]"#;
        let files = parse_listing(listing).unwrap();
        assert_eq!(
            files,
            vec![
                RepoFile {
                    path: "a-F16.gguf".into(),
                    size: 7
                },
                RepoFile {
                    path: "m-Q8_0.gguf".into(),
                    size: 5000
                },
            ]
        );
        assert!(parse_listing("{").is_err());
    }
}
