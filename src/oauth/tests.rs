//! Tests of the pure parts (URLs, HTTP replies, token replies) and of a token source
//! against a scripted token endpoint.

use super::http::{Endpoint, form, parse_response};
use super::reply::{TokenReply, device_reply, token_reply};
