//! Turns the URL of an `image_url` part into a decoded [`Bitmap`], and the base64 data of an
//! `input_audio` part (or an uploaded file) into an [`Audio`] clip. Image URLs: `data:` URIs
//! and bare base64 always; http(s) only with `--allow-remote-media`, and then never towards loopback,
//! private, link-local or otherwise internal addresses (the server must not become a proxy
//! into the network it runs in). The check sits in ureq's resolver, so it applies to every
//! redirect hop and to the very addresses that get connected (no DNS-rebinding gap).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use mtmd::{Audio, AudioError, Bitmap, DecodeOptions};

use super::api_error::ApiError;

/// How media URLs may be read.
#[derive(Debug, Clone, Copy)]
pub struct MediaPolicy {
    pub allow_remote: bool,
    /// Bound of one decoded or downloaded file, in bytes.
    pub max_bytes: usize,
    /// Longest audio clip accepted, in seconds (`--max-audio-seconds`).
    pub max_audio_seconds: f64,
}

/// Container formats an `input_audio` part may name (the decoder sniffs the bytes anyway).
pub const AUDIO_FORMATS: &[&str] = &["wav", "mp3", "flac"];

const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REDIRECTS: u32 = 3;

/// Media types a `data:` URI may name (empty = unspecified, sniffed by the decoder).
const IMAGE_TYPES: &[&str] = &[
    "",
    "image/png",
    "image/jpeg",
    "image/jpg",
    "image/webp",
    "image/gif",
    "image/bmp",
    "image/x-ms-bmp",
    "application/octet-stream",
];

/// Decodes one image; `what` names the part in errors ("messages[1].content[0]").
/// Blocking (decoding, maybe a download): call it off the async workers.
pub fn load_image(url: &str, policy: &MediaPolicy, what: &str) -> Result<Bitmap, ApiError> {
    let url = url.trim();
    let bytes = read_url(url, policy, what)?;
    let bitmap = Bitmap::from_bytes(&bytes)
        .map_err(|e| ApiError::InvalidImage(format!("{what}: cannot decode the image: {e}")))?;
    let id = format!("{:016x}", bitmap.content_hash());
    Ok(bitmap.with_id(id))
}

/// Decodes the base64 `data` of an `input_audio` part whose `format` is wav, mp3 or flac;
/// `what` names the part in errors. Blocking (decoding): call it off the async workers.
pub fn load_audio(
    data: &str,
    format: &str,
    policy: &MediaPolicy,
    what: &str,
) -> Result<Audio, ApiError> {
    let format = format.trim().to_ascii_lowercase();
    if !AUDIO_FORMATS.contains(&format.as_str()) {
        return Err(ApiError::InvalidAudio(format!(
            "{what}: unsupported audio format '{format}' (expected wav, mp3 or flac)"
        )));
    }
    // Some clients send a data URI where OpenAI has bare base64: take both.
    let data = data.trim();
    let data = match strip_prefix_ci(data, "data:") {
        Some(rest) => rest.split_once(',').map_or(rest, |(_, d)| d),
        None => data,
    };
    let bytes = decode_base64(data, policy, what, Noun::Audio)?;
    decode_audio(&bytes, policy, what)
}

/// Decodes an audio file held in memory (an upload); `what` names it in errors. Blocking.
pub fn decode_audio(bytes: &[u8], policy: &MediaPolicy, what: &str) -> Result<Audio, ApiError> {
    let options = DecodeOptions {
        max_seconds: policy.max_audio_seconds,
        ..DecodeOptions::default()
    };
    Audio::from_bytes(bytes, &options).map_err(|e| match e {
        AudioError::TooLong {
            seconds,
            max_seconds,
        } => ApiError::AudioTooLong(format!(
            "{what}: the audio is {seconds:.2} s long (at least), longer than the limit of \
             {max_seconds:.2} s (--max-audio-seconds)"
        )),
        e => ApiError::InvalidAudio(format!("{what}: cannot decode the audio: {e}")),
    })
}

/// What a base64 payload holds, for error messages and codes.
#[derive(Debug, Clone, Copy)]
enum Noun {
    Image,
    Audio,
}

impl Noun {
    fn error(self, message: String) -> ApiError {
        match self {
            Noun::Image => ApiError::InvalidImage(message),
            Noun::Audio => ApiError::InvalidAudio(message),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Noun::Image => "image",
            Noun::Audio => "audio",
        }
    }
}

