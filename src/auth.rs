//! Client API keys: their format, their hash, and how a request presents one.
//!
//! A key is `sy-` followed by 44 characters of base62 (262 bits of randomness). Only the
//! lower-case hex SHA-256 of the whole key is stored; a lookup hashes what the client presents.

use http::{HeaderMap, HeaderName};
use rand::RngCore;
use sha2::{Digest, Sha256};

pub const KEY_PREFIX: &str = "sy-";
const KEY_RANDOM_CHARS: usize = 44;
/// How much of a key a listing shows: the prefix and four random characters.
const DISPLAY_PREFIX_LEN: usize = KEY_PREFIX.len() + 4;

/// A fresh secret key. Each character is uniform over 62 symbols: 44 × log2(62) ≈ 262 bits.
pub fn generate_key() -> String {
    let mut key = String::with_capacity(KEY_PREFIX.len() + KEY_RANDOM_CHARS);
    key.push_str(KEY_PREFIX);
    push_alphanumeric(&mut key, KEY_RANDOM_CHARS);
    key
}

const ALPHANUMERIC: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Appends `n` characters drawn uniformly from the 62 ASCII letters and digits, from the thread's
/// CSPRNG: six random bits each, the two values past 61 drawn again. The bits come a block at a
/// time, not a call of the generator per character as `rand`'s `Alphanumeric` draws them (about
/// a thousand instructions for a request's id, which every request makes two of).
fn push_alphanumeric(out: &mut String, n: usize) {
    let mut rng = rand::rng();
    let mut random = [0u8; 32];
    let mut left = 0;
    let mut pushed = 0;
    while pushed < n {
        if left == 0 {
            rng.fill_bytes(&mut random);
            left = random.len();
        }
        left -= 1;
        if let Some(&symbol) = ALPHANUMERIC.get(usize::from(random[left] & 63)) {
            out.push(char::from(symbol));
            pushed += 1;
        }
    }
}

/// Where clients present a key (besides `Authorization`), as ready names: a lookup by `&str` parses
/// the name first.
pub static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static X_GOOG_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");

pub fn hash_key(secret: &str) -> String {
    hex_lower(&Sha256::digest(secret.as_bytes()))
}

/// Lower-case hex, as `hex::encode` writes it, without its collect of one `char` at a time (a
/// tenth of what a key's lookup cost).
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    match hex::encode_to_slice(bytes, &mut out).map(|()| String::from_utf8(out)) {
        Ok(Ok(hex)) => hex,
        // Not reached: `out` has the length asked for and hex digits are ASCII.
        _ => hex::encode(bytes),
    }
}

pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(DISPLAY_PREFIX_LEN).collect()
}

/// A random identifier such as `key_3fZ…`, for records and requests.
pub fn new_id(prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + 21);
    id.push_str(prefix);
    id.push('_');
    push_alphanumeric(&mut id, 20);
    id
}

/// The key a client presents: `x-api-key` (Claude Code, Anthropic SDKs), else
/// `Authorization: Bearer` (Anthropic's Python SDK with an auth token, OpenAI SDKs), else
/// `x-goog-api-key` (Google SDKs).
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(&X_API_KEY).and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    if let Some(token) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| bearer(v))
    {
        return Some(token);
    }
    headers
        .get(&X_GOOG_API_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(value: &http::HeaderValue) -> Option<&str> {
    let v = value.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_long_and_distinct() {
        let a = generate_key();
        let b = generate_key();
        assert!(a.starts_with("sy-"));
        assert_eq!(a.len(), 3 + 44);
        assert!(a[3..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert_eq!(hash_key(&a).len(), 64);
        assert_ne!(hash_key(&a), hash_key(&b));
        assert_eq!(display_prefix(&a), a[..7]);
    }

    #[test]
    fn ids_draw_every_letter_and_digit_evenly() {
        let mut counts = [0u32; 128];
        let ids = 2_000;
        for _ in 0..ids {
            let id = new_id("req");
            let random = id.strip_prefix("req_").unwrap();
            assert_eq!(random.len(), 20);
            for b in random.bytes() {
                counts[usize::from(b)] += 1;
            }
        }
        // 40,000 draws over 62 symbols: about 645 each; a symbol never drawn or drawn twice as
        // often as the others (the two values past 61 folded onto some) would show.
        for (symbol, &n) in counts.iter().enumerate() {
            if ALPHANUMERIC.contains(&(symbol as u8)) {
                assert!(
                    (450..850).contains(&n),
                    "{:?} drawn {n} times",
                    symbol as u8 as char
                );
            } else {
                assert_eq!(n, 0, "{symbol} is not alphanumeric");
            }
        }
    }

    #[test]
    fn the_key_is_found_where_clients_put_it() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert("authorization", "Bearer sy-abc".parse().unwrap());
        assert_eq!(presented_key(&h), Some("sy-abc"));
        h.insert("x-api-key", "sy-def".parse().unwrap());
        assert_eq!(presented_key(&h), Some("sy-def"), "x-api-key wins");
        let mut h = HeaderMap::new();
        h.insert("authorization", "Basic Zm9v".parse().unwrap());
        assert_eq!(presented_key(&h), None);
        h.insert("x-goog-api-key", "sy-g".parse().unwrap());
        assert_eq!(presented_key(&h), Some("sy-g"));
    }
}
