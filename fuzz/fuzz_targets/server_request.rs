//! OpenAI request bodies -> typed requests, as the server's handlers convert them: chat
//! (messages, sampling fields, base64 image and audio parts decoded) and completions. Any
//! bytes: accepted or an API error with a response, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    server::fuzzing::chat_request(data);
    server::fuzzing::completion_request(data);
});
