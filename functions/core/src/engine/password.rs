//! Role passwords: 40 characters from the operating system's CSPRNG.

use rand::distr::{Distribution, Uniform};
use rand::rngs::OsRng;
use rand::TryRngCore;
use secrecy::SecretString;

/// Safe in URLs, shells, connection strings and secret paths: no quotes, slash,
/// backslash, `@`, `:` or anything a shell expands.
pub const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub const LENGTH: usize = 40;

pub fn generate() -> SecretString {
    let mut rng = OsRng.unwrap_err();
    let pick = Uniform::new(0, ALPHABET.len()).expect("a non-empty alphabet");
    let text: String = (0..LENGTH).map(|_| ALPHABET[pick.sample(&mut rng)] as char).collect();
    SecretString::from(text)
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn passwords_are_long_distinct_and_safe() {
        let a = generate();
        let b = generate();
        assert_eq!(a.expose_secret().len(), LENGTH);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(a.expose_secret().bytes().all(|c| ALPHABET.contains(&c)));
        assert_eq!(format!("{a:?}"), "SecretBox<str>([REDACTED])");
    }
}
