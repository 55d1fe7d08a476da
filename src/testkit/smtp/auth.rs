//! The fake's side of SMTP AUTH: PLAIN (with or without an initial response) and LOGIN.

use tokio::io::{AsyncBufReadExt, BufReader};

use super::{Shared, Split, Stream, lock, send};

/// An AUTH exchange (PLAIN with or without an initial response, or LOGIN): the user name
/// when it matches the script's credentials, `None` when refused.
pub(super) async fn auth(
    io: &mut BufReader<Box<dyn Stream>>,
    command: &str,
    shared: &Shared,
    split: Split,
) -> std::io::Result<Option<String>> {
    let Some((user, password)) = lock(&shared.script).auth.clone() else {
        return Ok(None);
    };
    let mut words = command.split_ascii_whitespace().skip(1);
    let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
    let initial = words.next().map(str::to_owned);
    let (given_user, given_password) = match mechanism.as_str() {
        "PLAIN" => {
            let response = match initial {
                Some(r) => r,
                None => prompt(io, "334 ", split).await?,
            };
            let decoded = crate::sasl::decode_base64(response.as_bytes()).unwrap_or_default();
            let mut parts = decoded.split(|&b| b == 0).skip(1);
            let u = parts.next().unwrap_or_default().to_vec();
            let p = parts.next().unwrap_or_default().to_vec();
            (u, p)
        }
        "LOGIN" => {
            let u = prompt(io, "334 VXNlcm5hbWU6", split).await?;
            let p = prompt(io, "334 UGFzc3dvcmQ6", split).await?;
            (
                crate::sasl::decode_base64(u.as_bytes()).unwrap_or_default(),
                crate::sasl::decode_base64(p.as_bytes()).unwrap_or_default(),
            )
        }
        _ => return Ok(None),
    };
    let ok = given_user == user.as_bytes() && given_password == password.as_bytes();
    Ok(ok.then_some(user))
}

/// Sends a 334 prompt and reads the client's answer line.
async fn prompt(
    io: &mut BufReader<Box<dyn Stream>>,
    challenge: &str,
    split: Split,
) -> std::io::Result<String> {
    send(io, challenge, split).await?;
    let mut line = Vec::new();
    io.read_until(b'\n', &mut line).await?;
    Ok(String::from_utf8_lossy(&line).trim_end().to_owned())
}
