//! `/v1/audio/transcriptions` multipart bodies (boundary `server::fuzzing::BOUNDARY`): the
//! form read, validated and its audio decoded as the handler does. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    server::fuzzing::transcription_form(data);
});