fn read_url(url: &str, policy: &MediaPolicy, what: &str) -> Result<Vec<u8>, ApiError> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if let Some(rest) = strip_prefix_ci(url, "data:") {
        return decode_data_uri(rest, policy, what);
    }
    if lower.starts_with("http://") || lower.starts_with("https://") {
        if !policy.allow_remote {
            return Err(ApiError::RemoteMedia(format!(
                "{what}: remote image URLs are disabled; start the server with \
                 --allow-remote-media (or send the image as a data: URI)"
            )));
        }
        return fetch_remote(url, policy.max_bytes)
            .map_err(|e| ApiError::RemoteMedia(format!("{what}: {e}")));
    }
    if url.contains("://") || lower.starts_with("file:") {
        let scheme = url.split(':').next().unwrap_or_default();
        return Err(ApiError::InvalidImage(format!(
            "{what}: unsupported URL scheme '{scheme}' (send a data: URI or base64)"
        )));
    }
    decode_base64(url, policy, what, Noun::Image)
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `[<media type>][;param]*[;base64],<data>` (what follows `data:`).
fn decode_data_uri(rest: &str, policy: &MediaPolicy, what: &str) -> Result<Vec<u8>, ApiError> {
    let Some((header, data)) = rest.split_once(',') else {
        return Err(ApiError::InvalidImage(format!(
            "{what}: malformed data URI (no ',' before the data)"
        )));
    };
    let mut params = header.split(';');
    let media_type = params
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if !IMAGE_TYPES.contains(&media_type.as_str()) {
        return Err(ApiError::InvalidImage(format!(
            "{what}: unsupported media type '{media_type}' (expected png, jpeg, webp, gif or bmp)"
        )));
    }
    if !params.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
        return Err(ApiError::InvalidImage(format!(
            "{what}: only base64 data URIs are supported (data:image/png;base64,...)"
        )));
    }
    decode_base64(data, policy, what, Noun::Image)
}

fn decode_base64(
    data: &str,
    policy: &MediaPolicy,
    what: &str,
    noun: Noun,
) -> Result<Vec<u8>, ApiError> {
    // Line-wrapped base64 (`base64` without -w0) is common from shells.
    let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err(noun.error(format!("{what}: the {} data is empty", noun.name())));
    }
    if compact.len() / 4 * 3 > policy.max_bytes {
        return Err(ApiError::RequestTooLarge(policy.max_bytes >> 20));
    }
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    let url_safe = GeneralPurpose::new(&base64::alphabet::URL_SAFE, config);
    standard
        .decode(&compact)
        .or_else(|e| url_safe.decode(&compact).map_err(|_| e))
        .map_err(|e| noun.error(format!("{what}: invalid base64 {} data: {e}", noun.name())))
}

/// True for addresses a server-side fetch must never reach.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a == 0 // "this network", incl. 0.0.0.0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || a >= 240 // reserved
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let seg = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        let [a, b] = seg[6].to_be_bytes();
        let [c, d] = seg[7].to_be_bytes();
        return forbidden_v4(Ipv4Addr::new(a, b, c, d));
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // deprecated site-local
        || (seg[0..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible and other ::/96 forms
}

/// The resolver's refusal, recognised again after ureq hands it back.
#[derive(Debug)]
struct Refused {
    host: String,
    addr: IpAddr,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} resolves to a private address ({})",
            self.host, self.addr
        )
    }
}

impl std::error::Error for Refused {}

/// ureq's resolver, refusing hosts with any forbidden address.
#[derive(Debug)]
struct PublicOnly {
    inner: ureq::unversioned::resolver::DefaultResolver,
    /// [`is_forbidden`], except in tests that need a loopback server to be reachable.
    forbid: fn(IpAddr) -> bool,
}

impl ureq::unversioned::resolver::Resolver for PublicOnly {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let addrs = self.inner.resolve(uri, config, timeout)?;
        if let Some(bad) = addrs.iter().find(|a| (self.forbid)(a.ip())) {
            return Err(ureq::Error::Other(Box::new(Refused {
                host: uri.host().unwrap_or_default().to_owned(),
                addr: bad.ip(),
            })));
        }
        Ok(addrs)
    }
}

/// Downloads `url` (http/https only, public addresses only, bounded in size and time).
fn fetch_remote(url: &str, max_bytes: usize) -> Result<Vec<u8>, String> {
    fetch_with(url, max_bytes, is_forbidden)
}

