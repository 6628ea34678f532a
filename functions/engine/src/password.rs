//! Role passwords: 40 characters from the operating system's CSPRNG, accepted by
//! every server dbroles provisions: RDS, MySQL's `validate_password` (MEDIUM and
//! STRONG) and MariaDB's `simple_password_check` want an upper-case letter, a
//! lower-case letter, a digit and a symbol, so each password has them.

use rand::distr::{Distribution, Uniform};
use rand::rngs::OsRng;
use rand::TryRngCore;
use secrecy::SecretString;

/// Safe in URLs, shells, connection strings and secret paths: no quotes, slash,
/// backslash, `@`, `:` or anything a shell expands. `-` and `_` are the symbols.
pub const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub const LENGTH: usize = 40;

/// Each password has at least one of each.
const CLASSES: [fn(u8) -> bool; 4] =
    [|c| c.is_ascii_uppercase(), |c| c.is_ascii_lowercase(), |c| c.is_ascii_digit(), |c| c == b'-' || c == b'_'];

pub fn generate() -> SecretString {
    let mut rng = OsRng.unwrap_err();
    let pick = Uniform::new(0, ALPHABET.len()).expect("a non-empty alphabet");
    loop {
        let bytes: Vec<u8> = (0..LENGTH).map(|_| ALPHABET[pick.sample(&mut rng)]).collect();
        // A letter first: never an option to a shell command (`-x...`).
        if bytes[0].is_ascii_alphabetic() && CLASSES.iter().all(|class| bytes.iter().any(|c| class(*c))) {
            return SecretString::from(String::from_utf8(bytes).expect("ASCII"));
        }
    }
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

    #[test]
    fn every_password_has_each_class_and_starts_with_a_letter() {
        for _ in 0..1000 {
            let password = generate();
            let bytes = password.expose_secret().as_bytes();
            assert!(bytes[0].is_ascii_alphabetic());
            for class in CLASSES {
                assert!(bytes.iter().any(|c| class(*c)), "{}", password.expose_secret());
            }
        }
    }
}