fn fetch_with(url: &str, max_bytes: usize, forbid: fn(IpAddr) -> bool) -> Result<Vec<u8>, String> {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        .max_redirects(MAX_REDIRECTS)
        // An environment proxy would be resolved instead of the target and bypass the check.
        .proxy(None)
        .build();
    let agent = ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        PublicOnly {
            inner: Default::default(),
            forbid,
        },
    );
    let shown = shorten(url);
    let mut response = agent.get(url).call().map_err(|e| match &e {
        ureq::Error::Other(inner) => match inner.downcast_ref::<Refused>() {
            Some(r) => format!("refusing to fetch {shown}: {r}"),
            None => format!("could not fetch {shown}: {e}"),
        },
        ureq::Error::StatusCode(code) => format!("could not fetch {shown}: HTTP status {code}"),
        _ => format!("could not fetch {shown}: {e}"),
    })?;
    response
        .body_mut()
        .with_config()
        .limit(max_bytes as u64)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => {
                format!("{shown} is larger than {} MB", max_bytes >> 20)
            }
            e => format!("could not read {shown}: {e}"),
        })
}

/// URLs can be long (signed query strings): keep error messages readable.
fn shorten(url: &str) -> String {
    match url.char_indices().nth(120) {
        Some((i, _)) => format!("{}...", &url[..i]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow_remote: bool) -> MediaPolicy {
        MediaPolicy {
            allow_remote,
            max_bytes: 8 << 20,
            max_audio_seconds: 600.0,
        }
    }

    fn audio_fixture(name: &str) -> Vec<u8> {
        std::fs::read(testkit::fixture("qwen2audio").join(name)).expect("fixture")
    }

    #[test]
    fn audio_parts_decode_with_hash_ids() {
        let wav = audio_fixture("speech_a_16k_mono.wav");
        let flac = audio_fixture("speech_a_16k_mono.flac");
        let a = load_audio(&b64(&wav), "wav", &policy(false), "x").expect("wav");
        assert_eq!(a.id(), format!("{:016x}", a.content_hash()));
        assert_eq!(a.pcm().sample_rate, 16000);
        let b = load_audio(&b64(&flac), "FLAC", &policy(false), "x").expect("flac");
        // FLAC is lossless: the same samples, the same cache key.
        assert_eq!(a.content_hash(), b.content_hash());
        let c = load_audio(
            &format!("data:audio/wav;base64,{}", b64(&wav)),
            "wav",
            &policy(false),
            "x",
        )
        .expect("data URI");
        assert_eq!(a.id(), c.id());
    }

    #[test]
    fn bad_audio_is_400_naming_the_part() {
        let wav = audio_fixture("speech_a_16k_mono.wav");
        let what = "messages[0].content[1]";
        for (data, format, code) in [
            ("@@@ not base64 @@@".to_owned(), "wav", "invalid_audio"),
            (String::new(), "wav", "invalid_audio"),
            (b64(b"RIFF\0\0\0\0WAVEjunk"), "wav", "invalid_audio"),
            (b64(b"hello world, not audio"), "mp3", "invalid_audio"),
            (b64(&wav), "ogg", "invalid_audio"),
        ] {
            let err = load_audio(&data, format, &policy(false), what).expect_err(format);
            assert_eq!(err.status().as_u16(), 400, "{err}");
            assert_eq!(err.body()["error"]["code"], code, "{err}");
            assert!(err.to_string().starts_with(what), "{err}");
        }
        let short = MediaPolicy {
            max_audio_seconds: 1.0,
            ..policy(false)
        };
        let err = load_audio(&b64(&wav), "wav", &short, what).expect_err("too long");
        assert_eq!(err.body()["error"]["code"], "audio_too_long");
        let msg = err.to_string();
        assert!(msg.contains("1.00 s") && msg.contains("s long"), "{msg}");
        assert!(msg.contains("--max-audio-seconds"), "{msg}");
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/gemma3/");
        std::fs::read(format!("{path}{name}")).expect("fixture")
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn classifier_refuses_internal_addresses() {
        let bad = [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
        ];
        for s in bad {
            let ip: IpAddr = s.parse().expect("address");
            assert!(is_forbidden(ip), "{s} must be refused");
        }
        let good = [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ];
        for s in good {
            let ip: IpAddr = s.parse().expect("address");
            assert!(!is_forbidden(ip), "{s} must be allowed");
        }
    }

    #[test]
    fn data_uris_and_bare_base64_decode_with_hash_ids() {
        let png = fixture("tiny.png");
        let jpg = fixture("photo2.jpg");
        let a = load_image(
            &format!("data:image/png;base64,{}", b64(&png)),
            &policy(false),
            "x",
        )
        .expect("png data URI");
        assert_eq!(a.id(), format!("{:016x}", a.content_hash()));
        let b = load_image(&format!("data:;base64,{}", b64(&png)), &policy(false), "x")
            .expect("data URI without a media type");
        assert_eq!(a.id(), b.id());
        let c = load_image(&b64(&png), &policy(false), "x").expect("bare base64");
        assert_eq!(a.id(), c.id());
        let d = load_image(
            &format!("data:image/jpeg;base64,{}", b64(&jpg)),
            &policy(false),
            "x",
        )
        .expect("jpeg data URI");
        assert_ne!(a.id(), d.id());
    }

    #[test]
    fn bad_inputs_are_400_naming_the_part() {
        let cases = [
            "data:image/png;base64,@@@not base64@@@",
            "data:text/plain;base64,aGVsbG8=",
            "data:image/png,rawbytes",
            "data:image/png;base64",
            "file:///etc/passwd",
            "ftp://example.com/x.png",
            "data:image/png;base64,aGVsbG8gd29ybGQ=",
        ];
        for url in cases {
            let err = load_image(url, &policy(true), "messages[1].content[0]").expect_err(url);
            assert_eq!(err.status().as_u16(), 400, "{url}: {err}");
            assert!(
                err.to_string().starts_with("messages[1].content[0]: "),
                "{err}"
            );
        }
    }

    #[test]
    fn remote_urls_are_refused_unless_allowed() {
        let err = load_image("https://example.com/cat.png", &policy(false), "p").expect_err("off");
        assert!(err.to_string().contains("--allow-remote-media"), "{err}");
        assert_eq!(err.status().as_u16(), 400);
    }

    /// Loopback is refused by address before any connection: the listener never sees one.
    #[test]
    fn loopback_fetches_are_refused_without_connecting() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        for url in [
            format!("http://127.0.0.1:{port}/x.png"),
            format!("http://localhost:{port}/x.png"),
            format!("http://[::1]:{port}/x.png"),
            "http://localhost/x.png".to_owned(),
        ] {
            let err = load_image(&url, &policy(true), "p").expect_err(&url);
            let msg = err.to_string();
            assert!(msg.contains("refusing to fetch"), "{url}: {msg}");
            assert!(msg.contains("private address"), "{url}: {msg}");
        }
        match listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the server was contacted: {other:?}"),
        }
    }

    /// A loopback server standing in for the internet: `/img` an image, `/big` too many
    /// bytes, `/hop` a redirect to 127.0.0.2 (the address this test's classifier forbids),
    /// `/loop` endless redirects. Answers `n` connections then stops.
    fn fake_internet(n: usize) -> u16 {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let png = fixture("tiny.png");
        std::thread::spawn(move || {
            for stream in listener.incoming().take(n) {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 4096];
                let len = stream.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..len]).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (status, extra, body) = match path.as_str() {
                    "/img" => ("200 OK", String::new(), png.clone()),
                    "/big" => ("200 OK", String::new(), vec![0u8; 3 << 20]),
                    "/hop" => (
                        "302 Found",
                        format!("Location: http://127.0.0.2:{port}/img\r\n"),
                        Vec::new(),
                    ),
                    _ => (
                        "302 Found",
                        format!("Location: http://127.0.0.1:{port}/loop\r\n"),
                        Vec::new(),
                    ),
                };
                let header = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(header.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        port
    }

    fn forbid_127_0_0_2(ip: IpAddr) -> bool {
        ip == IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))
    }

    #[test]
    fn allowed_fetches_are_bounded_and_every_hop_is_checked() {
        let port = fake_internet(8);
        let base = format!("http://127.0.0.1:{port}");
        let bytes = fetch_with(&format!("{base}/img"), 1 << 20, forbid_127_0_0_2).expect("fetch");
        assert_eq!(bytes, fixture("tiny.png"));
        let err = fetch_with(&format!("{base}/big"), 1 << 20, forbid_127_0_0_2).expect_err("big");
        assert!(err.contains("larger than 1 MB"), "{err}");
        let err = fetch_with(&format!("{base}/hop"), 1 << 20, forbid_127_0_0_2).expect_err("hop");
        assert!(
            err.contains("refusing to fetch") && err.contains("127.0.0.2"),
            "{err}"
        );
        let err = fetch_with(&format!("{base}/loop"), 1 << 20, forbid_127_0_0_2).expect_err("loop");
        assert!(err.contains("could not fetch"), "{err}");
    }
}
